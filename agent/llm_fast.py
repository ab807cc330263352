"""A lean inference forward for Llama-family decoders over the slot KV cache (``FrozenLLM.prefill``).

Why: a 160 ms listening chunk is 2 LLM positions, and a reply token 1. At those sizes the
transformers forward spends about as long in Python and small ops as in the weight matmuls
(SmolLM2-135M, int8 weights, 1 thread: 36 ms per 2-position prefill, of which the int8 kernel is
~18.5 ms and ``scaled_dot_product_attention`` ~4.6 ms: the CPU flash kernel is built for long
queries, and GQA keys are copied per query head first). This path runs the same modules' weights
with fewer, larger ops:

- q/k/v and gate/up are each one matmul over weights concatenated per output row (and then put in
  the runtime's weight mode: int8 keeps per-row scales, so every output is the dot product it
  was). The original linears become ``RowSlice`` views of the fused ones: no second copy of the
  weights, and the transformers forward (``FrozenLLM.forward``) still runs on the same numbers;
- rotary embedding is applied to queries and keys in one op chain;
- attention for the few new positions is two float32 matmuls per layer with the query heads of
  each key/value head as rows of one matrix (no repeat), over a float32 KV cache (bf16 matmuls
  this small ran ~4x slower than float32 here), an additive mask built once per forward;
- RMSNorms are the model's own modules.

It is an *inference* path (no gradients, the frozen LLM only) and equals the transformers forward
to float rounding (tests/test_llm_fast.py). ``supports`` says which models take it; others keep
the transformers forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

SUPPORTED_TYPES = ("llama",)
"""``config.model_type`` values whose decoder layer is Llama's (RMSNorm, rotary, GQA, SiLU-gated MLP)."""


def supports(model: nn.Module) -> str | None:
    """None if ``model`` can take the fast path, else why not (kept on the transformers forward)."""
    c = model.config
    if getattr(c, "model_type", None) not in SUPPORTED_TYPES:
        return f"model_type {getattr(c, 'model_type', None)!r} (fast path: {', '.join(SUPPORTED_TYPES)})"
    if getattr(c, "hidden_act", "silu") != "silu":
        return f"hidden_act {c.hidden_act!r}"
    if getattr(c, "mlp_bias", False):
        return "mlp_bias"
    layers = getattr(model.base_model, "layers", None)
    if layers is None or len(layers) == 0:
        return "no base_model.layers"
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        if not hasattr(layers[0].self_attn, name):
            return f"self_attn has no {name}"
    return None


class RowSlice(nn.Module):
    """Rows ``[start, stop)`` of another module's output: what a fused linear leaves in place of
    each linear it replaced, so the transformers forward still runs (on the same weights, computing
    the whole fused output for each slice: slower, and only used off the runtime's path)."""

    def __init__(self, owner: nn.Module, name: str, start: int, stop: int) -> None:
        super().__init__()
        self._owner = [owner]  # a list: not a submodule (the owner holds this module)
        self.name, self.start, self.stop = name, start, stop
        self.out_features = stop - start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self._owner[0], self.name)(x)[..., self.start : self.stop]

    def extra_repr(self) -> str:
        return f"{self.name}[{self.start}:{self.stop}]"


def _fuse(owner: nn.Module, names: list[str], fused_name: str) -> None:
    """Replace ``owner``'s linears ``names`` by one linear ``fused_name`` (weights concatenated per
    output row) and a ``RowSlice`` of it each."""
    linears = [getattr(owner, n) for n in names]
    if not all(type(lin) is nn.Linear for lin in linears):
        raise TypeError(f"cannot fuse {[type(lin).__name__ for lin in linears]}: native nn.Linear expected")
    with torch.no_grad():
        w = torch.cat([lin.weight for lin in linears])
        bias = None if linears[0].bias is None else torch.cat([lin.bias for lin in linears])
    fused = nn.Linear(int(w.shape[1]), int(w.shape[0]), bias=bias is not None, dtype=w.dtype)
    fused.weight = nn.Parameter(w, requires_grad=False)
    if bias is not None:
        fused.bias = nn.Parameter(bias, requires_grad=False)
    setattr(owner, fused_name, fused)
    start = 0
    for n, lin in zip(names, linears, strict=True):
        setattr(owner, n, RowSlice(owner, fused_name, start, start + int(lin.out_features)))
        start += int(lin.out_features)


def fuse_linears(model: nn.Module) -> None:
    """In place, for a supported model: each decoder layer's q/k/v become ``self_attn.qkv_proj`` and
    gate/up ``mlp.gate_up_proj`` (native linears; put them in an inference weight mode after this
    with ``agent.llm_quant.quantize_linears``, which finds them like any other linear)."""
    why = supports(model)
    if why is not None:
        raise ValueError(f"fast decoder does not support this model: {why}")
    for layer in model.base_model.layers:
        _fuse(layer.self_attn, ["q_proj", "k_proj", "v_proj"], "qkv_proj")
        _fuse(layer.mlp, ["gate_proj", "up_proj"], "gate_up_proj")


@dataclass
class FastBlock:
    """One context's new positions for ``FastDecoder.forward_many`` (see ``forward`` for the fields)."""

    embeds: torch.Tensor
    cache: Any
    mask: torch.Tensor
    position_ids: torch.Tensor


@dataclass
class _Layer:
    in_norm: nn.Module
    qkv: nn.Module
    o: nn.Module
    post_norm: nn.Module
    gate_up: nn.Module
    down: nn.Module


class FastDecoder:
    """Inference forward of a supported model's decoder over a ``SlotKVCache`` (see module doc).
    The model's linears must have been fused first (``fuse_linears``), in whatever weight mode."""

    def __init__(self, model: nn.Module) -> None:
        c = model.config
        self.base = model.base_model
        self.heads = int(c.num_attention_heads)
        self.kv_heads = int(getattr(c, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(c, "head_dim", None) or c.hidden_size // self.heads)
        self.groups = self.heads // self.kv_heads
        self.intermediate = int(c.intermediate_size)
        self.scale = self.head_dim**-0.5
        if not hasattr(self.base.layers[0].self_attn, "qkv_proj"):
            raise ValueError("FastDecoder needs the model's linears fused first (agent.llm_fast.fuse_linears)")
        self.layers = [_Layer(in_norm=layer.input_layernorm, qkv=layer.self_attn.qkv_proj, o=layer.self_attn.o_proj,
                              post_norm=layer.post_attention_layernorm, gate_up=layer.mlp.gate_up_proj,
                              down=layer.mlp.down_proj) for layer in self.base.layers]

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = self.head_dim // 2
        rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rot * sin

    def forward(self, embeds: torch.Tensor, cache: Any, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """The (B, T, D) block's last-layer hidden states (after the final norm), its keys/values
        written where ``cache.plan`` put them; ``mask`` (B, 1, T, L) says which of the L cache
        slots each new position attends to, ``position_ids`` (B, T) are its rotary positions
        (``FrozenLLM.prefill`` builds both, as for the transformers forward)."""
        return self.forward_many([FastBlock(embeds, cache, mask, position_ids)])[0]

    def forward_many(self, blocks: list[FastBlock]) -> list[torch.Tensor]:
        """``forward`` for blocks of *different* contexts (each its own cache) in one pass.

        Every linear runs once over the rows of all blocks stacked: at a few positions per block
        the pass costs what reading the weights costs (SmolLM2, fp16 weights, 1 thread: all decoder
        linears 11.0-11.5 ms for 1 row, 12.5-13.7 for 3, caches flushed).
        A row's result does not depend on the rows stacked with it beyond float rounding (fbgemm's
        fp16 kernel gave bit-identical rows on an AVX-512 CPU, ~1e-7 differences on an AVX2-only
        one; tests/test_llm_fast.py checks the outputs); attention, rotary
        embedding and cache writes stay per block."""
        d = blocks[0].embeds.shape[-1]
        shapes = [tuple(b.embeds.shape[:2]) for b in blocks]
        counts = [bb * t for bb, t in shapes]
        x = torch.cat([b.embeds.reshape(-1, d) for b in blocks])  # (N, D): all rows of all blocks
        h, kvh, hd, g = self.heads, self.kv_heads, self.head_dim, self.groups
        prep = []
        for blk, (b, t) in zip(blocks, shapes, strict=True):
            read_len = blk.mask.shape[-1]
            # Additive mask in the score layout (B, kvh, g*T, L): query heads of one key/value head
            # are stacked group-major, each with its T positions.
            bias = torch.zeros(blk.mask.shape, dtype=torch.float32).masked_fill_(~blk.mask, float("-inf"))
            bias = bias[:, :, None].expand(b, 1, g, t, read_len).reshape(b, 1, g * t, read_len)
            cos, sin = self.base.rotary_emb(blk.embeds, blk.position_ids)  # (B, T, hd) in the embeds' dtype
            prep.append((bias, cos[:, :, None], sin[:, :, None]))
        qk_width = (h + kvh) * hd
        for i, layer in enumerate(self.layers):
            qkv_all = layer.qkv(layer.in_norm(x)).split(counts)
            atts = []
            for blk, (b, t), qkv, (bias, cos, sin) in zip(blocks, shapes, qkv_all, prep, strict=True):
                qk = self._rotate(qkv[:, :qk_width].view(b, t, h + kvh, hd), cos, sin)
                q, k = qk[:, :, :h], qk[:, :, h:]
                v = qkv[:, qk_width:].view(b, t, kvh, hd)
                keys, values = blk.cache.write(i, k, v)  # (B, kvh, L, hd) in the cache's float32
                # (B, T, kvh, g, hd) -> (B, kvh, g*T, hd): the g query heads sharing a key/value head
                # are rows of one matmul, so keys and values are read once and never repeated.
                q = q.reshape(b, t, kvh, g, hd).permute(0, 2, 3, 1, 4).reshape(b, kvh, g * t, hd).float()
                scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(self.scale).add_(bias)
                att = torch.matmul(torch.softmax(scores, dim=-1), values).to(x.dtype)
                atts.append(att.view(b, kvh, g, t, hd).permute(0, 3, 1, 2, 4).reshape(b * t, h * hd))
            x = x + layer.o(atts[0] if len(atts) == 1 else torch.cat(atts))
            gu = layer.gate_up(layer.post_norm(x))
            x = x + layer.down(nn.functional.silu(gu[..., : self.intermediate]) * gu[..., self.intermediate:])
        out = self.base.norm(x).split(counts)
        return [o.view(b, t, -1) for o, (b, t) in zip(out, shapes, strict=True)]
