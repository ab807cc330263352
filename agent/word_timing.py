"""Word timings from a VITS voice's phoneme durations.

espeak-ng separates words by spaces in its IPA output, but it sometimes joins short function
words ("of the" -> one token) or expands one written word into several ("3.50" -> four). So
written words are aligned to phoneme words with a small monotonic dynamic programme over
1:k / k:1 groupings, scored by how well letter counts predict phoneme counts. Joined words share
their group's time span in proportion to their letters.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

import numpy as np

PUNCTUATION = set(",.;:?!")
_WORD_RE = re.compile(r"[\w']+(?:[.,]\d+)*")  # "3.50" and "1,000" stay one written word
_GROUPS = ((1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (4, 1))


@dataclass(frozen=True)
class WordTiming:
    text: str
    start: float
    """Seconds from the start of the utterance."""
    end: float


def phoneme_word_frames(phonemes: str, id_positions: list[int], durations: np.ndarray) -> list[tuple[int, int, int]]:
    """Frame spans of the phoneme words of one sentence.

    ``id_positions[j]`` is the index in the id sequence of the j-th NFD phoneme character (-1 if
    the voice skipped it); ``durations`` are frames per id. Returns (start_frame, end_frame,
    n_phonemes) per space-separated phoneme word, punctuation excluded.
    """
    cum = np.concatenate([[0], np.cumsum(durations)])
    chars = unicodedata.normalize("NFD", phonemes)
    spans: list[tuple[int, int, int]] = []
    first = last = -1
    count = 0
    for ch, pos in zip(chars + " ", id_positions + [-1], strict=True):
        if ch == " ":
            if first >= 0:
                # the pad id after the last phoneme belongs to the word (it carries its release)
                spans.append((int(cum[first]), int(cum[min(last + 2, len(durations))]), count))
            first, last, count = -1, -1, 0
        elif ch not in PUNCTUATION and pos >= 0:
            first = pos if first < 0 else first
            last = pos
            count += 1
    return spans


def align_words(text_words: list[str], phon_spans: list[tuple[int, int, int]]) -> list[tuple[str, int, int]]:
    """Map written words onto phoneme-word frame spans: (word, start_frame, end_frame)."""
    n, m = len(text_words), len(phon_spans)
    if n == 0 or m == 0:
        return []
    letters = [max(1, len(w)) for w in text_words]
    ratio = sum(p[2] for p in phon_spans) / sum(letters)
    inf = math.inf
    cost = np.full((n + 1, m + 1), inf)
    back: dict[tuple[int, int], tuple[int, int]] = {}
    cost[0, 0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if cost[i, j] == inf:
                continue
            for a, b in _GROUPS:
                if i + a > n or j + b > m:
                    continue
                phones = sum(p[2] for p in phon_spans[j : j + b])
                c = abs(math.log((phones + 1) / (ratio * sum(letters[i : i + a]) + 1))) + 0.3 * (a + b - 2)
                if cost[i, j] + c < cost[i + a, j + b]:
                    cost[i + a, j + b] = cost[i, j] + c
                    back[(i + a, j + b)] = (a, b)
    if cost[n, m] == inf:
        # Too different to align (should not happen with the groupings above): spread evenly.
        start, end = phon_spans[0][0], phon_spans[-1][1]
        edges = np.linspace(start, end, n + 1).astype(int)
        return [(w, int(edges[k]), int(edges[k + 1])) for k, w in enumerate(text_words)]
    groups: list[tuple[int, int, int, int]] = []
    i, j = n, m
    while i > 0 or j > 0:
        a, b = back[(i, j)]
        groups.append((i - a, a, j - b, b))
        i, j = i - a, j - b
    out: list[tuple[str, int, int]] = []
    for ti, a, pj, b in reversed(groups):
        start, end = phon_spans[pj][0], phon_spans[pj + b - 1][1]
        if a == 1:
            out.append((text_words[ti], start, end))
            continue
        weights = np.cumsum([0] + letters[ti : ti + a]) / sum(letters[ti : ti + a])
        for k in range(a):
            out.append((text_words[ti + k], int(start + weights[k] * (end - start)), int(start + weights[k + 1] * (end - start))))
    return out


def sentence_words(text: str) -> list[str]:
    return _WORD_RE.findall(text)
