"""Exact streaming for convolution stacks, causal or not (the TTS front end and HiFi-GAN).

Why cached left context per layer and not overlap-add with a crossfade: the Piper HiFi-GAN is
non-causal (symmetric padding, dilations up to 12 at 8x the frame rate), so a crossfaded
re-decode of overlapping windows is never equal to the offline pass and needs the same lookahead
anyway. Caching each layer's left context costs no recomputation and gives the offline samples
exactly; the price is a fixed algorithmic delay (the sum of the layers' right paddings).

Streams carry positions. A chunk ``x`` (B, C, n) travels with ``pos`` (B,), the offline index of
``x[..., 0]`` in each row, and ``end`` (B,), the row's offline length (``NO_END`` until the
stream is flushed). A layer with right padding ``r`` emits the offline output ``r`` samples
behind its input and zeroes every output outside ``[0, end)``: precisely the zeros the offline
pass pads the next layer with. So streamed == offline for any chunking, rows advance in lockstep,
and a per-row reset only zeroes that row's caches and restarts its ``pos``.

Every learnable layer is a plain ``nn.Conv1d`` with ``padding=0`` held by a wrapper that owns
the padding, so peft can put LoRA around it and the LoRA branch is padded the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agent.streaming import StreamingModule, StreamingState

NO_END = 2**62
"""``end`` of a stream whose length is not known yet."""


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` that computes small single-row inputs as one matrix product.

    PyTorch sends a float conv with batch 1 and fewer than 20480 input values to its native
    kernels instead of oneDNN, and dilated ones to ``slow_conv_dilated2d`` (index-by-index copies):
    exactly the shape of a streaming chunk. Gathering the K dilated taps and multiplying by the
    (C_out, C_in * K) weight is the same arithmetic at gemm speed. Larger inputs keep the normal
    path. (A subclass of nn.Conv1d, so peft wraps it, and its LoRA "A" conv is one too.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        if b != 1 or c * t > 20480 or self.stride != (1,) or self.groups != 1 or self.padding != (0,):
            return super().forward(x)
        k, d = self.kernel_size[0], self.dilation[0]
        t_out = t - d * (k - 1)
        if k == 1:
            cols = x[0]
        else:  # (C, K, T) -> (C * K, T): the layout of the weight viewed as (C_out, C_in * K)
            cols = torch.stack([x[0, :, i * d : i * d + t_out] for i in range(k)], dim=1).reshape(c * k, t_out)
        y = self.weight.reshape(self.out_channels, c * k) @ cols
        if self.bias is not None:
            y = y + self.bias[:, None]
        return y[None]


def valid_mask(pos: torch.Tensor, end: torch.Tensor, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 1, n) 1.0 where ``pos + i`` lies in ``[0, end)``, else 0.0."""
    idx = pos[:, None] + torch.arange(n, device=pos.device)[None, :]
    return ((idx >= 0) & (idx < end[:, None])).to(dtype)[:, None, :]


def length_mask(lengths: torch.Tensor, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 1, n) offline mask of the first ``lengths`` positions."""
    return valid_mask(torch.zeros_like(lengths), lengths, n, dtype)


@dataclass
class CacheState(StreamingState):
    cache: torch.Tensor
    """(B, C, K) the last K inputs of each row (zeros before the stream starts)."""

    def reset(self, mask: torch.Tensor) -> None:
        self.cache[mask] = 0.0


class PadConv1d(StreamingModule[CacheState]):
    """A stride-1 ``nn.Conv1d`` (padding 0) with explicit zero padding ``(left, right)``.

    Offline: ``conv(pad(x, left, right))``, same length as the input. Streaming: the output is
    ``right`` samples behind the input (``delay``), from a cache of the last ``R - 1`` inputs,
    where R is the receptive field. ``right = 0`` is a causal conv; ``left = 0`` a lookahead conv.
    """

    def __init__(self, conv: nn.Conv1d, left: int, right: int) -> None:
        super().__init__()
        if conv.stride != (1,) or conv.padding != (0,) or conv.groups != 1:
            raise ValueError("PadConv1d wraps a stride-1, padding-0, groups-1 Conv1d")
        self.conv = conv
        # kept: once peft wraps `conv`, the wrapper has no in/out_channels
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.receptive = conv.dilation[0] * (conv.kernel_size[0] - 1) + 1
        if left + right != self.receptive - 1 or left < 0 or right < 0:
            raise ValueError(f"padding ({left}, {right}) must add up to receptive field - 1 = {self.receptive - 1}")
        self.left, self.right = left, right

    @property
    def delay(self) -> int:
        return self.right

    def _init_streaming_state(self, batch_size: int) -> CacheState:
        return CacheState(batch_size=batch_size, cache=torch.zeros(batch_size, self.in_channels, self.receptive - 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(F.pad(x, (self.left, self.right)))
        return y if mask is None else y * mask

    def step(self, x: torch.Tensor, pos: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, n) chunk at ``pos`` -> (B, C', n) outputs at ``pos - right``."""
        st = self.streaming_state
        out_pos = pos - self.right
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.out_channels, 0), out_pos
        k = self.receptive - 1
        xx = torch.cat([st.cache, x], dim=-1) if k else x
        y = self.conv(xx)
        if k:
            st.cache = xx[..., -k:].clone()
        return y * valid_mask(out_pos, end, y.shape[-1], y.dtype), out_pos


@dataclass
class DelayState(StreamingState):
    buffer: torch.Tensor
    """(B, C, d) the last d inputs not yet emitted."""

    def reset(self, mask: torch.Tensor) -> None:
        self.buffer[mask] = 0.0


class DelayLine(StreamingModule[DelayState]):
    """Delays a stream by ``delay`` samples (aligns residual paths with their delayed branch)."""

    def __init__(self, channels: int, delay: int) -> None:
        super().__init__()
        self.channels, self.delay = channels, delay

    def _init_streaming_state(self, batch_size: int) -> DelayState:
        return DelayState(batch_size=batch_size, buffer=torch.zeros(batch_size, self.channels, self.delay))

    def step(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.delay == 0:
            return x, pos
        st = self.streaming_state
        xx = torch.cat([st.buffer, x], dim=-1)
        n = x.shape[-1]
        st.buffer = xx[..., n:].clone()
        return xx[..., :n], pos - self.delay


class PolyphaseUpsample(StreamingModule[CacheState]):
    """``ConvTranspose1d(C_in, C_out, kernel=taps*s, stride=s, padding=p)`` as a Conv1d + shuffle.

    Output sample ``n`` with ``n + p = q*s + r`` is ``sum_a x[q - a] . w[:, :, a*s + r]``: for each
    phase r a ``taps``-wide causal conv over the input. One ``Conv1d(C_in, s*C_out, taps)``
    computes every phase (channel ``c*s + r``), a reshape interleaves them. Same arithmetic as
    the transposed conv, and peft can wrap the Conv1d (it cannot wrap ConvTranspose1d).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, taps: int, padding: int) -> None:
        super().__init__()
        self.stride, self.taps, self.padding = stride, taps, padding
        self.in_channels, self.out_channels = in_channels, out_channels
        self.conv = Conv1d(in_channels, out_channels * stride, taps)

    @classmethod
    def from_transposed(cls, tconv: nn.ConvTranspose1d) -> PolyphaseUpsample:
        s, k, p = tconv.stride[0], tconv.kernel_size[0], tconv.padding[0]
        if k % s or tconv.dilation != (1,) or tconv.groups != 1 or tconv.output_padding != (0,):
            raise ValueError("only ConvTranspose1d with kernel a multiple of stride, no dilation/groups/output_padding")
        c_in, c_out = tconv.in_channels, tconv.out_channels
        up = cls(c_in, c_out, s, k // s, p)
        w = tconv.weight.detach()  # (C_in, C_out, k), tap index j = a*s + r
        taps = k // s
        w = w.reshape(c_in, c_out, taps, s)  # [.., a, r]
        w = w.flip(2)  # conv tap t multiplies x[q - (taps-1) + t] = x[q - a] with a = taps-1-t
        w = w.permute(1, 3, 0, 2).reshape(c_out * s, c_in, taps)  # out channel c*s + r
        with torch.no_grad():
            up.conv.weight.copy_(w)
            bias = tconv.bias.detach() if tconv.bias is not None else torch.zeros(c_out)
            up.conv.bias.copy_(bias.repeat_interleave(s))
        return up

    @property
    def delay(self) -> int:
        """Output delay in output samples, relative to ``input delay * stride``."""
        return self.padding

    def out_length(self, n: torch.Tensor | int):
        return (n - 1 + self.taps) * self.stride - 2 * self.padding

    def _shuffle(self, u: torch.Tensor) -> torch.Tensor:
        b, _, t = u.shape
        return u.reshape(b, self.out_channels, self.stride, t).transpose(2, 3).reshape(b, self.out_channels, t * self.stride)

    def _init_streaming_state(self, batch_size: int) -> CacheState:
        return CacheState(batch_size=batch_size, cache=torch.zeros(batch_size, self.in_channels, self.taps - 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        k = self.taps - 1
        flat = self._shuffle(self.conv(F.pad(x, (k, k))))
        y = flat[..., self.padding : self.padding + int(self.out_length(x.shape[-1]))]
        return y if mask is None else y * mask

    def step(self, x: torch.Tensor, pos: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C_in, n) at ``pos`` -> (B, C_out, n*s) at ``pos*s - p``; also returns the new ``end``."""
        st = self.streaming_state
        out_pos = pos * self.stride - self.padding
        out_end = torch.where(end >= NO_END, end, self.out_length(end))
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.out_channels, 0), out_pos, out_end
        k = self.taps - 1
        xx = torch.cat([st.cache, x], dim=-1) if k else x
        if k:
            st.cache = xx[..., -k:].clone()
        y = self._shuffle(self.conv(xx))
        return y * valid_mask(out_pos, out_end, y.shape[-1], y.dtype), out_pos, out_end
