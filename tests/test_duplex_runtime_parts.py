"""The runtime's parts without models: virtual clock, workers, frames, playout buffer, turn policy,
watchdog, metrics. Timelines are asserted on the virtual clock (when things happen)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import numpy as np
import pytest

from duplex.clock import EventClock
from duplex.frames import AudioOutFrame, EndOfReply, FrameQueue, Interrupt, SetEmotion, UnitsFrame
from duplex.metrics import MetricsHub, TurnRecord
from duplex.output import OutputBuffer, leading_quiet
from duplex.turn_policy import PolicyConfig, TurnPolicy
from duplex.watchdog import LoopWatchdog
from duplex.workers import LISTEN, REPLY, URGENT, CostModel, ModelWorker

# -- event clock -------------------------------------------------------------------------------


def test_event_clock_wakes_many_sleepers_in_deadline_order_without_waiting():
    clock = EventClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, t: float) -> None:
        await clock.sleep_until(t)
        woke.append((name, clock.now()))

    async def main() -> float:
        t0 = time.perf_counter()
        await asyncio.gather(sleeper("c", 30.0), sleeper("a", 1.5), sleeper("b", 10.0), sleeper("a2", 1.5))
        return time.perf_counter() - t0

    wall = asyncio.run(main())
    assert woke == [("a", 1.5), ("a2", 1.5), ("b", 10.0), ("c", 30.0)]
    assert wall < 1.0  # 30 s of virtual time


def test_event_clock_stands_still_while_held():
    clock = EventClock()
    seen: list[float] = []

    async def ticker() -> None:
        for _ in range(3):
            await clock.sleep(1.0)
            seen.append(clock.now())

    async def main() -> None:
        with clock.hold():
            task = asyncio.create_task(ticker())
            await asyncio.to_thread(time.sleep, 0.05)  # real work outside the loop
            assert clock.now() == 0.0 and not seen
        await task

    asyncio.run(main())
    assert seen == [1.0, 2.0, 3.0]


# -- workers -----------------------------------------------------------------------------------


def test_worker_charges_fixed_cost_on_virtual_clock_and_queues_jobs():
    clock = EventClock()
    worker = ModelWorker("w", threads=0, cost=CostModel.deterministic(a=0.1, b=0.25))
    done: list[tuple[str, float]] = []

    async def job(stage: str) -> None:
        r = await worker.run(stage, lambda: stage.upper(), clock=clock)
        done.append((r, round(clock.now(), 6)))

    async def main() -> None:
        await asyncio.gather(job("a"), job("b"))
        await clock.sleep(1.0)
        await job("a")

    asyncio.run(main())
    worker.close()
    # One thread: b queues behind a; after an idle second a starts at once.
    assert done == [("A", 0.1), ("B", 0.35), ("A", 1.45)]
    assert worker.stats["a"].jobs == 2


def test_worker_counts_wall_and_cpu_time_apart():
    """A job that waits (here: sleeps) takes wall time but almost no CPU; one that computes takes both."""
    import time

    worker = ModelWorker("w", threads=0)

    def spin(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    async def main() -> None:
        await worker.run("wait", time.sleep, 0.2)
        await worker.run("spin", spin, 0.1)

    asyncio.run(main())
    worker.close()
    wait, busy = worker.summary()["wait"], worker.summary()["spin"]
    assert wait["seconds"] >= 0.19 and wait["cpu_seconds"] < 0.05
    assert busy["cpu_seconds"] >= 0.099 and busy["seconds"] >= busy["cpu_seconds"] - 1e-3


def test_worker_runs_urgent_then_listen_then_reply_and_propagates_errors():
    worker = ModelWorker("w", threads=0)
    order: list[str] = []
    gate = __import__("threading").Event()

    def boom() -> None:
        raise ValueError("bad chunk")

    async def main() -> None:
        blocker = asyncio.create_task(worker.run("block", gate.wait))
        await asyncio.sleep(0.05)  # the worker is busy with the blocker
        jobs = [asyncio.create_task(worker.run(n, order.append, n, priority=p))
                for n, p in (("reply", REPLY), ("listen", LISTEN), ("urgent", URGENT))]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(blocker, *jobs)
        with pytest.raises(ValueError, match="bad chunk"):
            await worker.run("x", boom)

    asyncio.run(main())
    worker.close()
    assert order == ["urgent", "listen", "reply"]


def _merge_jobs(clock):
    """Three mergeable jobs and a plain one queued behind a blocker; returns (calls, results, worker)."""
    worker = ModelWorker("w", threads=0)
    calls: list[list[str]] = []
    gate = __import__("threading").Event()

    def listen_many(names: list[str]) -> list[str]:
        calls.append(list(names))
        if "bad" in names:
            raise ValueError(f"bad chunk among {names}")
        return [n.upper() for n in names]

    async def main() -> list:
        blocker = asyncio.create_task(worker.run("block", gate.wait, clock=clock))
        await asyncio.sleep(0.05)
        jobs = [asyncio.create_task(worker.run("listen", listen_many, n, clock=clock, priority=LISTEN, merge=True))
                for n in ("a", "b", "bad", "c")]
        jobs.append(asyncio.create_task(worker.run("other", lambda: "plain", clock=clock, priority=LISTEN)))
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(main())
    worker.close()
    return calls, results, worker


def test_worker_merges_queued_jobs_of_one_function_into_one_call_and_keeps_errors_apart():
    """Listening steps of several sessions queued together share one call (one LLM pass); a call
    that raises is rerun job by job, so only the bad job fails."""
    from duplex.clock import RealClock

    calls, results, worker = _merge_jobs(RealClock())
    assert calls[0] == ["a", "b", "bad", "c"]  # one call for all four, in queue order
    assert calls[1:] == [["a"], ["b"], ["bad"], ["c"]]  # it raised: each alone
    assert results[:2] == ["A", "B"] and results[3:] == ["C", "plain"]
    assert isinstance(results[2], ValueError) and "['bad']" in str(results[2])
    assert worker.stats["listen"].jobs == 3 and worker.stats["other"].jobs == 1


def test_worker_does_not_merge_jobs_on_a_virtual_clock():
    calls, results, _ = _merge_jobs(EventClock())
    assert calls == [["a"], ["b"], ["bad"], ["c"]]
    assert results[:2] == ["A", "B"] and isinstance(results[2], ValueError) and results[3:] == ["C", "plain"]


def test_a_merged_call_charges_each_job_its_share():
    from duplex.clock import RealClock

    worker = ModelWorker("w", threads=0)
    gate = __import__("threading").Event()

    def slow_many(xs: list[int]) -> list[int]:
        time.sleep(0.2)
        return xs

    async def main() -> None:
        blocker = asyncio.create_task(worker.run("block", gate.wait))
        await asyncio.sleep(0.05)
        jobs = [asyncio.create_task(worker.run("m", slow_many, i, clock=RealClock(), merge=True)) for i in range(4)]
        await asyncio.sleep(0.05)
        gate.set()
        assert await asyncio.gather(*jobs) == [0, 1, 2, 3]
        await blocker

    asyncio.run(main())
    worker.close()
    st = worker.stats["m"]
    assert st.jobs == 4 and 0.19 <= st.seconds <= 0.35  # 0.2 s once, not 0.8 s


# -- frames ------------------------------------------------------------------------------------


def test_frame_queue_control_jumps_and_interrupt_drops_reply_data():
    q = FrameQueue()
    u = lambda r, i: UnitsFrame(r, i, np.zeros(4, np.int64), True)  # noqa: E731
    q.put(u(0, 0))
    q.put(u(0, 1))
    q.put(SetEmotion("sad"))
    assert isinstance(q.get_nowait(), SetEmotion)  # control first
    assert q.interrupt(0) == 2
    q.put(u(0, 2))  # late data of the cancelled reply: dropped on arrival
    q.put(AudioOutFrame(1, np.zeros(10, np.float32), 22050))
    q.put(EndOfReply(1))
    first, second, third = q.get_nowait(), q.get_nowait(), q.get_nowait()
    assert isinstance(first, Interrupt) and first.reply == 0
    assert isinstance(second, EndOfReply)
    assert isinstance(third, AudioOutFrame) and third.reply == 1
    assert q.get_nowait() is None and q.dropped == 3


# -- playout buffer ----------------------------------------------------------------------------


def test_output_stop_fades_in_10ms_and_flushes():
    out = OutputBuffer(22050, fade_ms=10)
    out.push(0, np.full(22050, 0.5, np.float32))
    first = out.pop()
    assert first is not None and np.allclose(first.frame.samples, 0.5)
    dropped = out.stop()
    assert dropped > 20000
    faded = out.pop()
    assert faded is not None
    x = faded.frame.samples[:, 0]
    n = int(22050 * 0.01)
    assert x[0] == pytest.approx(0.5) and np.all(np.diff(x[:n]) < 0)  # a ramp down over 10 ms
    assert np.all(x[n:] == 0.0)
    assert out.pop() is None and not out.has_audio()


def test_output_stop_while_paused_plays_nothing_more():
    out = OutputBuffer(22050, fade_ms=10)
    out.push(0, np.full(22050, 0.5, np.float32))
    out.pop()
    out.pause()
    assert out.pop() is not None  # the fade-out frame
    out.stop()
    assert out.pop() is None and not out.has_audio()


def test_output_pause_resume_loses_nothing_but_the_faded_ms():
    out = OutputBuffer(22050, fade_ms=10)
    signal = np.sin(np.arange(22050) / 7.0).astype(np.float32) * 0.3
    out.push(0, signal, final=True)
    got = [out.pop().frame.samples[:, 0] for _ in range(3)]
    out.pause()
    fade = out.pop().frame.samples[:, 0]
    assert out.pop() is None and out.pop() is None  # paused: silence
    out.resume()
    rest = []
    ended = None
    while (pf := out.pop()) is not None:
        rest.append(pf.frame.samples[:, 0])
        ended = pf.ended_reply if pf.ended_reply is not None else ended
    n = int(22050 * 0.01)
    played = np.concatenate(got + [fade[:n]] + rest)[: len(signal)]
    assert ended == 0
    np.testing.assert_allclose(played[: 3 * 441], signal[: 3 * 441])
    np.testing.assert_allclose(played[3 * 441 + 2 * n :], signal[3 * 441 + 2 * n :], atol=1e-7)


def test_output_sanitises_nan_and_clips():
    out = OutputBuffer(22050)
    out.push(0, np.array([np.nan, np.inf, -np.inf, 3.0, -3.0] * 100, np.float32))
    x = out.pop().frame.samples
    assert np.all(np.isfinite(x)) and x.max() <= 1.0 and x.min() >= -1.0


# -- turn policy -------------------------------------------------------------------------------

F = 0.02


def _frames(policy: TurnPolicy, t0: float, t1: float, active: bool) -> list:
    acts = []
    t = t0
    while t < t1 - 1e-9:
        acts += policy.on_frame(t + F, F, active, 0.1 if active else 0.0)
        t += F
    return acts


def test_leading_quiet_keeps_10ms_before_the_first_sound():
    rate = 22050
    x = np.zeros(rate // 4, np.float32)  # 250 ms
    x[: rate // 10] = 1e-4  # 100 ms of -80 dBFS hiss, then a tone from 100 ms
    x[rate // 10 :] = 0.1 * np.sin(2 * np.pi * 200 * np.arange(len(x) - rate // 10) / rate)
    thr = 10 ** (-45 / 20)
    cut = leading_quiet(x, rate, thr)
    assert abs(cut / rate - 0.09) <= 0.006  # the onset at 100 ms, less the 10 ms kept
    assert leading_quiet(x[: rate // 10], rate, thr) == rate // 10  # all quiet: all of it
    assert leading_quiet(x[rate // 10 :], rate, thr) == 0  # loud from the start: nothing
    assert leading_quiet(np.zeros(0, np.float32), rate, thr) == 0


def test_policy_takes_turn_on_head_only_after_user_speech():
    p = TurnPolicy(PolicyConfig(fallback_silence_s=0))
    assert p.on_chunk(0.16, (0.1, 0.8, 0.1)) == []  # nobody spoke yet
    _frames(p, 0.16, 1.0, True)
    assert p.on_chunk(1.0, (0.1, 0.8, 0.1)) == []  # still speaking at the chunk's end
    _frames(p, 1.0, 1.12, False)
    acts = p.on_chunk(1.12, (0.1, 0.8, 0.1))
    assert [a.kind for a in acts] == ["take_turn"] and acts[0].trigger == "state_head"
    assert acts[0].detail["user_end"] == pytest.approx(1.0)
    assert p.mode == "thinking"


def test_policy_fallback_takes_turn_after_silence_timeout_and_user_resuming_cancels():
    p = TurnPolicy(PolicyConfig(fallback_silence_s=1.2))
    _frames(p, 0.0, 1.0, True)
    acts = _frames(p, 1.0, 3.0, False)
    assert [(a.kind, a.trigger, round(a.t, 2)) for a in acts] == [("take_turn", "silence_timeout", 2.2)]
    acts = _frames(p, 3.0, 3.1, True)
    assert [a.kind for a in acts] == ["cancel_reply"] and acts[0].t == pytest.approx(3.04)
    assert p.mode == "listening" and p.user_spoke


def test_policy_pauses_on_onset_then_barges_in_or_resumes():
    cfg = PolicyConfig(onset_s=0.04, resume_after_s=0.16, bargein_max_s=0.6)
    p = TurnPolicy(cfg)
    p.agent_thinking()
    p.agent_speaking()
    acts = _frames(p, 5.0, 5.1, True)
    assert [(a.kind, round(a.t, 2)) for a in acts] == [("pause_output", 5.04)]
    assert p.on_chunk(5.12, (0.9, 0.05, 0.05)) == []  # the head: a real turn, once: wait for a second
    _frames(p, 5.1, 5.28, True)
    acts = p.on_chunk(5.28, (0.9, 0.05, 0.05))
    assert [a.kind for a in acts] == ["barge_in"] and acts[0].detail["user_start"] == pytest.approx(5.0)
    assert p.mode == "listening"
    # A single *continue* between *reject*s (the head's early doubt on "okay.") is no barge-in.
    b = TurnPolicy(cfg)
    b.agent_thinking()
    b.agent_speaking()
    _frames(b, 5.0, 5.12, True)
    assert b.on_chunk(5.12, (0.1, 0.0, 0.9)) == []
    _frames(b, 5.12, 5.28, True)
    assert b.on_chunk(5.28, (0.9, 0.0, 0.1)) == []
    _frames(b, 5.28, 5.44, True)
    assert b.on_chunk(5.44, (0.1, 0.0, 0.9)) == []
    acts = _frames(b, 5.44, 5.7, False)
    assert [(a.kind, a.trigger) for a in acts] == [("resume_output", "vad_end")]
    # With one chunk allowed (the previous behaviour), the same flip is a barge-in.
    b = TurnPolicy(dataclasses.replace(cfg, bargein_confirm_chunks=1))
    b.agent_thinking()
    b.agent_speaking()
    _frames(b, 5.0, 5.12, True)
    assert [a.kind for a in b.on_chunk(5.12, (0.9, 0.0, 0.1))] == ["barge_in"]
    # A backchannel: pause, the head rejects while it lasts, resume once it is over.
    q = TurnPolicy(cfg)
    q.agent_thinking()
    q.agent_speaking()
    _frames(q, 5.0, 5.12, True)
    assert q.on_chunk(5.12, (0.1, 0.1, 0.8)) == []  # still sounding: hold, do not talk over it
    assert _frames(q, 5.12, 5.4, True) == []  # 0.4 s in all: under reject_max_s, no barge-in
    acts = _frames(q, 5.4, 5.7, False)
    assert [(a.kind, a.trigger, round(a.t, 2)) for a in acts] == [("resume_output", "vad_end", 5.56)]
    # Without the hold, the reject resumes at once and the rest of the run does not pause again.
    q = TurnPolicy(dataclasses.replace(cfg, hold_on_reject=False))
    q.agent_thinking()
    q.agent_speaking()
    _frames(q, 5.0, 5.06, True)
    acts = q.on_chunk(5.12, (0.1, 0.1, 0.8))
    assert [a.kind for a in acts] == ["resume_output"]
    assert _frames(q, 5.06, 5.3, True) == []
    # A short sound with no verdict: resume after 160 ms of quiet.
    r = TurnPolicy(cfg)
    r.agent_thinking()
    r.agent_speaking()
    _frames(r, 5.0, 5.08, True)
    acts = _frames(r, 5.08, 5.4, False)
    assert [(a.kind, round(a.t, 2)) for a in acts] == [("resume_output", 5.24)]


def test_policy_long_activity_barges_in_without_the_head():
    p = TurnPolicy(PolicyConfig(bargein_max_s=0.6))
    p.agent_thinking()
    p.agent_speaking()
    acts = _frames(p, 1.0, 2.0, True)
    assert [(a.kind, a.trigger, round(a.t, 2)) for a in acts] == [("pause_output", "vad", 1.04), ("barge_in", "vad_long", 1.6)]


def test_policy_activity_sums_over_short_gaps_and_outlasts_a_wrong_reject():
    cfg = PolicyConfig(bargein_max_s=0.6, reject_max_s=1.0, resume_after_s=0.16)
    # Words with 100 ms gaps between them: one candidate; 0.6 s of speech is a barge-in.
    p = TurnPolicy(cfg)
    p.agent_thinking()
    p.agent_speaking()
    acts = []
    for k in range(4):
        acts += _frames(p, 1.0 + 0.3 * k, 1.2 + 0.3 * k, True) + _frames(p, 1.2 + 0.3 * k, 1.3 + 0.3 * k, False)
    assert [(a.kind, a.trigger, round(a.t, 2)) for a in acts] == [("pause_output", "vad", 1.04), ("barge_in", "vad_long", 1.8)]
    # The head says reject early in a real turn: the agent stays paused and barges in at 1 s.
    q = TurnPolicy(cfg)
    q.agent_thinking()
    q.agent_speaking()
    _frames(q, 1.0, 1.12, True)
    assert q.on_chunk(1.12, (0.2, 0.1, 0.7)) == []
    acts = _frames(q, 1.12, 2.5, True)
    assert [(a.kind, a.trigger, round(a.t, 2)) for a in acts] == [("barge_in", "vad_long", 2.0)]
    assert acts[0].detail["user_start"] == pytest.approx(1.0)
    # Resumed after a pause in the user's speech, then paused again at once: the same run, so the
    # activity before the resume still counts (0.4 + 0.6 s).
    r = TurnPolicy(cfg)
    r.agent_thinking()
    r.agent_speaking()
    _frames(r, 1.0, 1.12, True)
    r.on_chunk(1.12, (0.2, 0.1, 0.7))
    _frames(r, 1.12, 1.4, True)
    acts = _frames(r, 1.4, 1.6, False)
    assert [(a.kind, round(a.t, 2)) for a in acts] == [("resume_output", 1.56)]
    acts = _frames(r, 1.6, 2.5, True)
    assert [(a.kind, a.trigger, round(a.t, 2)) for a in acts] == [("pause_output", "vad", 1.64), ("barge_in", "vad_long", 2.2)]


# -- watchdog and metrics ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["heartbeat", "callbacks"])
def test_watchdog_counts_a_blocking_callback(mode):
    async def main():
        dog = LoopWatchdog(20.0, interval_s=0.005, mode=mode)
        dog.start()
        await asyncio.sleep(0.03)
        time.sleep(0.07)  # noqa: ASYNC251 - blocks the loop on purpose: what the watchdog must catch
        await asyncio.sleep(0.03)
        return await dog.stop()

    stats = asyncio.run(main())
    assert stats.over_50ms >= 1 and stats.max_ms >= 60


def test_metrics_jsonl_and_prometheus(tmp_path):
    hub = MetricsHub(tmp_path / "m" / "turns.jsonl")
    hub.record(TurnRecord("s", 0, "response", 1.0, ms=420.0, parts={"endpoint": 150, "llm": 120}))
    hub.record(TurnRecord("s", 0, "bargein", 2.0, ms=180.0))
    lines = (tmp_path / "m" / "turns.jsonl").read_text().splitlines()
    assert [json.loads(x)["kind"] for x in lines] == ["response", "bargein"]
    text = hub.prometheus()
    assert "duplex_turns_total 1" in text and "duplex_bargeins_total 1" in text
    assert 'duplex_response_latency_seconds_bucket{le="0.5"} 1' in text
    assert 'duplex_response_latency_seconds_bucket{le="0.4"} 0' in text
    assert 'duplex_response_part_seconds_count{part="llm"} 1' in text
    for line in text.splitlines():  # every sample line is "name[{labels}] value"
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            float(value)
            assert name.startswith("duplex_")
