"""``bench duplex``: the whole agent on held-out spoken questions, as a user would meet it.

Every scenario is a scripted user (``duplex.scripted_user``) talking to a fresh session through
the same audio paths as the transports, on the event-queue virtual clock with *measured* compute
(time-accurate: each model step takes, on the timeline, the time it took on this machine), so a
run is faster than real time whenever the models are. Per held-out question ``i``:

- ``answer``: the question, then (0.8 s after the agent starts answering) a backchannel
  ("mm-hm"): response latency = end of the question's last word -> first audible agent audio
  (10 ms windows above -40 dBFS, from the recorded tracks); the backchannel is *kept* when the
  reply is not cancelled;
- ``bargein``: the question, then 0.8 s into the answer a real interruption ("wait, ..."): stop
  latency = the interruption's first word -> start of the agent silence that lasts to the end of
  the interruption (a pause the agent resumes from while the user still talks is not a stop; the
  looser "first 100 ms of agent silence" is reported too);
- ``pause``: a held-out sentence with a 0.5-1.0 s pause inserted where it cannot end ("I would
  really like to ... take a cooking class"): *kept* when the agent is silent from the pause to
  200 ms after the user resumes. ``pause_detail`` says, per pause, when the turn was taken inside it
  and when the agent was heard (a turn taken and cancelled before any audio is still kept), and
  ``pause_turn_taken_rate`` the share of pauses in which the turn was taken at all.

Then ``max_realtime_sessions``: N sessions at once on the real clock (N = 1, 2, ...), each asking
a question; N is real time while no session drops audio, every chunk is decided within
``lag_bar_s`` and playout never runs dry mid-reply.

``head=oracle`` replaces the state head's decisions by the label rules applied to the script
(a diagnostic: what the runtime does with a perfect head); ``untrained=true`` runs the default
architecture with untrained speech input / generator / decoder (compute figures only).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any

import numpy as np

from configs import AgentConfig
from duplex.bench.stats import machine, median, peak_rss_mb, percentile

UNTRAINED = ["speech.weights_card=", "generator.card=unit-generator-random-default", "tts.card=random",
             "tts.plugins={}", "runtime.max_reply_s=4.0"]


def _config(cfg: AgentConfig, untrained: bool) -> AgentConfig:
    from configs.loader import apply_overrides, parse_set_args

    rt = dataclasses.replace(cfg.runtime, metrics_jsonl="")
    cfg = dataclasses.replace(cfg, runtime=rt)
    return apply_overrides(cfg, parse_set_args(UNTRAINED)) if untrained else cfg


def _stop_after(act: np.ndarray, t: float, hop: float = 0.01, quiet: float = 0.1) -> float | None:
    """Start of the first ``quiet`` s of agent silence at or after ``t``."""
    need = int(round(quiet / hop))
    run = 0
    for i in range(int(t / hop), len(act)):
        run = 0 if act[i] else run + 1
        if run >= need:
            return (i - need + 1) * hop
    return None


def _stop_through(act: np.ndarray, onset: float, until: float, hop: float = 0.01) -> float | None:
    """Start of the agent silence that lasts from then to ``until`` (the user's last word)."""
    a, b = int(onset / hop), int(until / hop)
    idx = np.flatnonzero(act[a:b])
    if len(idx) == 0:
        return onset
    last = a + int(idx[-1]) + 1
    return last * hop if last < b else _stop_after(act, until)


def _first_after(act: np.ndarray, t: float, hop: float = 0.01) -> float | None:
    idx = np.flatnonzero(act[int(np.ceil(t / hop)) :])
    return None if len(idx) == 0 else (int(np.ceil(t / hop)) + int(idx[0])) * hop


async def _scenarios(factory, material, n: int, head_mode: str, cfg: AgentConfig, progress: bool) -> dict[str, Any]:
    from duplex.clock import EventClock
    from duplex.scripted_user import Say, TimelineHead, run_script
    from speech_io.webrtc.server import make_detector

    out: dict[str, list] = {"response": [], "early": [], "bargein": [], "bargein_first_silence": [],
                            "bargein_missed": [], "backchannel": [], "pause": [], "parts": [], "tokens": [],
                            "texts": [], "bc_pause_ms": [], "input_s": [], "triggers": [], "pause_detail": []}

    def say(u, name, **kw):
        return Say(u.audio, name=name, words_start=u.start, words_end=u.end, **kw)

    async def run(script, kinds, sid):
        head = TimelineHead(kinds=kinds)
        factory.model.head_override = head if head_mode == "oracle" else None
        try:
            return await run_script(factory, script, EventClock(), detector=make_detector(cfg.vad), session_id=sid,
                                    played=head.played, max_s=40.0, tail_s=0.8)
        finally:
            factory.model.head_override = None

    from tqdm import tqdm

    bar = tqdm(total=3 * n, desc="bench duplex scenarios", disable=not progress)
    for i in range(n):
        q = material.questions[i % len(material.questions)]
        # 1. answer + backchannel
        r = await run([say(q, "question", at=0.3), say(material.backchannels[i], "backchannel", after_agent=0.8)],
                      {"backchannel": "backchannel"}, f"answer-{i}")
        act = r.agent_activity()
        out["input_s"].append(r.duration)
        qp = r.played[0]
        first = _first_after(act, qp.start)
        if first is not None:
            (out["response"] if first >= qp.speech_end else out["early"]).append(1000 * (first - qp.speech_end))
        for rec in r.records:
            if rec.kind == "response" and rec.turn == 0:
                out["parts"].append(rec.parts)
                out["tokens"].append(rec.tokens)
                out["triggers"].append(rec.trigger)
            if rec.kind == "backchannel":
                out["bc_pause_ms"].append(rec.ms)
        texts = [e["text"] for _, e in r.events if e["type"] == "text" and e.get("final")]
        out["texts"].append({"question": q.text, "answer": texts[0] if texts else ""})
        if len(r.played) > 1:
            cancelled = any(e["type"] == "policy" and e.get("action") == "cancel" for _, e in r.events)
            out["backchannel"].append(not cancelled)
        bar.update()
        # 2. barge-in
        r = await run([say(q, "question", at=0.3), say(material.bargeins[i], "bargein", after_agent=0.8)], {},
                      f"bargein-{i}")
        out["input_s"].append(r.duration)
        act = r.agent_activity()
        if len(r.played) > 1:
            onset = r.played[1].speech_start
            if act[max(0, int((onset - 0.2) / 0.01)) : int(onset / 0.01)].any():
                for key, stop in (("bargein", _stop_through(act, onset, r.played[1].speech_end)),
                                  ("bargein_first_silence", _stop_after(act, onset))):
                    out[key].append(1000 * ((stop if stop is not None else r.duration) - onset))
            else:
                out["bargein_missed"].append(i)  # the agent had already stopped
        bar.update()
        # 3. mid-turn pause
        if i < len(material.pauses):
            p = material.pauses[i]
            r = await run([Say(p.audio, name="pause", at=0.3, words_start=p.start, words_end=p.end)], {},
                          f"pause-{i}")
            out["input_s"].append(r.duration)
            act = r.agent_activity()
            t0 = 0.3 + p.pause_start
            t1 = 0.3 + p.resume + 0.2
            a = int(t0 / 0.01)
            heard_idx = np.flatnonzero(act[a : int(t1 / 0.01)])
            kept = len(heard_idx) == 0
            out["pause"].append(kept)
            # Why a pause was lost: when the turn was taken inside it and when the agent was heard.
            taken = [e["t"] for _, e in r.events if e["type"] == "state" and e.get("state") == "thinking"
                     and t0 <= e["t"] < t1]
            out["pause_detail"].append({
                "pause_s": round(p.resume - p.pause_start, 3), "kept": kept,
                "taken_after_s": round(taken[0] - t0, 3) if taken else None,
                "heard_after_s": None if kept else round(0.01 * (a + int(heard_idx[0])) - t0, 3)})
        bar.update()
    bar.close()
    return out


async def _realtime_sessions(factory, material, cfg: AgentConfig, max_n: int, lag_bar_s: float) -> dict[str, Any]:
    from duplex.clock import RealClock
    from duplex.scripted_user import Say, run_script
    from speech_io.webrtc.server import make_detector

    results = {}
    best = 0
    for n in range(1, max_n + 1):
        scripts = [[Say(material.questions[j % len(material.questions)].audio, at=0.3 + 0.37 * j, name="q")]
                   for j in range(n)]
        runs = await asyncio.gather(*[
            run_script(factory, s, RealClock(), detector=make_detector(cfg.vad), session_id=f"rt{n}-{j}",
                       max_s=12.0, tail_s=0.5) for j, s in enumerate(scripts)])
        stats = [r.session.stats() for r in runs]  # type: ignore[attr-defined]
        lag = max(s["listen_lag_max_ms"] for s in stats) / 1000
        dropped = sum(s["dropped_chunks"] for s in stats)
        underruns = sum(s["underruns"] for s in stats)
        ok = dropped == 0 and lag <= lag_bar_s and underruns <= 2 * n
        results[str(n)] = {"listen_lag_max_ms": round(1000 * lag, 1), "dropped_chunks": dropped,
                           "playout_underruns": underruns, "real_time": ok}
        if not ok:
            break
        best = n
    return {"max_realtime_sessions": best, "sessions": results}


def _llm_speed(factory) -> float:
    """Reply tokens per second of the LLM right now, on one thread (the machine's current speed)."""
    import torch

    m = factory.model
    st = m.new_state()
    torch.set_num_threads(1)
    m.listen_chunks(st, np.zeros(4 * m.chunk_samples, np.float32), [False] * 4)
    m.begin_reply(st, 0)
    m.decode(st, 2)
    t0 = time.perf_counter()
    got = m.decode(st, 8)
    return len(got.tokens) / max(1e-9, time.perf_counter() - t0)


def run(cfg: AgentConfig, n: int = 20, head: str = "model", untrained: bool = False, max_sessions: int = 4,
        lag_bar_s: float = 0.35, progress: bool = True, realtime: bool = True, compute_scale: float = 1.0) -> dict:
    """Scenario figures over ``n`` held-out questions, then the concurrent-session measurement.

    ``compute_scale`` multiplies the measured compute charged to the virtual clock in the scenarios
    (e.g. 0.25 asks "on a machine 4x faster than this one right now"); reported, never hidden."""
    if head not in ("model", "oracle"):
        raise ValueError(f"head must be model or oracle, got {head!r}")
    from agent.duplex_model import runtime_llm_config
    from duplex.bench.heldout import heldout_material
    from duplex.session import DuplexAgentFactory
    from duplex.watchdog import LoopWatchdog

    cfg = _config(cfg, untrained)
    llm_cfg = runtime_llm_config(cfg)
    t_load = time.perf_counter()
    factory = DuplexAgentFactory.from_config(cfg, watchdog=False)
    factory.tune_process()
    load_s = time.perf_counter() - t_load
    from duplex.workers import CostModel

    for w in factory.workers:
        w.cost_model = CostModel.measured(compute_scale)
    material = heldout_material(cfg, n)
    load_before = os.getloadavg()
    llm_tok_s = _llm_speed(factory)

    async def main() -> tuple[dict, dict, Any, dict]:
        await factory.warmup()
        dog = LoopWatchdog(cfg.runtime.stall_ms, mode="callbacks")
        dog.start()
        t0 = time.perf_counter()
        sc = await _scenarios(factory, material, n, head, cfg, progress)
        wall = time.perf_counter() - t0
        stalls = await dog.stop()
        compute = {f"{w.name}.{k}": v for w in factory.workers for k, v in w.summary().items()}
        total_compute = sum(st.seconds for w in factory.workers for st in w.stats.values())
        total_cpu = sum(st.cpu_seconds for w in factory.workers for st in w.stats.values())
        chunk_ms = {f"{w.name}.{k}": v.seconds for w in factory.workers for k, v in w.stats.items()}
        rt: dict[str, Any] = {"max_realtime_sessions": None, "sessions": {}}
        if realtime:
            for w in factory.workers:
                w.stats.clear()
                w.cost_model = CostModel.measured()
            factory.model.head_override = None
            rt = await _realtime_sessions(factory, material, cfg, max_sessions, lag_bar_s)
        await factory.aclose()
        sc["wall_s"] = wall
        sc["compute_s"] = total_compute
        sc["cpu_s"] = total_cpu
        return sc, {"compute": compute, "chunk_seconds": chunk_ms}, stalls, rt

    sc, compute, stalls, rt = asyncio.run(main())
    input_s = float(sum(sc["input_s"]))
    resp = sc["response"]
    parts = {k: median([p[k] for p in sc["parts"]]) for k in (sc["parts"][0] if sc["parts"] else {})}
    bc = sc["backchannel"]
    pauses = sc["pause"]
    barge = sc["bargein"]
    return {
        "response_ms_p50": median(resp) if resp else None,
        "response_ms_p90": percentile(resp, 90) if resp else None,
        "response_ms_mean": float(np.mean(resp)) if resp else None,
        "response_parts_ms_p50": parts,
        "reply_tokens_before_speech_p50": median(sc["tokens"]) if sc["tokens"] else None,
        "turn_triggers": {t: sc["triggers"].count(t) for t in set(sc["triggers"])},
        "early_starts": len(sc["early"]),
        "no_answer": n - len(resp) - len(sc["early"]),
        "bargein_stop_ms_p50": median(barge) if barge else None,
        "bargein_stop_ms_p90": percentile(barge, 90) if barge else None,
        "bargein_first_silence_ms_p90": percentile(sc["bargein_first_silence"], 90) if barge else None,
        "bargein_cases": len(barge),
        "bargein_agent_already_silent": len(sc["bargein_missed"]),
        "backchannel_kept_rate": float(np.mean(bc)) if bc else None,
        "backchannel_cases": len(bc),
        "backchannel_pause_ms_p50": median(sc["bc_pause_ms"]) if sc["bc_pause_ms"] else None,
        "pause_kept_rate": float(np.mean(pauses)) if pauses else None,
        "pause_cases": len(pauses),
        "pause_turn_taken_rate": (float(np.mean([d["taken_after_s"] is not None for d in sc["pause_detail"]]))
                                  if pauses else None),
        "pause_detail": sc["pause_detail"],
        "rtf": sc["compute_s"] / input_s if input_s else None,
        "rtf_cpu": sc["cpu_s"] / input_s if input_s else None,
        "rtf_wall": sc["wall_s"] / input_s if input_s else None,
        "stalls_over_20ms": stalls.over_20ms,
        "stalls_over_50ms": stalls.over_50ms,
        "stall_max_ms": round(stalls.max_ms, 2),
        "stall_worst": stalls.worst,
        "max_realtime_sessions": rt["max_realtime_sessions"],
        "realtime_sessions": rt["sessions"],
        "compute_per_stage": compute["compute"],
        "answers": sc["texts"][:5],
        "questions": n,
        "material": material.source,
        "head": head,
        "untrained": untrained,
        "input_audio_s": round(input_s, 2),
        "compute_scale": compute_scale,
        "llm_dtype": llm_cfg.dtype,
        "llm_weights": llm_cfg.weights,
        "llm_decode_tok_s_1thread_now": round(llm_tok_s, 1),
        "model_load_s": round(load_s, 2),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "machine": machine(),
    }
