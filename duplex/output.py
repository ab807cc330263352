"""The agent's playout buffer: decoded audio in, one 20 ms frame per transport tick out.

Everything the agent will say and has not said yet lives here, inside the session, so a barge-in
can drop it at once (nothing already handed to the transport is more than one tick ahead).
Stops never click: ``stop()`` plays the next ``fade_ms`` with a linear fade-out, then silence,
and drops the rest; ``pause()`` fades out the same way but keeps the rest, and ``resume()``
fades back in where it paused (used while the turn policy decides whether a user sound is a
barge-in or only a backchannel).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from speech_io.frames import FRAME_MS, AudioFrame, frame_samples


@dataclass
class _Piece:
    reply: int
    samples: np.ndarray
    final: bool


@dataclass
class PoppedFrame:
    frame: AudioFrame
    reply: int
    """Reply whose audio the frame holds (-1 for none)."""
    audible: bool
    """RMS above the audibility threshold."""
    ended_reply: int | None
    """A reply whose last sample was in this frame (its audio is fully played)."""


class OutputBuffer:
    def __init__(self, rate: int, fade_ms: float = 10.0, audible_dbfs: float = -45.0,
                 max_seconds: float = 60.0) -> None:
        self.rate = rate
        self.size = frame_samples(rate, FRAME_MS)
        self.fade = max(1, int(round(rate * fade_ms / 1000.0)))
        self._ramp_down = np.linspace(1.0, 0.0, self.fade, endpoint=False, dtype=np.float32)
        self._ramp_up = self._ramp_down[::-1].copy()
        self.audible_rms = float(10 ** (audible_dbfs / 20.0))
        self.max_samples = int(max_seconds * rate)
        self._pieces: deque[_Piece] = deque()
        self._offset = 0  # samples of _pieces[0] already played
        self._queued = 0
        self.paused = False
        self._fade_out_pending = False
        self._fade_in_pending = False
        self.dropped_samples = 0
        self.frames_out = 0
        self.audible_frames = 0
        self._ended: int | None = None

    # -- producer side -----------------------------------------------------------------------
    def push(self, reply: int, samples: np.ndarray, final: bool = False) -> None:
        """Queue decoded audio (mono float32 at ``rate``); NaN/inf become silence, peaks are clipped."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(x)):
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        x = np.clip(x, -1.0, 1.0)
        if self._queued + len(x) > self.max_samples:
            raise OverflowError(f"agent audio queue over {self.max_samples / self.rate:.0f} s")
        if len(x) or final:
            self._pieces.append(_Piece(reply, x, final))
            self._queued += len(x)

    @property
    def queued_seconds(self) -> float:
        return self._queued / self.rate

    def has_audio(self) -> bool:
        return self._queued > 0

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> int:
        """Barge-in: fade out over the next ``fade_ms``, then drop everything. Returns samples dropped."""
        if not self._queued:
            self._pieces.clear()
            self._offset = 0
            self.paused = self._fade_out_pending = self._fade_in_pending = False
            return 0
        # Already paused and faded out: nothing is playing, so nothing needs a fade.
        silent = self.paused and not self._fade_out_pending
        head = self._take(0 if silent else min(self.fade, self._queued))
        dropped = self._queued
        self._pieces.clear()
        self._offset = 0
        self._queued = 0
        self.dropped_samples += dropped
        if len(head):
            tail = head * self._ramp_down[: len(head)]
            self._pieces.append(_Piece(-1, tail, False))
            self._queued = len(tail)
        self.paused = False
        self._fade_out_pending = self._fade_in_pending = False
        return dropped

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            self._fade_out_pending = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if not self._fade_out_pending:
                self._fade_in_pending = True
            self._fade_out_pending = False

    # -- consumer side ---------------------------------------------------------------------------
    def _take(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.float32)
        got = 0
        while self._pieces and (got < n or len(self._pieces[0].samples) == self._offset):
            p = self._pieces[0]
            k = min(n - got, len(p.samples) - self._offset)
            out[got : got + k] = p.samples[self._offset : self._offset + k]
            got += k
            self._offset += k
            if self._offset >= len(p.samples):
                self._pieces.popleft()
                self._offset = 0
                if p.final:
                    self._ended = p.reply
        self._queued -= got
        return out[:got]

    def _head_reply(self) -> int:
        return self._pieces[0].reply if self._pieces else -1

    def pop(self, timestamp: float = 0.0) -> PoppedFrame | None:
        """The next 20 ms, or None when there is nothing to play (paused or empty)."""
        if self.paused and not self._fade_out_pending:
            return None
        self._ended = None
        if not self._queued:
            self._take(0)  # consumes end-of-reply markers
            if self._ended is not None:
                return PoppedFrame(AudioFrame.silence(self.rate, self.size, 1, timestamp), -1, False, self._ended)
            return None
        reply = self._head_reply()
        samples = np.zeros(self.size, dtype=np.float32)
        if self._fade_out_pending:
            # Pause: fade out over the first fade_ms, keep the rest for resume.
            head = self._take(min(self.fade, self._queued))
            samples[: len(head)] = head * self._ramp_down[: len(head)]
            self._fade_out_pending = False
        else:
            got = self._take(min(self.size, self._queued))
            samples[: len(got)] = got
            if self._fade_in_pending:
                k = min(self.fade, len(got))
                samples[:k] *= self._ramp_up[:k]
                self._fade_in_pending = False
        if not self._queued:
            self._take(0)
        rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
        audible = rms >= self.audible_rms
        self.frames_out += 1
        self.audible_frames += int(audible)
        return PoppedFrame(AudioFrame(samples.reshape(-1, 1), self.rate, timestamp, audible), reply, audible,
                           self._ended)

    def clear(self) -> None:
        self._pieces.clear()
        self._offset = 0
        self._queued = 0
        self.paused = False
        self._fade_out_pending = self._fade_in_pending = False


def leading_quiet(samples: np.ndarray, rate: int, threshold_rms: float, window_ms: float = 5.0,
                  keep_ms: float = 10.0) -> int:
    """Samples of quiet before the first window whose RMS reaches ``threshold_rms``, less ``keep_ms``
    (the onset keeps its lead-in); ``len(samples)`` when nothing is that loud."""
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if not len(x):
        return 0
    hop = max(1, int(round(rate * window_ms / 1000.0)))
    starts = np.arange(0, len(x), hop)  # the last window may be shorter
    energy = np.add.reduceat(np.square(x, dtype=np.float64), starts)
    loud = np.flatnonzero(np.sqrt(energy / np.diff(starts, append=len(x))) >= threshold_rms)
    if not len(loud):
        return len(x)
    return max(0, int(starts[loud[0]]) - int(round(rate * keep_ms / 1000.0)))
