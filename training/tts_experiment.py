"""``duplex-agent exp emotion-lora``: EELE's study on our decoder and our (synthetic) data.

For every LoRA position scheme x rank (and a full fine-tune baseline) a plugin is trained per
emotion with the same recipe and budget (training/tts_emotion.py), then judged on held-out text:
emotion accuracy by the emotion classifier, intelligibility by the Whisper judge (WER), trainable
parameters (absolute and % of the unit decoder) and training time. The neutral decoder without
plugins is the reference row. Results are appended per cell to ``cells.jsonl`` (the run
resumes), then written as ``table.md``, ``table.json`` and ``plot.png``.

DATA ARE SYNTHETIC: Piper renderings resynthesised with WORLD into emotions by signal processing
(F0 level/range, energy, rate, spectral tilt); the classifier is trained on such resyntheses.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from configs.schema import AgentConfig

PLUGIN_BUDGET = 0.02
"""A plugin may hold at most this fraction of the decoder's parameters (issue 7)."""
WER_BAR = 0.15


def _read_cells(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_experiment(cfg: AgentConfig, *, schemes: list[str], ranks: list[int], emotions: list[str], steps: int | None,
                   eval_items: int, full: bool, weights: str | None, out_dir: str, progress: bool = True) -> dict:
    import torch
    from tqdm import tqdm

    from agent.judge import WhisperJudge
    from agent.tts_emotion import lora_parameter_count, parse_scheme
    from training.tts_data import load_emotion_items
    from training.tts_emotion import (
        evaluate,
        load_classifier,
        load_neutral,
        prepare_pairs,
        save_checkpoint,
        setup,
        speaker,
        train,
    )
    from training.tts_neutral import cache_dir

    for s in schemes:
        parse_scheme(s)
    steps = steps or cfg.tts_train.emotion_steps
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells_path = out / "cells.jsonl"
    done = {(c["scheme"], c["rank"], c["emotion"]) for c in _read_cells(cells_path)}
    neutral, units = load_neutral(cfg, weights)
    total_params = sum(p.numel() for p in neutral.parameters())
    prepare_pairs(cfg, progress)
    cache = cache_dir(cfg)
    train_items = load_emotion_items(cache, units, ("train",))
    test_items = load_emotion_items(cache, units, ("test",))
    classifier, which = load_classifier(cfg, train_items, progress)
    judge = WhisperJudge(cfg.judge)
    meta = {"steps": steps, "emotions": emotions, "train_items": len(train_items), "test_items": len(test_items),
            "eval_items": eval_items, "classifier": which, "units": units, "decoder_parameters": total_params,
            "batch": cfg.tts_train.emotion_batch, "window_units": cfg.tts_train.emotion_window_units,
            "data": "SYNTHETIC: WORLD analysis-resynthesis of Piper renderings (training/data/emotion.py)"}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))

    if ("neutral", 0, "*") not in done:
        # One pass over the neutral decoder's audio; how often it is heard as each emotion.
        ev = evaluate(speaker(neutral), test_items, "neutral", classifier, judge, eval_items)
        n = max(ev["items"], 1)
        per = {e: {"accuracy": ev["predicted"].get(e, 0) / n} for e in ["neutral", *emotions]}
        _append(cells_path, {"scheme": "neutral", "rank": 0, "emotion": "*", "parameters": 0, "train_seconds": 0.0,
                             "per_emotion": per, "wer": ev["wer"], "predicted": ev["predicted"]})

    jobs = [(s, r, e) for s in schemes for r in ranks for e in emotions]
    if full:
        jobs += [("full", 0, e) for e in emotions]
    for scheme, rank, emotion in tqdm([j for j in jobs if j not in done], desc="cells", disable=not progress):
        torch.manual_seed(cfg.tts_train.seed)
        run = setup(cfg, neutral, emotion, scheme, rank or 1, train_items, full=scheme == "full",
                    out_dir=out / "plugins" / (scheme if scheme == "full" else f"{scheme}-r{rank}"))
        t0 = time.perf_counter()
        train(run, steps, progress)
        ev = evaluate(speaker(run), test_items, emotion, classifier, judge, eval_items)
        if scheme != "full":  # the full fine-tune copies (20 MB each) are not kept
            save_checkpoint(run)
        params = run.trainable_parameters
        if scheme != "full":
            assert params == lora_parameter_count(neutral, scheme, rank), "trainable set != the plugin"
        _append(cells_path, {"scheme": scheme, "rank": rank, "emotion": emotion, "parameters": params,
                             "parameters_pct": 100.0 * params / total_params, "train_seconds": round(run.seconds, 1),
                             "wall_seconds": round(time.perf_counter() - t0, 1), **{k: ev[k] for k in
                             ("accuracy", "mean_prob", "wer", "predicted", "items")},
                             "final_loss": run.history[-1] if run.history else {}})
        del run
    cells = _read_cells(cells_path)
    table = summarise(cells, meta, schemes, ranks, full)
    write_table(out, table, meta)
    plot(out, table, meta)
    return {"summary": {"chosen": table["chosen"], "rows": len(table["rows"]), "out": str(out)}, "table": table}


def summarise(cells: list[dict], meta: dict, schemes: list[str], ranks: list[int], full: bool) -> dict:
    rows = []
    base = next((c for c in cells if c["scheme"] == "neutral"), None)
    if base is not None:
        per = base["per_emotion"]
        emos = [e for e in meta["emotions"] if e in per]
        rows.append({"config": "neutral (no plugin)", "scheme": "neutral", "rank": 0, "parameters": 0, "parameters_pct": 0.0,
                     "accuracy": float(np.mean([per[e]["accuracy"] for e in emos])) if emos else None,
                     "neutral_recognised": per["neutral"]["accuracy"], "wer_max": base["wer"], "wer_mean": base["wer"],
                     "train_seconds": 0.0, "emotions": len(emos)})
    configs = [(s, r) for s in schemes for r in ranks] + ([("full", 0)] if full else [])
    for s, r in configs:
        cs = [c for c in cells if c["scheme"] == s and c["rank"] == r and c["emotion"] in meta["emotions"]]
        if not cs:
            continue
        rows.append({"config": "full fine-tune" if s == "full" else f"{s} r{r}", "scheme": s, "rank": r,
                     "parameters": cs[0]["parameters"], "parameters_pct": cs[0]["parameters_pct"],
                     "accuracy": float(np.mean([c["accuracy"] for c in cs])),
                     "per_emotion_accuracy": {c["emotion"]: c["accuracy"] for c in cs},
                     "wer_max": float(max(c["wer"] for c in cs)), "wer_mean": float(np.mean([c["wer"] for c in cs])),
                     "train_seconds": float(np.mean([c["train_seconds"] for c in cs])), "emotions": len(cs)})
    eligible = [r for r in rows if r["scheme"] not in ("neutral", "full") and r["parameters_pct"] <= 100 * PLUGIN_BUDGET
                and r["wer_max"] <= WER_BAR]
    chosen = None
    if eligible:
        best = max(r["accuracy"] for r in eligible)
        # within 2 points of the best accuracy, prefer the smaller plugin
        near = [r for r in eligible if r["accuracy"] >= best - 0.02]
        chosen = min(near, key=lambda r: (r["parameters"], -r["accuracy"]))
    return {"rows": rows, "chosen": chosen and {k: chosen[k] for k in ("config", "scheme", "rank", "accuracy", "wer_max",
                                                                         "parameters_pct")},
            "rule": f"highest mean emotion accuracy among plugins <= {100 * PLUGIN_BUDGET:.0f}% of the decoder's parameters "
                    f"with WER <= {WER_BAR:.0%} for every emotion; within 2 points of the best, the fewest parameters"}


def write_table(out: Path, table: dict, meta: dict) -> None:
    (out / "table.json").write_text(json.dumps({"meta": meta, **table}, indent=2))
    lines = [
        "# Emotion LoRA plugins: position x rank (EELE study on our decoder)",
        "",
        f"**Data are synthetic**: {meta['data']}. Classifier: {meta['classifier']}.",
        f"Per cell: {meta['steps']} steps x {meta['batch']} windows of {meta['window_units']} units per emotion, "
        f"emotions {', '.join(meta['emotions'])}; {meta['eval_items']} held-out texts judged per emotion. "
        f"Units: `{meta['units']}`. Decoder parameters: {meta['decoder_parameters']:,}.",
        "",
        "| config | params | % of decoder | emotion acc. (mean) | per emotion | WER max | WER mean | train s / plugin |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in table["rows"]:
        per = ", ".join(f"{e} {a:.0%}" for e, a in r.get("per_emotion_accuracy", {}).items())
        if r["scheme"] == "neutral":
            per = f"neutral recognised {r['neutral_recognised']:.0%}"
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.0%}"
        lines.append(f"| {r['config']} | {r['parameters']:,} | {r['parameters_pct']:.2f} | {acc} | {per} | "
                     f"{r['wer_max']:.1%} | {r['wer_mean']:.1%} | {r['train_seconds']:.0f} |")
    lines += ["", f"Selection rule: {table['rule']}.", ""]
    lines.append(f"**Chosen default: {table['chosen']['config']}**" if table["chosen"] else "**No configuration met the bars.**")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, table: dict, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    names = [r["config"] for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(max(8, 0.55 * len(rows)), 11), sharex=True)
    panels = [("accuracy", "emotion accuracy", 100), ("wer_max", "WER (max over emotions) %", 100),
              ("parameters_pct", "trainable params, % of decoder", 1), ("train_seconds", "training s per plugin", 1)]
    for ax, (key, label, scale) in zip(axes, panels, strict=True):
        vals = [(r[key] or 0) * scale for r in rows]
        colors = ["grey" if r["scheme"] == "neutral" else "tab:red" if r["scheme"] == "full" else "tab:blue" for r in rows]
        ax.bar(range(len(rows)), vals, color=colors)
        ax.set_ylabel(label, fontsize=8)
        if key == "parameters_pct":
            ax.axhline(100 * PLUGIN_BUDGET, color="k", ls=":", lw=1)
        if key == "wer_max":
            ax.axhline(100 * WER_BAR, color="k", ls=":", lw=1)
        if key == "accuracy":
            ax.axhline(85, color="k", ls=":", lw=1)
    axes[-1].set_xticks(range(len(rows)))
    axes[-1].set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    fig.suptitle("Emotion LoRA plugins by position and rank - SYNTHETIC data (WORLD resynthesis of Piper)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "plot.png", dpi=110)
    plt.close(fig)
