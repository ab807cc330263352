"""The waveform decoder of our TTS: the Piper HiFi-GAN, rebuilt for exact streaming and LoRA.

`StreamingHiFiGAN.from_piper(vits.dec)` copies the bundled voice's generator
(`agent.vits.HiFiGANGenerator`, weight norm already folded by the ONNX export) into layers built
from `agent.streaming_conv`: every conv a padding-0 ``nn.Conv1d`` inside a padding wrapper, and
each ConvTranspose1d upsampler an equivalent polyphase Conv1d. Offline output equals the Piper
decoder's to float rounding; streamed output equals offline (see agent/streaming_conv.py).

Shapes: latents (B, 192, T) at 22050 / 256 = 86.13 frames/s -> audio (B, T * 256) in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agent.streaming import StreamingModule, StreamingState
from agent.streaming_conv import (
    NO_END,
    Conv1d,
    DelayLine,
    PadConv1d,
    PolyphaseUpsample,
    length_mask,
    valid_mask,
)
from agent.vits import HiFiGANGenerator, VITSConfig

LRELU_SLOPE = 0.1


def _same(conv: nn.Conv1d) -> PadConv1d:
    """A Conv1d with symmetric 'same' padding as a padding-0 conv inside a PadConv1d."""
    k, d = conv.kernel_size[0], conv.dilation[0]
    inner = Conv1d(conv.in_channels, conv.out_channels, k, dilation=d, bias=conv.bias is not None)
    with torch.no_grad():
        inner.weight.copy_(conv.weight)
        if conv.bias is not None:
            inner.bias.copy_(conv.bias)
    half = d * (k - 1) // 2
    return PadConv1d(inner, half, d * (k - 1) - half)


@dataclass
class _Stateless(StreamingState):
    def reset(self, mask: torch.Tensor) -> None:
        pass


class ResBlock(StreamingModule[_Stateless]):
    """HiFi-GAN ResBlock2: ``x = x + conv(lrelu(x))`` per dilation; residuals delayed to match."""

    def __init__(self, convs: list[PadConv1d]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)
        ch = convs[0].in_channels
        self.skips = nn.ModuleList(DelayLine(ch, c.delay) for c in convs)

    @property
    def delay(self) -> int:
        return sum(c.delay for c in self.convs)

    def _init_streaming_state(self, batch_size: int) -> _Stateless:
        return _Stateless(batch_size=batch_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE), mask)
        return x

    def step(self, x: torch.Tensor, pos: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv, skip in zip(self.convs, self.skips, strict=True):
            y, new_pos = conv.step(F.leaky_relu(x, LRELU_SLOPE), pos, end)
            x, _ = skip.step(x, pos)
            pos = new_pos
            x = x + y
        return x, pos


class MultiReceptiveField(StreamingModule[_Stateless]):
    """Mean of parallel ResBlocks; in streaming each is delayed to the slowest one's delay."""

    def __init__(self, blocks: list[ResBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        ch = blocks[0].convs[0].in_channels
        self.delay = max(b.delay for b in blocks)
        self.align = nn.ModuleList(DelayLine(ch, self.delay - b.delay) for b in blocks)

    def _init_streaming_state(self, batch_size: int) -> _Stateless:
        return _Stateless(batch_size=batch_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return sum(b(x, mask) for b in self.blocks) / len(self.blocks)

    def step(self, x: torch.Tensor, pos: torch.Tensor, end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = None
        out_pos = pos
        for block, align in zip(self.blocks, self.align, strict=True):
            y, p = block.step(x, pos, end)
            y, out_pos = align.step(y, p)
            total = y if total is None else total + y
        assert total is not None
        return total / len(self.blocks), out_pos


@dataclass
class VocoderState(StreamingState):
    pos: torch.Tensor
    """(B,) offline index of the next latent frame of each row."""

    def reset(self, mask: torch.Tensor) -> None:
        self.pos[mask] = 0


class StreamingHiFiGAN(StreamingModule[VocoderState]):
    """Latents (B, 192, T) -> waveform (B, T * hop), offline or chunk by chunk (exact)."""

    def __init__(self, cfg: VITSConfig) -> None:
        super().__init__()
        gen = HiFiGANGenerator(cfg)
        self._build(gen)

    def _build(self, gen: HiFiGANGenerator) -> None:
        self.hop = 1
        self.conv_pre = _same(gen.conv_pre)
        self.ups = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        k = gen.num_kernels
        for i, up in enumerate(gen.ups):
            self.ups.append(PolyphaseUpsample.from_transposed(up))
            self.mrfs.append(
                MultiReceptiveField([ResBlock([_same(c) for c in rb.convs]) for rb in gen.resblocks[i * k : (i + 1) * k]])
            )
            self.hop *= up.stride[0]
        self.conv_post = _same(gen.conv_post)

    @classmethod
    def from_piper(cls, gen: HiFiGANGenerator) -> StreamingHiFiGAN:
        """Copy of the (weight-norm free) Piper generator ``gen``."""
        self = cls.__new__(cls)
        StreamingModule.__init__(self)
        self._build(gen)
        return self

    @property
    def delay_samples(self) -> int:
        """Algorithmic delay of the streamed output, in output samples."""
        d = self.conv_pre.delay
        for up, mrf in zip(self.ups, self.mrfs, strict=True):
            d = d * up.stride + up.delay + mrf.delay
        return d + self.conv_post.delay

    @property
    def delay_frames(self) -> int:
        """Latent frames the stream must run past its end to emit every sample (flush length)."""
        return -(-self.delay_samples // self.hop)

    def _init_streaming_state(self, batch_size: int) -> VocoderState:
        return VocoderState(batch_size=batch_size, pos=torch.zeros(batch_size, dtype=torch.long))

    def forward(self, z: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Offline: (B, 192, T) -> (B, T * hop). ``lengths`` (B,) frames; samples past them are 0."""
        mask = None if lengths is None else length_mask(lengths, z.shape[-1], z.dtype)
        if mask is not None:
            z = z * mask
        x = self.conv_pre(z, mask)
        n = lengths
        for up, mrf in zip(self.ups, self.mrfs, strict=True):
            if n is not None:
                n = up.out_length(n)
                mask = length_mask(n, up.out_length(x.shape[-1]), x.dtype)
            x = up(F.leaky_relu(x, LRELU_SLOPE), mask)
            x = mrf(x, mask)
        return torch.tanh(self.conv_post(F.leaky_relu(x), mask))[:, 0]

    def step(self, z: torch.Tensor, end: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Streaming: the next (B, 192, n) latent frames of each row -> (audio (B, n * hop), pos (B,)).

        ``pos`` is the offline sample index of ``audio[:, 0]`` per row; samples at negative
        positions (the first ``delay_samples`` of a stream) and past ``end`` are zero and should be
        dropped (see `valid_mask`). ``end`` (B,) is the row's total frame count once known (flush).
        """
        st = self.streaming_state
        b, _, n = z.shape
        end = torch.full((b,), NO_END, dtype=torch.long) if end is None else end
        pos = st.pos.clone()
        z = z * valid_mask(pos, end, n, z.dtype)
        x, pos = self.conv_pre.step(z, pos, end)
        for up, mrf in zip(self.ups, self.mrfs, strict=True):
            x, pos, end = up.step(F.leaky_relu(x, LRELU_SLOPE), pos, end)
            x, pos = mrf.step(x, pos, end)
        y, pos = self.conv_post.step(F.leaky_relu(x), pos, end)
        st.pos += n
        return torch.tanh(y)[:, 0], pos
