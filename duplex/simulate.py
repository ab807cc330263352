"""``duplex-agent simulate``: the agent against held-out scripted users over a simulated network,
swept over one-way delays, with the generator's predicted-user chunk on and off.

Every call runs on the event-queue virtual clock (``duplex.clock.EventClock``), so a sweep runs as
fast as the models compute. With ``sim.compute=fixed`` each model job is charged a fixed cost per
stage (``sim.fixed_costs``) and the whole sweep is deterministic: the same seed gives the same
report, byte for byte. ``sim.compute=measured`` charges what each job took on this machine
(x ``sim.compute_scale``): time-accurate, not reproducible.

Layout of ``--out``::

    dialogues/                 the synthesized held-out scripted dialogues (unless --data)
    runs/<delay>ms-<on|off>/   <id>.wav (stereo 16 kHz: user left, agent as heard right),
                               <id>.events.jsonl, <id>.json (per-call outcomes; resumable)
    report.json, report.md, metrics_vs_delay.png, fto_hist.png, timing.json
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from configs import AgentConfig, ConfigError
from configs.schema import ChannelConfig

SETTINGS = (("on", True), ("off", False))


def _validate(cfg: AgentConfig, delays: list[float]) -> None:
    s = cfg.sim
    if s.words not in ("whisper", "vad"):
        raise ConfigError(f"sim.words must be whisper or vad, got {s.words!r}")
    if s.head not in ("model", "oracle"):
        raise ConfigError(f"sim.head must be model or oracle, got {s.head!r}")
    if s.compute not in ("fixed", "measured"):
        raise ConfigError(f"sim.compute must be fixed or measured, got {s.compute!r}")
    if not delays or any(d < 0 for d in delays):
        raise ConfigError("delays must be a non-empty list of one-way delays >= 0 ms")


def _channel(cfg: AgentConfig, delay_ms: float, salt: int) -> ChannelConfig:
    return dataclasses.replace(cfg.sim.network, delay_ms=delay_ms, seed=cfg.sim.seed * 100003 + salt)


def _channel_setup(cfg: AgentConfig) -> dict[str, Any]:
    net = {k: v for k, v in dataclasses.asdict(cfg.sim.network).items() if k not in ("delay_ms", "seed")}
    return {**net, "buffer_ms": cfg.sim.buffer_ms, "seed": cfg.sim.seed}


def _factory(cfg: AgentConfig):
    from duplex.session import DuplexAgentFactory
    from duplex.workers import CostModel

    s = cfg.sim
    cost = CostModel.deterministic(**s.fixed_costs) if s.compute == "fixed" else CostModel.measured(s.compute_scale)
    rt = dataclasses.replace(cfg.runtime, metrics_jsonl="")
    factory = DuplexAgentFactory.from_config(dataclasses.replace(cfg, runtime=rt), cost=cost, watchdog=False)
    factory.tune_process()
    return factory


def _words(cfg: AgentConfig, judge: Any, audio: np.ndarray, segments: list[tuple[float, float]]) -> list[Any]:
    from duplex.sim_metrics import judge_words, vad_words

    if cfg.sim.words == "vad" or not segments:
        return vad_words(segments)
    return judge_words(judge, audio, segments=segments)


def dialogues_for(cfg: AgentConfig, out: Path, data: str | None, n: int, progress: bool):
    from duplex.sim_dialogues import load_dialogues, synthesize_heldout

    if data is None:
        data = str(synthesize_heldout(cfg, out / "dialogues", n, seed=cfg.sim.seed, progress=progress))
    dialogues = load_dialogues(data, n)
    if len(dialogues) < n:
        raise ConfigError(f"{data} has only {len(dialogues)} held-out dialogues, {n} asked for")
    return dialogues


class _Caller:
    """Runs single calls of a sweep and stores each one's wav, events and outcome (one process)."""

    def __init__(self, cfg: AgentConfig, out: Path, dialogues: list[Any]) -> None:
        import torch

        from speech_io.vad import make_backend

        torch.set_num_threads(1)
        self.cfg, self.out, self.dialogues = cfg, out, dialogues
        self.factory = _factory(cfg)
        self.head: list[tuple[int, list[float]]] = []
        self.factory.model.listen_observer = lambda st, k, p: self.head.append((int(k), [float(x) for x in p]))
        self.judge = None
        if cfg.sim.words == "whisper":
            from agent.judge import WhisperJudge

            self.judge = WhisperJudge(dataclasses.replace(cfg.judge, num_threads=cfg.sim.judge_threads,
                                                          compute_type=cfg.sim.judge_compute_type))
        self.backend = make_backend(cfg.vad.backend, cfg.vad.aggressiveness, cfg.vad.frame_ms)

    def call(self, delay: float, name: str, predict: bool, i: int) -> dict[str, Any]:
        import torch

        from duplex.sim_metrics import agent_segments, score_call
        from speech_io.wav import write_wav
        from training.data.manifest import atomic_write_text

        cfg, d = self.cfg, self.dialogues[i]
        self.head.clear()
        self.factory.model.head_override = oracle_head(d.labels) if cfg.sim.head == "oracle" else None
        torch.manual_seed(cfg.sim.seed * 1009 + i)
        t0 = time.perf_counter()
        res = asyncio.run(_one_call(cfg, self.factory, d, delay, predict, i))
        seconds = time.perf_counter() - t0
        segs = agent_segments(res.heard, 16000, self.backend)
        words = _words(cfg, self.judge, res.heard, segs)
        scored = score_call(d, words, segs, list(self.head))
        scored.update(id=d.id, uplink=res.uplink, downlink=res.downlink,
                      agent_words=[[w.text, round(w.start, 3), round(w.end, 3)] for w in words])
        done = _done_path(self.out, delay, name, d.id)
        write_wav(done.with_suffix(".wav"), np.stack([res.user, res.heard], axis=1), 16000)
        lines = [json.dumps({"at": round(t, 4), **e}, sort_keys=True, default=str) for t, e in res.events]
        atomic_write_text(done.with_suffix(".events.jsonl"), "\n".join(lines) + "\n")
        atomic_write_text(done, json.dumps(scored, sort_keys=True))  # last: marks the call done
        return {"calls_run": 1, "calls_wall_s": seconds, "simulated_audio_s": res.duration}

    def close(self) -> None:
        self.factory.close()


_WORKER: dict[str, _Caller] = {}
"""The one caller of a ``--workers`` subprocess (set by its initializer; empty in the parent)."""


def _init_worker(cfg: AgentConfig, out: Path, data_dir: str, n: int) -> None:
    from duplex.sim_dialogues import load_dialogues

    _WORKER["caller"] = _Caller(cfg, out, load_dialogues(data_dir, n))


def _worker_call(job: tuple[float, str, bool, int]) -> dict[str, Any]:
    return _WORKER["caller"].call(*job)


def _done_path(out: Path, delay: float, name: str, dialogue_id: str) -> Path:
    return out / "runs" / f"{int(round(delay))}ms-{name}" / f"{dialogue_id}.json"


def run_sweep(cfg: AgentConfig, out: str | Path, *, data: str | None = None, delays: list[float] | None = None,
              n: int | None = None, progress: bool = True, workers: int = 1) -> dict[str, Any]:
    """Run (or finish: per-call results are kept) the sweep; write the report; return it.

    ``workers`` > 1 runs calls in that many processes (each loads the models once): every call is
    seeded by its own index, so the report does not depend on how calls were spread."""
    from tqdm import tqdm

    from duplex.sim_metrics import pool, reference_fto
    from duplex.sim_report import write_report
    from training.data.manifest import atomic_write_text

    delays = list(cfg.sim.delays_ms if delays is None else delays)
    n = cfg.sim.dialogues if n is None else n
    _validate(cfg, delays)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    dialogues = dialogues_for(cfg, out, data, n, progress)
    t_data = time.perf_counter() - t_start
    data_dir = data or str(out / "dialogues")
    jobs = [(delay, name, predict, i) for delay in delays for name, predict in SETTINGS for i in range(len(dialogues))]
    pending = [j for j in jobs if not _done_path(out, j[0], j[1], dialogues[j[3]].id).exists()]
    stats = {"calls_run": 0, "calls_wall_s": 0.0, "simulated_audio_s": 0.0}
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(pending), desc="simulate", disable=not progress)
    try:
        if workers > 1 and len(pending) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(cfg, out, data_dir, n)) as pool_:
                futures = [pool_.submit(_worker_call, j) for j in pending]
                for f in as_completed(futures):
                    for k, v in f.result().items():
                        stats[k] += v
                    bar.update()
        elif pending:
            caller = _Caller(cfg, out, dialogues)
            try:
                for j in pending:
                    for k, v in caller.call(*j).items():
                        stats[k] += v
                    bar.update()
            finally:
                caller.close()
    finally:
        bar.close()
    calls = {(delay, name): [json.loads(_done_path(out, delay, name, d.id).read_text()) for d in dialogues]
             for delay in delays for name, _ in SETTINGS}
    report: dict[str, Any] = {"delays": {}}
    for delay in delays:
        report["delays"][_key(delay)] = {name: pool(calls[(delay, name)]) for name, _ in SETTINGS}
    report["reference"] = {"fto": reference_fto(dialogues)}
    report["setup"] = {
        "preset": cfg.preset, "dialogues": [d.id for d in dialogues], "data": data or str(out / "dialogues"),
        "channel": _channel_setup(cfg),
        "words": cfg.sim.words, "compute": cfg.sim.compute, "head": cfg.sim.head,
        "judge": (f"{cfg.judge.card} {cfg.sim.judge_compute_type} beam {cfg.judge.beam_size}"
                  if cfg.sim.words == "whisper" else None),
        "fixed_costs": dict(cfg.sim.fixed_costs) if cfg.sim.compute == "fixed" else None,
        "generator": cfg.generator.card, "speech_weights": cfg.speech.weights_card, "tts": cfg.tts.card,
    }
    write_report(report, out)
    wall = time.perf_counter() - t_start
    timing = {"wall_s": round(wall, 2), "synth_s": round(t_data, 2), "workers": workers,
              **{k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()},
              "calls": sum(len(v) for v in calls.values())}
    atomic_write_text(out / "timing.json", json.dumps(timing, indent=1) + "\n")
    return {**report, "timing": timing}


def run_pair_sweep(cfg: AgentConfig, out: str | Path, *, data: str | None = None, delays: list[float] | None = None,
                   n: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Two agents talking to each other over the channel, opened by a held-out user turn; same sweep
    axes. Scored from agent A's side: floor-transfer offsets between A and B as A hears B."""
    import torch
    from tqdm import tqdm

    from duplex import turn_metrics as tm
    from duplex.sim_metrics import MIN_TURN_S, TURN_MERGE_GAP_S, agent_segments, reference_fto
    from duplex.sim_pair import run_pair
    from duplex.sim_report import write_report
    from speech_io.vad import make_backend
    from speech_io.wav import write_wav
    from speech_io.webrtc.server import make_detector
    from training.data.manifest import atomic_write_text

    delays = list(cfg.sim.delays_ms if delays is None else delays)
    n = cfg.sim.dialogues if n is None else n
    _validate(cfg, delays)
    out = Path(out)
    t_start = time.perf_counter()
    dialogues = dialogues_for(cfg, out, data, n, progress)
    torch.set_num_threads(1)
    factory = _factory(cfg)
    backend = make_backend(cfg.vad.backend, cfg.vad.aggressiveness, cfg.vad.frame_ms)
    report: dict[str, Any] = {"mode": "pair", "delays": {}}
    bar = tqdm(total=len(delays) * len(SETTINGS) * len(dialogues), desc="simulate pairs", disable=not progress)
    try:
        for delay in delays:
            point: dict[str, Any] = {}
            for name, predict in SETTINGS:
                fto: list[float] = []
                a_s = b_s = total = 0.0
                for i, d in enumerate(dialogues):
                    u0, u1 = d.user_turns[0] if d.user_turns else (0.0, min(2.0, d.duration))
                    opener = d.user[int(max(0.0, u0 - 0.1) * 16000) : int((u1 + 0.1) * 16000)]
                    torch.manual_seed(cfg.sim.seed * 1009 + i)

                    def set_prediction(session: Any, flag: bool = predict) -> None:
                        session.st.generator.cfg = dataclasses.replace(session.st.generator.cfg, predict_user=flag)

                    res = asyncio.run(run_pair(factory, opener, _channel(cfg, delay, i), seconds=cfg.sim.dialogue_seconds,
                                               buffer_s=cfg.sim.buffer_ms / 1000.0,
                                               detectors=(make_detector(cfg.vad), make_detector(cfg.vad)),
                                               on_session=set_prediction))
                    sa = agent_segments(res.a, 16000, backend)
                    sb = agent_segments(res.b_heard, 16000, backend)
                    fto += tm.floor_transfer_offsets(tm.merge_segments(sa, TURN_MERGE_GAP_S),
                                                     tm.merge_segments(sb, TURN_MERGE_GAP_S), MIN_TURN_S)
                    a_s += sum(e - s for s, e in sa)
                    b_s += sum(e - s for s, e in sb)
                    total += res.duration
                    write_wav(out / "pairs" / f"{int(round(delay))}ms-{name}" / f"{d.id}.wav",
                              np.stack([res.a, res.b_heard + res.opener], axis=1), 16000)
                    bar.update()
                fto = [round(x, 4) for x in fto]
                point[name] = {
                    "pause_tor": None, "turn_taking_tor": None, "interruption_tor": None, "turn_taking_latency_s": None,
                    "fto_median_s": round(float(np.median(fto)), 4) if fto else None,
                    "overlap_rate": round(float(np.mean([x < 0 for x in fto])), 4) if fto else None,
                    "transfers_per_min": round(60 * len(fto) / total, 4) if total else None,
                    "a_speech_share": round(a_s / total, 4) if total else None,
                    "b_speech_share": round(b_s / total, 4) if total else None,
                    "cases": {"floor_transfers": len(fto)}, "fto": fto,
                }
            report["delays"][_key(delay)] = point
    finally:
        bar.close()
        factory.close()
    report["reference"] = {"fto": reference_fto(dialogues)}
    report["setup"] = {
        "preset": cfg.preset, "mode": "two agents", "dialogues": [d.id for d in dialogues],
        "data": data or str(out / "dialogues"),
        "channel": _channel_setup(cfg),
        "words": "vad", "compute": cfg.sim.compute,
        "fixed_costs": dict(cfg.sim.fixed_costs) if cfg.sim.compute == "fixed" else None,
        "generator": cfg.generator.card, "speech_weights": cfg.speech.weights_card, "tts": cfg.tts.card,
    }
    write_report(report, out)
    timing = {"wall_s": round(time.perf_counter() - t_start, 2)}
    atomic_write_text(out / "timing.json", json.dumps(timing, indent=1) + "\n")
    return {**report, "timing": timing}


def oracle_head(labels: np.ndarray, confidence: float = 0.9):
    """A ``DuplexModel.head_override`` that answers chunk k with the scripted label k (continue past the end)."""

    def head(state: Any, k: int, speaking: bool) -> np.ndarray:
        out = np.full(3, (1 - confidence) / 2, np.float32)
        out[int(labels[k]) if k < len(labels) else 0] = confidence
        return out

    return head


def _key(delay: float) -> str:
    return str(int(delay)) if float(delay).is_integer() else str(delay)


async def _one_call(cfg: AgentConfig, factory: Any, d: Any, delay: float, predict: bool, i: int):
    from duplex.sim_run import run_call
    from speech_io.webrtc.server import make_detector

    def set_prediction(session: Any) -> None:
        gen = session.st.generator
        gen.cfg = dataclasses.replace(gen.cfg, predict_user=predict)

    return await run_call(factory, d.user, _channel(cfg, delay, i), buffer_s=cfg.sim.buffer_ms / 1000.0,
                          detector=make_detector(cfg.vad), session_id=f"{d.id}-{int(delay)}-{int(predict)}",
                          tail_s=cfg.sim.tail_s, on_session=set_prediction)
