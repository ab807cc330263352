"""Typed audio frames and fixed-duration framing.

An :class:`AudioFrame` is what every transport, the VAD and the agent interface exchange: PCM
samples as float32 (T, C) in [-1, 1], the sample rate, and the capture time of its first sample
on the stream's own timeline (seconds; for WebRTC this is the RTP media time, for a file the
position in the file). Frames are immutable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from speech_io.ringbuffer import RingBuffer

FRAME_MS = 20
"""The frame duration every transport and the agent interface use."""


def frame_samples(rate: int, ms: int = FRAME_MS) -> int:
    """Samples in a frame of ``ms`` milliseconds at ``rate``; the product must be whole."""
    n, rem = divmod(rate * ms, 1000)
    if rem or n <= 0:
        raise ValueError(f"{ms} ms at {rate} Hz is not a whole number of samples")
    return n


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """A block of PCM audio with its capture time.

    samples:   (T, C) float32 in [-1, 1]
    rate:      samples per second
    timestamp: capture time of ``samples[0]`` in seconds, on the stream's timeline
    speech:    the VAD's decision for this frame when a VAD ran on it, else None
    """

    samples: np.ndarray
    rate: int
    timestamp: float = 0.0
    speech: bool | None = None

    def __post_init__(self) -> None:
        if self.samples.ndim != 2 or self.samples.dtype != np.float32:
            raise ValueError(
                f"AudioFrame.samples must be float32 (T, C), got {self.samples.dtype} {self.samples.shape}"
            )
        if self.rate <= 0:
            raise ValueError(f"AudioFrame.rate must be positive, got {self.rate}")

    @classmethod
    def from_mono(cls, audio: np.ndarray, rate: int, timestamp: float = 0.0) -> AudioFrame:
        return cls(np.ascontiguousarray(audio, dtype=np.float32).reshape(-1, 1), rate, timestamp)

    @classmethod
    def from_pcm16(cls, data: bytes | np.ndarray, rate: int, channels: int, timestamp: float = 0.0) -> AudioFrame:
        """From interleaved little-endian int16 PCM."""
        pcm = np.frombuffer(data, dtype="<i2") if isinstance(data, bytes) else np.asarray(data, dtype=np.int16)
        return cls((pcm.astype(np.float32) / 32768.0).reshape(-1, channels), rate, timestamp)

    @classmethod
    def silence(cls, rate: int, num_samples: int, channels: int = 1, timestamp: float = 0.0) -> AudioFrame:
        return cls(np.zeros((num_samples, channels), dtype=np.float32), rate, timestamp)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        return self.num_samples / self.rate

    @property
    def end(self) -> float:
        """Capture time just after the last sample."""
        return self.timestamp + self.duration

    def mono(self) -> np.ndarray:
        """(T,) float32: the channel mean (a view when already mono)."""
        if self.channels == 1:
            return self.samples[:, 0]
        return self.samples.mean(axis=1, dtype=np.float32)

    def pcm16(self) -> bytes:
        """Interleaved little-endian int16 PCM."""
        clipped = np.clip(self.samples, -1.0, 1.0)
        return (clipped * 32767.0).round().astype("<i2").tobytes()

    def rms(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.samples, dtype=np.float64)))) if self.num_samples else 0.0

    def with_speech(self, speech: bool | None) -> AudioFrame:
        return AudioFrame(self.samples, self.rate, self.timestamp, speech)


class Framer:
    """Cuts a contiguous stream of frames into fixed ``frame_ms`` frames.

    Input frames may have any length; output frames have exactly ``frame_samples(rate, ms)``
    samples and timestamps that continue the first input's timeline sample by sample. The
    caller keeps the input contiguous (transports fill gaps with silence before framing).
    Storage is one ring buffer sized once (``max_pending_s`` of audio).
    """

    def __init__(
        self,
        rate: int,
        channels: int = 1,
        frame_ms: int = FRAME_MS,
        max_pending_s: float = 1.0,
        *,
        size: int | None = None,
    ) -> None:
        self.rate = rate
        self.channels = channels
        # `size` overrides frame_ms for models with odd block sizes (silero: 512 samples).
        self.size = size if size is not None else frame_samples(rate, frame_ms)
        self._ring = RingBuffer(max(self.size, int(rate * max_pending_s)), channels)
        self._next_ts: float | None = None  # timestamp of the oldest pending sample

    def __len__(self) -> int:
        """Samples waiting for a full frame."""
        return len(self._ring)

    def push(self, frame: AudioFrame) -> list[AudioFrame]:
        if frame.rate != self.rate or frame.channels != self.channels:
            raise ValueError(
                f"Framer expects {self.rate} Hz x{self.channels}, got {frame.rate} Hz x{frame.channels}"
            )
        if self._next_ts is None:
            self._next_ts = frame.timestamp
        if self._ring.write(frame.samples):
            raise OverflowError("Framer overflow: frames are pushed faster than they are taken")
        out = []
        while len(self._ring) >= self.size:
            out.append(AudioFrame(self._ring.read(self.size), self.rate, self._next_ts))
            self._next_ts += self.size / self.rate
        return out

    def flush(self) -> AudioFrame | None:
        """The last partial frame, padded with zeros to full length (None if nothing pending)."""
        if not len(self._ring) or self._next_ts is None:
            return None
        samples = np.zeros((self.size, self.channels), dtype=np.float32)
        rest = self._ring.read(self.size)
        samples[: rest.shape[0]] = rest
        frame = AudioFrame(samples, self.rate, self._next_ts)
        self._next_ts += self.size / self.rate
        return frame
