"""The speech side of the agent around the frozen LLM: trainable parts, context layout, per-chunk API.

``SpeechInput`` holds everything that learns (encoder, adapter, CTC head, prompt embeddings,
"agent speaking" vector, state head) and nothing of the LLM, so its ``state_dict`` is exactly what
a checkpoint stores (adapter-only saves). ``SpeechListener`` is what the runtime drives: it
owns a ``SpeechInput`` and the ``FrozenLLM`` and runs one 160 ms chunk at a time.

Layout of the LLM context (chat template of the LLM, shown for SmolLM2)::

    <|im_start|>system\\n{system prompt}<|im_end|>\\n<|im_start|>user\\n      prefix (text ids)
    [P prompt embeddings]                                                    stage 3 / runtime
    [speech embeddings, 2 per 160 ms chunk (+ "agent speaking" vector)]       streamed
    <|im_end|>\\n<|im_start|>assistant\\n                                     suffix, at INTERRUPT
    answer tokens ...                                                        decoded

Stage 2 puts the text instruction ``speech.transcribe_instruction`` where the prompt embeddings
go and trains on the transcript as the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from agent.adapter import SpeechAdapter, embedding_rms
from agent.encoder import StreamingSpeechEncoder, build_encoder, pad_to_chunks
from agent.llm import ContextSnapshot, FrozenLLM, RidingBlock
from agent.state_head import StateHead
from agent.streaming import StreamingModule, StreamingState
from configs.schema import SpeechConfig

CTC_CHARS = " abcdefghijklmnopqrstuvwxyz"
"""CTC output alphabet (index 0 is the blank, then these); text is ``text_metrics.normalize``d."""

_SENTINEL = "\u2063SPEECH\u2063"


class SpeechInput(nn.Module):
    """All trainable parts of the speech input. Shapes: audio (B, S) 16 kHz, embeddings (B, N, D_llm)."""

    def __init__(self, cfg: SpeechConfig, llm_dim: int, embed_rms: float = 1.0, init_pretrained: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder: StreamingSpeechEncoder = build_encoder(cfg.encoder, init_pretrained=init_pretrained)
        self.adapter = SpeechAdapter(cfg.adapter, cfg.encoder.d_model, llm_dim, embed_rms)
        self.ctc = nn.Linear(cfg.encoder.d_model, len(CTC_CHARS) + 1)
        self.prompt = nn.Parameter(torch.randn(cfg.state_head.prompt_len, llm_dim) * embed_rms)
        self.speaking = nn.Parameter(torch.zeros(llm_dim))
        self.state_head = StateHead(llm_dim, cfg.state_head.hidden, cfg.state_head.context_chunks)
        if self.encoder.block % cfg.adapter.stack:
            raise ValueError(f"adapter.stack {cfg.adapter.stack} must divide the {self.encoder.block} frames of a chunk")
        self.positions_per_chunk = self.encoder.block // cfg.adapter.stack

    @property
    def chunk_samples(self) -> int:
        return self.encoder.chunk_samples

    def encode(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Offline encoder pass. audio (B, S) -> frames (B, T, D_enc), valid frames (B,).

        Audio is right-padded with silence to whole chunks; padding never leaks into earlier
        frames (the encoder is causal across chunks).
        """
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.long)
        audio = pad_to_chunks(audio, self.chunk_samples)
        frames = self.encoder(audio)
        return frames, torch.div(lengths + 319, 320, rounding_mode="floor").clamp(max=frames.shape[1])

    def speech_embeds(self, audio: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Offline: audio (B, S) -> LLM embeddings (B, N, D_llm) and valid positions per row (B,).

        Positions cover whole chunks (the last partial chunk is padded with silence), exactly as
        the streamed chunks would.
        """
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.long)
        frames, _ = self.encode(audio, lengths)
        chunks = torch.div(lengths + self.chunk_samples - 1, self.chunk_samples, rounding_mode="floor").clamp(min=1)
        return self.adapter(frames), chunks * self.positions_per_chunk

    def trainable_names(self, stage: int) -> list[str]:
        """Parameter-name prefixes trained in ``stage`` (1 ASR, 2 alignment, 3 QA + state head)."""
        return {1: ["encoder.", "ctc."], 2: ["encoder.", "adapter."], 3: ["prompt", "speaking", "state_head."]}[stage]

    def set_stage(self, stage: int, extra: Sequence[str] = ()) -> list[nn.Parameter]:
        """Freeze everything but ``stage``'s parameters (and ``extra`` name prefixes); return those
        (what the optimiser gets)."""
        prefixes = self.trainable_names(stage) + list(extra)
        params = []
        for name, p in self.named_parameters():
            p.requires_grad_(any(name.startswith(x) for x in prefixes))
            if p.requires_grad:
                params.append(p)
        return params


def build_speech_input(cfg: SpeechConfig, llm: FrozenLLM, *, load_weights: bool = True,
                       init_pretrained: bool = True) -> SpeechInput:
    """Factory: SpeechInput sized for ``llm``; trained weights from ``cfg.weights_card`` when set."""
    rms = embedding_rms(llm.model.get_input_embeddings().weight.detach())
    speech = SpeechInput(cfg, llm.hidden_size, rms, init_pretrained=init_pretrained and not (load_weights and cfg.weights_card))
    if load_weights and cfg.weights_card:
        from agent.speech_weights import load_bundled

        load_bundled(speech, cfg.weights_card)
    return speech


@dataclass
class ChatLayout:
    """Token ids around the speech for one LLM (derived from its chat template)."""

    prefix: list[int]
    """System prompt + start of the user turn."""
    suffix: list[int]
    """End of the user turn + start of the assistant turn."""
    end: list[int]
    """End-of-turn token(s) closing an assistant answer (the training target ends with it)."""
    instruction: list[int]
    """Stage 2's text instruction (placed where the prompt embeddings go)."""

    @classmethod
    def for_llm(cls, llm: FrozenLLM, instruction: str) -> ChatLayout:
        system = llm.cfg.system_prompt
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": _SENTINEL}]
        text = llm.chat_text(messages)
        head, tail = text.split(_SENTINEL)
        # An assistant turn rendered without generation prompt shows how a turn is closed.
        closed = llm.chat_text(messages + [{"role": "assistant", "content": _SENTINEL}], add_generation_prompt=False)
        after = closed.split(_SENTINEL)[-1]
        end_ids = llm.encode_text(after.rstrip("\n")) or sorted(llm.stop_ids)[:1]
        return cls(prefix=llm.encode_text(head), suffix=llm.encode_text(tail), end=end_ids,
                   instruction=llm.encode_text(instruction.strip() + "\n") if instruction else [])


def pack_sequences(rows: Sequence[Sequence[torch.Tensor]], label_rows: Sequence[Sequence[torch.Tensor]]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Concatenate per-row parts, right-pad. rows: per row, parts (n_i, D); label_rows: per row,
    parts (n_i,) of target ids (-100 = no loss). Returns embeds (B, T, D), labels (B, T), lengths (B,)."""
    seqs = [torch.cat(list(parts), dim=0) for parts in rows]
    labs = [torch.cat(list(parts), dim=0) for parts in label_rows]
    lengths = torch.tensor([s.shape[0] for s in seqs])
    t, d = int(lengths.max()), seqs[0].shape[1]
    embeds = seqs[0].new_zeros(len(seqs), t, d)
    labels = torch.full((len(seqs), t), -100, dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labs, strict=True)):
        embeds[i, : s.shape[0]] = s
        labels[i, : lab.shape[0]] = lab
    return embeds, labels, lengths


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits (B, T, V) predicting labels shifted by one (B, T); -100 ignored."""
    return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


# ----------------------------------------------------------------------------------------------
# Runtime: one chunk at a time.


@dataclass
class ChunkResult:
    logits: torch.Tensor
    """(B, 3) state-head logits for this chunk."""
    state: torch.Tensor
    """(B,) argmax decision: 0 continue, 1 interrupt, 2 reject."""
    hidden: torch.Tensor
    """(B, D_llm) LLM last-layer hidden state at the chunk's last position."""


@dataclass
class ListenerState(StreamingState):
    chunks: torch.Tensor
    """(B,) speech chunks prefilled per row since its context was (re)started."""
    started: torch.Tensor
    """(B,) whether the row's prefix + prompt are in the LLM cache."""
    past: torch.Tensor
    """(B, context - 1, D_llm) hidden states of the last chunks, oldest first (the state head's
    window; valid rows: the last ``min(chunks, context - 1)``)."""

    def reset(self, mask: torch.Tensor) -> None:
        self.chunks[mask] = 0
        self.started[mask] = False
        self.past[mask] = 0


class SpeechListener(StreamingModule[ListenerState]):
    """Per-chunk pipeline: audio -> encoder -> adapter -> LLM prefill -> state head.

    Usage (one session per batch row)::

        with listener.streaming(1):
            for chunk in chunks_of_2560_samples:               # 160 ms at 16 kHz, float32
                res = listener.step(chunk[None], agent_speaking=torch.tensor([False]))
                if res.state[0] == INTERRUPT:
                    first_logits = listener.begin_reply()[0]   # (V,) for llm.generate_stream
                    for token, hidden in llm.generate_stream(first_logits): ...
                    listener.restart_context()                 # next listening context

    The LLM's KV cache holds the prefix, prompt and speech of the current context;
    ``reset_streaming(mask)`` restarts everything (new session), ``restart_context`` only the LLM
    context.
    """

    def __init__(self, speech: SpeechInput, llm: FrozenLLM, layout: ChatLayout) -> None:
        super().__init__()
        self.speech = speech
        self.llm = llm
        self.layout = layout
        self._start: tuple[tuple, ContextSnapshot] | None = None
        """The KV of prefix + prompt, kept after their first prefill: every listening context
        starts with them, and prefilling those ~40 positions again at each turn cost ~105 ms of
        the LLM worker (1 thread, default preset) where copying them costs well under 1 ms."""

    def _init_streaming_state(self, batch_size: int) -> ListenerState:
        k = self.speech.state_head.context
        return ListenerState(batch_size=batch_size, chunks=torch.zeros(batch_size, dtype=torch.long),
                             started=torch.zeros(batch_size, dtype=torch.bool),
                             past=torch.zeros(batch_size, k - 1, self.llm.hidden_size))

    def decide(self, hidden: torch.Tensor) -> torch.Tensor:
        """State-head logits (B, n, 3) of the next n chunks' hidden states (B, n, D), with the
        window of chunks before them; advances the chunk count and the window."""
        st = self.streaming_state
        head = self.speech.state_head
        logits = head(hidden, st.past, st.chunks)
        if head.context > 1:
            st.past.copy_(torch.cat([st.past, hidden.float()], dim=1)[:, -(head.context - 1) :])
        st.chunks += hidden.shape[1]
        return logits

    def _start_rows(self) -> None:
        """Prefill prefix + prompt embeddings into every row's cache (rows restart together)."""
        st = self.streaming_state
        if bool(st.started.all()):
            return
        if bool(st.started.any()):
            # Rows cannot prefill different lengths in one call; restart all but keep it simple:
            # the runtime runs one session per listener row group and restarts rows together.
            raise RuntimeError("SpeechListener rows must be (re)started together")
        b = st.batch_size
        llm_state = self.llm.streaming_state
        empty = not bool(llm_state.lengths.any())
        # Keyed by what the start depends on besides the frozen LLM: the batch, the cache's dtype
        # and the prompt embeddings, which training updates in place (that bumps their version).
        prompt = self.speech.prompt
        key = (b, llm_state.cache.keys_buf.dtype, prompt.data_ptr(), prompt._version)
        reusable = empty and not torch.is_grad_enabled()
        if reusable and self._start is not None and self._start[0] == key:
            llm_state.restore(self._start[1])
        else:
            prefix = self.llm.embed(torch.tensor([self.layout.prefix] * b))
            self.llm.prefill(torch.cat([prefix, prompt[None].expand(b, -1, -1).to(prefix.dtype)], dim=1))
            if reusable:
                self._start = (key, llm_state.snapshot())
        st.started[:] = True

    @torch.no_grad()
    def chunk_embeds(self, audio: torch.Tensor, agent_speaking: torch.Tensor | None = None) -> torch.Tensor:
        """n chunks (B, n * chunk_samples) -> their (B, n * positions_per_chunk, D) LLM inputs: what a
        step prefills. Starts the rows' context first (prefix + prompt, once per context); the
        "agent speaking" vector is added to the positions of chunk i where ``agent_speaking`` (B, n)
        is True."""
        self._start_rows()
        frames = self.speech.encoder.step(audio)
        embeds = self.speech.adapter.step(frames)
        if agent_speaking is not None:
            flags = agent_speaking.to(embeds.dtype).repeat_interleave(self.speech.positions_per_chunk, dim=1)
            embeds = embeds + flags[:, :, None] * self.speech.speaking
        return embeds

    @torch.no_grad()
    def step(self, audio: torch.Tensor, agent_speaking: torch.Tensor | None = None,
             also: Sequence[RidingBlock] = ()) -> ChunkResult:
        """One chunk (B, chunk_samples) of 16 kHz audio -> state decision (see ``ChunkResult``).
        ``also``: blocks of other LLM contexts that ride in this chunk's LLM pass (``FrozenLLM.prefill``)."""
        if audio.shape[-1] != self.speech.chunk_samples:
            raise ValueError(f"listener step takes one chunk of {self.speech.chunk_samples} samples, got {audio.shape[-1]}")
        embeds = self.chunk_embeds(audio, None if agent_speaking is None else agent_speaking[:, None])
        out = self.llm.prefill(embeds, also=also)
        hidden = out.hidden[:, -1]
        logits = self.decide(hidden[:, None])[:, 0]
        return ChunkResult(logits=logits, state=logits.argmax(-1), hidden=hidden)

    @torch.no_grad()
    def restart_context(self) -> None:
        """Start a new listening context in the LLM (prefix + prompt prefilled now), keeping the
        encoder's acoustic state: call it once the reply has been decoded. Training cuts episodes
        into contexts exactly so (``training.speech_data.episode_segments``): the LLM context restarts
        at each turn taken, the encoder runs on continuously."""
        st = self.streaming_state
        self.llm.reset_streaming()
        st.reset(torch.ones(st.batch_size, dtype=torch.bool))
        self._start_rows()

    @torch.no_grad()
    def begin_reply(self, logits: bool = True) -> torch.Tensor:
        """Close the user turn (prefill the suffix); return (B, V) logits of the reply's first token
        (``logits=False``: the (B, D) last hidden state they come from)."""
        b = self.streaming_state.batch_size
        out = self.llm.prefill_ids(torch.tensor([self.layout.suffix] * b), with_logits=logits)
        if not logits:
            return out.hidden[:, -1]
        assert out.logits is not None
        return out.logits[:, -1]


def load_listener(cfg_speech: SpeechConfig, llm: FrozenLLM) -> SpeechListener:
    """Factory for the runtime: bundled weights (``cfg.weights_card``) + the frozen LLM."""
    speech = build_speech_input(cfg_speech, llm).eval()
    return SpeechListener(speech, llm, ChatLayout.for_llm(llm, cfg_speech.transcribe_instruction))


def text_to_ctc(text: str) -> list[int]:
    """Normalised text -> CTC target ids (1-based; 0 is the blank)."""
    from agent.text_metrics import normalize

    return [CTC_CHARS.index(c) + 1 for c in normalize(text) if c in CTC_CHARS]


def ctc_greedy(logits: torch.Tensor, length: int) -> str:
    """Greedy CTC decode of (T, C) logits (first ``length`` frames)."""
    ids = logits[:length].argmax(-1).tolist()
    out, prev = [], 0
    for i in ids:
        if i != prev and i != 0:
            out.append(CTC_CHARS[i - 1])
        prev = i
    return " ".join("".join(out).split())


class PrefixCache:
    """Keys/values of a fixed text prefix (e.g. the system prompt), computed once per LLM.

    The frozen LLM's output on a constant prefix never changes, so training steps reuse its KV
    instead of recomputing ~30 tokens per example; gradients never need to reach it.
    """

    def __init__(self, llm: FrozenLLM, ids: Sequence[int]) -> None:
        from transformers.cache_utils import DynamicCache

        self.llm = llm
        self.length = len(ids)
        with torch.no_grad():
            cache = DynamicCache()
            llm.model.base_model(input_ids=torch.tensor([list(ids)]), past_key_values=cache, use_cache=True)
        self.kv = [(layer.keys, layer.values) for layer in cache.layers]

    def forward(self, embeds: torch.Tensor, logit_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run (B, T, D) right-padded embeddings after the prefix. Returns hidden (B, T, D) and the
        logits (N, V) of the positions where ``logit_mask`` (B, T) is True (None if no mask)."""
        from transformers.cache_utils import DynamicCache

        b, t, _ = embeds.shape
        cache = DynamicCache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in self.kv])
        pos = (self.length + torch.arange(t))[None].expand(b, -1)
        out = self.llm.model.base_model(inputs_embeds=embeds.to(self.llm.dtype), past_key_values=cache,
                                        position_ids=pos, use_cache=True)
        hidden = out.last_hidden_state
        logits = None
        if logit_mask is not None:
            logits = self.llm.model.get_output_embeddings()(hidden[logit_mask])
        return hidden, logits
