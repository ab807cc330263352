"""Clocks, the echo agent behind the agent interface, and the file transport."""

import asyncio
import time

import numpy as np
import pytest

from duplex.clock import Clock, RealClock, VirtualClock
from speech_io.agent_interface import AgentFactory, AgentSession, EventStream
from speech_io.echo import EchoAgentFactory, EchoSession
from speech_io.file_transport import run_file
from speech_io.frames import AudioFrame
from speech_io.vad import SpeechDetector, WebRtcVadBackend
from speech_io.wav import read_wav, resample, write_wav


def test_virtual_clock_moves_only_when_slept_and_real_clock_sleeps():
    async def main():
        vc = VirtualClock(5.0)
        await vc.sleep(0.25)
        await vc.sleep_until(7.0)
        await vc.sleep_until(6.0)  # in the past: no change
        t = time.perf_counter()
        await vc.sleep(3600)
        assert time.perf_counter() - t < 0.1
        rc = RealClock()
        t0 = rc.now()
        await rc.sleep_until(t0 + 0.05)
        return vc.now(), rc.now() - t0

    v, real = asyncio.run(main())
    assert v == pytest.approx(3607.0)
    assert 0.045 < real < 0.5
    assert isinstance(VirtualClock(), Clock) and isinstance(RealClock(), Clock)


def test_echo_session_releases_after_the_delay_on_the_tick_grid():
    async def main():
        clock = VirtualClock()
        factory = EchoAgentFactory(delay_s=0.1, output_rate=24000)
        assert isinstance(factory, AgentFactory)
        session = await factory.create_session("s", clock)
        assert isinstance(session, AgentSession)
        ramp = np.linspace(-0.5, 0.5, 320, dtype=np.float32)
        popped = []
        for k in range(20):
            speech = 3 <= k < 8
            await session.push_audio(AudioFrame.from_mono(ramp * speech, 16000, 0.02 * k).with_speech(speech))
            out = session.pop_output_frame()
            popped.append(out)
            await clock.sleep(0.02)
        await session.control({"type": "text", "text": "hi"})
        await session.close()
        events = [e async for e in session.events()]
        return popped, events

    popped, events = asyncio.run(main())
    first = next(i for i, f in enumerate(popped) if f is not None)
    assert first == 5  # pushed at t=0, released 100 ms later
    assert all(f is not None and f.num_samples == 480 and f.rate == 24000 for f in popped[first:])
    loud = [i for i, f in enumerate(popped) if f is not None and f.rms() > 0.05]
    assert loud[0] == 3 + 5 and loud[-1] in (12, 13)  # the speech frames, 5 ticks later
    kinds = [(e["type"], e.get("state") or e.get("name") or e.get("text")) for e in events]
    assert ("state", "speaking") in kinds and ("latency", "echo_delay") in kinds
    assert kinds[-1] == ("text", "echo: hi")
    assert any(e["type"] == "text" and "echoed 0.10 s" in e["text"] for e in events)


def test_event_stream_is_bounded_and_ends_on_close():
    async def main():
        stream = EventStream(maxsize=3)
        for i in range(5):
            stream.publish({"type": "n", "i": i})
        stream.close()
        stream.publish({"type": "late"})
        return [e["i"] async for e in stream], stream.dropped

    items, dropped = asyncio.run(main())
    assert items == [2, 3, 4] and dropped == 2


def _lag_s(left: np.ndarray, right: np.ndarray, rate: int, max_lag_s: float = 1.0) -> tuple[float, float]:
    """Lag of right behind left by cross-correlation, and the normalised peak."""
    n = len(left)
    spec = np.fft.rfft(right[:n], 2 * n) * np.conj(np.fft.rfft(left, 2 * n))
    corr = np.fft.irfft(spec)[: int(max_lag_s * rate)]
    lag = int(np.argmax(corr))
    shifted = right[lag : lag + n]
    peak = float(np.dot(left[: len(shifted)], shifted) / (np.linalg.norm(left[: len(shifted)]) * np.linalg.norm(shifted)))
    return lag / rate, peak


@pytest.fixture(scope="module")
def user_wav(speech_sample, tmp_path_factory):
    audio, rate, truth = speech_sample
    path = tmp_path_factory.mktemp("file_transport") / "user.wav"
    write_wav(path, audio, rate)
    return path, truth


def _detector() -> SpeechDetector:
    return SpeechDetector(WebRtcVadBackend(3))


def test_file_transport_virtual_clock_is_fast_time_aligned_and_deterministic(user_wav, tmp_path):
    path, truth = user_wav

    def run(out):
        return asyncio.run(run_file(EchoAgentFactory(0.3), path, out, VirtualClock(), detector=_detector(), tail_s=0.5))

    t = time.perf_counter()
    result = run(tmp_path / "a.wav")
    wall = time.perf_counter() - t
    assert wall < 0.5 * result.input_s  # well faster than real time
    assert result.wall_s == pytest.approx(result.output_s - 0.02, abs=0.03)  # virtual time = the timeline
    stereo, rate = read_wav(result.output, mono=False)
    assert stereo.shape[1] == 2 and rate == 24000
    user_in, in_rate = read_wav(path)
    np.testing.assert_allclose(stereo[: rate * 2, 0], resample(user_in, in_rate, rate)[: rate * 2], atol=1e-4)
    lag, peak = _lag_s(stereo[:, 0], stereo[:, 1], rate)
    # delay + one 20 ms capture frame + the two resampling filters' delays (< 1 ms each)
    assert 0.320 <= lag <= 0.3225 and peak > 0.98
    assert len(result.segments) == len(truth)
    for seg, (a, b) in zip(result.segments, truth, strict=True):
        assert abs(seg.start - a) <= 0.1 and abs(seg.end - b) <= 0.1
    assert result.output_stats is not None and result.output_stats.underruns == 0
    vad_events = [e for _, e in result.events if e["type"] == "vad"]
    assert [e["event"] for e in vad_events] == ["speech_start", "speech_end"] * len(truth)
    # Deterministic: same input, same clock -> byte-identical output.
    again = run(tmp_path / "b.wav")
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    assert [e for _, e in again.events] == [e for _, e in result.events]


def test_file_transport_real_time_pacing(tmp_path):
    rate = 16000
    t = np.arange(int(1.2 * rate)) / rate
    # Synthetic input: two tone bursts.
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) * ((t % 0.6) < 0.2)).astype(np.float32)
    write_wav(tmp_path / "in.wav", audio, rate)
    t0 = time.perf_counter()
    result = asyncio.run(run_file(EchoAgentFactory(0.2), tmp_path / "in.wav", tmp_path / "out.wav", RealClock(), tail_s=0.3))
    wall = time.perf_counter() - t0
    assert wall == pytest.approx(result.wall_s, abs=0.3)
    assert result.output_s - 0.1 <= result.wall_s <= result.output_s + 0.3
    stereo, out_rate = read_wav(result.output, mono=False)
    lag, peak = _lag_s(stereo[:, 0], stereo[:, 1], out_rate)
    assert 0.215 <= lag <= 0.2225 and peak > 0.98


class _WrongSizeSession(EchoSession):
    def pop_output_frame(self):
        return AudioFrame.silence(self.output_rate, 100)


class _WrongSizeFactory:
    async def create_session(self, session_id, clock):
        return _WrongSizeSession(session_id, clock)


def test_agent_breaking_the_frame_contract_gets_a_clear_error(tmp_path):
    write_wav(tmp_path / "in.wav", np.zeros(3200, np.float32), 16000)
    with pytest.raises(ValueError, match="the interface wants 20 ms mono at 24000 Hz"):
        asyncio.run(run_file(_WrongSizeFactory(), tmp_path / "in.wav", tmp_path / "out.wav", VirtualClock()))


@pytest.mark.parametrize("out_rate", [22050, 16000, 48000])
def test_file_transport_other_agent_output_rates(tmp_path, out_rate):
    """Agents at the Piper voice's 22.05 kHz (or others) go through the same paths."""
    rate = 44100
    t = np.arange(rate) / rate
    audio = (0.3 * np.sin(2 * np.pi * 330 * t) * ((t % 0.5) < 0.15)).astype(np.float32)  # synthetic
    write_wav(tmp_path / "in.wav", audio, rate)
    result = asyncio.run(
        run_file(EchoAgentFactory(0.1, output_rate=out_rate), tmp_path / "in.wav", tmp_path / "out.wav", VirtualClock())
    )
    stereo, got_rate = read_wav(result.output, mono=False)
    assert got_rate == out_rate and result.output_stats.underruns == 0
    lag, peak = _lag_s(stereo[:, 0], stereo[:, 1], out_rate)
    assert 0.12 <= lag <= 0.1225 and peak > 0.98
