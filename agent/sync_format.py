"""SyncLLM's interleaved two-stream format over 25 Hz speech units.

A dialogue is two parallel unit streams at 25 Hz (one unit per 40 ms): the agent (speaker 0)
and the user (speaker 1). Time is cut into fixed chunks of ``chunk_ms`` (160/200/240 ms, i.e.
``n = chunk_ms / 40`` units per stream). The model sequence is, per chunk k::

    [S0] dedup(agent chunk k) [S1] dedup(user chunk k) [S0] dedup(agent chunk k+1) ...

The periodic speaker tags ``[S0]``/``[S1]`` are the sync tokens: every pair of them is exactly
``chunk_ms`` of wall-clock time, whatever the number of units in between. Inside a chunk,
consecutive repeats are removed (de-duplication: repeats mostly encode duration and silence and
carry little content). For synthesis a chunk's m de-duplicated units are stretched back to n
frames by repeating each one equally, the first ``n % m`` one more time (interpolation). This is
exactly lossless where the chunk had no repeats and always keeps the chunk timing.

The agent stream can also carry conditioning markers used by the unit generator (``[W]`` word
onset, ``[T]`` text slots of the LLM's reply, ``[EOT]`` end of reply text); they take no time
and are skipped when a sequence is turned back into 25 Hz streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UNIT_RATE_HZ = 25
"""Units per second of every unit stream."""
FRAME_MS = 40
"""Milliseconds of audio per unit."""
CHUNK_CHOICES_MS = (160, 200, 240)
"""Chunk sizes the format is designed for (SyncLLM studies 160-240 ms)."""


class FormatError(ValueError):
    """A malformed interleaved sequence or a bad chunk size."""


@dataclass(frozen=True)
class UnitVocab:
    """Token ids: units ``0..num_units-1``, then the specials in a fixed order."""

    num_units: int = 500

    @property
    def pad(self) -> int:
        return self.num_units

    @property
    def s0(self) -> int:
        """Agent (speaker 0) chunk tag / sync token."""
        return self.num_units + 1

    @property
    def s1(self) -> int:
        """User (speaker 1) chunk tag / sync token."""
        return self.num_units + 2

    @property
    def word(self) -> int:
        """``[W]``: the next agent unit starts a new word (the runtime then inserts text)."""
        return self.num_units + 3

    @property
    def text(self) -> int:
        """``[T]``: a slot whose embedding is a text token (+ LLM hidden state) of the reply."""
        return self.num_units + 4

    @property
    def eot(self) -> int:
        """``[EOT]``: the reply text has no more words."""
        return self.num_units + 5

    @property
    def size(self) -> int:
        return self.num_units + 6

    def is_unit(self, token: int) -> bool:
        return 0 <= token < self.num_units

    def names(self) -> dict[int, str]:
        return {self.pad: "[PAD]", self.s0: "[S0]", self.s1: "[S1]", self.word: "[W]", self.text: "[T]", self.eot: "[EOT]"}


def frames_per_chunk(chunk_ms: int) -> int:
    """Units per stream in one chunk (``chunk_ms`` must be a positive multiple of 40 ms)."""
    if chunk_ms <= 0 or chunk_ms % FRAME_MS:
        raise FormatError(f"chunk_ms must be a positive multiple of {FRAME_MS} ms, got {chunk_ms}")
    return chunk_ms // FRAME_MS


def dedup(units: Sequence[int]) -> tuple[list[int], list[int]]:
    """Remove consecutive repeats. Returns the kept units and the offset where each run starts."""
    kept: list[int] = []
    starts: list[int] = []
    for i, u in enumerate(units):
        u = int(u)
        if not kept or u != kept[-1]:
            kept.append(u)
            starts.append(i)
    return kept, starts


def interpolate(units: Sequence[int], n: int) -> list[int]:
    """Stretch ``m`` de-duplicated units of a chunk to ``n`` frames by equal repetition.

    Each unit is repeated ``n // m`` times and the first ``n % m`` once more (SyncLLM's rule).
    """
    m = len(units)
    if m == 0:
        raise FormatError("a chunk needs at least one unit to interpolate")
    if m > n:
        raise FormatError(f"chunk has {m} units but only {n} frames")
    base, extra = divmod(n, m)
    out: list[int] = []
    for i, u in enumerate(units):
        out.extend([int(u)] * (base + (1 if i < extra else 0)))
    return out


def pad_to_chunks(units: np.ndarray, n: int) -> np.ndarray:
    """Pad a (T,) stream with its last unit to a whole number of chunks (empty stays empty)."""
    t = len(units)
    if t == 0 or t % n == 0:
        return np.asarray(units)
    return np.concatenate([units, np.full(n - t % n, units[-1], dtype=units.dtype)])


def interleave(agent: np.ndarray, user: np.ndarray, chunk_ms: int, vocab: UnitVocab) -> list[int]:
    """Two (T,) unit streams -> the de-duplicated interleaved sequence (trailing partial chunk padded)."""
    if len(agent) != len(user):
        raise FormatError(f"streams differ in length: agent {len(agent)}, user {len(user)}")
    n = frames_per_chunk(chunk_ms)
    a, u = pad_to_chunks(np.asarray(agent), n), pad_to_chunks(np.asarray(user), n)
    out: list[int] = []
    for k in range(len(a) // n):
        out.append(vocab.s0)
        out.extend(dedup(a[k * n : (k + 1) * n])[0])
        out.append(vocab.s1)
        out.extend(dedup(u[k * n : (k + 1) * n])[0])
    return out


@dataclass
class ParsedChunk:
    """One chunk pair of an interleaved sequence (units only; markers dropped)."""

    agent: list[int]
    user: list[int]


def split_chunks(tokens: Sequence[int], vocab: UnitVocab) -> list[ParsedChunk]:
    """Parse ``[S0] a.. [S1] u.. [S0] ...`` into chunk pairs; ``[W]/[T]/[EOT]`` are skipped.

    A final chunk may stop after its agent part (user list empty), as during generation.
    """
    chunks: list[ParsedChunk] = []
    side: str | None = None
    skip = {vocab.word, vocab.text, vocab.eot, vocab.pad}
    for pos, tok in enumerate(tokens):
        tok = int(tok)
        if tok == vocab.s0:
            if side == "agent":
                raise FormatError(f"[S0] at {pos} before the previous chunk's [S1]")
            chunks.append(ParsedChunk(agent=[], user=[]))
            side = "agent"
        elif tok == vocab.s1:
            if side != "agent":
                raise FormatError(f"[S1] at {pos} without a preceding [S0]")
            side = "user"
        elif tok in skip:
            continue
        elif vocab.is_unit(tok):
            if side is None:
                raise FormatError(f"unit at {pos} before the first [S0]")
            (chunks[-1].agent if side == "agent" else chunks[-1].user).append(tok)
        else:
            raise FormatError(f"token {tok} at {pos} is not in the vocabulary")
    return chunks


def deinterleave(
    tokens: Sequence[int], chunk_ms: int, vocab: UnitVocab, fill: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved sequence -> two (K * n,) 25 Hz streams by per-chunk interpolation.

    A chunk side with no units (possible only in generated or truncated sequences) repeats the
    previous unit of that stream, or ``fill`` (default: the pad id) at the very start.
    """
    n = frames_per_chunk(chunk_ms)
    chunks = split_chunks(tokens, vocab)
    streams: dict[str, list[int]] = {"agent": [], "user": []}
    for ch in chunks:
        for side, units in (("agent", ch.agent), ("user", ch.user)):
            if len(units) > n:
                raise FormatError(f"a {side} chunk has {len(units)} units, more than its {n} frames")
            if units:
                streams[side].extend(interpolate(units, n))
            else:
                prev = streams[side][-1] if streams[side] else (vocab.pad if fill is None else fill)
                streams[side].extend([prev] * n)
    return np.asarray(streams["agent"], dtype=np.int64), np.asarray(streams["user"], dtype=np.int64)
