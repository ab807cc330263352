"""VAD backends and the timed speech segmenter, on real (Piper) speech with known timing."""

import numpy as np
import pytest

from speech_io.frames import AudioFrame
from speech_io.vad import (
    SileroVadBackend,
    SpeechDetector,
    WebRtcVadBackend,
    detect_segments,
    make_backend,
    segments_of,
)
from speech_io.wav import resample


@pytest.mark.parametrize("backend", ["webrtc", "silero"])
def test_segments_match_truth_within_100ms(speech_sample, backend):
    audio, rate, truth = speech_sample
    segs = detect_segments(audio, rate, make_backend(backend))
    assert len(segs) == len(truth), (segs, truth)
    errors = [(s.start - a, s.end - b) for s, (a, b) in zip(segs, truth, strict=True)]
    assert max(abs(e) for pair in errors for e in pair) <= 0.1, errors


def test_streaming_chunk_size_does_not_change_events(speech_sample):
    audio, rate, _ = speech_sample
    x = resample(audio, rate, 16000)

    def events(chunk: int) -> list:
        det = SpeechDetector(WebRtcVadBackend())
        out = []
        for i in range(0, len(x), chunk):
            out += det.process(AudioFrame.from_mono(x[i : i + chunk], 16000, i / 16000))[1]
        return [(e.kind, round(e.time, 6), round(e.detected_at, 6)) for e in out + det.finish()]

    reference = events(320)
    assert len(reference) == 6
    assert events(77) == reference and events(5000) == reference


class ScriptedBackend:
    """Replays fixed per-block decisions: drives the segmenter's state machine exactly."""

    name = "scripted"
    rate = 16000
    block_samples = 320
    tail_s = 0.04

    def __init__(self, decisions: list[int]) -> None:
        self.decisions = list(decisions)
        self.i = 0

    def score(self, block: np.ndarray) -> float:
        self.i += 1
        return float(self.decisions[self.i - 1]) if self.i <= len(self.decisions) else 0.0

    def reset(self) -> None:
        self.i = 0


def test_detector_start_threshold_hangover_and_tail():
    # 20 ms blocks: 2 speech (too short), 3 silence, 10 speech, 5 silence (under the 300 ms
    # hangover), 5 speech, then silence.
    decisions = [1] * 2 + [0] * 3 + [1] * 10 + [0] * 5 + [1] * 5 + [0] * 30
    det = SpeechDetector(ScriptedBackend(decisions), start_ms=60, end_ms=300)
    events = []
    flags = []
    for k in range(len(decisions)):
        frame, evs = det.process(AudioFrame.silence(16000, 320, timestamp=0.02 * k))
        events += evs
        flags.append(frame.speech)
    start, end = events
    assert (start.kind, start.time, start.detected_at) == ("speech_start", pytest.approx(0.10), pytest.approx(0.16))
    # Speech 0.10-0.30 and 0.40-0.50 s: the 100 ms pause is bridged; the segment closes 300 ms
    # after the last speech block and its end is moved back by the backend's tail.
    assert (end.kind, end.detected_at) == ("speech_end", pytest.approx(0.80))
    assert end.time == pytest.approx(0.50 - 0.04)
    assert segments_of(events)[0].start == pytest.approx(0.10)
    assert flags[7] is True and flags[6] is False and flags[-1] is False


def test_silence_and_quiet_noise_give_no_segments():
    rng = np.random.default_rng(0)
    for audio in (np.zeros(32000, np.float32), (1e-3 * rng.standard_normal(32000)).astype(np.float32)):
        assert detect_segments(audio, 16000, WebRtcVadBackend(3)) == []
        assert detect_segments(audio, 16000, SileroVadBackend()) == []


def test_backend_arguments_are_checked():
    with pytest.raises(ValueError, match="aggressiveness"):
        WebRtcVadBackend(5)
    with pytest.raises(ValueError, match="10, 20 or 30"):
        WebRtcVadBackend(3, frame_ms=25)
    with pytest.raises(ValueError, match="unknown VAD backend"):
        make_backend("energy")
    with pytest.raises(ValueError, match="expects 16000 Hz mono"):
        SpeechDetector(WebRtcVadBackend()).process(AudioFrame.silence(48000, 960))
