"""Reply words -> phoneme ids, the pronunciation the unit generator reads besides the LLM's vectors.

Why: the generator must learn how each reply word sounds from about two hours of speech. From
the LLM's BPE tokens alone it has to learn English spelling-to-sound from a few thousand
sentences, and every word it has not heard is a guess; a phoneme string says how to pronounce
any word. The symbols are the characters of espeak-ng's IPA output (stress marks included), as
Piper voices use them. Every word is phonemized on its own (no cross-word context), at training
and at run time alike, through the ``espeak-ng`` program (``agent.phonemize``). At run time a
word must not cost a process start (~20-50 ms): one espeak-ng process per phonemizer stays open
and answers line by line (~0.5 ms a word), see ``_EspeakLines``.

The inventory (the symbol list) is fitted on the training words and stored in the generator's
checkpoint (``GeneratorArch.phoneme_symbols``); at run time a symbol outside it is skipped.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import unicodedata
import weakref
from collections.abc import Iterable

from agent.phonemize import EspeakPhonemizer, normalize_text

_KEEP = re.compile(r"[^\w' ]")
MAX_CACHE = 50_000
"""Words kept in a phonemizer's cache (a conversation uses a few thousand at most)."""


def word_key(text: str) -> str:
    """What is pronounced of one word's text: punctuation and surrounding space dropped."""
    return _KEEP.sub(" ", normalize_text(text)).strip()


def _symbols(ipa: str) -> list[str]:
    # One symbol per code point, as Piper's phoneme ids are; word-internal spaces (a word that
    # espeak splits, such as "3.5") are kept as separators.
    return [c for c in unicodedata.normalize("NFD", ipa.strip()) if c != "\n"]


class _EspeakLines:
    """One long-running ``espeak-ng`` that reads a word per line on stdin and writes its IPA line.

    Given no text argument espeak-ng reads stdin and answers each line as it arrives, so a
    word costs a pipe round trip instead of a process start. The input line is what
    ``EspeakPhonemizer._run`` feeds for one word ("word."), so the answers are the same.
    """

    TIMEOUT_S = 2.0

    def __init__(self, engine: EspeakPhonemizer) -> None:
        self.proc = subprocess.Popen(
            [engine.executable, "-q", "--ipa", "-v", engine.voice],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0,
        )
        self._buf = b""
        # Ends the process with its owner (a session's conditioner), also on interpreter exit.
        self._finalizer = weakref.finalize(self, _stop, self.proc)

    def lookup(self, key: str) -> str | None:
        """IPA of one word key (no newlines, not empty); None when espeak did not answer in time."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(f"{key}.\n".encode())
        except (BrokenPipeError, OSError):
            return None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], self.TIMEOUT_S)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def close(self) -> None:
        self._finalizer()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


class WordPhonemizer:
    """Phoneme symbols per word, with a cache; a training corpus's words go to espeak-ng in one
    process call (``prime``), words at run time to one long-running process (``symbols``)."""

    def __init__(self, voice: str = "en-us", engine: EspeakPhonemizer | None = None) -> None:
        self.engine = engine or EspeakPhonemizer(voice)
        self._cache: dict[str, list[str]] = {"": []}
        self._lines: _EspeakLines | None = None

    def prime(self, words: Iterable[str]) -> None:
        """Phonemize every not yet known word in one espeak-ng call (training corpora)."""
        todo = sorted({word_key(w) for w in words} - self._cache.keys())
        if not todo:
            return
        out = self.engine._run(todo)
        if len(out) != len(todo):  # espeak split or merged a line: one call per word instead
            out = [" ".join(self.engine._run([w])) for w in todo]
        for w, ipa in zip(todo, out, strict=True):
            self._remember(w, _symbols(ipa))

    def _remember(self, key: str, symbols: list[str]) -> None:
        if len(self._cache) >= MAX_CACHE:
            self._cache.clear()
            self._cache[""] = []
        self._cache[key] = symbols

    def symbols(self, word: str) -> list[str]:
        key = word_key(word)
        if key not in self._cache:
            self._remember(key, _symbols(self._lookup(key)))
        return self._cache[key]

    def _lookup(self, key: str) -> str:
        if not any(c.isalnum() for c in key):  # nothing to say (a lone apostrophe): espeak says nothing
            return ""
        if self._lines is None:
            self._lines = _EspeakLines(self.engine)
        ipa = self._lines.lookup(key)
        if ipa is None:  # espeak stalled or died: a fresh process next time, one call now
            self._lines.close()
            self._lines = None
            return " ".join(self.engine._run([key]))
        return ipa

    def close(self) -> None:
        """Stop the long-running espeak-ng (also done when the phonemizer is collected)."""
        if self._lines is not None:
            self._lines.close()
            self._lines = None

    def ids(self, word: str, index: dict[str, int]) -> list[int]:
        """Ids of the word's symbols in ``index`` (symbol -> id; symbols outside it are skipped)."""
        return [index[s] for s in self.symbols(word) if s in index]


def fit_inventory(phonemizer: WordPhonemizer, words: Iterable[str]) -> tuple[str, ...]:
    """Sorted symbols used by ``words`` (primes the phonemizer's cache on the way)."""
    words = list(words)
    phonemizer.prime(words)
    return tuple(sorted({s for w in words for s in phonemizer.symbols(w)}))
