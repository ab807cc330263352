"""The sweep's report: ``report.json`` (machine-readable), ``report.md`` (a table per metric) and
two plots: ``metrics_vs_delay.png`` (take-over rates and latency against the one-way delay, with
the predicted-user chunk on and off) and ``fto_hist.png`` (floor-transfer offsets per delay
against the reference dialogues)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

METRICS = (
    ("pause_tor", "pause-handling TOR (lower is better)"),
    ("turn_taking_tor", "smooth turn-taking TOR"),
    ("interruption_tor", "user-interruption TOR"),
    ("turn_taking_latency_s", "turn-taking latency (s)"),
    ("interruption_latency_s", "interruption latency (s)"),
    ("backchannel_per_s", "agent backchannels per s of user speech"),
    ("fto_median_s", "median floor-transfer offset (s)"),
    ("overlap_rate", "share of transfers with overlap"),
    ("head_accuracy", "state-head accuracy vs scripted labels"),
    ("transfers_per_min", "floor transfers per minute (two agents)"),
    ("a_speech_share", "agent A speech share (two agents)"),
)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown(report: dict[str, Any]) -> str:
    delays = list(report["delays"])
    setup = report["setup"]
    lines = [
        "# Latency-tolerance simulation" + (" (two agents)" if report.get("mode") == "pair" else ""),
        "",
        f"Preset `{setup['preset']}`; generator `{setup['generator']}`, speech weights `{setup['speech_weights'] or '(untrained)'}`, "
        f"decoder `{setup['tts'] or '(untrained small)'}`. {len(setup['dialogues'])} held-out scripted dialogues per point; "
        f"agent words from `{setup['words']}`; compute `{setup['compute']}`; state head `{setup.get('head', 'model')}`. "
        "Channel (both directions): "
        + ", ".join(f"{k}={v}" for k, v in setup["channel"].items()) + ".",
        "",
        "Columns: one-way delay (ms); `on`/`off` = the generator's predicted-user chunk. "
        "TOR = take-over rate as Full-Duplex-Bench v1 defines it, measured on what the user hears.",
        "",
        "| metric | " + " | ".join(f"{d} on | {d} off" for d in delays) + " |",
        "|---|" + "---|" * (2 * len(delays)),
    ]
    for key, label in METRICS:
        if all(report["delays"][d][k].get(key) is None for d in delays for k in ("on", "off")):
            continue
        row = [f"{_fmt(report['delays'][d]['on'].get(key))} | {_fmt(report['delays'][d]['off'].get(key))}" for d in delays]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    cases = report["delays"][delays[0]]["on"]["cases"]
    lines += ["", "Cases per point: " + ", ".join(f"{k} {v}" for k, v in cases.items()) + ".", ""]
    ref = report["reference"]["fto"]
    if ref:
        lines.append(f"Reference dialogues: median floor-transfer offset {np.median(ref):.3f} s, "
                     f"overlap share {np.mean([x < 0 for x in ref]):.3f} ({len(ref)} transfers).")
    lines += ["", "![metrics vs delay](metrics_vs_delay.png)", "", "![floor-transfer offsets](fto_hist.png)", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], out: Path) -> None:
    with np.errstate(all="ignore"):  # density of a histogram with one value: harmless 0/0 warnings
        _plot(report, out)


def _plot(report: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    delays = list(report["delays"])
    xs = [float(d) for d in delays]
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, key in zip(axes, ("pause_tor", "turn_taking_tor", "interruption_tor", "turn_taking_latency_s"), strict=True):
        for name, style in (("on", "-o"), ("off", "--s")):
            ys = [report["delays"][d][name].get(key) for d in delays]
            ax.plot(xs, [np.nan if y is None else y for y in ys], style, label=f"prediction {name}")
        ax.set_title(dict(METRICS)[key], fontsize=9)
        ax.set_xlabel("one-way delay (ms)")
        ax.set_xlim(min(xs) - 20, max(xs) + 20)
        if key.endswith("tor"):
            ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "metrics_vs_delay.png", dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(delays), figsize=(3.2 * len(delays), 3.0), squeeze=False)
    bins = np.arange(-2.0, 3.01, 0.2)
    ref = report["reference"]["fto"]
    for ax, d in zip(axes[0], delays, strict=True):
        if ref:
            ax.hist(np.clip(ref, -2, 3), bins=bins, density=True, color="0.7", label="reference")
        for name, color in (("on", "C0"), ("off", "C1")):
            vals = report["delays"][d][name]["fto"]
            if vals:
                ax.hist(np.clip(vals, -2, 3), bins=bins, density=True, histtype="step", color=color, lw=1.5,
                        label=f"prediction {name}")
        ax.set_title(f"{d} ms one-way", fontsize=9)
        ax.set_xlabel("gap (+) / overlap (-) s")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fto_hist.png", dpi=90)
    plt.close(fig)


def write_report(report: dict[str, Any], out: str | Path) -> None:
    from training.data.manifest import atomic_write_text

    out = Path(out)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, sort_keys=True) + "\n")
    atomic_write_text(out / "report.md", markdown(report))
    plot(report, out)
