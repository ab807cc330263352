"""Event-loop stall watchdog: counts the times the loop was blocked for longer than a threshold.

Two measurements, for the two ways the runtime runs:

- ``heartbeat`` (live, real clock): a task sleeps ``interval`` of wall time again and again; how
  late it wakes is how long something kept the loop busy. Counts wakes later than 20 and 50 ms.
- ``callbacks`` (offline runs on the virtual clock, where the loop is never idle so lateness
  means nothing): asyncio's debug mode times every callback and logs the slow ones
  (``loop.slow_callback_duration``); the watchdog counts those records by duration. This is the
  direct measure of "blocking work on the event loop".
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field

_TOOK = re.compile(r"took ([0-9.]+) seconds")


@dataclass
class StallStats:
    over_20ms: int = 0
    over_50ms: int = 0
    max_ms: float = 0.0
    samples: int = 0
    """Heartbeats (or slow callbacks seen)."""
    worst: list[str] = field(default_factory=list)
    """Descriptions of the slowest callbacks (callbacks mode)."""

    def add(self, ms: float, threshold_ms: float = 20.0, what: str = "") -> None:
        self.samples += 1
        if ms > threshold_ms:
            self.over_20ms += 1
        if ms > 50.0:
            self.over_50ms += 1
        if ms > self.max_ms:
            self.max_ms = ms
            if what:
                self.worst = [what[:200]]

    def to_dict(self) -> dict:
        return {"stalls_over_20ms": self.over_20ms, "stalls_over_50ms": self.over_50ms,
                "stall_max_ms": round(self.max_ms, 2), "samples": self.samples, "worst": self.worst}


class _SlowCallbackHandler(logging.Handler):
    def __init__(self, stats: StallStats, threshold_ms: float) -> None:
        super().__init__(logging.WARNING)
        self.stats = stats
        self.threshold_ms = threshold_ms

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        m = _TOOK.search(msg)
        if m:
            self.stats.add(1000 * float(m.group(1)), self.threshold_ms, msg)


class LoopWatchdog:
    def __init__(self, threshold_ms: float = 20.0, interval_s: float = 0.01, mode: str = "heartbeat") -> None:
        if mode not in ("heartbeat", "callbacks"):
            raise ValueError(f"watchdog mode must be heartbeat or callbacks, got {mode!r}")
        self.threshold_ms = threshold_ms
        self.interval_s = interval_s
        self.mode = mode
        self.stats = StallStats()
        self._task: asyncio.Task[None] | None = None
        self._handler: _SlowCallbackHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._was_debug = False
        self._propagate = True

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self.mode == "heartbeat":
            self._task = loop.create_task(self._beat(), name="loop-watchdog")
        else:
            self._was_debug = loop.get_debug()
            loop.set_debug(True)
            loop.slow_callback_duration = self.threshold_ms / 1000.0
            self._handler = _SlowCallbackHandler(self.stats, self.threshold_ms)
            log = logging.getLogger("asyncio")
            self._propagate = log.propagate
            log.propagate = False  # counted here, not printed
            log.addHandler(self._handler)

    async def _beat(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            late_ms = 1000 * (time.perf_counter() - t0 - self.interval_s)
            self.stats.add(max(0.0, late_ms), self.threshold_ms)

    async def stop(self) -> StallStats:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._handler is not None:
            log = logging.getLogger("asyncio")
            log.removeHandler(self._handler)
            log.propagate = self._propagate
            self._handler = None
            if self._loop is not None:
                self._loop.set_debug(self._was_debug)
        return self.stats
