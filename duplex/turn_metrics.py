"""Turn-taking metrics, defined as Full-Duplex-Bench v1 defines them.

All functions are pure: they take the agent channel's words (with times, from the Whisper judge)
and speech segments (from a VAD), plus the scripted times of the user's behaviour, and return
numbers. Full-Duplex-Bench's rule for "the agent took the turn" in a window: it said something,
and what it said lasted at least 1 s or had more than 3 words (shorter, sparser output counts as
a backchannel, not a turn).

- Pause handling: the user pauses mid-turn; take-over rate (TOR) during the pause, lower is better.
- Smooth turn-taking: the user finishes; TOR after the end (higher is better) and latency from the
  user's end to the agent's first word (negative clipped to 0).
- User interruption: the user talks over the agent; TOR after the interruption ends and latency
  from its end to the agent's first word.
- Backchannel: agent speech segments shorter than 3 s with at most 2 words and under 1 s (or at
  most 3 words) while the user holds the floor are backchannels; their frequency per second, and the
  Jensen-Shannon distance between their timing histogram (0.2 s bins) and a reference one. A
  longer segment means the agent took the turn (TOR = 1).
Plus floor-transfer offsets (gap > 0, overlap < 0) between speakers' turns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

TURN_MIN_S = 1.0
TURN_MAX_SHORT_WORDS = 3
BACKCHANNEL_MAX_SEGMENT_S = 3.0
BACKCHANNEL_MAX_WORDS = 2
HIST_BIN_S = 0.2
_EPS = 1e-10


class TimedWord(Protocol):
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class TakeOver:
    took: bool
    latency: float | None
    """Seconds from the reference time to the agent's first word (>= 0), when it took the turn."""


def words_in(words: Sequence[TimedWord], t0: float, t1: float) -> list[TimedWord]:
    """Words that start in [t0, t1)."""
    return [w for w in words if t0 <= w.start < t1]


def takes_turn(words: Sequence[TimedWord]) -> bool:
    if not words:
        return False
    duration = words[-1].end - words[0].start
    return duration >= TURN_MIN_S or len(words) > TURN_MAX_SHORT_WORDS


UTTERANCE_MAX_GAP_S = 1.0


def utterances_starting_in(words: Sequence[TimedWord], t0: float, t1: float) -> list[list[TimedWord]]:
    """The agent's utterances (words with gaps < 1 s) whose first word starts in [t0, t1).

    The whole utterance counts, also the part after t1: an agent that starts talking in a
    user's pause and goes on has taken the turn, even if the pause was short.
    """
    ordered = sorted(words, key=lambda w: w.start)
    groups: list[list[TimedWord]] = []
    for w in ordered:
        if groups and w.start - groups[-1][-1].end < UTTERANCE_MAX_GAP_S:
            groups[-1].append(w)
        else:
            groups.append([w])
    return [g for g in groups if t0 <= g[0].start < t1]


def take_over(words: Sequence[TimedWord], ref_time: float, t0: float, t1: float) -> TakeOver:
    for utterance in utterances_starting_in(words, t0, t1):
        if takes_turn(utterance):
            return TakeOver(took=True, latency=max(0.0, utterance[0].start - ref_time))
    return TakeOver(took=False, latency=None)


def pause_handling(words: Sequence[TimedWord], pause_start: float, pause_end: float) -> TakeOver:
    """Did the agent take the turn while the user paused mid-turn? (TOR: lower is better)."""
    return take_over(words, pause_start, pause_start, pause_end)


def smooth_turn_taking(words: Sequence[TimedWord], user_end: float, window_end: float) -> TakeOver:
    """Did the agent take the turn after the user finished, and how fast? (TOR: higher is better)."""
    return take_over(words, user_end, user_end - 0.5, window_end)


def user_interruption(words: Sequence[TimedWord], interruption_end: float, window_end: float) -> TakeOver:
    """After the user's interruption ended, did the agent respond, and how fast?"""
    return take_over(words, interruption_end, interruption_end - 0.5, window_end)


def timing_histogram(intervals: Sequence[tuple[float, float]], duration: float, bin_s: float = HIST_BIN_S) -> np.ndarray:
    """Normalised count of intervals covering each bin of [0, duration]."""
    counts = np.zeros(int(duration / bin_s) + 1)
    for start, end in intervals:
        counts[int(start / bin_s) : int(end / bin_s) + 1] += 1
    counts = counts + _EPS
    return counts / counts.sum()


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (sqrt of the divergence, natural log), as scipy computes it.

    Histograms of different lengths are compared after linear interpolation onto the longer grid.
    """
    if len(p) != len(q):
        n = max(len(p), len(q))
        grid = np.linspace(0, 1, n)
        p = np.interp(grid, np.linspace(0, 1, len(p)), p)
        q = np.interp(grid, np.linspace(0, 1, len(q)), q)
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / b[mask])))

    return float(np.sqrt(max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m))))


@dataclass(frozen=True)
class BackchannelResult:
    took_turn: bool
    """The agent produced a real turn (a segment > 3 s or too many words) instead of backchannels."""
    backchannels: list[tuple[float, float]]
    frequency: float
    """Backchannels per second of audio (0 if it took the turn)."""
    jsd: float
    """Jensen-Shannon distance of backchannel timing to the reference (1 when there are none)."""


def backchannel(
    segments: Sequence[tuple[float, float]],
    words: Sequence[TimedWord],
    duration: float,
    reference: np.ndarray | None = None,
) -> BackchannelResult:
    """Classify agent speech segments while the user holds the floor."""
    found: list[tuple[float, float]] = []
    took = False
    for start, end in segments:
        seg_words = [w for w in words if w.end > start and w.start < end]
        length = end - start
        if length > BACKCHANNEL_MAX_SEGMENT_S or len(seg_words) > TURN_MAX_SHORT_WORDS:
            took = True
        elif length >= TURN_MIN_S or len(seg_words) > BACKCHANNEL_MAX_WORDS:
            took = True
        if took:
            found = []
            break
        found.append((start, end))
    freq = len(found) / duration if duration > 0 else 0.0
    if not found or reference is None:
        jsd = 1.0 if not found else float("nan")
    else:
        jsd = js_distance(timing_histogram(found, duration), reference)
    return BackchannelResult(took_turn=took, backchannels=found, frequency=freq, jsd=jsd)


def merge_segments(segments: Sequence[tuple[float, float]], max_gap: float) -> list[tuple[float, float]]:
    """Join speech segments separated by less than ``max_gap`` seconds (pauses inside a turn)."""
    out: list[tuple[float, float]] = []
    for start, end in sorted(segments):
        if out and start - out[-1][1] < max_gap:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def floor_transfer_offsets(
    a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]], min_turn_s: float = 0.0
) -> list[float]:
    """Offsets of every change of speaker: next turn's start minus the floor holder's end.

    Positive = gap, negative = overlap. Turns shorter than ``min_turn_s`` (backchannels) are
    ignored, and so is a turn lying entirely inside the other speaker's turn (it never took the
    floor).
    """
    turns = sorted([(s, e, 0) for s, e in a if e - s >= min_turn_s] + [(s, e, 1) for s, e in b if e - s >= min_turn_s])
    offsets: list[float] = []
    holder: tuple[float, int] | None = None  # (end of the current turn, speaker)
    for start, end, who in turns:
        if holder is None or holder[1] == who:
            holder = (end if holder is None else max(end, holder[0]), who)
        elif end > holder[0]:
            offsets.append(start - holder[0])
            holder = (end, who)
    return offsets


def rate(values: Sequence[bool]) -> float:
    return float(np.mean(values)) if values else float("nan")


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")
