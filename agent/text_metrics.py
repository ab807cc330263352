"""Text normalisation and error rates (WER/CER) used by every evaluation.

The normaliser makes "3.50 dollars" and "three point five zero dollars" comparable enough for
judging intelligibility: lowercase, punctuation dropped, digits spelled out, hyphens split.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = [(10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]
_CONTRACTIONS = {
    "won't": "will not", "can't": "can not", "cannot": "can not", "n't": " not", "'re": " are", "'ll": " will",
    "'ve": " have", "'m": " am", "'d": " would", "let's": "let us", "it's": "it is", "that's": "that is",
    "what's": "what is", "there's": "there is", "he's": "he is", "she's": "she is", "here's": "here is",
    "who's": "who is", "where's": "where is", "how's": "how is",
}
_SPELLING = {"okay": "ok", "mm-hm": "mhm", "mm-hmm": "mhm", "mmhmm": "mhm", "uh-huh": "uhhuh",
    # British/American spellings are the same word to a listener.
    "colour": "color", "favourite": "favorite", "favour": "favor", "neighbour": "neighbor", "honour": "honor",
    "centre": "center", "theatre": "theater", "metre": "meter", "grey": "gray", "travelled": "traveled",
}


def number_to_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return f"{number_to_words(head)} {name}" + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")


def _spell_number(match: re.Match[str]) -> str:
    whole, frac = match.group(1).replace(",", ""), match.group(2)
    if len(whole) > 12:
        return " ".join(_ONES[int(d)] for d in whole)
    words = number_to_words(int(whole))
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return f" {words} "


def normalize(text: str) -> str:
    text = text.lower().replace("\u2019", "'")
    for src, dst in _SPELLING.items():
        text = re.sub(rf"\b{re.escape(src)}\b", dst, text)
    for src, dst in _CONTRACTIONS.items():
        text = text.replace(src, dst)
    text = re.sub(r"(\d[\d,]*)(?:\.(\d+))?", _spell_number, text)
    text = text.replace("%", " percent ").replace("&", " and ")
    text = re.sub(r"[^a-z' ]+", " ", text).replace("'", "")
    return re.sub(r"\s+", " ", text).strip()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(refs: str | Sequence[str], hyps: str | Sequence[str]) -> float:
    """Corpus word error rate (total edits / total reference words) after normalisation."""
    refs_l = [refs] if isinstance(refs, str) else list(refs)
    hyps_l = [hyps] if isinstance(hyps, str) else list(hyps)
    if len(refs_l) != len(hyps_l):
        raise ValueError("refs and hyps differ in length")
    edits = words = 0
    for r, h in zip(refs_l, hyps_l, strict=True):
        rw, hw = normalize(r).split(), normalize(h).split()
        edits += edit_distance(rw, hw)
        words += len(rw)
    return edits / max(words, 1)


def cer(refs: str | Sequence[str], hyps: str | Sequence[str]) -> float:
    """Corpus character error rate after normalisation (spaces count as characters)."""
    refs_l = [refs] if isinstance(refs, str) else list(refs)
    hyps_l = [hyps] if isinstance(hyps, str) else list(hyps)
    edits = chars = 0
    for r, h in zip(refs_l, hyps_l, strict=True):
        rn, hn = normalize(r), normalize(h)
        edits += edit_distance(list(rn), list(hn))
        chars += len(rn)
    return edits / max(chars, 1)


def token_f1(ref: str, hyp: str) -> float:
    """Bag-of-words F1 between two texts (SQuAD-style), after normalisation."""
    rw, hw = normalize(ref).split(), normalize(hyp).split()
    if not rw or not hw:
        return float(rw == hw)
    common: dict[str, int] = {}
    for w in rw:
        common[w] = common.get(w, 0) + 1
    overlap = 0
    for w in hw:
        if common.get(w, 0) > 0:
            overlap += 1
            common[w] -= 1
    if overlap == 0:
        return 0.0
    p, r = overlap / len(hw), overlap / len(rw)
    return 2 * p * r / (p + r)
