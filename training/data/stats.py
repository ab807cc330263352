"""`duplex-agent data stats DIR`: counts, hours, label balance, gap/overlap/pause histograms."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from training.data.labels import LABEL_NAMES
from training.data.manifest import KINDS, load_manifest, manifest_path


def _durations(rec: Any, kind: str) -> float:
    if kind == "qa":
        return float(rec.question_duration) + float(rec.answer_duration)
    return float(rec.duration)


def timing_samples(dialogues: list[Any]) -> dict[str, list[float]]:
    """Gaps between turns (negative = overlap), mid-turn pauses, backchannel and turn lengths."""
    gaps, user_gaps, pauses, bc = [], [], [], []
    for d in dialogues:
        segs = d.segments
        for a in segs:
            if a.channel == "agent" and a.reply_to is not None:
                gaps.append(a.start - segs[a.reply_to].end)
        agent_ends = [s.end for s in segs if s.channel == "agent"]
        for u in segs:
            if u.channel == "user" and u.kind == "turn" and not u.bargein:
                before = [e for e in agent_ends if e <= u.end]
                if before:
                    user_gaps.append(u.start - max(before))
            if u.channel == "user":
                pauses += [p[1] - p[0] for p in u.pauses]
                if u.kind == "backchannel":
                    bc.append(u.end - u.start)
    return {"agent_reply_gap": gaps, "user_turn_gap": user_gaps, "pause": pauses, "backchannel_length": bc}


def compute_stats(root: str | os.PathLike[str]) -> dict[str, Any]:
    root = Path(root)
    out: dict[str, Any] = {"root": str(root), "items_by_kind": {}, "hours_by_kind": {}, "splits": {}}
    records: dict[str, list[Any]] = {}
    for kind in KINDS:
        if manifest_path(root, kind).is_file():
            records[kind] = load_manifest(root, kind)
    if not records:
        raise FileNotFoundError(f"no manifests under {root}/manifests; run `duplex-agent data synth --out {root}` first")
    for kind, recs in records.items():
        out["items_by_kind"][kind] = len(recs)
        out["hours_by_kind"][kind] = round(sum(_durations(r, kind) for r in recs) / 3600, 4)
        out["splits"][kind] = dict(sorted(Counter(r.split for r in recs).items()))
    out["items"] = sum(out["items_by_kind"].values())
    out["hours"] = round(sum(out["hours_by_kind"].values()), 4)
    dialogues = records.get("dialogues", [])
    out["dialogue_hours"] = out["hours_by_kind"].get("dialogues", 0.0)
    labels = Counter()
    for d in dialogues:
        labels.update(d.labels)
    out["label_counts"] = {name: int(labels.get(str(i), 0)) for i, name in enumerate(LABEL_NAMES)}
    total = sum(out["label_counts"].values())
    out["label_share"] = {k: round(v / total, 4) if total else 0.0 for k, v in out["label_counts"].items()}
    emo = Counter(r.emotion for r in records.get("emotions", []))
    out["emotion_counts"] = dict(sorted(emo.items()))
    out["agent_turn_emotions"] = dict(sorted(Counter(s.emotion for d in dialogues for s in d.segments if s.channel == "agent").items()))
    out["dialogue_stages"] = dict(sorted(Counter(d.stage for d in dialogues).items()))
    out["segment_kinds"] = dict(sorted(Counter(f"{s.channel}:{s.kind}" for d in dialogues for s in d.segments).items()))
    out["bargeins"] = sum(1 for d in dialogues for s in d.segments if s.bargein)
    t = timing_samples(dialogues)
    out["timing"] = {k: _summary(v) for k, v in t.items()}
    out["overlaps"] = sum(1 for g in t["agent_reply_gap"] + t["user_turn_gap"] if g < 0)
    out["synth_cpu"] = synth_cpu(root)
    voices = Counter()
    for kind in ("utterances", "qa"):
        voices.update(r.voice for r in records.get(kind, []))
    voices.update(d.user_voice for d in dialogues)
    out["voices"] = len(voices)
    out["heldout_voices"] = len({r.voice for kind in ("utterances", "qa") for r in records.get(kind, []) if r.heldout_voice}
                                | {d.user_voice for d in dialogues if d.heldout_voice})
    return out


def synth_cpu(root: Path) -> dict[str, Any]:
    """CPU seconds the synth spent per job kind (from items/*.json), and per hour of audio written."""
    import json

    agg: dict[str, list[float]] = {}
    for f in sorted((root / "items").glob("*.json")) if (root / "items").is_dir() else []:
        r = json.loads(f.read_text())
        a = agg.setdefault(r["kind"], [0, 0.0, 0.0])
        a[0] += 1
        a[1] += float(r.get("cpu_s", 0.0))
        a[2] += float(r.get("seconds", 0.0))
    out: dict[str, Any] = {}
    for kind, (n, cpu, sec) in agg.items():
        out[kind] = {"jobs": int(n), "cpu_s": round(cpu, 1), "audio_h": round(sec / 3600, 4),
                     "cpu_s_per_audio_h": round(cpu / (sec / 3600), 1) if sec else None}
    total_cpu = sum(v[1] for v in agg.values())
    total_h = sum(v[2] for v in agg.values()) / 3600
    out["total"] = {"cpu_s": round(total_cpu, 1), "audio_h": round(total_h, 4),
                    "cpu_s_per_audio_h": round(total_cpu / total_h, 1) if total_h else None}
    return out


def _summary(x: list[float]) -> dict[str, float]:
    if not x:
        return {"n": 0}
    a = np.asarray(x)
    return {"n": int(a.size), "mean": round(float(a.mean()), 4), "p10": round(float(np.percentile(a, 10)), 4),
            "median": round(float(np.median(a)), 4), "p90": round(float(np.percentile(a, 90)), 4),
            "min": round(float(a.min()), 4), "max": round(float(a.max()), 4)}


def plot_stats(root: str | os.PathLike[str], stats: dict[str, Any], plots_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Histograms of gaps/overlaps, pauses, label balance and emotions as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    folder = Path(plots_dir) if plots_dir else root / "stats"
    folder.mkdir(parents=True, exist_ok=True)
    dialogues = load_manifest(root, "dialogues") if manifest_path(root, "dialogues").is_file() else []
    t = timing_samples(dialogues)
    written = []

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key, title in ((axes[0], "agent_reply_gap", "agent reply gap (s); <0 = overlap"),
                           (axes[1], "user_turn_gap", "user turn gap after agent (s); <0 = overlap"),
                           (axes[2], "pause", "mid-turn user pauses (s)")):
        vals = t[key]
        ax.hist(vals, bins=40, color="tab:blue" if key != "pause" else "tab:orange")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"{title}\nn={len(vals)}")
        ax.set_xlabel("seconds")
    fig.tight_layout()
    written.append(folder / "gaps_overlaps_pauses.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    lc = stats["label_counts"]
    axes[0].bar(list(lc), list(lc.values()), color=["tab:green", "tab:red", "tab:gray"])
    axes[0].set_title("state labels (160 ms chunks)")
    ec = stats.get("emotion_counts") or {}
    axes[1].bar(list(ec), list(ec.values()), color="tab:purple")
    axes[1].set_title("emotion utterances")
    fig.tight_layout()
    written.append(folder / "labels_emotions.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)

    if dialogues:
        fig, ax = plt.subplots(figsize=(14, 3.2))
        d = dialogues[0]
        audio = d.load_audio()
        tt = np.arange(len(audio)) / d.sample_rate
        ax.plot(tt, audio[:, 0] + 1.0, lw=0.3, color="tab:blue", label="user (ch0)")
        ax.plot(tt, audio[:, 1] - 1.0, lw=0.3, color="tab:red", label="agent (ch1)")
        lab = d.label_array()
        colors = {0: "tab:green", 1: "tab:red", 2: "tab:gray"}
        for k, v in enumerate(lab):
            ax.axvspan(k * d.chunk_seconds, (k + 1) * d.chunk_seconds, ymin=0.45, ymax=0.55, color=colors[int(v)], lw=0)
        ax.set_title(f"{d.id} ({d.stage}): user / labels (green continue, red interrupt, gray reject) / agent")
        ax.set_yticks([])
        ax.set_xlabel("seconds")
        fig.tight_layout()
        written.append(folder / "example_dialogue.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    return written
