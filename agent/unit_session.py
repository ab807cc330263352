"""Per-session, per-chunk driver of the unit generator (what the duplex runtime calls).

Timeline: chunk k is the wall-clock interval [k*C, (k+1)*C), C = ``arch.chunk_ms``. The agent's
chunk k must exist before time k*C to be played on time, but the user's chunk k-1 is still being
spoken until k*C (and arrives later still over a network). So ``step()`` for chunk k:

1. puts every real user chunk that has arrived (``push_user_chunk``) into the context, replacing
   what stood there (the context is rolled back to the first replaced chunk and re-read in one
   block; the agent chunks after it stay as they were, they have been played);
2. appends the user's chunk k-1: the real one if it is already there, else the model's own
   prediction (``predict_user=True``, SyncLLM's latency tolerance) or a silence chunk
   (``predict_user=False``, the baseline the latency simulation compares with);
3. generates the agent's chunk k, and returns it as 25 Hz units for the TTS decoder.

Reply text policy (the LLM streams its answer while the agent already speaks, CosyVoice-2 style):
``push_text(token, hidden)`` as ``FrozenLLM.generate_stream`` yields them, ``end_text()`` at
the end. The generator reads words with a lookahead of L = ``arch.text_lookahead`` words:

- the reply starts (its first L words go into the context, at the start of an agent chunk) only
  once L complete words exist or the reply has ended: before that the model waits and its agent
  chunks stay silent (it was trained to start speaking within a chunk of the first text);
- each time the model emits ``[W]`` (it starts speaking a new word) the next word is inserted,
  so while speaking word i it has read words up to i+L; after the last word comes ``[EOT]``;
- if the LLM falls behind (the word is not complete yet), the insertion is owed and made at the
  start of the next agent chunk where the word exists: only the lookahead shrinks.
With SmolLM2 at ~30 tokens/s and speech at ~3-4 tokens/s, L=2 costs ~100 ms before the first
unit and the text then runs ever further ahead of the speech.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agent.reply_text import ReplyWords, TextConditioner
from agent.sync_format import dedup, interpolate
from agent.unit_generator import LoadedGenerator, UnitGenerator
from configs.schema import GeneratorConfig


@dataclass
class ChunkStep:
    """What one ``step()`` produced."""

    index: int
    """Agent chunk index k (the chunk to play during [k*C, (k+1)*C))."""
    agent_units: np.ndarray
    """(n,) 25 Hz units of the agent's chunk k, for the TTS decoder."""
    agent_tokens: list[int]
    """The de-duplicated units the model generated for chunk k."""
    user_units: np.ndarray | None
    """(n,) the user's chunk k-1 as put in the context (None at k=0)."""
    user_source: str
    """Where that user chunk came from: real | predicted | silence | none."""
    speaking: bool
    """The agent chunk holds non-silence units."""
    words_started: int
    """``[W]`` tokens emitted in this chunk (words the agent began to speak)."""
    replaced: int
    """Earlier user chunks whose predictions were replaced by real units in this step."""
    step_ms: float
    """Compute time of this step."""


@dataclass
class _UserChunk:
    start: int
    """Position in the context of the chunk's first unit (right after its [S1])."""
    units: list[int]
    """De-duplicated units in the context."""
    source: str


@dataclass
class _Reply:
    words: ReplyWords
    started: bool = False
    next_word: int = 0
    eot_sent: bool = False
    owed: int = 0


@dataclass
class _Context:
    tokens: list[int] = field(default_factory=list)
    conds: list[torch.Tensor | None] = field(default_factory=list)
    fed: int = 0
    """Tokens already in the model's KV cache (the rest are decided but not yet fed)."""


class GeneratorSession:
    """One dialogue's generator context. Methods are not thread-safe; call from one worker."""

    def __init__(
        self,
        model: UnitGenerator,
        cfg: GeneratorConfig,
        conditioner: TextConditioner | None = None,
        silent_units: set[int] | None = None,
    ) -> None:
        self.model = model
        self.cfg = cfg
        self.arch = model.arch
        self.vocab = model.vocab
        self.n = self.arch.frames_per_chunk
        self.conditioner = conditioner
        if conditioner is not None and conditioner.cond_in != self.arch.cond_in:
            raise ValueError(f"text conditioner gives {conditioner.cond_in}-d slots, generator expects {self.arch.cond_in}")
        self.silent_units = {self.arch.silence_unit} if silent_units is None else set(silent_units)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self._state = model.new_streaming_state(1)
        self.ctx = _Context()
        self.next_chunk = 0
        self.user_chunks: dict[int, _UserChunk] = {}
        self.pending_user: dict[int, np.ndarray] = {}
        self.reply: _Reply | None = None
        self._dropped = 0

    def reset(self) -> None:
        """Forget the whole dialogue (a new conversation on the same session object)."""
        self.model.set_streaming_state(self._state)
        try:
            self.model.reset_streaming()
        finally:
            self.model.set_streaming_state(None)
        self.ctx = _Context()
        self.next_chunk = 0
        self.user_chunks = {}
        self.pending_user = {}
        self.reply = None
        self._dropped = 0

    # -- reply text ---------------------------------------------------------------------
    def start_reply(self) -> None:
        """A new LLM reply begins (any unfinished one is dropped)."""
        self.reply = _Reply(words=ReplyWords(self.conditioner))

    def push_text(self, token: int, hidden: torch.Tensor | None = None) -> None:
        """One reply token (and its (D,) LLM hidden state) as ``generate_stream`` yields it."""
        if self.reply is None:
            self.start_reply()
        assert self.reply is not None
        self.reply.words.push(token, hidden)

    def push_word(self, vectors: torch.Tensor) -> None:
        """A complete word as (m, cond_in) slot vectors (when the caller groups tokens itself)."""
        if vectors.dim() != 2 or vectors.shape[1] != self.arch.cond_in:
            raise ValueError(f"word vectors must be (m, {self.arch.cond_in}), got {tuple(vectors.shape)}")
        if self.reply is None:
            self.start_reply()
        assert self.reply is not None
        self.reply.words.push_word(vectors.float())

    def end_text(self) -> None:
        if self.reply is not None:
            self.reply.words.end()

    def cancel_reply(self) -> None:
        """Barge-in: read no further words (the model was trained to fall silent when text stops)."""
        self.reply = None

    @property
    def reply_pending(self) -> bool:
        """A reply exists whose words are not all in the context yet."""
        r = self.reply
        return r is not None and not (r.eot_sent and r.started)

    # -- user units ---------------------------------------------------------------------
    def push_user_chunk(self, index: int, units: np.ndarray) -> None:
        """The real (n,) 25 Hz units of the user's chunk ``index`` (may arrive late; applied at the next step)."""
        units = np.asarray(units).reshape(-1)
        if len(units) != self.n:
            raise ValueError(f"a user chunk has {self.n} units at {self.arch.chunk_ms} ms, got {len(units)}")
        self.pending_user[int(index)] = units

    # -- context plumbing ---------------------------------------------------------------
    def _append(self, token: int, cond: torch.Tensor | None = None) -> None:
        self.ctx.tokens.append(int(token))
        self.ctx.conds.append(cond)

    def _append_text(self, vectors: torch.Tensor) -> None:
        for row in vectors:
            self._append(self.vocab.text, row)

    def _feed(self) -> torch.Tensor:
        """Feed the not-yet-fed tokens; return the (V,) next-token logits after the last one."""
        c = self.ctx
        block = c.tokens[c.fed :]
        if not block:
            raise RuntimeError("nothing to feed")
        tokens = torch.tensor([block], dtype=torch.long)
        cond = None
        conds = c.conds[c.fed :]
        if any(v is not None for v in conds):
            z = torch.zeros(self.arch.cond_in)
            cond = torch.stack([z if v is None else v for v in conds])[None]
        logits = self.model.prefill(tokens, cond)[0, -1]
        c.fed = len(c.tokens)
        return logits.float()

    def _sample(self, logits: torch.Tensor, allowed: torch.Tensor) -> int:
        logits = logits.masked_fill(~allowed, float("-inf"))
        if self.cfg.temperature <= 0:
            return int(torch.argmax(logits))
        logits = logits / self.cfg.temperature
        if 0 < self.cfg.top_k < int(allowed.sum()):
            kth = torch.topk(logits, self.cfg.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=self.rng))

    def _allowed_units(self, prev: int | None, end_token: int | None) -> torch.Tensor:
        allowed = torch.zeros(self.vocab.size, dtype=torch.bool)
        allowed[: self.vocab.num_units] = True
        if prev is not None:
            allowed[prev] = False  # inside a chunk repeats were removed
        if end_token is not None:
            allowed[end_token] = True
        return allowed

    def _compact_if_needed(self) -> None:
        # Worst case one step adds both chunks at full length plus markers and a few words.
        need = 2 * (self.n + 1) + 8 * (self.n + 2)
        if len(self.ctx.tokens) + need <= self.model.max_context:
            return
        keep = min(self.cfg.compact_to, self.model.max_context - need)
        drop = len(self.ctx.tokens) - keep
        if drop <= 0:
            return
        if self.ctx.fed < len(self.ctx.tokens):
            self._feed()
        self.model.compact(keep)
        self.ctx.tokens = self.ctx.tokens[drop:]
        self.ctx.conds = self.ctx.conds[drop:]
        self.ctx.fed = len(self.ctx.tokens)
        self._dropped += drop
        self.user_chunks = {
            j: _UserChunk(r.start - drop, r.units, r.source) for j, r in self.user_chunks.items() if r.start - drop > 0
        }

    # -- replacing predictions with real user chunks ------------------------------------------
    def _apply_arrived(self) -> int:
        fixes: dict[int, list[int]] = {}
        for j in sorted(self.pending_user):
            if j not in self.user_chunks:
                continue  # too old (compacted away) or not yet in the context
            real = dedup(self.pending_user.pop(j))[0]
            rec = self.user_chunks[j]
            if rec.units != real:
                fixes[j] = real
            rec.source = "real"
        for j in [j for j in self.pending_user if j < self.next_chunk - 1 and j not in self.user_chunks]:
            del self.pending_user[j]  # compacted away: nothing left to replace
        if not fixes:
            return 0
        order = sorted(self.user_chunks)
        j0 = min(fixes)
        start = self.user_chunks[j0].start
        old_t, old_c = self.ctx.tokens, self.ctx.conds
        new_t, new_c = old_t[:start], old_c[:start]
        later = [j for j in order if j >= j0]
        for idx, j in enumerate(later):
            rec = self.user_chunks[j]
            old_end = rec.start + len(rec.units)
            nxt = self.user_chunks[later[idx + 1]].start if idx + 1 < len(later) else len(old_t)
            units = fixes.get(j, rec.units)
            rec.start, rec.units = len(new_t), units
            new_t += units
            new_c += [None] * len(units)
            new_t += old_t[old_end:nxt]
            new_c += old_c[old_end:nxt]
        self.ctx.tokens, self.ctx.conds = new_t, new_c
        # Roll the cache back to the first replaced unit; the rest is re-read by the next feed.
        fed_keep = min(self.ctx.fed, start)
        self.model.truncate(torch.tensor([fed_keep]))
        self.ctx.fed = fed_keep
        return len(fixes)

    # -- one chunk ------------------------------------------------------------------------
    def _user_chunk(self, j: int) -> tuple[list[int], str]:
        v = self.vocab
        self._append(v.s1)
        start = len(self.ctx.tokens)
        if j in self.pending_user:
            units, source = dedup(self.pending_user.pop(j))[0], "real"
            for u in units:
                self._append(u)
        elif self.cfg.predict_user:
            units, source = [], "predicted"
            while len(units) < self.n:
                tok = self._sample(self._feed(), self._allowed_units(units[-1] if units else None, v.s0 if units else None))
                if tok == v.s0:
                    break
                units.append(tok)
                self._append(tok)
        else:
            units, source = [self.arch.silence_unit], "silence"
            self._append(self.arch.silence_unit)
        self.user_chunks[j] = _UserChunk(start=start, units=units, source=source)
        return units, source

    def _reply_at_chunk_start(self) -> None:
        r = self.reply
        if r is None:
            return
        w = r.words
        L = self.arch.text_lookahead
        if not r.started:
            if len(w.words) >= L or (w.ended and w.words):
                for _ in range(min(L, len(w.words))):
                    self._append_text(w.words[r.next_word])
                    r.next_word += 1
                r.started = True
                if w.ended and r.next_word == len(w.words):
                    self._append(self.vocab.eot)
                    r.eot_sent = True
            elif w.ended:
                self.reply = None  # an empty reply
            return
        while r.owed and self._insert_next_word(r):
            r.owed -= 1

    def _insert_next_word(self, r: _Reply) -> bool:
        """Insert the next word (or [EOT] after the last). False when the word is not there yet."""
        w = r.words
        if r.next_word < len(w.words):
            self._append_text(w.words[r.next_word])
            r.next_word += 1
            return True
        if w.ended:
            if not r.eot_sent:
                self._append(self.vocab.eot)
                r.eot_sent = True
            return True
        return False

    def _on_word(self) -> None:
        self._append(self.vocab.word)
        r = self.reply
        if r is not None and r.started and not r.eot_sent and not self._insert_next_word(r):
            r.owed += 1

    def _agent_chunk(self, force: list[int] | None) -> tuple[list[int], int]:
        v = self.vocab
        self._append(v.s0)
        self._reply_at_chunk_start()
        units: list[int] = []
        words = 0
        if force is not None:  # teacher forcing (evaluation): the given units and [W]s
            for tok in force:
                if tok == v.word:
                    words += 1
                    self._on_word()
                elif v.is_unit(tok):
                    units.append(int(tok))
                    self._append(tok)
                else:
                    raise ValueError(f"forced agent chunk may hold units and [W] only, got {tok}")
            if not units or len(units) > self.n:
                raise ValueError(f"a forced agent chunk needs 1..{self.n} units, got {len(units)}")
            return units, words
        can_word = self.reply is not None and self.reply.started
        while len(units) < self.n:
            allowed = self._allowed_units(units[-1] if units else None, v.s1 if units else None)
            # Word onsets only while a reply is being read; a few per chunk at most (a word
            # lasts more than 40 ms), which also stops a degenerate [W] loop.
            if can_word and words < self.n:
                allowed[v.word] = True
            tok = self._sample(self._feed(), allowed)
            if tok == v.s1:
                break
            if tok == v.word:
                words += 1
                self._on_word()
                continue
            units.append(tok)
            self._append(tok)
        return units, words

    @torch.no_grad()
    def step(self, force_agent: list[int] | None = None) -> ChunkStep:
        """Produce the agent's next chunk (see the module docstring for the order of work).

        ``force_agent`` (evaluation only) replaces sampling by the given de-duplicated agent
        units and ``[W]`` tokens, e.g. to score the user-chunk predictions on real dialogues.
        """
        t0 = time.perf_counter()
        k = self.next_chunk
        self.model.set_streaming_state(self._state)
        try:
            self._compact_if_needed()
            replaced = self._apply_arrived()
            user_units: np.ndarray | None = None
            source = "none"
            if k > 0:
                units, source = self._user_chunk(k - 1)
                user_units = np.asarray(interpolate(units, self.n), dtype=np.int64)
            agent, words = self._agent_chunk(force_agent)
        finally:
            self.model.set_streaming_state(None)
        self.next_chunk = k + 1
        return ChunkStep(
            index=k,
            agent_units=np.asarray(interpolate(agent, self.n), dtype=np.int64),
            agent_tokens=agent,
            user_units=user_units,
            user_source=source,
            speaking=any(u not in self.silent_units for u in agent),
            words_started=words,
            replaced=replaced,
            step_ms=1000 * (time.perf_counter() - t0),
        )

    @torch.no_grad()
    def feed_pending(self, min_tokens: int = 1) -> int:
        """Read decided-but-unfed context tokens into the cache once at least ``min_tokens`` wait
        (forced chunks are not fed when appended); returns how many were fed."""
        waiting = len(self.ctx.tokens) - self.ctx.fed
        if waiting < max(1, min_tokens):
            return 0
        self.model.set_streaming_state(self._state)
        try:
            self._feed()
        finally:
            self.model.set_streaming_state(None)
        return waiting

    def context_tokens(self) -> list[int]:
        """The current context (for inspection and tests)."""
        return list(self.ctx.tokens)


def open_session(loaded: LoadedGenerator, cfg: GeneratorConfig, llm: Any | None = None) -> GeneratorSession:
    """A session on a loaded generator; ``llm`` (a FrozenLLM) supplies the text conditioning."""
    arch = loaded.model.arch
    if llm is not None and llm.hidden_size != arch.cond_dim:
        raise ValueError(f"the generator was trained on a {arch.cond_dim}-d LLM, this LLM is {llm.hidden_size}-d")
    cond = TextConditioner.from_llm(llm, arch.use_hidden, arch.phoneme_symbols) if llm is not None else None
    silent = set(loaded.extra.get("silent_units", [arch.silence_unit]))
    return GeneratorSession(loaded.model, cfg, cond, silent_units=silent)
