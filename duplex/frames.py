"""Typed frames between the stages of a session, and the queue that moves them.

Two kinds (pipecat's split): **data frames** carry the content of one reply (text tokens, speech
units, audio) and belong to it (``reply``); **control frames** carry decisions (turn events, an
interrupt, an emotion, the end of a reply). A :class:`FrameQueue` hands control frames out
before any queued data frame, and an :class:`Interrupt` drops every queued data frame of the
interrupted reply: a barge-in never waits behind audio that will not be played.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Frame:
    """Base of every frame."""


# -- data ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataFrame(Frame):
    reply: int
    """Id of the reply the frame belongs to (data of a cancelled reply is dropped)."""


@dataclass(frozen=True)
class TextFrame(DataFrame):
    """Reply tokens from the LLM, in order, with their hidden states (for the generator)."""

    tokens: list[int]
    hidden: Any
    """(n, D) torch tensor of the LLM's last-layer states for ``tokens`` (or None)."""
    text: str
    """Detokenized text of these tokens."""
    ended: bool = False
    """The LLM finished the reply with this frame."""
    produced_at: float = 0.0


@dataclass(frozen=True)
class UnitsFrame(DataFrame):
    """One agent chunk of 25 Hz units for the decoder."""

    index: int
    """Generator chunk index."""
    units: np.ndarray
    speaking: bool
    final: bool = False
    """The last chunk of the reply: the decoder flushes after it."""
    produced_at: float = 0.0


@dataclass(frozen=True)
class AudioOutFrame(DataFrame):
    """Decoded agent audio (mono float32 at the decoder's rate)."""

    samples: np.ndarray
    rate: int
    final: bool = False
    produced_at: float = 0.0


# -- control ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ControlFrame(Frame):
    pass


@dataclass(frozen=True)
class TurnEvent(ControlFrame):
    """A turn-taking decision (for the client and the metrics)."""

    kind: str
    """take_turn | barge_in | pause_output | resume_output | reply_done | cancel_reply"""
    t: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Interrupt(ControlFrame):
    """Cancel reply ``reply``: stages drop its queued data and stop working on it."""

    reply: int
    reason: str = "barge_in"


@dataclass(frozen=True)
class SetEmotion(ControlFrame):
    """Emotion of the next replies: a plugin name, ``neutral`` or ``auto`` (from the reply text)."""

    name: str


@dataclass(frozen=True)
class EndOfReply(ControlFrame):
    reply: int


class FrameQueue:
    """An unbounded async queue where control frames jump ahead of data frames.

    ``put`` never blocks. ``interrupt(reply)`` drops queued data frames of that reply (and of
    older replies) and returns how many were dropped; the :class:`Interrupt` itself is queued
    as a control frame so the consumer learns of it before anything else.
    """

    def __init__(self) -> None:
        self._control: deque[ControlFrame] = deque()
        self._data: deque[DataFrame] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0
        self._cancelled_upto = -1

    def put(self, frame: Frame) -> None:
        if isinstance(frame, ControlFrame):
            self._control.append(frame)
        elif isinstance(frame, DataFrame):
            if frame.reply <= self._cancelled_upto:
                self.dropped += 1
                return
            self._data.append(frame)
        else:
            raise TypeError(f"not a frame: {frame!r}")
        self._ready.set()

    def interrupt(self, reply: int, reason: str = "barge_in") -> int:
        self._cancelled_upto = max(self._cancelled_upto, reply)
        before = len(self._data)
        self._data = deque(f for f in self._data if f.reply > reply)
        n = before - len(self._data)
        self.dropped += n
        self.put(Interrupt(reply, reason))
        return n

    def cancelled(self, reply: int) -> bool:
        return reply <= self._cancelled_upto

    def get_nowait(self) -> Frame | None:
        if self._control:
            frame: Frame = self._control.popleft()
        elif self._data:
            frame = self._data.popleft()
        else:
            return None
        if not self._control and not self._data:
            self._ready.clear()
        return frame

    async def get(self) -> Frame:
        while True:
            frame = self.get_nowait()
            if frame is not None:
                return frame
            await self._ready.wait()

    def data_len(self) -> int:
        return len(self._data)

    def __len__(self) -> int:
        return len(self._control) + len(self._data)
