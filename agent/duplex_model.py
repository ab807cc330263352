"""The whole agent, one 160 ms chunk at a time: ``DuplexModel`` composes the parts.

Parts (each built by its own factory; nothing is re-implemented here):

- ``listener``   (agent.speech_input.SpeechListener): encoder -> adapter -> frozen LLM prefill ->
  state head, on the *listening* LLM context;
- ``llm``        (agent.llm.FrozenLLM): also decodes the reply, on a separate *answer* context;
- ``units``      (agent.units.UnitTokenizer): the user's 25 Hz units for the generator;
- ``generator``  (agent.unit_generator + agent.unit_session): SyncLLM-style agent units, reading
  the reply text word by word;
- ``tts``        (agent.tts_emotion.EmotionTTS): streaming unit decoder with emotion plugins.

Per-session state lives in a :class:`DuplexState` (streaming states of every part, parked between
calls), so one model serves many sessions and a session's reset never touches another's. Two LLM
contexts per session, as in Freeze-Omni: when the state head says *interrupt*, the listening
context (system prompt, prompt embeddings, the user's speech) becomes the answer context (the
chat suffix is prefilled and the reply decoded there) and a fresh listening context starts on
the spare KV cache, so the agent keeps hearing the user while it speaks without either context
corrupting the other.

Two ways to drive it:

- ``step(state, chunk)``: one call per 160 ms chunk; the model's own state head takes the turn
  and detects barge-ins, and while the agent speaks the reply advances by one chunk (LLM text ->
  unit generator -> decoder). Simple and synchronous (the Python API, offline use, tests).
- the staged methods (``listen``, ``user_units``, ``begin_reply``, ``decode``, ``generate``,
  ``synthesize``, ``cancel_*``), which the asyncio runtime (``duplex.session``) runs on one worker
  thread per model, combined with the VAD by ``duplex.turn_policy``. Each staged method touches
  one model only: ``listen``/``begin_reply``/``decode`` the LLM side, ``user_units``/``generate``
  the generator side, ``synthesize`` the decoder.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from agent.llm import FrozenLLM, GreedyReply, IncrementalDetokenizer, LLMState, RidingBlock
from agent.speech_input import SpeechListener
from agent.streaming import StateDict, StreamingModule
from agent.sync_format import dedup
from agent.tts_emotion import NEUTRAL, EmotionTTS
from agent.unit_generator import LoadedGenerator
from agent.unit_session import ChunkStep, GeneratorSession, open_session
from agent.units import UnitTokenizer

CONTINUE, INTERRUPT, REJECT = 0, 1, 2
INPUT_RATE = 16000


@contextmanager
def installed(module: StreamingModule, states: StateDict) -> Iterator[None]:
    """Install a session's parked streaming states on ``module`` for the block's duration."""
    module.set_streaming_state(states)
    try:
        yield
    finally:
        module.set_streaming_state(None)


# ---------------------------------------------------------------------------------------------
# Reply emotion from text
# ---------------------------------------------------------------------------------------------
_EMOTION_WORDS: dict[str, tuple[str, ...]] = {
    "happy": ("glad", "happy", "great", "wonderful", "congratulations", "awesome", "love", "fun", "delighted",
              "fantastic", "excellent", "yay", "enjoy", "nice"),
    "sad": ("sorry", "sad", "unfortunately", "miss", "loss", "regret", "afraid", "lonely", "condolences"),
    "angry": ("angry", "unacceptable", "annoying", "outrageous", "furious", "stop", "hate"),
    "surprised": ("wow", "really", "amazing", "incredible", "surprising", "whoa", "unbelievable", "oh"),
}


def emotion_from_text(text: str, available: set[str] | None = None) -> str:
    """A reply's emotion from its words: the emotion with most cue words (ties and none: neutral).

    A small lexicon, deliberately: the reply is streamed, so the emotion is picked from the words
    decoded when its speech starts (the LLM runs well ahead of the speech), and it must cost
    nothing. Emotions without a loaded plugin are skipped.
    """
    words = re.findall(r"[a-z']+", text.lower())
    scores = {e: sum(w in cues for w in words) for e, cues in _EMOTION_WORDS.items()
              if available is None or e in available}
    if text.rstrip().endswith("!") and (available is None or "happy" in available):
        scores["happy"] = scores.get("happy", 0) + 1
    best = max(scores.items(), key=lambda kv: kv[1], default=(NEUTRAL, 0))
    if best[1] == 0 or sum(v == best[1] for v in scores.values()) > 1:
        return NEUTRAL
    return best[0]


# ---------------------------------------------------------------------------------------------
# State and results
# ---------------------------------------------------------------------------------------------
@dataclass
class ReplyText:
    """The LLM side of one reply (lives in ``DuplexState.reply``)."""

    id: int
    decoding: GreedyReply | None
    """The token choice (None once the reply ended or was cancelled)."""
    detok: IncrementalDetokenizer
    tokens: list[int] = field(default_factory=list)
    text: str = ""

    @property
    def ended(self) -> bool:
        return self.decoding is None


@dataclass
class DuplexState:
    """Everything one session's models remember between calls. Make it with ``DuplexModel.new_state``."""

    listener: StateDict
    """Streaming states of the listener; its ``"llm"`` entry is the listening context."""
    spare: LLMState
    """The other LLM context: the last reply's answer context, reused as the next listening one."""
    units: StateDict
    generator: GeneratorSession
    tts: StateDict | None = None
    """Decoder states of the utterance being spoken (None between utterances)."""
    emotion: str = NEUTRAL
    """Emotion of the next replies: a plugin name, ``neutral`` or ``auto`` (picked from the reply text)."""
    utterance_emotion: str = NEUTRAL
    """Emotion of the utterance being spoken."""
    reply: ReplyText | None = None
    answer: LLMState | None = None
    """The answer context while a reply is decoded."""
    needs_restart: bool = False
    """The listening context must be restarted (prefix + prompt) before the next chunk."""
    chunks: int = 0
    """Chunks listened to."""
    unit_chunks: int = 0
    """Chunks whose user units were pushed to the generator."""
    restarts: int = 0
    """Listening contexts started because the old one was full (long silence)."""
    speaking_reply: int | None = None
    """Reply whose units the generator is speaking (step() mode)."""
    reply_chunks: int = 0
    """Generator chunks of the current reply (step() mode)."""


@dataclass
class ListenResult:
    probs: np.ndarray
    """(3,) state-head probabilities: continue, interrupt, reject."""
    decision: int
    index: int
    """Chunk index (0 = the session's first 160 ms)."""
    compute_s: float


@dataclass
class ListenJob:
    """One session's listening step for ``DuplexModel.listen_many``."""

    state: DuplexState
    audio: np.ndarray
    """n chunks of user audio (n * 2560,)."""
    agent_speaking: list[bool]
    """Per chunk: whether the agent held the floor (the state head reads it)."""
    reply_id: int | None = None
    """Reply whose next token rides in the pass (``listen_and_decode``); None = listening only."""


@dataclass
class TextChunk:
    tokens: list[int]
    hidden: torch.Tensor | None
    """(n, D) hidden states of ``tokens``."""
    text: str
    ended: bool
    compute_s: float


@dataclass
class StepResult:
    """What ``DuplexModel.step`` did for one chunk."""

    listen: ListenResult
    audio: np.ndarray
    """Agent audio completed in this step (mono float32 at ``sample_rate``; may be empty)."""
    events: list[str]
    """Turn events of this step: take_turn, barge_in, reply_done."""
    text: str
    """Reply text decoded in this step."""


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
class DuplexModel:
    """The agent's models, shared by every session. Shapes: input chunks (2560,) float32 at 16 kHz."""

    def __init__(self, listener: SpeechListener, units: UnitTokenizer, generator: LoadedGenerator,
                 tts: EmotionTTS, cfg: Any) -> None:
        self.listener = listener
        self.llm: FrozenLLM = listener.llm
        self.units = units
        self.generator = generator
        self.tts = tts
        self.cfg = cfg
        self.chunk_samples = listener.speech.chunk_samples
        self.chunk_s = self.chunk_samples / INPUT_RATE
        self.positions_per_chunk = listener.speech.positions_per_chunk
        from agent.tts import SAMPLE_RATE

        self.sample_rate = SAMPLE_RATE
        self.input_rate = INPUT_RATE
        arch = generator.model.arch
        if arch.chunk_ms != int(round(1000 * self.chunk_s)):
            raise ValueError(f"generator chunk {arch.chunk_ms} ms != listener chunk {1000 * self.chunk_s:.0f} ms")
        self.units_per_chunk = arch.frames_per_chunk
        max_reply_s = getattr(getattr(cfg, "runtime", None), "max_reply_s", 30.0)
        self.max_reply_chunks = max(1, int(max_reply_s / self.chunk_s))
        self.max_tail_s = float(getattr(getattr(cfg, "runtime", None), "max_tail_s", 3.0))
        self.silent_chunk = self._silent_chunk()
        """The agent's chunk while it is silent with nothing to say: the de-duplicated units of the
        digital silence it plays (see ``follow``)."""
        self.head_override: Callable[[DuplexState, int, bool], np.ndarray | None] | None = None
        """Test/simulation hook: (state, chunk index, agent speaking) -> (3,) probabilities that
        replace the state head's (None keeps them). The model still runs in full."""
        self.listen_observer: Callable[[DuplexState, int, np.ndarray], None] | None = None
        """Simulation hook: called with (state, chunk index, the head's own (3,) probabilities) for every
        chunk listened to (before ``head_override``), e.g. to score the head against a scripted truth."""

    # -- sessions ------------------------------------------------------------------------------
    def new_state(self, emotion: str = NEUTRAL) -> DuplexState:
        """Fresh per-session state (allocates the KV caches: two LLM contexts, the generator's; ~200 MB
        whose pages the OS zero-fills as they are first written, ``agent.streaming.lazy_zeros``: ~3 ms
        on the LLM worker instead of the ~75 ms of writing them all, which every other session's
        listening waited behind)."""
        self.check_emotion(emotion)
        return DuplexState(
            listener=self.listener.new_streaming_state(1),
            spare=self.llm.new_streaming_state(1)[""],  # type: ignore[arg-type]
            units=self.units.new_streaming_state(1),
            generator=open_session(self.generator, self.cfg.generator, self.llm),
            emotion=emotion,
        )

    def check_emotion(self, emotion: str) -> None:
        if emotion not in (NEUTRAL, "auto") and emotion not in self.tts.plugins:
            raise KeyError(f"no emotion {emotion!r}; available: neutral, auto, {', '.join(self.tts.plugins) or '(no plugins)'}")

    @property
    def emotions(self) -> list[str]:
        return [NEUTRAL, *self.tts.plugins]

    # -- LLM side (one worker) -------------------------------------------------------------------
    def _ensure_listening_context(self, state: DuplexState, positions: int = 0) -> None:
        llm_state = self.llm.streaming_state
        room = int(self.llm.cfg.max_context - llm_state.lengths[0])
        if state.needs_restart or room < max(positions, self.positions_per_chunk) + len(self.listener.layout.suffix) + 1:
            # A new context: after a reply (Freeze-Omni restarts at each turn taken, and so does
            # stage-3 training), or when a very long stretch without a reply filled the cache.
            self.listener.restart_context()
            if not state.needs_restart:
                state.restarts += 1
            state.needs_restart = False

    @torch.no_grad()
    def listen(self, state: DuplexState, audio: np.ndarray, agent_speaking: bool = False) -> ListenResult:
        """One chunk of user audio (2560,) -> the state head's decision on the listening context."""
        return self.listen_chunks(state, audio, [agent_speaking])[0]

    @torch.no_grad()
    def listen_chunks(self, state: DuplexState, audio: np.ndarray, agent_speaking: list[bool]) -> list[ListenResult]:
        """n chunks at once (n * 2560,), one decision per chunk.

        The same computation as n calls of ``SpeechListener.step`` (the encoder and adapter stream
        whole chunks; the LLM prefills the 2n positions causally and the state head reads each
        chunk's last position), but one LLM pass instead of n: the LLM's cost is in reading its
        weights, so a session that fell behind catches up at almost the price of one chunk.
        """
        out = self.listen_many([ListenJob(state, audio, agent_speaking)])[0]
        assert isinstance(out, list)
        return out

    @torch.no_grad()
    def listen_and_decode(self, state: DuplexState, audio: np.ndarray, agent_speaking: list[bool],
                          reply_id: int) -> tuple[list[ListenResult], TextChunk]:
        """``listen_chunks`` with the next token of reply ``reply_id`` riding in the same LLM pass
        (on the answer context): in `bench duplex` a step carrying a token took ~52 ms against ~42
        for a plain one, where a 2-token job of its own takes ~57 ms. One token per call: the runtime lets a reply that is
        already heard, with text to spare, advance one token per listening step (~6 tokens/s, speech
        reads ~3-4). No token if that reply is not the one decoding (cancelled meanwhile) or ended."""
        out = self.listen_many([ListenJob(state, audio, agent_speaking, reply_id)])[0]
        assert isinstance(out, tuple)
        return out

    @torch.no_grad()
    def listen_many(self, jobs: list[ListenJob]) -> list[list[ListenResult] | tuple[list[ListenResult], TextChunk]]:
        """Listening steps of several sessions in ONE LLM pass: each job is what ``listen_chunks``
        (``reply_id`` None) or ``listen_and_decode`` would do for its session, and gets what that
        call returns. Encoders, adapters and state heads run per session; the LLM reads its weights
        once for every session's positions (and riding tokens), which is most of a listening step's
        cost: the runtime's LLM worker merges the listening jobs queued at one moment
        (``duplex.workers``), so concurrent calls share that cost instead of queueing for it."""
        # Everything that can refuse a job comes before any state changes (the worker reruns the
        # jobs of a merged call that raised one by one, which must not apply a chunk twice).
        if len({id(j.state) for j in jobs}) != len(jobs):
            raise ValueError("listen_many: one job per session")
        t0 = time.perf_counter()
        audio = [torch.from_numpy(_clean(j.audio, len(j.agent_speaking) * self.chunk_samples))[None] for j in jobs]
        rides = [self._ride(j.state, j.reply_id) for j in jobs]
        blocks = [self._listen_block(j.state, x, j.agent_speaking) for j, x in zip(jobs, audio, strict=True)]
        self.llm.prefill_blocks(blocks + [r[0] for r in rides if r is not None])
        dt = time.perf_counter() - t0
        p = self.positions_per_chunk
        outs: list[list[ListenResult] | tuple[list[ListenResult], TextChunk]] = []
        for j, blk, ride in zip(jobs, blocks, rides, strict=True):
            assert blk.output is not None
            with installed(self.listener, j.state.listener):  # the head's window of past chunks
                logits = self.listener.decide(blk.output.hidden[:, p - 1 :: p])  # each chunk's last position
            results = self._decisions(j.state, logits, j.agent_speaking, dt)
            outs.append(results if j.reply_id is None else (results, self._ridden(j.state, j.reply_id, ride, dt)))
        return outs

    def _ride(self, state: DuplexState, reply_id: int | None) -> tuple[RidingBlock, int] | None:
        """The next token of reply ``reply_id`` as a block for the listening pass, and the token
        (None: no token)."""
        r = state.reply
        if reply_id is None or r is None or r.id != reply_id or r.decoding is None or state.answer is None:
            return None
        token = r.decoding.next_token
        if token is None:
            r.decoding = None
            return None
        return RidingBlock(state.answer, self.llm.embed(torch.tensor([[token]])), with_logits=False), token

    def _ridden(self, state: DuplexState, reply_id: int, ride: tuple[RidingBlock, int] | None,
                compute_s: float) -> TextChunk:
        """``listen_and_decode``'s text: the ridden token taken into its reply (or nothing)."""
        r = state.reply
        if ride is None or r is None:
            ended = r is None or r.id != reply_id or r.ended
            return TextChunk([], None, "", ended, 0.0)
        block, token = ride
        assert block.output is not None and r.decoding is not None
        hidden = block.output.hidden[0, -1]
        r.decoding.feed(hidden)
        return self._took_tokens(r, [token], [hidden], compute_s)

    def _listen_block(self, state: DuplexState, x: torch.Tensor, agent_speaking: list[bool]) -> RidingBlock:
        """A session's chunks (1, n * 2560) through encoder and adapter, as a block of its listening
        context (what ``SpeechListener.step`` does before the LLM, for n chunks at once)."""
        with installed(self.listener, state.listener):
            self._ensure_listening_context(state, positions=len(agent_speaking) * self.positions_per_chunk)
            embeds = self.listener.chunk_embeds(x, torch.tensor([agent_speaking]))
            return RidingBlock(self.llm.streaming_state, embeds, with_logits=False)

    def _decisions(self, state: DuplexState, logits: torch.Tensor, agent_speaking: list[bool],
                   compute_s: float) -> list[ListenResult]:
        probs = torch.softmax(logits[0].float(), -1).numpy()
        out = []
        for i in range(len(agent_speaking)):
            pr = probs[i]
            if self.listen_observer is not None:
                self.listen_observer(state, state.chunks, pr)
            if self.head_override is not None:
                forced = self.head_override(state, state.chunks, agent_speaking[i])
                if forced is not None:
                    pr = np.asarray(forced, dtype=np.float32)
            out.append(ListenResult(probs=pr, decision=int(pr.argmax()), index=state.chunks, compute_s=compute_s))
            state.chunks += 1
        return out

    @torch.no_grad()
    def begin_reply(self, state: DuplexState, reply_id: int) -> float:
        """Close the user's turn on the listening context, which becomes the answer context; the
        spare context becomes the next listening one. Returns compute seconds."""
        t0 = time.perf_counter()
        with installed(self.listener, state.listener):
            self._ensure_listening_context(state)
            first = self.listener.begin_reply(logits=False)[0]
        answer = state.listener["llm"]
        state.listener["llm"] = state.spare
        state.spare = answer  # type: ignore[assignment]
        state.needs_restart = True
        self._open_reply(state, answer, first, reply_id)  # type: ignore[arg-type]
        return time.perf_counter() - t0

    def _open_reply(self, state: DuplexState, answer: LLMState, first_hidden: torch.Tensor, reply_id: int) -> None:
        state.answer = answer
        # No token is decoded until ``decode`` or ``listen_and_decode`` asks.
        state.reply = ReplyText(id=reply_id, decoding=self.llm.greedy_hidden(first_hidden),
                                detok=IncrementalDetokenizer(self.llm))

    @torch.no_grad()
    def speculate_reply(self, state: DuplexState, reply_id: int) -> float:
        """``begin_reply`` on a *copy* of the listening context, which listens on untouched.

        The runtime calls it when the user falls silent, before the turn is decided, so the reply's
        first words can be decoded while the state head is still making up its mind; the copy goes
        to the spare context (free while no reply runs). ``commit_speculation`` makes it the reply;
        ``cancel_text(state, reply_id)`` drops it (the user spoke on). Returns compute seconds."""
        t0 = time.perf_counter()
        listening = state.listener["llm"]
        with installed(self.listener, state.listener):
            self._ensure_listening_context(state)
        state.spare.copy_from(listening)  # type: ignore[arg-type]
        state.listener["llm"] = state.spare
        try:
            with installed(self.listener, state.listener):
                first = self.listener.begin_reply(logits=False)[0]
        finally:
            state.listener["llm"] = listening
        self._open_reply(state, state.spare, first, reply_id)
        return time.perf_counter() - t0

    def commit_speculation(self, state: DuplexState) -> None:
        """The speculated reply is the reply: the listening context restarts, as after ``begin_reply``."""
        state.needs_restart = True

    @torch.no_grad()
    def decode(self, state: DuplexState, max_tokens: int = 1) -> TextChunk:
        """Decode up to ``max_tokens`` more reply tokens on the answer context."""
        t0 = time.perf_counter()
        r = state.reply
        if r is None or r.decoding is None or state.answer is None:
            return TextChunk([], None, "", True, 0.0)
        tokens: list[int] = []
        hidden: list[torch.Tensor] = []
        self.llm.set_streaming_state({"": state.answer})
        try:
            for _ in range(max_tokens):
                token = r.decoding.next_token
                if token is None:
                    break
                out = self.llm.prefill_ids(torch.tensor([[token]]), with_logits=False)
                r.decoding.feed(out.hidden[0, -1])
                tokens.append(token)
                hidden.append(out.hidden[0, -1])
        finally:
            self.llm.set_streaming_state(None)
        return self._took_tokens(r, tokens, hidden, time.perf_counter() - t0)

    def _took_tokens(self, r: ReplyText, tokens: list[int], hidden: list[torch.Tensor], compute_s: float) -> TextChunk:
        """Account for reply tokens whose passes are done and fed to the token choice, which then
        knows whether the reply has ended (no pass needed to find out)."""
        assert r.decoding is not None
        if r.decoding.next_token is None:
            r.decoding = None
        text = "".join(r.detok.push(t) for t in tokens)
        r.tokens += tokens
        r.text += text
        stacked = torch.stack([h.float() for h in hidden]) if hidden else None
        return TextChunk(tokens, stacked, text, r.ended, compute_s)

    def cancel_text(self, state: DuplexState, reply_id: int | None = None) -> None:
        """Stop decoding the reply (barge-in); its context is kept as the spare. With ``reply_id``,
        only if that reply is the one decoding (a late cleanup must not end a newer one)."""
        if reply_id is not None and (state.reply is None or state.reply.id != reply_id):
            return
        if state.reply is not None:
            state.reply.decoding = None
        state.answer = None

    # -- generator side (one worker) -------------------------------------------------------------
    @torch.no_grad()
    def user_units(self, state: DuplexState, audio: np.ndarray, chunks: int = 1) -> np.ndarray:
        """The user's units of ``chunks`` chunks of audio, handed to the generator chunk by chunk."""
        x = torch.from_numpy(_clean(audio, chunks * self.chunk_samples))[None]
        with installed(self.units, state.units):
            units = self.units.push(x)[0].numpy()
        n = self.units_per_chunk
        for i in range(len(units) // n):
            state.generator.push_user_chunk(state.unit_chunks, units[i * n : (i + 1) * n])
            state.unit_chunks += 1
        return units

    def start_reply_units(self, state: DuplexState) -> None:
        state.generator.start_reply()

    def push_text(self, state: DuplexState, text: list[TextChunk], start: bool = False) -> bool:
        """Hand reply text to the generator without stepping (``start``: it begins a new reply);
        returns ``reply_ready``."""
        gen = state.generator
        if start:
            gen.start_reply()
        for chunk in text:
            for i, token in enumerate(chunk.tokens):
                gen.push_text(token, chunk.hidden[i] if chunk.hidden is not None else None)
            if chunk.ended:
                gen.end_text()
        return self.reply_ready(state)

    @torch.no_grad()
    def generate(self, state: DuplexState, text: list[TextChunk] | None = None) -> ChunkStep:
        """Feed new reply text to the generator, then produce the agent's next chunk of units."""
        if text:
            self.push_text(state, text)
        return state.generator.step()

    @torch.no_grad()
    def follow(self, state: DuplexState, feed_every: int = 32) -> ChunkStep:
        """Advance the generator one chunk while the agent is silent with nothing to say.

        The user's chunk goes in as in ``generate``; the agent's chunk is ``silent_chunk``, forced,
        not sampled: a sampled idle chunk cost about two generator forwards per chunk whose output
        was thrown away, and could put units into the context that the agent never played. The
        forced tokens are read into the cache in blocks of ``feed_every`` (one forward each),
        so a reply that starts later does not read a long backlog at its first step."""
        step = state.generator.step(force_agent=self.silent_chunk)
        state.generator.feed_pending(feed_every)
        return step

    @torch.no_grad()
    def _silent_chunk(self) -> list[int]:
        n = self.units_per_chunk
        st = self.units.new_streaming_state(1)
        with installed(self.units, st):
            units = self.units.push(torch.zeros(1, 4 * self.chunk_samples))[0].tolist()
        return dedup(units[-n:])[0]

    def over_budget(self, state: DuplexState, reply_chunks: int) -> bool:
        """A reply that has spoken longer than any sane rendering of its text (or ``max_reply_s``).

        Once the text is complete the budget is 1 s per word plus ``max_tail_s``: a trained
        generator ends far earlier; an untrained one would babble on."""
        if reply_chunks >= self.max_reply_chunks:
            return True
        r = state.generator.reply
        if r is None or not r.words.ended:
            return False
        return reply_chunks * self.chunk_s > len(r.words.words) * 1.0 + self.max_tail_s

    def cancel_units(self, state: DuplexState) -> None:
        state.generator.cancel_reply()

    def reply_ready(self, state: DuplexState) -> bool:
        """The generator has enough reply text to start speaking (its lookahead, or the whole reply)."""
        r = state.generator.reply
        if r is None:
            return False
        w = r.words
        return r.started or len(w.words) >= self.generator.model.arch.text_lookahead or (w.ended and bool(w.words))

    # -- decoder (one worker) -------------------------------------------------------------------
    @torch.no_grad()
    def synthesize(self, state: DuplexState, units: np.ndarray | None, final: bool = False,
                   emotion: str | None = None) -> np.ndarray:
        """Units of the utterance being spoken -> the audio they complete (float32 at 22.05 kHz).

        The first call of an utterance starts it (``emotion`` or the session's), ``final`` ends it
        and returns the decoder's tail.
        """
        if state.tts is None:
            state.tts = self.tts.tts.new_streaming_state(1)
            state.utterance_emotion = emotion if emotion is not None else (
                state.emotion if state.emotion != "auto" else NEUTRAL)
        self.tts.set_emotion(state.utterance_emotion)
        u = torch.as_tensor(np.asarray(units if units is not None else [], dtype=np.int64))[None]
        with installed(self.tts.tts, state.tts):
            out = self.tts(u if u.shape[1] else None, final=final)
        audio = out.row(0).float().numpy()
        if final:
            state.tts = None
        return np.clip(np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0).astype(np.float32)

    def pick_emotion(self, state: DuplexState) -> str:
        """Emotion of a new utterance: the session's, or with ``auto`` one picked from the reply text so far."""
        if state.emotion == "auto":
            return emotion_from_text(state.reply.text if state.reply is not None else "", set(self.tts.plugins))
        return state.emotion

    def cancel_speech(self, state: DuplexState) -> None:
        state.tts = None

    # -- one call per chunk ------------------------------------------------------------------------
    def step(self, state: DuplexState, audio: np.ndarray, *, tokens_per_step: int = 4) -> StepResult:
        """One 160 ms chunk, synchronously: listen; take the turn or stop on the state head; while
        a reply is on, decode up to ``tokens_per_step`` tokens and advance generator and decoder by
        one chunk. (The runtime does the same work on three threads with a VAD-aware policy.)"""
        events: list[str] = []
        speaking = state.speaking_reply is not None
        res = self.listen(state, audio, agent_speaking=speaking)
        self.user_units(state, audio)
        text = ""
        pieces: list[np.ndarray] = []
        if speaking and res.decision == CONTINUE:
            # The user holds the floor while the agent speaks: barge-in.
            self.cancel_text(state)
            self.cancel_units(state)
            self.cancel_speech(state)
            state.speaking_reply = None
            events.append("barge_in")
        elif not speaking and res.decision == INTERRUPT:
            reply_id = (state.reply.id + 1) if state.reply is not None else 0
            self.begin_reply(state, reply_id)
            self.start_reply_units(state)
            state.speaking_reply = reply_id
            state.reply_chunks = 0
            events.append("take_turn")
        if state.speaking_reply is not None:
            chunk = self.decode(state, tokens_per_step)
            text = chunk.text
            step = self.generate(state, [chunk])
            reply = state.generator.reply
            done = reply is None or (not state.generator.reply_pending and not step.speaking and chunk.ended)
            state.reply_chunks += 1
            if self.over_budget(state, state.reply_chunks):
                done = True  # an untrained or looping generator never ends on its own
            if self.reply_ready(state) or state.tts is not None:
                emotion = self.pick_emotion(state) if state.tts is None else None
                pieces.append(self.synthesize(state, step.agent_units, final=done, emotion=emotion))
            elif done and state.tts is not None:
                pieces.append(self.synthesize(state, None, final=True))
            if done:
                state.speaking_reply = None
                events.append("reply_done")
        else:
            self.follow(state)  # the generator's timeline runs on while listening
        audio_out = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return StepResult(listen=res, audio=audio_out, events=events, text=text)


def _clean(audio: np.ndarray, n: int) -> np.ndarray:
    """One chunk as float32 (n,): NaN/inf -> 0, clipped to [-1, 1], zero-padded or cut to n."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(x)):
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    x = np.clip(x, -1.0, 1.0)
    if len(x) != n:
        x = np.pad(x[:n], (0, max(0, n - len(x))))
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------
def load_runtime_tts(cfg: Any) -> EmotionTTS:
    """The decoder the runtime speaks with: the trained card (+ plugins), or an UNTRAINED front end on
    the Piper decoder: ``tts.card: ""`` a small one (the tiny preset), ``"random"`` the default
    architecture (compute measurements before trained weights exist). Untrained, the speech is noise."""
    from agent.tts_emotion import load_emotion_tts

    if cfg.tts.card not in ("", "random"):
        return load_emotion_tts(cfg)[0]
    from agent.piper_torch import load_vits
    from agent.tts import UnitTTSConfig, build_tts

    torch.manual_seed(cfg.seed)
    vits, _ = load_vits(cfg.voice)
    arch = UnitTTSConfig() if cfg.tts.card == "random" else UnitTTSConfig(
        unit_blocks=2, frame_blocks=1, unit_channels=64, frame_channels=64)
    tts = build_tts(arch, vits.dec).eval()
    tts.requires_grad_(False)
    return EmotionTTS(tts)


def runtime_llm_config(cfg: Any) -> Any:
    """``cfg.llm`` as the runtime loads it: ``runtime.llm_dtype`` / ``runtime.llm_weights`` override
    ``llm.dtype`` / ``llm.weights`` where set (the benches report the same)."""
    import dataclasses

    llm_cfg = cfg.llm
    runtime = getattr(cfg, "runtime", None)
    if runtime is not None and runtime.llm_dtype:
        llm_cfg = dataclasses.replace(llm_cfg, dtype=runtime.llm_dtype)
    if runtime is not None and runtime.llm_weights:
        llm_cfg = dataclasses.replace(llm_cfg, weights=runtime.llm_weights)
    return llm_cfg


def convert_linears(module: nn.Module, mode: str, setting: str, act_dtype: torch.dtype | None = None) -> int:
    """Put the linears inside ``module`` in weight mode ``mode`` (in place; "native" leaves them as
    trained); ``setting`` names the option in errors. Returns how many were converted."""
    from agent.llm_quant import WEIGHT_MODES, quantize_linears

    if mode not in WEIGHT_MODES:
        raise ValueError(f"{setting} must be one of {', '.join(WEIGHT_MODES)}, got {mode!r}")
    return 0 if mode == "native" else quantize_linears(module, act_dtype=act_dtype, mode=mode)


def set_encoder_weights(listener: Any, mode: str) -> None:
    """``runtime.encoder_weights``: "int8" or "fp16" puts those linears in the speech encoder's
    Transformer layers (in place); "native" leaves them as trained."""
    convert_linears(listener.speech.encoder.layers, mode, "runtime.encoder_weights", act_dtype=torch.bfloat16)


def set_unit_weights(units: Any, generator: Any, units_mode: str, generator_mode: str) -> None:
    """``runtime.units_weights`` (the Whisper layers of the user-unit tokenizer; the HuBERT backend
    stays as loaded) and ``runtime.generator_weights`` (every linear of the unit generator)."""
    features = getattr(units, "features", None)
    whisper = getattr(features, "backend", "") == "whisper"
    # Nothing to convert for HuBERT, but the value is checked all the same.
    convert_linears(features.encoder.layers if whisper else nn.ModuleList(), units_mode, "runtime.units_weights")
    convert_linears(generator.model, generator_mode, "runtime.generator_weights")


def load_duplex_model(cfg: Any) -> DuplexModel:
    """Factory: every part by its card from an ``AgentConfig`` (the LLM by ``runtime_llm_config``)."""
    from agent.llm import load_llm
    from agent.speech_input import load_listener
    from agent.unit_generator import load_generator
    from agent.units import load_unit_tokenizer

    rt = getattr(cfg, "runtime", None)
    llm = load_llm(runtime_llm_config(cfg))
    listener = load_listener(cfg.speech, llm)
    set_encoder_weights(listener, getattr(rt, "encoder_weights", "native"))
    units = load_unit_tokenizer(cfg.units)
    generator = load_generator(cfg.generator)
    set_unit_weights(units, generator, getattr(rt, "units_weights", "native"), getattr(rt, "generator_weights", "native"))
    tts = load_runtime_tts(cfg)
    return DuplexModel(listener, units, generator, tts, cfg)
