"""Injectable time: a real clock for live sessions, a virtual one for files and tests.

Everything that paces audio (the file transport, the WebRTC output track, the echo agent's delay
line) takes a :class:`Clock` instead of calling ``time`` or ``asyncio.sleep`` itself, so the same
code runs in real time against a browser and as fast as possible over a wav file, with the
same timeline.

``VirtualClock`` here is the single-driver form: time moves only when the task that drives the
simulation sleeps, and every other task reads ``now()``. That is exactly what the file transport
needs (one paced loop pushes input and pulls output each tick). The multi-sleeper event-queue
clock of the duplex runtime builds on the same protocol.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Seconds on a monotonic timeline and a way to wait on it."""

    def now(self) -> float:
        """Current time in seconds (monotonic; the origin is arbitrary)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (<= 0 just yields to the loop)."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Wait until ``now() >= deadline``; absolute deadlines keep paced loops from drifting."""
        ...


class RealClock:
    """Wall time: ``time.monotonic`` and ``asyncio.sleep``.

    ``time.monotonic`` (CLOCK_MONOTONIC) is system-wide on Linux, so times taken in two
    processes on one machine can be compared (the transport benchmark relies on it).
    """

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))


class VirtualClock:
    """Simulated time that advances only when the driving task sleeps.

    ``sleep`` moves time forward by exactly the amount asked and yields once to the event loop,
    so tasks woken by the driver's work (queues, events) run before the next tick. Runs are
    deterministic: the same input gives the same timeline, however loaded the machine is.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._now += seconds
        await asyncio.sleep(0)

    async def sleep_until(self, deadline: float) -> None:
        self._now = max(self._now, float(deadline))
        await asyncio.sleep(0)
