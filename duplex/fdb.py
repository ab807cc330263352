"""``duplex-agent eval fdb --data DIR``: the agent on a Full-Duplex-Bench v1/v1.5 style tree.

Layout (as the benchmark's dataset README and evaluation scripts define it): one folder per
sample holding ``input.wav`` (the user's stream) and the task's annotation:

- ``pause.json``: ``[{"text": "[PAUSE]", "timestamp": [start, end]}, ...]`` - pause handling;
- ``turn_taking.json``: ``[{"text": ..., "timestamp": [user_end, ...]}]`` - smooth turn-taking
  (``timestamp[0]`` is where the user's turn ends);
- ``interrupt.json`` (v1): ``[{"context": ..., "interrupt": ..., "timestamp": [start, end]}]``, or
  ``metadata.json`` (v1.5) with ``"timestamps": [start, end]`` under a ``user_interruption`` folder -
  user interruption; under another v1.5 folder (``background_speech``, ``talking_to_other``,
  ``user_backchannel``) the task is ``v1.5/<folder>``: did the agent take the turn after the event;
- only ``transcription.json`` (ICC backchannel) - backchannel.

Each sample is played to a fresh session (virtual clock, zero-delay channel: the same call path
as ``simulate``); ``output.wav`` (the agent's channel, 16 kHz mono, time-aligned with
``input.wav``) and ``output.json`` (the judge's words as ``{"text", "chunks": [{"text",
"timestamp": [s, e]}]}``, the benchmark's ASR format, so its own evaluators can read it) are
written next to ``input.wav``. Metrics follow the benchmark's scripts: TOR from the take-turn rule
(>= 1 s or > 3 words) on the words of the output (pause handling: the words before the input
ends; interruption: from 0.5 s before the interruption's end), latency from the reference time to
the first word (negative clipped to 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duplex import turn_metrics as tm

TASK_FILES = (("pause.json", "pause_handling"), ("turn_taking.json", "smooth_turn_taking"),
              ("interrupt.json", "user_interruption"), ("metadata.json", "user_interruption"))


@dataclass
class Sample:
    dir: Path
    task: str
    ref: tuple[float, float] | None
    """Pause (start, end), (user end, -), interruption (start, end); None for backchannel."""


def find_samples(root: str | Path) -> list[Sample]:
    """Every folder under ``root`` with an ``input.wav``, with its task from its annotation file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    out = []
    for wav in sorted(root.rglob("input.wav")):
        d = wav.parent
        task, ref = "backchannel", None
        for name, kind in TASK_FILES:
            f = d / name
            if not f.exists():
                continue
            data = json.loads(f.read_text())
            if isinstance(data, dict) and "timestamps" in data:  # v1.5 metadata: the task is the folder's
                ts = data["timestamps"]
                group = d.parent.name
                kind = "user_interruption" if "interrupt" in group else f"v1.5/{group}"
            elif isinstance(data, list) and data and "timestamp" in data[0]:
                ts = data[0]["timestamp"]
            else:
                continue
            task, ref = kind, (float(ts[0]), float(ts[1]) if ts[1] is not None else float(ts[0]))
            break
        out.append(Sample(d, task, ref))
    if not out:
        raise FileNotFoundError(f"{root}: no sample folders with an input.wav")
    return out


def score_sample(sample: Sample, words: list[Any], segments: list[tuple[float, float]],
                 input_s: float) -> dict[str, Any]:
    if sample.task == "pause_handling":
        assert sample.ref is not None
        took = tm.takes_turn([w for w in words if sample.ref[0] <= w.start < input_s])
        return {"tor": took, "latency": None}
    if sample.task in ("smooth_turn_taking", "user_interruption") or sample.task.startswith("v1.5/"):
        # v1.5 overlap tasks (background speech, talking to someone else, user backchannel): did the
        # agent take the turn after the event (for those, lower is better)?
        assert sample.ref is not None
        ref = sample.ref[0] if sample.task == "smooth_turn_taking" else sample.ref[1]
        start = 0.0 if sample.task == "smooth_turn_taking" else ref - 0.5
        heard = [w for w in words if w.start >= start]
        took = tm.takes_turn(heard)
        return {"tor": took, "latency": max(0.0, heard[0].start - ref) if took else None}
    bc = tm.backchannel(segments, words, input_s)
    return {"tor": bc.took_turn, "latency": None, "backchannels": len(bc.backchannels),
            "frequency": bc.frequency}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fixed = ["pause_handling", "smooth_turn_taking", "user_interruption", "backchannel"]
    for task in fixed + sorted({r["task"] for r in results} - set(fixed)):
        rows = [r for r in results if r["task"] == task]
        if not rows:
            continue
        lat = [r["latency"] for r in rows if r["latency"] is not None]
        fig = {"samples": len(rows), "tor": round(tm.rate([r["tor"] for r in rows]), 4)}
        if task in ("smooth_turn_taking", "user_interruption") or task.startswith("v1.5/"):
            fig["latency_s"] = round(tm.mean(lat), 4) if lat else None
        if task == "backchannel":
            fig["frequency"] = round(tm.mean([r["frequency"] for r in rows]), 4)
        out[task] = fig
    return out


def run_fdb(cfg: Any, data: str | Path, *, limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the agent on every sample, write output.wav/output.json, return per-task figures."""
    import asyncio
    import dataclasses

    import torch
    from tqdm import tqdm

    from agent.judge import WhisperJudge
    from duplex.netsim import ChannelConfig
    from duplex.session import DuplexAgentFactory
    from duplex.sim_metrics import agent_segments, judge_words, vad_words
    from duplex.sim_run import run_call
    from duplex.workers import CostModel
    from speech_io.vad import make_backend
    from speech_io.wav import read_wav, resample, write_wav
    from speech_io.webrtc.server import make_detector
    from training.data.manifest import atomic_write_text

    samples = find_samples(data)[:limit]
    s = cfg.sim
    cost = CostModel.deterministic(**s.fixed_costs) if s.compute == "fixed" else CostModel.measured(s.compute_scale)
    torch.set_num_threads(1)
    factory = DuplexAgentFactory.from_config(
        dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, metrics_jsonl="")), cost=cost,
        watchdog=False)
    factory.tune_process()
    judge = None
    if s.words == "whisper":
        judge = WhisperJudge(dataclasses.replace(cfg.judge, num_threads=s.judge_threads))
    backend = make_backend(cfg.vad.backend, cfg.vad.aggressiveness, cfg.vad.frame_ms)
    results = []
    try:
        for i, sample in enumerate(tqdm(samples, desc="eval fdb", disable=not progress)):
            audio, rate = read_wav(sample.dir / "input.wav")
            audio = resample(audio, rate, 16000)
            torch.manual_seed(s.seed * 1009 + i)
            res = asyncio.run(run_call(factory, audio, ChannelConfig(seed=s.seed), detector=make_detector(cfg.vad),
                                       session_id=sample.dir.name, tail_s=s.tail_s))
            write_wav(sample.dir / "output.wav", res.heard, 16000)
            segs = agent_segments(res.heard, 16000, backend)
            words = vad_words(segs) if judge is None or not segs else judge_words(judge, res.heard, segments=segs)
            text = " ".join(w.text.strip() for w in words)
            atomic_write_text(sample.dir / "output.json", json.dumps(
                {"text": text, "chunks": [{"text": w.text, "timestamp": [round(w.start, 3), round(w.end, 3)]}
                                          for w in words]}, indent=1))
            row = {"sample": str(sample.dir.relative_to(Path(data))), "task": sample.task,
                   **score_sample(sample, words, segs, len(audio) / 16000)}
            results.append(row)
    finally:
        factory.close()
    return {"tasks": summarize(results), "samples": results}
