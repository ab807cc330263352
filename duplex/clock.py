"""Injectable time: a real clock for live sessions, a virtual one for files and tests.

Everything that paces audio (the file transport, the WebRTC output track, the echo agent's delay
line) takes a :class:`Clock` instead of calling ``time`` or ``asyncio.sleep`` itself, so the same
code runs in real time against a browser and as fast as possible over a wav file, with the
same timeline.

``VirtualClock`` is the single-driver form: time moves only when the task that drives the
simulation sleeps, and every other task reads ``now()``. That is exactly what the file transport
needs (one paced loop pushes input and pulls output each tick). The multi-sleeper event-queue
clock of the duplex runtime is :class:`EventClock` below (same protocol).
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


class EventClock:
    """Virtual time for many sleepers: an event queue that jumps to the next deadline when idle.

    Every task may ``sleep``/``sleep_until``; deadlines wait in a heap. A driver task (started by
    the first sleeper, ending by itself when nothing sleeps) advances ``now()`` to the earliest
    deadline only when the event loop is idle: no callback is ready and no :meth:`hold` is
    active. Work running outside the loop (a model step in a worker thread) holds the clock, so
    virtual time stands still while it computes; the worker then charges the compute to the
    timeline itself (``duplex.workers``). A scripted 30 s conversation therefore runs as fast as
    the models allow, on a timeline that is deterministic for a fixed cost model.

    Idle detection reads the loop's ready queue (``loop._ready``, a CPython asyncio detail stable
    since 3.4); without it the driver falls back to yielding a fixed number of times. Only this
    clock may pace the tasks of a run: a real ``asyncio.sleep(x)`` elsewhere runs in wall time.
    """

    _SETTLE_FALLBACK = 50

    def __init__(self, start: float = 0.0) -> None:
        import heapq
        import itertools

        self._heapq = heapq
        self._now = float(start)
        self._heap: list[tuple[float, int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._holds = 0
        self._driver: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.jumps = 0
        """Times the clock moved forward (for tests and stats)."""

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._now + max(0.0, seconds))

    async def sleep_until(self, deadline: float, order: int | None = None) -> None:
        """Wait until ``deadline``. Sleepers due at the same time wake in ``order`` (default: the
        order they went to sleep), so a run is deterministic even when threads finish in any order."""
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        seq = next(self._seq)
        self._heapq.heappush(self._heap, (float(deadline), seq if order is None else order, seq, fut))
        self._kick(loop)
        await fut  # a cancelled sleeper leaves a done future in the heap; the driver skips it

    # -- holds -----------------------------------------------------------------------------
    def hold(self) -> _Hold:
        """Context manager: virtual time stands still while it is held (work outside the loop)."""
        return _Hold(self)

    def _acquire(self) -> None:
        self._holds += 1

    def _release(self) -> None:
        self._holds -= 1
        if self._holds == 0:
            try:
                self._kick(asyncio.get_running_loop())
            except RuntimeError:
                pass

    @property
    def held(self) -> bool:
        return self._holds > 0

    # -- driver ----------------------------------------------------------------------------
    def _kick(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._wake is None or self._driver is None or self._driver.done():
            self._wake = asyncio.Event()
            self._driver = loop.create_task(self._drive(), name="event-clock")
        self._wake.set()

    async def _settle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Yield until nothing else on the loop is runnable."""
        ready = getattr(loop, "_ready", None)
        if ready is None:
            for _ in range(self._SETTLE_FALLBACK):
                await asyncio.sleep(0)
            return
        while True:
            await asyncio.sleep(0)
            if not ready:
                return

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        wake = self._wake
        while True:
            await self._settle(loop)
            while self._heap and self._heap[0][3].done():
                self._heapq.heappop(self._heap)
            if self._holds > 0 or not self._heap:
                if self._holds == 0 and not self._heap:
                    self._driver = None
                    return  # nothing sleeps: the next sleeper starts a new driver
                wake.clear()
                await wake.wait()
                continue
            deadline = self._heap[0][0]
            if deadline > self._now:
                self._now = deadline
                self.jumps += 1
            # Wake the sleepers due now one at a time, in order, each running until it blocks.
            *_, fut = self._heapq.heappop(self._heap)
            if not fut.done():
                fut.set_result(None)


class _Hold:
    def __init__(self, clock: EventClock) -> None:
        self._clock = clock

    def __enter__(self) -> None:
        self._clock._acquire()

    def __exit__(self, *exc: object) -> None:
        self._clock._release()


def is_virtual(clock: Clock) -> bool:
    """True for clocks whose time does not follow the wall (compute must be charged to them)."""
    return isinstance(clock, (VirtualClock, EventClock))
