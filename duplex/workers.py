"""One single-thread worker per model: no torch on the event loop, no two threads in one model.

A :class:`ModelWorker` owns one OS thread. Jobs are plain callables queued by priority (lower
runs first; equal priorities in submission order), so a session's listening step is never stuck
behind a queue of text-decoding steps. The thread sets ``torch.set_num_threads`` for itself when
it starts: with two cores and three model threads, one intra-op thread each lets the models run
side by side instead of fighting over the same cores (measured in ``bench duplex``).

Time: under a real clock a job simply takes the time it takes. Under a virtual
:class:`duplex.clock.EventClock` the clock is held while the job computes (virtual time stands
still), and the result is handed back at ``start + cost`` on the virtual timeline, where ``start``
is when the worker was free (jobs on one worker queue up) and ``cost`` comes from the
:class:`CostModel`: the measured compute time (``measured``, time-accurate offline runs) or a
fixed cost per stage (deterministic timelines for tests).

Merged jobs: a job submitted with ``merge=True`` names a function of a *list* of arguments (one
per job, results in order). When the worker takes such a job it also takes every job of the same
function queued at that moment (other sessions' listening steps) and runs them in one call: the
LLM reads its weights once for all of them. Each job is charged its share of the call. Only under
real clocks: virtual-clock runs keep one job per call, so their timelines do not depend on how
jobs of different sessions happened to meet in real time.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import queue
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from duplex.clock import Clock, EventClock, RealClock

_REAL = RealClock()
_ORDER = itertools.count()  # submission order of all jobs: the tie-break of equal virtual finish times

URGENT, LISTEN, REPLY, BACKGROUND = -1, 0, 1, 2
"""Job priorities (lower first): a reply's first words, listening steps, other reply work, the rest."""


@dataclass
class CostModel:
    """Seconds charged to a virtual clock for a job of ``stage`` that took ``measured`` seconds.

    ``fixed`` (stage -> seconds) wins over measurement for the stages it names; ``scale``
    multiplies measured times (e.g. 2.0 to emulate a machine half as fast).
    """

    fixed: Mapping[str, float] = field(default_factory=dict)
    scale: float = 1.0
    default: float | None = None
    """Charged for stages not in ``fixed`` instead of the measurement (None = measure)."""

    def cost(self, stage: str, measured: float, units: int = 1) -> float:
        if stage in self.fixed:
            return self.fixed[stage] * units
        head = stage.split("+")[0]
        if head in self.fixed:
            # A job that carries another stage's work in the same pass (``listen+decode``) is
            # charged as its first stage: the rider costs (nearly) nothing extra.
            return self.fixed[head] * units
        if self.default is not None:
            return self.default * units
        return measured * self.scale

    @classmethod
    def measured(cls, scale: float = 1.0) -> CostModel:
        return cls(scale=scale)

    @classmethod
    def deterministic(cls, **fixed: float) -> CostModel:
        """Fixed costs; unnamed stages cost nothing."""
        return cls(fixed=dict(fixed), default=0.0)


@dataclass
class StageStats:
    jobs: int = 0
    seconds: float = 0.0
    """Measured compute (wall time in the worker thread)."""
    cpu_seconds: float = 0.0
    """CPU time of the worker thread in those jobs: below ``seconds`` when the thread waited for a
    core (three model threads and the event loop share two)."""
    max_s: float = 0.0
    queued_s: float = 0.0
    """Time jobs waited for the worker (real time)."""


class WorkerClosed(RuntimeError):
    pass


@dataclass
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    fut: asyncio.Future[Any]
    submitted: float
    merge: Callable[[list[Any]], list[Any]] | None = None
    """The list function of a mergeable job (jobs with an equal one share a call); None = alone."""


def _one(fn: Callable[[list[Any]], list[Any]], arg: Any) -> Any:
    return fn([arg])[0]


class ModelWorker:
    """A single thread running jobs for one model, by priority, with per-stage timing."""

    def __init__(self, name: str, *, threads: int = 1, cost: CostModel | None = None,
                 init: Callable[[], None] | None = None) -> None:
        self.name = name
        self.threads = threads
        self.cost_model = cost or CostModel.measured()
        self._queue: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._init = init
        # When the worker is next free, per virtual clock (sessions on different clocks do not share time).
        self._busy_until: weakref.WeakKeyDictionary[EventClock, float] = weakref.WeakKeyDictionary()
        self.stats: dict[str, StageStats] = defaultdict(StageStats)
        self._closed = False
        self._thread = threading.Thread(target=self._main, name=f"model-{name}", daemon=True)
        self._thread.start()

    # -- thread side -----------------------------------------------------------------------
    def _main(self) -> None:
        if self.threads > 0:
            import torch

            torch.set_num_threads(self.threads)
        if self._init is not None:
            self._init()
        while True:
            _, _, job = self._queue.get()
            if job is None:
                return
            if job.fut.cancelled():
                continue
            group = [job] if job.merge is None else [job, *self._take_mergeable(job.merge)]
            if len(group) > 1 and self._run_merged(group):
                continue
            for j in group:
                if not self._run_alone(j):
                    return

    def _run_alone(self, job: _Job) -> bool:
        start, cpu0 = time.perf_counter(), time.thread_time()
        try:
            result: Any = job.fn(*job.args)
            error: BaseException | None = None
        except BaseException as exc:  # handed to the awaiting task
            result, error = None, exc
        end, cpu = time.perf_counter(), time.thread_time() - cpu0
        return self._settle(job, result, error, start, end - start, cpu)

    def _run_merged(self, group: list[_Job]) -> bool:
        """One call for the group; False if it raised (the caller then runs each job alone, so one
        session's error never becomes another's: a merged function must refuse a job before it
        changes any state, as ``DuplexModel.listen_many`` does)."""
        assert group[0].merge is not None
        start, cpu0 = time.perf_counter(), time.thread_time()
        try:
            results = group[0].merge([j.args[0] for j in group])
        except Exception:
            return False
        n = len(group)
        compute, cpu = (time.perf_counter() - start) / n, (time.thread_time() - cpu0) / n
        for j, result in zip(group, results, strict=True):
            self._settle(j, result, None, start, compute, cpu)
        return True

    def _take_mergeable(self, merge: Callable[[list[Any]], list[Any]]) -> list[_Job]:
        """Remove and return the queued jobs that may share ``merge``'s call, in queue order."""
        with self._queue.mutex:  # PriorityQueue's own lock over its heap (``queue``)
            heap = self._queue.queue
            taken = [e for e in heap if e[2] is not None and e[2].merge == merge and not e[2].fut.cancelled()]
            if taken:
                heap[:] = [e for e in heap if not any(e is t for t in taken)]
                heapq.heapify(heap)
        return [e[2] for e in sorted(taken, key=lambda e: (e[0], e[1]))]

    @staticmethod
    def _settle(job: _Job, result: Any, error: BaseException | None, start: float, compute: float,
                cpu: float) -> bool:
        try:
            job.loop.call_soon_threadsafe(_settle_future, job.fut, result, error, start - job.submitted, compute, cpu)
        except RuntimeError:
            return False  # the loop is closed: nobody waits any more
        return True

    # -- loop side -------------------------------------------------------------------------
    async def run(self, stage: str, fn: Callable[..., Any], *args: Any, clock: Clock | None = None,
                  priority: int = REPLY, units: int = 1, merge: bool = False) -> Any:
        """Run ``fn(*args)`` on the worker thread; returns its result (or raises its error).

        ``stage`` names the job for statistics and the cost model; ``units`` scales a fixed
        cost (e.g. tokens decoded in one job); ``clock`` is the caller's session clock (compute is
        charged to it when it is an :class:`EventClock`). ``merge``: ``fn`` takes a list of
        arguments and returns a list of results, ``args`` is this job's one argument, and jobs of
        the same ``fn`` queued together may share a call (see the module doc).
        """
        if self._closed:
            raise WorkerClosed(f"worker {self.name} is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[Any, float, float, float]] = loop.create_future()
        clock = clock or _REAL
        t_submit = clock.now()
        virtual = isinstance(clock, EventClock)
        if merge:
            if len(args) != 1:
                raise TypeError("a merged job takes exactly one argument")
            item = _Job(functools.partial(_one, fn), args, loop, fut, time.perf_counter(), None if virtual else fn)
        else:
            item = _Job(fn, args, loop, fut, time.perf_counter())
        order = next(_ORDER)
        if virtual:
            assert isinstance(clock, EventClock)
            with clock.hold():
                self._queue.put((priority, next(self._seq), item))
                result, queued, compute, cpu = await fut
        else:
            self._queue.put((priority, next(self._seq), item))
            result, queued, compute, cpu = await fut
        st = self.stats[stage]
        st.jobs += 1
        st.seconds += compute
        st.cpu_seconds += cpu
        st.max_s = max(st.max_s, compute)
        st.queued_s += queued
        if virtual:
            # Charge the compute on the virtual timeline: the job starts when both it and the
            # worker are ready, and its result exists `cost` later.
            assert isinstance(clock, EventClock)
            start = max(t_submit, self._busy_until.get(clock, float("-inf")))
            done = start + self.cost_model.cost(stage, compute, units)
            self._busy_until[clock] = done
            await clock.sleep_until(done, order=order)
        return result

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put((10**9, next(self._seq), None))

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def summary(self) -> dict[str, dict[str, float]]:
        return {k: {"jobs": v.jobs, "seconds": round(v.seconds, 4), "cpu_seconds": round(v.cpu_seconds, 4),
                    "max_ms": round(1000 * v.max_s, 2),
                    "mean_ms": round(1000 * v.seconds / max(1, v.jobs), 2)} for k, v in self.stats.items()}


def _settle_future(fut: asyncio.Future[Any], result: Any, error: BaseException | None, queued: float,
                   compute: float, cpu: float) -> None:
    if fut.done():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result((result, queued, compute, cpu))
