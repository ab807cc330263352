"""Weight-only int8 and fp16 linears for the frozen LLM at inference time (the runtime, never training).

fp16 (``Fp16Linear``, the runtime's default since 2026-12-07): float32 activations times fp16
weights in fbgemm's packed layout (``torch.ops.quantized.linear_prepack_fp16`` /
``linear_dynamic_fp16``). fbgemm streams its packed blocks from memory about twice as fast as the
int8 kernel below reads plain int8 rows on this CPU (a 576 x 3072 linear, 2 rows, weights not in
cache, 1 thread: 164 vs 339 us), and fp16 keeps 11 bits of mantissa where bf16 keeps 8: SmolLM2
prefill of 2 positions at 1 thread 37.1 ms (bf16 + int8) -> 30.4 ms (fp32 + fp16), max deviation
from the fp32 model's hidden states 1.47 -> 0.04 (both through the transformers forward;
``agent/llm_fast.py`` takes the fp16 one to ~23 ms). It loses to int8 only on long blocks
(64 positions: 215 vs 179 ms), which the runtime prefills once per reply at most. The tied
output head stays float32 (``FrozenLLM.prefill`` says why); the speech encoder's layers use the
same fp16 linears (``runtime.encoder_weights=fp16``, the default).

int8 (the runtime's until 2026-12-07, kept as an option): decoding one token reads every weight of the LLM once, so on a CPU core it is bound by memory
bandwidth, not arithmetic: on this project's 2-core AMD EPYC the 30 SmolLM2 decoder blocks' linears
take ~29 ms per token in bf16 and ~14.5 ms with int8 weights (``torch.ops.aten._weight_int8pack_mm``,
activations stay bf16). That kernel only wins for a few rows at a time (bf16 vs int8 for all 30
blocks, 1 thread: 1 row 29 vs 15 ms, 4 rows 31 vs 21, 8 rows 35 vs 33, 16 rows 42 vs 55), so each
layer also keeps its rounded weights dequantised to the activation dtype for larger blocks (a long
prefill, a listening backlog beyond 4 chunks): one linear map, two kernels, so a block gives the
same result (to float rounding) however it is split. Weights are quantised per output channel,
symmetric, to [-127, 127]; activations are not (int8 *dynamic* quantisation, which rounds them
too, moved the state head's probabilities by up to 0.36 and was rejected). The embeddings and the
tied output head stay native, so token logits come from the exact head. The accuracy price is
measured by ``duplex-agent bench llm-weights``. (An int8 copy of the output head was tried: `bench
llm` decode 28.5 -> 25.2-27.0 ms per token, but greedy answers drifted further from bf16's,
identical 6 / 28 vs 8 / 28, token-F1 >= 0.6 16 / 28 vs 19 / 28, for no gain beyond noise in
`bench duplex`; left out.)

With ``runtime.encoder_weights=int8`` the speech encoder's fp32 Transformer layers use these
linears (``act_dtype`` bfloat16: the kernel is only fast for bf16 activations, ~20x slower for
fp32 ones): its 8 rows per chunk are in the kernel's range (configs/schema.py has the figures).
"""

from __future__ import annotations

import torch
from torch import nn

WEIGHT_MODES = ("native", "int8", "fp16")
MAX_INT8_ROWS = 8
"""Largest block (positions) the int8 kernel takes; see the module docstring for the crossover."""


class Int8WeightLinear(nn.Module):
    """``y = x Q^T + b`` with ``Q`` the int8-rounded ``W``: int8 rows times a per-row scale for at most
    ``max_rows`` rows, the same ``Q`` dequantised (activation dtype) for more."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, max_rows: int = MAX_INT8_ROWS,
                 act_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        # The int8 kernel's activations (and scales) are in ``act_dtype``; its output returns to the
        # input's dtype. The dequantised weight keeps the layer's own dtype for large blocks.
        self.register_buffer("scales", scale.to(act_dtype or weight.dtype))
        self.register_buffer("weight", self.dequantized().to(weight.dtype))
        self.register_buffer("bias", None if bias is None else bias.detach())
        self.max_rows = max_rows
        self.in_features, self.out_features = int(w.shape[1]), int(w.shape[0])

    @classmethod
    def from_linear(cls, linear: nn.Linear, max_rows: int = MAX_INT8_ROWS,
                    act_dtype: torch.dtype | None = None) -> Int8WeightLinear:
        return cls(linear.weight, linear.bias, max_rows, act_dtype)

    def dequantized(self) -> torch.Tensor:
        """(out, in) float32 weight both paths multiply by."""
        return self.qweight.float() * self.scales.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] > self.max_rows:
            return nn.functional.linear(x, self.weight, self.bias)
        y = torch.ops.aten._weight_int8pack_mm(flat.to(self.scales.dtype).contiguous(), self.qweight, self.scales)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 up to {self.max_rows} rows"


class Fp16Linear(nn.Module):
    """``y = x W^T + b`` with ``W`` rounded to fp16 and packed by fbgemm; ``x`` float32 (other
    dtypes are cast there and back)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features, self.out_features = int(weight.shape[1]), int(weight.shape[0])
        b = None if bias is None else bias.detach().float()
        self._packed = torch.ops.quantized.linear_prepack_fp16(weight.detach().float().contiguous(), b)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Fp16Linear:
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return torch.ops.quantized.linear_dynamic_fp16(x, self._packed)
        return torch.ops.quantized.linear_dynamic_fp16(x.float(), self._packed).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp16 weights (fbgemm)"


def quantized_linear(linear: nn.Linear, mode: str, max_rows: int = MAX_INT8_ROWS,
                     act_dtype: torch.dtype | None = None) -> nn.Module:
    """``linear`` in weight mode ``mode`` (int8 or fp16; ``max_rows``/``act_dtype`` are int8's)."""
    if mode == "int8":
        return Int8WeightLinear.from_linear(linear, max_rows, act_dtype)
    if mode == "fp16":
        return Fp16Linear.from_linear(linear)
    raise ValueError(f"no quantized linear for weight mode {mode!r} (int8, fp16)")


def quantize_linears(blocks: nn.Module, max_rows: int = MAX_INT8_ROWS, act_dtype: torch.dtype | None = None,
                     mode: str = "int8") -> int:
    """Replace every ``nn.Linear`` inside ``blocks`` (in place) by its ``mode`` form; returns how
    many were replaced."""
    count = 0
    for name, child in list(blocks.named_children()):
        if isinstance(child, nn.Linear):
            setattr(blocks, name, quantized_linear(child, mode, max_rows, act_dtype))
            count += 1
        else:
            count += quantize_linears(child, max_rows, act_dtype, mode)
    return count
