"""Hand-built agent word timelines for the turn-taking metric tests (known answers)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class W:
    """A word with times, shaped like the judge's word timestamps."""

    text: str
    start: float
    end: float


def word_run(start: float, n: int, step: float = 0.3) -> list[W]:
    """``n`` words of 0.25 s every ``step`` seconds from ``start``."""
    return [W(f"w{i}", start + i * step, start + i * step + 0.25) for i in range(n)]
