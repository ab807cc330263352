"""aiortc media tracks <-> :class:`speech_io.frames.AudioFrame`."""

from __future__ import annotations

import fractions
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from duplex.clock import Clock
from speech_io.frames import FRAME_MS, AudioFrame
from speech_io.pipeline import OutputPipeline

WEBRTC_RATE = 48000
"""Opus in WebRTC always runs at 48 kHz."""
TICK_S = FRAME_MS / 1000.0
_TIME_BASE = fractions.Fraction(1, WEBRTC_RATE)


def from_av(frame: av.AudioFrame) -> AudioFrame:
    """Decoded aiortc frame (s16, packed, any layout) -> AudioFrame stamped with its media time."""
    if frame.format.name != "s16":
        raise ValueError(f"expected s16 audio from aiortc's Opus decoder, got {frame.format.name}")
    channels = len(frame.layout.channels)
    pcm = frame.to_ndarray().reshape(-1, channels)
    ts = float(frame.pts * frame.time_base) if frame.pts is not None and frame.time_base is not None else 0.0
    return AudioFrame(pcm.astype(np.float32) * (1.0 / 32768.0), frame.sample_rate, ts)


def to_av(frame: AudioFrame, pts: int) -> av.AudioFrame:
    """AudioFrame (mono or stereo) -> s16 packed av.AudioFrame with ``pts`` in 1/rate units."""
    pcm = (np.clip(frame.samples, -1.0, 1.0) * 32767.0).round().astype(np.int16).reshape(1, -1)
    out = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono" if frame.channels == 1 else "stereo")
    out.sample_rate = frame.rate
    out.pts = pts
    out.time_base = fractions.Fraction(1, frame.rate)
    return out


class OpusPacketizer:
    """Mono 48 kHz 20 ms frames -> one Opus packet each, encoded right here.

    Why not let aiortc encode: its sender hands every frame to a thread pool and waits for the
    result, a thread round trip per frame per session. On a busy machine those hand-offs took
    20-60 ms each (median, measured with 10 sessions at load 9 on 2 cores) and pushed the
    outgoing track behind its schedule; encoding 20 ms of mono speech takes ~0.2 ms, so doing
    it inline costs less than the hand-off. Mono at ``bitrate`` (speech; aiortc sends stereo
    at 96 kbit/s): Opus packets say mono/stereo themselves, so the negotiated opus/48000/2
    stream carries them unchanged.
    """

    def __init__(self, bitrate: int = 48000) -> None:
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.bit_rate = bitrate
        self._codec.format = "s16"
        self._codec.layout = "mono"
        self._codec.sample_rate = WEBRTC_RATE
        self._codec.options = {"application": "voip"}

    def encode(self, frame: AudioFrame, pts: int) -> list[bytes]:
        return [bytes(p) for p in self._codec.encode(to_av(frame, pts))]


class AgentAudioTrack(MediaStreamTrack):
    """The agent's voice as an outgoing track of Opus packets, one per 20 ms tick.

    aiortc's sender calls :meth:`recv` in a loop and sends whatever it returns at once, so the
    track is the clock: each call waits for the next tick on an absolute schedule (no drift),
    then asks the agent for one frame and encodes it (see :class:`OpusPacketizer`). If the loop
    stalls for longer than ``max_lag_s`` the schedule jumps ahead instead of bursting the backlog
    into the network.
    """

    kind = "audio"

    def __init__(
        self,
        output: OutputPipeline,
        clock: Clock,
        max_lag_s: float = 0.2,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        super().__init__()
        self._on_error = on_error
        if output.rate != WEBRTC_RATE:
            raise ValueError(f"the outgoing track runs at {WEBRTC_RATE} Hz, got an output pipeline at {output.rate}")
        self._output = output
        self._clock = clock
        self._max_lag = max_lag_s
        self._t0: float | None = None
        self._tick = 0
        self._opus = OpusPacketizer()
        self.frames_sent = 0
        self.max_late_s = 0.0
        """Largest lateness of a tick behind its schedule (event-loop load)."""
        self.schedule_jumps = 0
        self.send_times: list[tuple[int, float]] | None = None
        """When set to a list, (pts, clock time) of each frame taken from the agent (benchmarks)."""

    async def recv(self) -> av.Packet:
        while True:
            payloads, pts = await self._next_tick()
            if payloads:  # the encoder holds back nothing after its first frame
                packet = av.Packet(payloads[0])
                packet.pts = pts
                packet.time_base = _TIME_BASE
                return packet

    async def _next_tick(self) -> tuple[list[bytes], int]:
        if self.readyState != "live":
            raise MediaStreamError
        now = self._clock.now()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._tick * TICK_S
        if now - due > self._max_lag:
            self._tick += int((now - due) / TICK_S)
            self.schedule_jumps += 1
            due = self._t0 + self._tick * TICK_S
        await self._clock.sleep_until(due)
        if self.readyState != "live":
            raise MediaStreamError
        sent_at = self._clock.now()
        self.max_late_s = max(self.max_late_s, sent_at - due)
        pts = self._tick * self._output.size
        try:
            frame = self._output.next_frame(self._tick * TICK_S)
            payloads = self._opus.encode(frame, pts)
        except Exception as exc:
            # aiortc's sender would log and silently stop sending: make it the session's problem.
            if self._on_error is not None:
                self._on_error(exc)
            raise MediaStreamError from exc
        self._tick += 1
        self.frames_sent += 1
        if self.send_times is not None:
            self.send_times.append((pts, sent_at))
        return payloads, pts
