"""Per-turn latency records, a JSONL log, and Prometheus text for ``GET /metrics``.

A turn's response latency (end of the user's speech -> first audible agent audio) is split the
way CosyVoice 2 splits its first-packet latency, plus the two things before the model starts:

    endpoint   user speech end -> end of the 160 ms chunk on which the turn was taken
    listen     that chunk's compute (encoder + adapter + LLM prefill + state head) and queueing
    llm        turn taken -> enough reply text for the generator (suffix prefill + N tokens: N * d_llm;
               ~0 when the reply was speculated in the silence before the turn was taken)
    generator  text ready -> the first agent chunk of speech units (d_lm)
    decoder    first units -> first audible audio out of the decoder (d_fm + d_voc)
    playout    decoded -> played by the transport's 20 ms clock

The parts add up to the response latency. Barge-in records hold the user's onset -> agent audio
stopped (the 10 ms fade included).
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESPONSE_PARTS = ("endpoint", "listen", "llm", "generator", "decoder", "playout")

_BUCKETS_S = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0)


@dataclass
class TurnRecord:
    session: str
    turn: int
    kind: str
    """response | bargein | backchannel | cancelled"""
    t: float
    """Session time (s) when recorded."""
    ms: float | None = None
    """response: end of speech -> first audio; bargein: onset -> stopped; backchannel: pause length."""
    parts: dict[str, float] = field(default_factory=dict)
    """response only: the breakdown (ms), see the module docstring."""
    trigger: str = ""
    tokens: int = 0
    """response only: reply tokens decoded before the first audio (N of N * d_llm)."""
    emotion: str = ""
    text: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ms"] = None if self.ms is None else round(self.ms, 2)
        d["parts"] = {k: round(v, 2) for k, v in self.parts.items()}
        d["t"] = round(self.t, 4)
        return {"type": "turn", **d}


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(_BUCKETS_S)
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum += seconds
        for i, b in enumerate(_BUCKETS_S):
            if seconds <= b:
                self.counts[i] += 1


class MetricsHub:
    """Shared by all sessions of a factory: JSONL writer + Prometheus registry. Thread-safe."""

    def __init__(self, jsonl_path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(jsonl_path) if jsonl_path else None
        self._lock = threading.Lock()
        self._hist: dict[str, _Histogram] = {"response": _Histogram(), "bargein": _Histogram()}
        self._parts: dict[str, _Histogram] = {p: _Histogram() for p in RESPONSE_PARTS}
        self.counters: dict[str, float] = {
            "turns_total": 0, "bargeins_total": 0, "backchannels_kept_total": 0, "replies_cancelled_total": 0,
            "loop_stalls_over_20ms_total": 0, "loop_stalls_over_50ms_total": 0, "sessions_total": 0,
            "chunks_dropped_total": 0, "session_errors_total": 0,
        }
        self.gauges: dict[str, float] = {"sessions_active": 0, "loop_stall_max_ms": 0.0, "compute_rtf": 0.0}
        self.stage_seconds: dict[str, float] = {}
        self.records: list[TurnRecord] = []
        """Every record of this process (bounded to the last 10000)."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def record(self, rec: TurnRecord) -> None:
        with self._lock:
            self.records.append(rec)
            del self.records[:-10000]
            if rec.kind == "response" and rec.ms is not None:
                self.counters["turns_total"] += 1
                self._hist["response"].observe(rec.ms / 1000)
                for k, v in rec.parts.items():
                    if k in self._parts:
                        self._parts[k].observe(max(0.0, v) / 1000)
            elif rec.kind == "bargein":
                self.counters["bargeins_total"] += 1
                if rec.ms is not None:
                    self._hist["bargein"].observe(rec.ms / 1000)
            elif rec.kind == "backchannel":
                self.counters["backchannels_kept_total"] += 1
            elif rec.kind == "cancelled":
                self.counters["replies_cancelled_total"] += 1
            if self.path is not None:
                # One line per record, appended and flushed: a crash loses at most the line being written.
                with self.path.open("a") as f:
                    f.write(json.dumps(rec.to_json()) + "\n")

    def inc(self, name: str, by: float = 1.0) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + by

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self.gauges[name] = value

    def add_stage(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    def prometheus(self) -> str:
        """The registry in the Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []
        with self._lock:
            for name, value in sorted(self.counters.items()):
                out += [f"# TYPE duplex_{name} counter", f"duplex_{name} {_num(value)}"]
            for name, value in sorted(self.gauges.items()):
                out += [f"# TYPE duplex_{name} gauge", f"duplex_{name} {_num(value)}"]
            for name, h in self._hist.items():
                metric = f"duplex_{name}_latency_seconds"
                out.append(f"# TYPE {metric} histogram")
                out += _hist_lines(metric, h, "")
            out.append("# TYPE duplex_response_part_seconds histogram")
            for part, h in self._parts.items():
                out += _hist_lines("duplex_response_part_seconds", h, f'part="{part}"')
            out.append("# TYPE duplex_stage_compute_seconds_total counter")
            for stage, sec in sorted(self.stage_seconds.items()):
                out.append(f'duplex_stage_compute_seconds_total{{stage="{stage}"}} {_num(sec)}')
        return "\n".join(out) + "\n"


def _hist_lines(metric: str, h: _Histogram, labels: str) -> list[str]:
    sep = "," if labels else ""
    lines = [f'{metric}_bucket{{{labels}{sep}le="{b:g}"}} {c}' for b, c in zip(_BUCKETS_S, h.counts, strict=True)]
    lines.append(f'{metric}_bucket{{{labels}{sep}le="+Inf"}} {h.count}')
    lb = f"{{{labels}}}" if labels else ""
    lines += [f"{metric}_sum{lb} {_num(h.sum)}", f"{metric}_count{lb} {h.count}"]
    return lines


def _num(x: float) -> str:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return "NaN" if math.isnan(x) else ("+Inf" if x > 0 else "-Inf")
    return f"{x:g}" if isinstance(x, float) else str(x)
