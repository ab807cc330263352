"""The audio paths every transport shares, between its wire format and an agent session.

``InputPipeline``: frames as captured (any rate, any channels, any length; possibly with gaps)
-> gaps filled with silence -> the agent's input rate, mono -> 20 ms frames -> VAD (annotates
``frame.speech``, publishes timed speech events) -> ``session.push_audio``.

``OutputPipeline``: once per tick, ``session.pop_output_frame()`` (or silence) -> the
transport's rate and channel count -> exactly one 20 ms frame. Silence goes through the
resampler too, so the filter state stays continuous and agent audio starts without a click.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from speech_io.agent_interface import AgentSession, Event
from speech_io.frames import FRAME_MS, AudioFrame, Framer, frame_samples
from speech_io.resample import AudioConverter, StreamingResampler, convert_channels
from speech_io.ringbuffer import RingBuffer
from speech_io.vad import SpeechDetector, SpeechSegment, VadEvent


@dataclass
class InputStats:
    frames_in: int = 0
    """Frames received from the transport."""
    frames_pushed: int = 0
    """20 ms frames pushed to the agent (gap fill included)."""
    gaps: int = 0
    """Discontinuities in the capture timeline that were filled with silence."""
    gap_fill_s: float = 0.0
    """Silence inserted for them, in total."""
    max_gap_s: float = 0.0
    """Longest single gap."""
    resyncs: int = 0
    """Gaps too long to fill: the timeline restarted at the new frame."""
    stale_dropped: int = 0
    """Frames that arrived with a timestamp already covered (duplicates, late reorders)."""
    segments: list[SpeechSegment] = field(default_factory=list)
    """Speech segments the VAD closed so far."""


class InputPipeline:
    def __init__(
        self,
        session: AgentSession,
        detector: SpeechDetector | None = None,
        publish: Callable[[Event], None] | None = None,
        *,
        max_gap_fill_s: float = 2.0,
    ) -> None:
        self.session = session
        self.detector = detector
        self._publish = publish
        self.max_gap_fill_s = max_gap_fill_s
        self.rate = session.input_rate
        self.stats = InputStats()
        self._expected: float | None = None  # capture time the next frame should start at
        self._reset_timeline()

    def _reset_timeline(self) -> None:
        self._converter = AudioConverter(self.rate, 1)
        self._framer = Framer(self.rate, 1)
        vad_rate = self.detector.backend.rate if self.detector is not None else self.rate
        # A second converter only when the VAD runs at another rate than the agent.
        self._vad_converter = AudioConverter(vad_rate, 1) if vad_rate != self.rate else None

    async def feed(self, frame: AudioFrame) -> None:
        """Take one captured frame (any format); pushes complete 20 ms frames to the agent."""
        self.stats.frames_in += 1
        if self._expected is not None:
            gap = frame.timestamp - self._expected
            half = 0.5 * frame.duration
            if gap < -half:
                self.stats.stale_dropped += 1
                return
            if gap > self.max_gap_fill_s:
                self.stats.resyncs += 1
                self._finish_vad()
                self._reset_timeline()
            elif (n := int(round(gap * frame.rate))) >= 1:
                self.stats.gaps += 1
                self.stats.gap_fill_s += gap
                self.stats.max_gap_s = max(self.stats.max_gap_s, gap)
                # In slices: the framer holds at most one second.
                for start in range(0, n, frame.rate // 10):
                    k = min(frame.rate // 10, n - start)
                    silence = AudioFrame.silence(frame.rate, k, frame.channels, self._expected + start / frame.rate)
                    await self._feed_contiguous(silence)
        self._expected = frame.end
        await self._feed_contiguous(frame)

    async def _feed_contiguous(self, frame: AudioFrame) -> None:
        converted = self._converter.convert(frame)
        if converted is None:
            return
        for f in self._framer.push(converted):
            await self._push(f)

    async def _push(self, frame: AudioFrame) -> None:
        if self.detector is not None:
            vad_in = frame if self._vad_converter is None else self._vad_converter.convert(frame)
            if vad_in is not None:
                annotated, events = self.detector.process(vad_in)
                frame = frame.with_speech(annotated.speech)
                self._handle(events)
        self.stats.frames_pushed += 1
        await self.session.push_audio(frame)

    def _handle(self, events: list[VadEvent]) -> None:
        for e in events:
            if e.segment is not None:
                self.stats.segments.append(e.segment)
            if self._publish is not None:
                self._publish(e.to_dict())

    def _finish_vad(self) -> None:
        if self.detector is not None:
            self._handle(self.detector.finish())

    async def finish(self) -> None:
        """End of input: push the last partial frame (zero padded) and close an open segment."""
        last = self._framer.flush()
        if last is not None:
            await self._push(last)
        self._finish_vad()


@dataclass
class OutputStats:
    ticks: int = 0
    """Frames produced (one per tick)."""
    agent_frames: int = 0
    """Ticks on which the agent had audio."""
    underruns: int = 0
    """Ticks that had to be padded (should stay 0 after start-up)."""


class OutputPipeline:
    """Agent audio -> one ``FRAME_MS`` frame per call at the transport's ``rate``/``channels``."""

    def __init__(self, session: AgentSession, rate: int, channels: int = 1) -> None:
        self.session = session
        self.rate, self.channels = rate, channels
        self.src_size = frame_samples(session.output_rate)
        self.size = frame_samples(rate)
        self._silence = np.zeros((self.src_size, 1), dtype=np.float32)
        # Untrimmed: one 20 ms frame in gives exactly one 20 ms frame out, from the first tick.
        self._resampler = StreamingResampler(session.output_rate, rate, 1, trim_delay=False)
        self._ring = RingBuffer(max(4 * self.size, rate // 5), 1)
        self.stats = OutputStats()

    @property
    def delay_s(self) -> float:
        return self._resampler.delay_s

    def next_frame(self, timestamp: float) -> AudioFrame:
        frame = self.session.pop_output_frame()
        speech: bool | None = None
        if frame is None:
            samples = self._silence
        else:
            if frame.rate != self.session.output_rate or frame.channels != 1 or frame.num_samples != self.src_size:
                raise ValueError(
                    f"agent returned {frame.num_samples} samples at {frame.rate} Hz x{frame.channels}; "
                    f"the interface wants {FRAME_MS} ms mono at {self.session.output_rate} Hz ({self.src_size} samples)"
                )
            samples = frame.samples
            speech = frame.speech
            self.stats.agent_frames += 1
        self._ring.write(self._resampler.process(samples))
        out = np.empty((self.size, 1), dtype=np.float32)
        if self._ring.read_into(out) < self.size:
            self.stats.underruns += 1
        self.stats.ticks += 1
        return AudioFrame(convert_channels(out, self.channels), self.rate, timestamp, speech)
