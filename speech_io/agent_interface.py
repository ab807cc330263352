"""The contract between transports (WebRTC, local mic/speaker, files) and an agent.

A transport owns the audio clock and the wire; an agent owns what it hears and what it says.
Every transport drives the same two protocols below, so an agent that implements them (the echo
agent now, the duplex runtime later) runs behind all three transports at once. Nothing here
imports torch or a transport library.

Timing contract
---------------
- The transport pushes user audio as 20 ms mono frames at ``input_rate`` (16 kHz), in capture
  order, with ``timestamp`` on the session's input timeline (seconds; gaps already filled with
  silence) and ``speech`` set by the transport's VAD (True while inside a speech segment).
- The transport's paced clock calls ``pop_output_frame()`` once per 20 ms tick. The agent returns
  one 20 ms mono frame at ``output_rate`` or None (the transport sends silence). Queued agent
  audio lives inside the session, so barge-in can drop it at once: nothing already handed to the
  transport is more than one tick ahead of the listener.
- ``events()`` yields JSON-able dicts for the client (data channel, console, log); the stream
  ends when the session closes. Event dicts always carry ``"type"``; the common ones are built
  by the helpers below so every agent spells them the same way.
- ``control()`` receives messages from the client (e.g. ``{"type": "emotion", "name": "happy"}``).
- ``close()`` releases everything; the transport calls it exactly once when the session ends.

Sessions are created with the transport's :class:`duplex.clock.Clock`, so under a virtual
clock (files, tests) the agent sees the same timeline the transport paces.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol, runtime_checkable

from duplex.clock import Clock
from speech_io.frames import AudioFrame

Event = dict[str, Any]
"""A JSON-able event with a ``"type"`` key."""

AgentState = Literal["idle", "listening", "thinking", "speaking"]


@runtime_checkable
class AgentSession(Protocol):
    """One conversation. All methods are called from the event loop thread."""

    input_rate: int
    """Sample rate the agent wants user audio at (mono)."""
    output_rate: int
    """Sample rate of the frames ``pop_output_frame`` returns (mono)."""

    async def push_audio(self, frame: AudioFrame) -> None:
        """User audio in: a 20 ms mono frame at ``input_rate``. Must not block the loop."""
        ...

    def pop_output_frame(self) -> AudioFrame | None:
        """Non-blocking: the next 20 ms of agent audio at ``output_rate``, or None for silence."""
        ...

    def events(self) -> AsyncIterator[Event]:
        """Events for the client, in order; ends when the session closes."""
        ...

    async def control(self, message: Event) -> None:
        """A message from the client (already parsed JSON, has ``"type"``)."""
        ...

    async def close(self) -> None:
        """Release everything; ends ``events()``. Idempotent."""
        ...


@runtime_checkable
class AgentFactory(Protocol):
    """Makes sessions; holds whatever is shared between them (models, executors)."""

    async def create_session(self, session_id: str, clock: Clock) -> AgentSession: ...


# -- event helpers ---------------------------------------------------------------------------


def state_event(state: AgentState, t: float) -> Event:
    return {"type": "state", "state": state, "t": round(t, 4)}


def text_event(role: Literal["user", "agent"], text: str, final: bool, t: float) -> Event:
    return {"type": "text", "role": role, "text": text, "final": final, "t": round(t, 4)}


def latency_event(name: str, ms: float, t: float) -> Event:
    return {"type": "latency", "name": name, "ms": round(ms, 2), "t": round(t, 4)}


def error_event(message: str) -> Event:
    return {"type": "error", "message": message}


class EventStream:
    """A bounded, closable queue of events with one async-iterating reader.

    Agents publish with :meth:`publish` (never blocks); the transport iterates. When the reader
    falls behind by ``maxsize`` events the oldest are dropped and counted: a stalled client must
    not grow the server's memory.
    """

    _END = object()

    def __init__(self, maxsize: int = 256) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize + 1)
        self._maxsize = maxsize
        self._closed = False
        self.dropped = 0

    def publish(self, event: Event) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= self._maxsize:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._queue.full():
                self._queue.get_nowait()
                self.dropped += 1
            self._queue.put_nowait(self._END)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            item = await self._queue.get()
            if item is self._END:
                return
            yield item
