"""Training sequences of the unit generator, for the three SyncLLM stages.

A ``UnitDialogue`` is what the data pipeline caches per dialogue: two 25 Hz unit streams
(agent = speaker 0, user = speaker 1), the agent's turns with the LLM tokens of their text and
the onset frame of every word, and the user's turns. From it:

- stage 1, ``turn_sequence``: turn-based, no timing. ``[S0]`` + the agent turn's de-duplicated
  units, ``[S1]`` + the user turn's, in turn order (silence between turns is left out);
- stages 2 and 3, ``duplex_sequence``: SyncLLM's chunked interleaving of both full streams
  (``agent.sync_format``). Stage 2 uses dialogues without overlap, stage 3 those with overlaps,
  backchannels and interruptions; the format is the same.

In both, the agent's reply text is inserted exactly as ``agent.unit_session`` does at run time:
the first ``lookahead`` words at the start of an agent chunk (duplex: the chunk of the first
word's onset, or ``lead`` chunks earlier, drawn per turn), then at each word onset a ``[W]``
followed by the ``[T]`` slots of the word ``lookahead`` further on, then ``[EOT]`` after the last
word. ``[W]`` goes before the first de-duplicated unit whose run starts at or after the onset
(at the end of the chunk when there is none). Text slots and ``[EOT]`` are inputs: no loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from agent.sync_format import UnitVocab, dedup, frames_per_chunk, pad_to_chunks


@dataclass
class AgentTurn:
    """One agent utterance. Frames are 25 Hz indices into the dialogue's streams."""

    start: int
    """First frame of the turn's speech."""
    end: int
    """Frame after its last speech."""
    word_onsets: list[int]
    """Onset frame of each word that was spoken (fewer than the words when the turn was cut off)."""
    word_tokens: list[int]
    """LLM tokens per word (sums to ``len(token_ids)``)."""
    token_ids: np.ndarray
    """(n,) LLM token ids of the turn's text."""
    hidden: np.ndarray | None = None
    """(n, D) float16 LLM hidden states of those tokens (teacher-forced), if computed."""

    def __post_init__(self) -> None:
        if len(self.word_onsets) > len(self.word_tokens):
            raise ValueError("more word onsets than words")
        if sum(self.word_tokens) != len(self.token_ids):
            raise ValueError("word_tokens must add up to the number of token ids")


@dataclass
class UnitDialogue:
    name: str
    agent: np.ndarray
    """(T,) agent units."""
    user: np.ndarray
    """(T,) user units."""
    agent_turns: list[AgentTurn] = field(default_factory=list)
    user_turns: list[tuple[int, int]] = field(default_factory=list)
    """(start, end) frames of each user utterance."""
    user_speech: np.ndarray | None = None
    """(T,) bool: the user channel is speech at that frame (for speech/silence metrics)."""
    kind: str = "duplex"
    """Where it comes from: turn | duplex | overlap (the data's SyncLLM stage), qa, utterance."""

    def __post_init__(self) -> None:
        if len(self.agent) != len(self.user):
            raise ValueError(f"{self.name}: agent and user streams differ in length")


@dataclass
class TrainSequence:
    tokens: np.ndarray
    """(N,) token ids."""
    cond_rows: np.ndarray
    """(N,) row of the dialogue's token table for ``[T]`` slots, -1 elsewhere."""
    loss_mask: np.ndarray
    """(N,) True where the token is a prediction target (not text/[EOT]/the first token)."""
    chunk_pos: np.ndarray
    """(K, 2) positions of each chunk's [S0] and [S1] (duplex; empty for turn sequences)."""
    window_starts: np.ndarray
    """Positions where a training window may start (no reply half-read)."""


def token_table(d: UnitDialogue) -> tuple[np.ndarray, np.ndarray | None]:
    """All agent-turn token ids of a dialogue in order (+ hidden states), and each turn's offset."""
    ids = [t.token_ids for t in d.agent_turns]
    hid = [t.hidden for t in d.agent_turns]
    table = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
    hidden = None
    if hid and all(h is not None for h in hid):
        hidden = np.concatenate(hid)  # type: ignore[arg-type]
    return table, hidden


class _Builder:
    def __init__(self, vocab: UnitVocab) -> None:
        self.v = vocab
        self.tokens: list[int] = []
        self.rows: list[int] = []
        self.target: list[bool] = []

    def add(self, tok: int, row: int = -1, target: bool = True) -> None:
        self.tokens.append(int(tok))
        self.rows.append(row)
        self.target.append(target)

    def text(self, first_row: int, count: int) -> None:
        for r in range(first_row, first_row + count):
            self.add(self.v.text, r, target=False)


class _ReplyReader:
    """The run-time insertion policy (agent.unit_session) replayed on known timings."""

    def __init__(self, b: _Builder, turn: AgentTurn, row0: int, lookahead: int) -> None:
        self.b, self.turn, self.lookahead = b, turn, lookahead
        self.starts = np.concatenate([[0], np.cumsum(turn.word_tokens)]).astype(int) + row0
        self.next_word = 0
        self.eot = False

    def _insert(self) -> None:
        nw = len(self.turn.word_tokens)
        if self.next_word < nw:
            w = self.next_word
            self.b.text(int(self.starts[w]), int(self.turn.word_tokens[w]))
            self.next_word += 1
        elif not self.eot:
            self.b.add(self.b.v.eot, target=False)
            self.eot = True

    def start(self) -> None:
        nw = len(self.turn.word_tokens)
        for _ in range(min(self.lookahead, nw)):
            self._insert()
        if self.next_word == nw:
            self._insert()  # [EOT] right away for a reply of <= lookahead words

    def word(self) -> None:
        self.b.add(self.b.v.word)
        if not self.eot:
            self._insert()


def _units_with_words(b: _Builder, units: np.ndarray, base: int, onsets: list[tuple[int, _ReplyReader]]) -> None:
    """Append de-duplicated ``units`` (frames base..base+len) with [W]+text at word onsets."""
    kept, starts = dedup(units)
    pending = sorted(onsets, key=lambda o: o[0])
    i = 0
    for u, s in zip(kept, starts, strict=True):
        while i < len(pending) and pending[i][0] <= base + s:
            pending[i][1].word()
            i += 1
        b.add(u)
    while i < len(pending):
        pending[i][1].word()
        i += 1


def turn_sequence(d: UnitDialogue, vocab: UnitVocab, lookahead: int) -> TrainSequence:
    """Stage 1: turn-based spoken dialogue (no timing, no silence between turns)."""
    b = _Builder(vocab)
    events: list[tuple[int, str, object]] = [(t.start, "agent", t) for t in d.agent_turns]
    events += [(s, "user", (s, e)) for s, e in d.user_turns]
    events.sort(key=lambda e: (e[0], e[1]))
    row = 0
    starts: list[int] = []
    for _, who, obj in events:
        starts.append(len(b.tokens))
        if who == "agent":
            turn = obj
            assert isinstance(turn, AgentTurn)
            b.add(vocab.s0)
            reader = _ReplyReader(b, turn, row, lookahead)
            reader.start()
            onsets = [(int(o), reader) for o in turn.word_onsets]
            _units_with_words(b, d.agent[turn.start : turn.end], turn.start, onsets)
            row += len(turn.token_ids)
        else:
            s, e = obj  # type: ignore[misc]
            b.add(vocab.s1)
            for u in dedup(d.user[s:e])[0]:
                b.add(u)
    return _finish(b, np.zeros((0, 2), dtype=np.int64), starts)


def duplex_sequence(
    d: UnitDialogue, vocab: UnitVocab, chunk_ms: int, lookahead: int, leads: np.ndarray | None = None
) -> TrainSequence:
    """Stages 2-3: the full-duplex chunked format of both streams.

    ``leads`` (one per agent turn, in chunks, default 0): how many chunks before the chunk of
    its first word's onset the turn's text starts to be read.
    """
    n = frames_per_chunk(chunk_ms)
    agent, user = pad_to_chunks(np.asarray(d.agent), n), pad_to_chunks(np.asarray(d.user), n)
    k_total = len(agent) // n
    turns = sorted(d.agent_turns, key=lambda t: t.start)
    rows = np.concatenate([[0], np.cumsum([len(t.token_ids) for t in turns])]).astype(int)
    if leads is None:
        leads = np.zeros(len(turns), dtype=int)
    # Chunk where each turn's text is first read, and the chunk after which it is finished.
    ins = [max(0, (t.word_onsets[0] if t.word_onsets else t.start) // n - int(lead)) for t, lead in zip(turns, leads, strict=True)]
    done = [max(t.end, (t.word_onsets[-1] + 1) if t.word_onsets else t.end) // n for t in turns]
    b = _Builder(vocab)
    chunk_pos = np.zeros((k_total, 2), dtype=np.int64)
    window_starts: list[int] = []
    readers: dict[int, _ReplyReader] = {}
    for k in range(k_total):
        busy = any(ins[i] <= k <= done[i] for i in range(len(turns)))
        chunk_pos[k, 0] = len(b.tokens)
        if not busy:
            window_starts.append(len(b.tokens))
        b.add(vocab.s0)
        for i, t in enumerate(turns):
            if ins[i] == k:
                readers[i] = _ReplyReader(b, t, int(rows[i]), lookahead)
                readers[i].start()
        onsets = [
            (int(o), readers[i])
            for i, t in enumerate(turns)
            if i in readers
            for o in t.word_onsets
            if k * n <= o < (k + 1) * n
        ]
        _units_with_words(b, agent[k * n : (k + 1) * n], k * n, onsets)
        chunk_pos[k, 1] = len(b.tokens)
        b.add(vocab.s1)
        for u in dedup(user[k * n : (k + 1) * n])[0]:
            b.add(u)
    return _finish(b, chunk_pos, window_starts)


def _finish(b: _Builder, chunk_pos: np.ndarray, starts: list[int]) -> TrainSequence:
    mask = np.asarray(b.target, dtype=bool)
    if len(mask):
        mask[0] = False  # nothing predicts the first token
    return TrainSequence(
        tokens=np.asarray(b.tokens, dtype=np.int64),
        cond_rows=np.asarray(b.rows, dtype=np.int64),
        loss_mask=mask,
        chunk_pos=chunk_pos,
        window_starts=np.asarray(starts, dtype=np.int64),
    )


def windows(seq: TrainSequence, max_len: int) -> list[tuple[int, int]]:
    """Cover a sequence with windows of at most ``max_len`` tokens that start at allowed starts.

    Consecutive windows overlap by about half a window so every target is seen with context.
    """
    n = len(seq.tokens)
    if n <= max_len:
        return [(0, n)]
    starts = seq.window_starts if len(seq.window_starts) else np.array([0])
    out: list[tuple[int, int]] = []
    pos = int(starts[0])
    while True:
        end = min(n, pos + max_len)
        out.append((pos, end))
        if end >= n:
            break
        near = starts[(starts > pos) & (starts <= pos + max_len // 2)]
        if len(near):
            pos = int(near[-1])
            continue
        later = starts[starts > pos]
        if len(later) == 0:
            break
        # A long busy stretch: start at the first allowed point after it (rare).
        pos = int(later[0])
    return out
