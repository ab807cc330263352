"""Local mic/speaker transport and the serve/talk/run commands."""

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from duplex.cli import main
from speech_io.echo import EchoAgentFactory
from speech_io.local_audio import NO_DEVICE, LocalAudioTransport, NoAudioDevice, open_sounddevice
from speech_io.wav import read_wav, write_wav


def _has_audio_device() -> bool:
    try:
        import sounddevice as sd

        sd.query_devices(kind="input")
        sd.query_devices(kind="output")
        return True
    except Exception:
        return False


@pytest.mark.skipif(_has_audio_device(), reason="this machine has an audio device")
def test_no_device_is_one_clear_line(capsys):
    with pytest.raises(NoAudioDevice, match=re.escape(NO_DEVICE)):
        open_sounddevice(48000, 960, lambda i, o: None)
    assert main(["talk", "--echo"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {NO_DEVICE}\n"


class FakeDuplexStream:
    """Stands in for PortAudio: a thread that calls the duplex callback every block, in real
    time, with blocks of ``signal`` as the microphone, and records what was played."""

    def __init__(self, rate: int, block: int, callback, signal: np.ndarray) -> None:
        self.rate, self.block, self.callback, self.signal = rate, block, callback, signal
        self.played: list[np.ndarray] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-portaudio")

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        t0, k = time.monotonic(), 0
        while not self._stop.is_set():
            pos = k * self.block
            indata = np.zeros((self.block, 1), np.float32)
            chunk = self.signal[pos : pos + self.block]
            indata[: len(chunk), 0] = chunk
            outdata = np.zeros((self.block, 1), np.float32)
            self.callback(indata, outdata)
            self.played.append(outdata[:, 0].copy())
            k += 1
            time.sleep(max(0.0, t0 + k * self.block / self.rate - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def test_local_transport_plays_the_echo_back_in_real_time():
    rate = 16000
    t = np.arange(int(2.0 * rate)) / rate
    signal = (0.3 * np.sin(2 * np.pi * 500 * t) * ((t % 1.0) < 0.3)).astype(np.float32)  # synthetic bursts
    streams = {}

    def opener(r, block, callback):
        streams["s"] = FakeDuplexStream(r, block, callback, signal)
        return streams["s"]

    events = []
    transport = LocalAudioTransport(EchoAgentFactory(0.2), rate=rate, opener=opener, on_event=events.append)
    asyncio.run(transport.run(duration_s=2.0))
    played = np.concatenate(streams["s"].played)
    loud_in = np.flatnonzero(np.abs(signal) > 0.1)[0] / rate
    loud_out = np.flatnonzero(np.abs(played) > 0.1)[0] / rate
    # echo delay + one capture block + at most two ticks of playback buffering
    assert 0.2 <= loud_out - loud_in <= 0.2 + 0.08, loud_out - loud_in
    assert transport.capture_dropped == 0 and transport.captured_frames >= 90
    assert any(e["type"] == "state" and e["state"] == "listening" for e in events)


def test_run_command_writes_a_time_aligned_stereo_file(tmp_path, capsys):
    rate = 16000
    t = np.arange(rate) / rate
    write_wav(tmp_path / "user.wav", (0.3 * np.sin(2 * np.pi * 300 * t) * (t < 0.3)).astype(np.float32), rate)
    code = main(
        ["run", "--echo", "--echo-delay-ms", "240", "--input", str(tmp_path / "user.wav"),
         "--output", str(tmp_path / "out.wav"), "--events", str(tmp_path / "ev.jsonl")]
    )
    assert code == 0
    stereo, out_rate = read_wav(tmp_path / "out.wav", mono=False)
    user_on = np.flatnonzero(np.abs(stereo[:, 0]) > 0.1)[0] / out_rate
    agent_on = np.flatnonzero(np.abs(stereo[:, 1]) > 0.1)[0] / out_rate
    # 240 ms + one 20 ms capture frame + the 16 -> 24 kHz filter delay (0.67 ms)
    assert agent_on - user_on == pytest.approx(0.26 + 0.00067, abs=0.001)
    events = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert {"state", "latency"} <= {e["type"] for e in events} and all("at" in e for e in events)
    assert "left: user, right: agent" in capsys.readouterr().out


def test_an_agent_with_missing_weights_says_so_in_one_line(capsys):
    assert main(["serve", "--set", "speech.weights_card=no-such-card"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no-such-card" in err


def test_serve_command_starts_serves_and_stops_on_sigterm():
    cmd = [sys.executable, "-c", "import sys; from duplex.cli import main; sys.exit(main())", "serve", "--echo", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+)/", line).group(1)
        with urllib.request.urlopen(url + "/health", timeout=10) as resp:
            assert json.loads(resp.read()) == {"sessions": 0, "max_sessions": 4}
        with urllib.request.urlopen(url + "/", timeout=10) as resp:
            assert b"duplex-agent" in resp.read()
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in out, err
