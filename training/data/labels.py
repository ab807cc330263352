"""The per-chunk state label: THE contract between the data and the state head.

The encoder hears the user channel in chunks of ``chunk`` seconds (160 ms): chunk ``k`` covers
``[chunk*k, chunk*(k+1))``. Its label is the decision the agent should take having heard audio up
to the chunk's END time ``t = chunk*(k+1)``:

* ``0 CONTINUE`` - keep listening, the user holds the floor:
  - a real user turn is under way: ``t`` is after the turn's first speech (the chunk that holds
    its first speech is already 0) and before ``e + margin``, where ``e`` is the end of its last
    word; mid-turn pauses lie inside that span, so they are 0;
  - this includes a real turn that barges in while the agent speaks (the runtime stops the agent
    on it), from its first speech chunk on;
  - plain silence while the agent is not speaking and no user turn has just ended.
* ``1 INTERRUPT`` - take the turn now: the user's turn ended at ``e`` and the agent's reply has
  not started: every chunk with ``e + margin <= t <= r`` (``r`` = start of the reply), and at least
  the first chunk with ``t >= e + margin`` even when the reply starts earlier (overlapping reply).
* ``2 REJECT`` - not a turn, ignore it: a chunk overlapping a backchannel, a cough/noise burst,
  background speech or the user talking to someone else; and silence while the agent speaks.

Precedence, where rules meet: INTERRUPT > a real turn's CONTINUE > REJECT events > the silence rules.
(Background speech inside a real turn does not take the floor from the user; a cough right after
the user's turn does not cancel the agent's reply.) Only whole chunks are labelled: a dialogue of
``n`` samples at rate ``sr`` has ``n // round(chunk*sr)`` labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONTINUE, INTERRUPT, REJECT = 0, 1, 2
LABEL_NAMES = ("continue", "interrupt", "reject")
CHUNK_SECONDS = 0.16
END_MARGIN = 0.08
"""Seconds after the last word's end before the turn counts as over (room for a short stop)."""
REJECT_KINDS = ("backchannel", "noise", "background", "side")
"""User-channel segment kinds that must not take the turn."""


@dataclass(frozen=True)
class UserTurn:
    start: float
    """First speech of the turn (s)."""
    end: float
    """End of its last word (s)."""
    reply_start: float | None
    """Start of the agent's reply to it (s); None if the dialogue ends before any reply."""


@dataclass(frozen=True)
class Span:
    start: float
    end: float


def num_chunks(num_samples: int, sample_rate: int, chunk: float = CHUNK_SECONDS) -> int:
    return num_samples // int(round(chunk * sample_rate))


def chunk_labels(
    n_chunks: int,
    user_turns: Sequence[UserTurn],
    reject_spans: Sequence[Span],
    agent_spans: Sequence[Span],
    chunk: float = CHUNK_SECONDS,
    margin: float = END_MARGIN,
) -> np.ndarray:
    """(n_chunks,) int8 labels from a timeline (see the module docstring for the rules)."""
    ends = (np.arange(n_chunks) + 1) * chunk  # t of every chunk
    starts = ends - chunk
    eps = 1e-9
    # Silence rules: reject while the agent speaks (nothing to react to), else keep listening.
    labels = np.full(n_chunks, CONTINUE, dtype=np.int8)
    for a in agent_spans:
        labels[(ends > a.start + eps) & (ends <= a.end + eps)] = REJECT
    for s in reject_spans:
        labels[(starts < s.end - eps) & (ends > s.start + eps)] = REJECT
    for u in user_turns:
        labels[(ends > u.start + eps) & (ends < u.end + margin - eps)] = CONTINUE
    for u in user_turns:
        first = int(math.ceil((u.end + margin) / chunk - 1e-6)) - 1  # first k with t >= e + margin
        if first >= n_chunks:
            continue
        last = first
        if u.reply_start is None:
            last = n_chunks - 1
        else:
            last = max(first, int(math.floor(u.reply_start / chunk + 1e-6)) - 1)  # last k with t <= r
        labels[first : min(last, n_chunks - 1) + 1] = INTERRUPT
    return labels


def labels_to_string(labels: np.ndarray) -> str:
    """Compact manifest form: one digit per chunk ("0001112222...")."""
    return "".join(str(int(x)) for x in labels)


def labels_from_string(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - ord("0")
