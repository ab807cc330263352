"""Text -> IPA phonemes with the ``espeak-ng`` program (never the GPL library or piper-tts).

Piper voices were trained on espeak-ng IPA with clause punctuation kept in the phoneme string
(",", "?", ...). The espeak-ng command line prints one line per clause but drops the
punctuation, so we split clauses ourselves, phonemize all of them in one process call (one
clause per line), and put the punctuation back the way Piper's phonemizer does: sentence
terminators end a sentence, other clause marks are followed by a space.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

SENTENCE_END = ".?!"
CLAUSE_MARKS = ",;:"

_ABBREVIATIONS = {
    "mr.": "mister", "mrs.": "missus", "ms.": "miz", "dr.": "doctor", "st.": "saint",
    "jr.": "junior", "sr.": "senior", "vs.": "versus", "etc.": "et cetera", "e.g.": "for example",
    "i.e.": "that is", "no.": "number", "approx.": "approximately",
}
_ABBR_RE = re.compile(r"(?<![\w.])(" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")(?=\s|$)", re.IGNORECASE)
# A clause ends at punctuation followed by whitespace or the end (so "3.50" and "1,000" stay whole).
_CLAUSE_RE = re.compile(r"(.+?)([.?!]+|[,;:]|\.\.\.|…)(?=\s|$)|(.+?)$", re.DOTALL)


class PhonemizerError(RuntimeError):
    """espeak-ng is missing or failed."""


@dataclass(frozen=True)
class Clause:
    text: str
    terminator: str
    """One of ".?!,;:" or "" (no punctuation at the end of the text)."""

    @property
    def ends_sentence(self) -> bool:
        return self.terminator in ("", ".", "?", "!")


def normalize_text(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"').replace("\u201d", '"')
    text = re.sub(r"[\"()\[\]{}*_#~`]", " ", text)
    text = _ABBR_RE.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], text)
    return re.sub(r"\s+", " ", text).strip()


def split_clauses(text: str) -> list[Clause]:
    clauses: list[Clause] = []
    for m in _CLAUSE_RE.finditer(normalize_text(text)):
        body = (m.group(1) or m.group(3) or "").strip()
        term = m.group(2) or ""
        if term in ("...", "…"):
            term = ","
        elif len(term) > 1:
            term = "?" if "?" in term else ("!" if "!" in term else ".")
        if not re.search(r"\w", body):
            continue
        clauses.append(Clause(text=body, terminator=term))
    return clauses


class EspeakPhonemizer:
    """Runs ``espeak-ng -q --ipa`` as a subprocess; one call per text."""

    def __init__(self, voice: str = "en-us", executable: str = "espeak-ng") -> None:
        path = shutil.which(executable)
        if path is None:
            raise PhonemizerError("espeak-ng is not installed; run ./install.sh (or: apt-get install espeak-ng)")
        self.executable = path
        self.voice = voice

    def _run(self, lines: list[str]) -> list[str]:
        # A "." after each clause makes espeak-ng end a line there and nowhere else we care about.
        feed = "\n".join(f"{line}." for line in lines)
        proc = subprocess.run(
            [self.executable, "-q", "--ipa", "-v", self.voice],
            input=feed, capture_output=True, text=True, timeout=60, check=False,
        )
        if proc.returncode != 0:
            raise PhonemizerError(f"espeak-ng failed ({proc.returncode}): {proc.stderr.strip()[:200]}")
        return [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]

    def clause_phonemes(self, clauses: list[Clause]) -> list[str]:
        if not clauses:
            return []
        out = self._run([c.text for c in clauses])
        if len(out) != len(clauses):
            # espeak split some clause differently (rare: odd abbreviations); one call per clause.
            out = [" ".join(self._run([c.text])) for c in clauses]
        return out

    def sentence_pairs(self, text: str) -> list[tuple[str, str]]:
        """(sentence text, IPA phonemes) per sentence, phonemes with Piper-style clause punctuation."""
        clauses = split_clauses(text)
        pairs: list[tuple[str, str]] = []
        words, current = "", ""
        for clause, phon in zip(clauses, self.clause_phonemes(clauses), strict=True):
            words += clause.text + clause.terminator + " "
            if clause.terminator in CLAUSE_MARKS:
                current += phon + clause.terminator + " "
            else:
                current += phon + clause.terminator
                pairs.append((words.strip(), current.strip()))
                words, current = "", ""
        if current.strip():
            pairs.append((words.strip(), current.strip()))
        return pairs

    def sentences(self, text: str) -> list[str]:
        """IPA phoneme strings, one per sentence, with Piper-style clause punctuation."""
        return [phonemes for _, phonemes in self.sentence_pairs(text)]
