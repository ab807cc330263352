"""The unit generator: a small decoder-only transformer over SyncLLM's interleaved format.

Sequences follow ``agent.sync_format``: per chunk ``[S0] agent units [S1] user units``, with the
agent stream carrying the frozen LLM's reply as conditioning slots (``[T]``) that the runtime
inserts word by word after the model emits a word-onset token ``[W]`` (see
``agent.unit_session`` for the policy). A ``[T]`` slot's input vector is the LLM's input
embedding of one reply token, concatenated with the LLM's last hidden state for that token when
``arch.use_hidden`` (Freeze-Omni conditions its speech decoder on both).

Streaming: ``with model.streaming(B):`` allocates a KV cache of ``max_context`` slots per row;
``prefill`` appends a block of tokens per row and returns its logits; ``truncate`` rolls rows
back (to replace a predicted user chunk by the real one); ``compact`` drops the oldest slots
when a row fills up. Positions use rotary embeddings applied before caching, so dropping old
slots keeps every remaining relative distance intact.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from agent.streaming import StreamingModule, StreamingState, lazy_zeros
from agent.sync_format import UnitVocab, frames_per_chunk
from configs.schema import GeneratorConfig


@dataclass(kw_only=True)
class GeneratorArch:
    """Architecture and format of one trained generator (stored inside its checkpoint)."""

    num_units: int = 500
    """Unit vocabulary size (specials come on top, see ``UnitVocab``)."""
    chunk_ms: int = 160
    """Chunk duration of the interleaved format."""
    d_model: int = 256
    """Transformer width."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    ffn_mult: int = 4
    """Feed-forward width as a multiple of d_model."""
    cond_dim: int = 576
    """Width of the LLM vectors (its hidden size); text slots get ``cond_dim`` or ``2*cond_dim`` inputs."""
    use_hidden: bool = True
    """Text slots carry the LLM's hidden state besides the token embedding."""
    text_lookahead: int = 2
    """Words of reply text the model sees ahead of the word it starts speaking."""
    silence_unit: int = 0
    """Unit of the tokenizer that stands for silence (used to fill unknown user chunks)."""
    rope_base: float = 10000.0
    """Rotary embedding base."""
    dropout: float = 0.0
    """Dropout in training."""
    phoneme_symbols: tuple[str, ...] = ()
    """Phoneme inventory of the reply words' pronunciations (``agent.word_phonemes``); empty =
    the model reads the LLM's vectors only. With it, each word's slots are its token slots
    followed by one slot per phoneme."""

    def __post_init__(self) -> None:
        self.phoneme_symbols = tuple(self.phoneme_symbols)  # JSON gives a list

    @property
    def vocab(self) -> UnitVocab:
        return UnitVocab(self.num_units)

    @property
    def frames_per_chunk(self) -> int:
        return frames_per_chunk(self.chunk_ms)

    @property
    def llm_cond_in(self) -> int:
        """Width of the LLM part of a slot vector."""
        return self.cond_dim * (2 if self.use_hidden else 1)

    @property
    def cond_in(self) -> int:
        """Width of a slot vector: the LLM part, then a one-hot phoneme part (zeros on token slots)."""
        return self.llm_cond_in + len(self.phoneme_symbols)


def _rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (B, 1, T, hd/2) for absolute ``positions`` (B, T)."""
    ang = positions.to(torch.float32)[:, None, :, None] * inv_freq
    return ang.cos(), ang.sin()


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, hd) pairs of channels by the precomputed angles."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)


@dataclass
class GeneratorState(StreamingState):
    keys: torch.Tensor
    """(L, B, H, S, hd) rotated keys, S = max_context slots."""
    values: torch.Tensor
    """(L, B, H, S, hd)."""
    lengths: torch.Tensor
    """(B,) slots in use per row."""
    positions: torch.Tensor
    """(B,) position id of the next token per row."""

    def reset(self, mask: torch.Tensor) -> None:
        self.lengths[mask] = 0
        self.positions[mask] = 0


class _Block(nn.Module):
    def __init__(self, arch: GeneratorArch) -> None:
        super().__init__()
        d, h = arch.d_model, arch.num_heads
        self.heads, self.head_dim = h, d // h
        self.norm1 = nn.RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.norm2 = nn.RMSNorm(d)
        self.fc1 = nn.Linear(d, arch.ffn_mult * d)
        self.fc2 = nn.Linear(arch.ffn_mult * d, d)
        self.drop = nn.Dropout(arch.dropout)

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return _rope(q, cos, sin), _rope(k, cos, sin), v

    def _out(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = att.shape
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, -1)))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.norm2(x)))))


class UnitGenerator(StreamingModule[GeneratorState]):
    """Decoder-only transformer: (B, T) tokens + (B, T, cond_in) text-slot vectors -> (B, T, V) logits."""

    def __init__(self, arch: GeneratorArch, max_context: int = 2048) -> None:
        super().__init__()
        if arch.d_model % arch.num_heads:
            raise ValueError("d_model must be divisible by num_heads")
        self.arch = arch
        self.vocab = arch.vocab
        self.max_context = max_context
        self.embed = nn.Embedding(self.vocab.size, arch.d_model)
        self.cond_norm = nn.LayerNorm(arch.llm_cond_in)
        self.cond_proj = nn.Linear(arch.llm_cond_in, arch.d_model)
        # Phoneme slots: a one-hot in the vector's phoneme part, i.e. an embedding per symbol.
        self.phoneme_embed = nn.Linear(len(arch.phoneme_symbols), arch.d_model, bias=False) if arch.phoneme_symbols else None
        self.blocks = nn.ModuleList(_Block(arch) for _ in range(arch.num_layers))
        self.norm = nn.RMSNorm(arch.d_model)
        self.head = nn.Linear(arch.d_model, self.vocab.size, bias=False)
        hd = arch.d_model // arch.num_heads
        inv_freq = 1.0 / (arch.rope_base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def _embed(self, tokens: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        x = self.embed(tokens)
        if cond is not None:
            cond = cond.to(x.dtype)
            llm_in = self.arch.llm_cond_in
            vec = self.cond_proj(self.cond_norm(cond[..., :llm_in]))
            if self.phoneme_embed is not None:
                one_hot = cond[..., llm_in:]
                vec = torch.where(one_hot.sum(-1, keepdim=True) > 0, self.phoneme_embed(one_hot), vec)
            is_text = (tokens == self.vocab.text).unsqueeze(-1)
            x = x + torch.where(is_text, vec, 0.0)
        return x

    # -- full pass (training) -------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Causal pass over right-padded (B, T) tokens; ``cond`` (B, T, cond_in) is read at ``[T]`` slots."""
        b, t = tokens.shape
        positions = torch.arange(t)[None].expand(b, t)
        x = self._embed(tokens, cond)
        cos, sin = _rope_tables(positions, self.inv_freq)
        for blk in self.blocks:
            q, k, v = blk._qkv(x, cos, sin)
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = blk._out(x, att)
        return self.head(self.norm(x))

    # -- streaming ------------------------------------------------------------------------
    def _init_streaming_state(self, batch_size: int) -> GeneratorState:
        a = self.arch
        shape = (a.num_layers, batch_size, a.num_heads, self.max_context, a.d_model // a.num_heads)
        p = next(self.parameters())
        zeros = torch.zeros(batch_size, dtype=torch.long)
        return GeneratorState(
            batch_size=batch_size,
            keys=lazy_zeros(shape, p.dtype),
            values=lazy_zeros(shape, p.dtype),
            lengths=zeros.clone(),
            positions=zeros.clone(),
        )

    def free_slots(self) -> torch.Tensor:
        return self.max_context - self.streaming_state.lengths

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Append (B, T) tokens to every row's cache; return their (B, T, V) logits."""
        st = self.streaming_state
        b, t = tokens.shape
        if b != st.batch_size:
            raise ValueError(f"batch {b} != streaming batch {st.batch_size}")
        if int(st.lengths.max()) + t > self.max_context:
            raise RuntimeError(f"generator KV cache full ({self.max_context} slots); call compact() first")
        lengths = st.lengths
        positions = st.positions[:, None] + torch.arange(t)[None]
        read_len = int(lengths.max()) + t
        uniform = bool((lengths == lengths[0]).all())
        if uniform and t == 1:
            mask = None  # every cached slot is visible to the single new token
        else:
            key_slot = torch.arange(read_len)[None, None, :]
            query_slot = (lengths[:, None] + torch.arange(t)[None])[:, :, None]
            mask = (key_slot <= query_slot)[:, None]  # (B, 1, T, read_len)
        rows = torch.arange(b)[:, None]
        slots = lengths[:, None] + torch.arange(t)[None]
        x = self._embed(tokens, cond)
        cos, sin = _rope_tables(positions, self.inv_freq)
        for i, blk in enumerate(self.blocks):
            q, k, v = blk._qkv(x, cos, sin)
            if uniform:
                s0 = int(lengths[0])
                st.keys[i, :, :, s0 : s0 + t] = k
                st.values[i, :, :, s0 : s0 + t] = v
            else:
                st.keys[i][rows, :, slots] = k.transpose(1, 2)
                st.values[i][rows, :, slots] = v.transpose(1, 2)
            att = F.scaled_dot_product_attention(
                q, st.keys[i, :, :, :read_len], st.values[i, :, :, :read_len], attn_mask=mask
            )
            x = blk._out(x, att)
        st.lengths += t
        st.positions += t
        return self.head(self.norm(x))

    def truncate(self, new_lengths: torch.Tensor) -> None:
        """Roll rows back to ``new_lengths`` (B,) slots (<= current): the dropped tokens are forgotten."""
        st = self.streaming_state
        new_lengths = new_lengths.to(torch.long)
        if bool((new_lengths > st.lengths).any()) or bool((new_lengths < 0).any()):
            raise ValueError("truncate can only shorten rows")
        st.positions -= st.lengths - new_lengths
        st.lengths.copy_(new_lengths)

    def compact(self, keep: int, row: int = 0) -> int:
        """Keep only the last ``keep`` slots of ``row``; returns how many slots were dropped."""
        st = self.streaming_state
        n = int(st.lengths[row])
        drop = max(0, n - keep)
        if drop:
            st.keys[:, row, :, :keep] = st.keys[:, row, :, drop:n].clone()
            st.values[:, row, :, :keep] = st.values[:, row, :, drop:n].clone()
            st.lengths[row] = n - drop
        return drop


# -- checkpoints ---------------------------------------------------------------------------
def save_generator(model: UnitGenerator, path: str | Path, extra: dict[str, Any] | None = None,
                   dtype: torch.dtype = torch.float16) -> None:
    """Atomic safetensors save of the weights (cast to ``dtype``) with the arch as metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {"arch": json.dumps(asdict(model.arch)), "extra": json.dumps(extra or {})}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


@dataclass
class LoadedGenerator:
    model: UnitGenerator
    extra: dict[str, Any] = field(default_factory=dict)


def load_generator_file(path: str | Path, max_context: int = 2048) -> LoadedGenerator:
    """Load a checkpoint written by ``save_generator`` (weights back in float32, eval mode)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if "arch" not in meta:
            raise ValueError(f"{path}: not a unit-generator checkpoint (no arch metadata)")
        tensors = {k: f.get_tensor(k).to(torch.float32) for k in f.keys()}  # noqa: SIM118
    arch = GeneratorArch(**json.loads(meta["arch"]))
    model = UnitGenerator(arch, max_context=max_context)
    model.load_state_dict(tensors)
    model.eval()
    return LoadedGenerator(model=model, extra=json.loads(meta.get("extra", "{}")))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def param_megabytes(model: nn.Module, bytes_per_param: int = 2) -> float:
    return count_parameters(model) * bytes_per_param / 1e6


def load_generator(cfg: GeneratorConfig) -> LoadedGenerator:
    """Factory: ``cfg.card`` (card name, card YAML, or a .safetensors path) -> an eval-mode generator.

    Cards of kind ``bundled``/``local`` point at a checkpoint file; kind ``random`` builds an
    untrained generator from ``source.config`` (tests and the tiny preset).
    """
    from agent.assets import AssetError, load_card, source_path

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    if cfg.card.endswith(".safetensors"):
        path = Path(cfg.card).expanduser()
        if not path.is_file():
            raise AssetError(f"unit generator checkpoint not found: {path}; train one with `duplex-agent units train`")
        return load_generator_file(path, cfg.max_context)
    card = load_card(cfg.card, family="unit-generator", role="unit-generator")
    if card.kind == "random":
        src = dict(card.source)
        torch.manual_seed(int(src.get("seed", 0)))
        model = UnitGenerator(GeneratorArch(**dict(src["config"])), max_context=cfg.max_context).eval()
        return LoadedGenerator(model=model, extra={"silent_units": list(src.get("silent_units", [0]))})
    return load_generator_file(source_path(card), cfg.max_context)
