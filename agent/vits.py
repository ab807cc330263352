"""A PyTorch VITS (the architecture of Piper voices), inference path, with seeded noise.

Written from the VITS paper's description and the structure of the Piper ONNX graph (weights are
mapped in by `agent.assets.convert_piper`). Compared with the ONNX graph it adds what the rest of
the project needs: a `torch.Generator` for the two noise draws (deterministic synthesis), the
phoneme durations (word timings for synthetic data labels), the latents `z` fed to the waveform
decoder (targets for our unit-to-latent front end), and gradients through the decoder.

Shapes: phoneme ids (B, T_x); text hidden (B, 192, T_x); frame latents (B, 192, T_y) at
sample_rate / 256 frames per second; audio (B, T_y * 256).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(kw_only=True)
class VITSConfig:
    n_vocab: int = 256
    """Phoneme id vocabulary."""
    hidden: int = 192
    """Channels of the text encoder, prior and latents."""
    filter_channels: int = 768
    """FFN width of the text encoder."""
    n_heads: int = 2
    """Attention heads of the text encoder."""
    n_layers: int = 6
    """Text encoder layers."""
    kernel_size: int = 3
    """FFN kernel of the text encoder."""
    window_size: int = 4
    """Relative attention window of the text encoder."""
    dp_filter: int = 192
    """Channels of the stochastic duration predictor."""
    flow_layers: int = 4
    """Residual coupling layers in the flow."""
    flow_wn_layers: int = 4
    """WaveNet layers inside each coupling layer."""
    flow_kernel: int = 5
    """WaveNet kernel inside the coupling layers."""
    upsample_rates: tuple[int, ...] = (8, 8, 4)
    """HiFi-GAN upsampling factors (product = hop length)."""
    upsample_kernels: tuple[int, ...] = (16, 16, 8)
    """HiFi-GAN transposed-conv kernels."""
    upsample_initial: int = 256
    """HiFi-GAN channels after conv_pre."""
    resblock_kernels: tuple[int, ...] = (3, 5, 7)
    """HiFi-GAN residual block kernels."""
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 2), (2, 6), (3, 12))
    """HiFi-GAN residual block dilations (ResBlock2: two convs each)."""
    sample_rate: int = 22050
    """Output sample rate."""

    @property
    def hop(self) -> int:
        return int(math.prod(self.upsample_rates))


def sequence_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class LayerNorm1d(nn.Module):
    """LayerNorm over channels of a (B, C, T) tensor."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.transpose(1, -1), (x.shape[1],), self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class RelativeAttention(nn.Module):
    """Multi-head self-attention with learned relative-position keys/values in a +-window."""

    def __init__(self, channels: int, n_heads: int, window: int) -> None:
        super().__init__()
        self.n_heads, self.window = n_heads, window
        self.k_channels = channels // n_heads
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        self.emb_rel_k = nn.Parameter(torch.zeros(1, 2 * window + 1, self.k_channels))
        self.emb_rel_v = nn.Parameter(torch.zeros(1, 2 * window + 1, self.k_channels))

    def _relative(self, emb: torch.Tensor, length: int) -> torch.Tensor:
        """(1, 2w+1, d) -> (1, 2L-1, d): embeddings for relative offsets -(L-1)..(L-1)."""
        pad = max(length - (self.window + 1), 0)
        start = max((self.window + 1) - length, 0)
        if pad > 0:
            emb = F.pad(emb, (0, 0, pad, pad))
        return emb[:, start : start + 2 * length - 1]

    @staticmethod
    def _rel_to_abs(x: torch.Tensor) -> torch.Tensor:
        """(B, H, L, 2L-1) relative logits -> (B, H, L, L) absolute, by the pad-and-reshape trick."""
        b, h, length, _ = x.shape
        x = F.pad(x, (0, 1)).reshape(b, h, length * 2 * length)
        x = F.pad(x, (0, length - 1)).reshape(b, h, length + 1, 2 * length - 1)
        return x[:, :, :length, length - 1 :]

    @staticmethod
    def _abs_to_rel(x: torch.Tensor) -> torch.Tensor:
        """(B, H, L, L) absolute weights -> (B, H, L, 2L-1) relative."""
        b, h, length, _ = x.shape
        x = F.pad(x, (0, length - 1)).reshape(b, h, length * length + length * (length - 1))
        x = F.pad(x, (length, 0)).reshape(b, h, length, 2 * length)
        return x[:, :, :, 1:]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        q = self.conv_q(x).view(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        k = self.conv_k(x).view(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        v = self.conv_v(x).view(b, self.n_heads, self.k_channels, t).transpose(2, 3)
        q = q / math.sqrt(self.k_channels)
        scores = q @ k.transpose(-2, -1)
        rel_k = self._relative(self.emb_rel_k, t)
        scores = scores + self._rel_to_abs(q @ rel_k.unsqueeze(0).transpose(-2, -1))
        scores = scores.masked_fill(~mask, -1e4)
        p = torch.softmax(scores, dim=-1)
        out = p @ v
        rel_v = self._relative(self.emb_rel_v, t)
        out = out + self._abs_to_rel(p) @ rel_v.unsqueeze(0)
        return self.conv_o(out.transpose(2, 3).reshape(b, c, t))


class FFN(nn.Module):
    def __init__(self, channels: int, filters: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv_1 = nn.Conv1d(channels, filters, kernel)
        self.conv_2 = nn.Conv1d(filters, channels, kernel)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, ((self.kernel - 1) // 2, self.kernel // 2))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(self._pad(x * mask)))
        return self.conv_2(self._pad(x * mask)) * mask


class TextEncoder(nn.Module):
    """Phoneme ids -> hidden text states and the prior's mean / log-std per phoneme."""

    def __init__(self, cfg: VITSConfig) -> None:
        super().__init__()
        self.hidden = cfg.hidden
        self.emb = nn.Embedding(cfg.n_vocab, cfg.hidden)
        self.encoder = nn.Module()
        self.encoder.attn_layers = nn.ModuleList(
            RelativeAttention(cfg.hidden, cfg.n_heads, cfg.window_size) for _ in range(cfg.n_layers)
        )
        self.encoder.norm_layers_1 = nn.ModuleList(LayerNorm1d(cfg.hidden) for _ in range(cfg.n_layers))
        self.encoder.ffn_layers = nn.ModuleList(
            FFN(cfg.hidden, cfg.filter_channels, cfg.kernel_size) for _ in range(cfg.n_layers)
        )
        self.encoder.norm_layers_2 = nn.ModuleList(LayerNorm1d(cfg.hidden) for _ in range(cfg.n_layers))
        self.proj = nn.Conv1d(cfg.hidden, 2 * cfg.hidden, 1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (self.emb(ids) * math.sqrt(self.hidden)).transpose(1, 2)
        x_mask = sequence_mask(lengths, ids.shape[1])[:, None, :].to(x.dtype)
        attn_mask = (x_mask[:, :, :, None] * x_mask[:, :, None, :]).bool()
        enc = self.encoder
        x = x * x_mask
        for attn, n1, ffn, n2 in zip(enc.attn_layers, enc.norm_layers_1, enc.ffn_layers, enc.norm_layers_2, strict=True):
            x = n1(x + attn(x, attn_mask))
            x = n2(x + ffn(x, x_mask))
        x = x * x_mask
        m, logs = torch.split(self.proj(x) * x_mask, self.hidden, dim=1)
        return x, m, logs, x_mask


class DDSConv(nn.Module):
    """Dilated depth-separable conv stack (dilations 1, k, k^2, ...)."""

    def __init__(self, channels: int, kernel: int, n_layers: int) -> None:
        super().__init__()
        self.convs_sep = nn.ModuleList()
        self.convs_1x1 = nn.ModuleList()
        self.norms_1 = nn.ModuleList()
        self.norms_2 = nn.ModuleList()
        for i in range(n_layers):
            dilation = kernel**i
            self.convs_sep.append(
                nn.Conv1d(channels, channels, kernel, groups=channels, dilation=dilation, padding=(kernel * dilation - dilation) // 2)
            )
            self.convs_1x1.append(nn.Conv1d(channels, channels, 1))
            self.norms_1.append(LayerNorm1d(channels))
            self.norms_2.append(LayerNorm1d(channels))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if g is not None:
            x = x + g
        for sep, pw, n1, n2 in zip(self.convs_sep, self.convs_1x1, self.norms_1, self.norms_2, strict=True):
            y = F.gelu(n1(sep(x * mask)))
            y = F.gelu(n2(pw(y)))
            x = x + y
        return x * mask


def _rq_spline_inverse(
    y: torch.Tensor, w: torch.Tensor, h: torch.Tensor, d: torch.Tensor, bound: float,
    min_w: float = 1e-3, min_h: float = 1e-3, min_d: float = 1e-3,
) -> torch.Tensor:
    """Inverse of a monotonic rational-quadratic spline on [-bound, bound], identity outside.

    y: (...,) values; w, h: (..., K) unnormalised bin widths/heights; d: (..., K-1) unnormalised
    inner derivatives (the outer ones are 1, matching the linear tails).
    """
    num_bins = w.shape[-1]
    inside = (y >= -bound) & (y <= bound)
    d = F.pad(d, (1, 1))
    const = math.log(math.exp(1 - min_d) - 1)  # softplus^-1(1 - min_d): derivative 1 at the edges
    d[..., 0] = const
    d[..., -1] = const

    def knots(unnorm: torch.Tensor, min_size: float) -> tuple[torch.Tensor, torch.Tensor]:
        sizes = min_size + (1 - min_size * num_bins) * torch.softmax(unnorm, dim=-1)
        cum = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
        cum = 2 * bound * cum - bound
        cum[..., 0], cum[..., -1] = -bound, bound
        return cum, cum[..., 1:] - cum[..., :-1]

    cumw, widths = knots(w, min_w)
    cumh, heights = knots(h, min_h)
    derivs = min_d + F.softplus(d)
    yc = y.clamp(-bound, bound)
    edges = cumh.clone()
    edges[..., -1] += 1e-6
    idx = (torch.sum(yc[..., None] >= edges, dim=-1) - 1).clamp(0, num_bins - 1)[..., None]

    def take(t: torch.Tensor) -> torch.Tensor:
        return t.gather(-1, idx)[..., 0]

    in_cw, in_w, in_ch, in_h = take(cumw), take(widths), take(cumh), take(heights)
    delta = take(heights / widths)
    d0, d1 = take(derivs), derivs[..., 1:].gather(-1, idx)[..., 0]
    dy = yc - in_ch
    a = dy * (d0 + d1 - 2 * delta) + in_h * (delta - d0)
    b = in_h * d0 - dy * (d0 + d1 - 2 * delta)
    c = -delta * dy
    root = (2 * c) / (-b - torch.sqrt(b * b - 4 * a * c))
    x = root * in_w + in_cw
    return torch.where(inside, x, y)


class ConvFlow(nn.Module):
    def __init__(self, filters: int, kernel: int = 3, n_layers: int = 3, num_bins: int = 10, bound: float = 5.0) -> None:
        super().__init__()
        self.filters, self.num_bins, self.bound = filters, num_bins, bound
        self.pre = nn.Conv1d(1, filters, 1)
        self.convs = DDSConv(filters, kernel, n_layers)
        self.proj = nn.Conv1d(filters, 3 * num_bins - 1, 1)

    def reverse(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x0, x1 = x[:, :1], x[:, 1:]
        hid = self.proj(self.convs(self.pre(x0), mask, g=g)) * mask  # (B, 3K-1, T)
        hid = hid.permute(0, 2, 1)  # (B, T, 3K-1)
        k, scale = self.num_bins, math.sqrt(self.filters)
        x1 = _rq_spline_inverse(x1[:, 0], hid[..., :k] / scale, hid[..., k : 2 * k] / scale, hid[..., 2 * k :], self.bound)
        return torch.cat([x0, x1[:, None]], dim=1) * mask


class ElementwiseAffine(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(channels, 1))
        self.logs = nn.Parameter(torch.zeros(channels, 1))

    def reverse(self, x: torch.Tensor, mask: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        return (x - self.m) * torch.exp(-self.logs) * mask


class StochasticDurationPredictor(nn.Module):
    """Log-durations per phoneme by running the duration flow backwards from noise.

    VITS drops the first ConvFlow (index 1) at inference, so the exported voice has no weights
    for it; index 1 is a placeholder here.
    """

    def __init__(self, channels: int, filters: int) -> None:
        super().__init__()
        self.pre = nn.Conv1d(channels, filters, 1)
        self.convs = DDSConv(filters, 3, 3)
        self.proj = nn.Conv1d(filters, filters, 1)
        self.flows = nn.ModuleList([ElementwiseAffine(2), nn.Identity()])
        for _ in range(3):
            self.flows.extend([nn.Identity(), ConvFlow(filters)])  # Identity stands for a channel flip
        self.flows.append(nn.Identity())

    def forward(self, x: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x (B, C, T_x) text states, noise (B, 2, T_x) already scaled by noise_w -> logw (B, 1, T_x)."""
        x = self.proj(self.convs(self.pre(x.detach()), mask)) * mask
        z = noise
        for i in (8, 7, 6, 5, 4, 3, 2, 0):  # reversed flows without the dropped index 1
            flow = self.flows[i]
            z = torch.flip(z, [1]) if isinstance(flow, nn.Identity) else flow.reverse(z, mask, g=x)
        return z[:, :1]


class WaveNet(nn.Module):
    def __init__(self, hidden: int, kernel: int, n_layers: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.in_layers = nn.ModuleList(nn.Conv1d(hidden, 2 * hidden, kernel, padding=kernel // 2) for _ in range(n_layers))
        self.res_skip_layers = nn.ModuleList(
            nn.Conv1d(hidden, 2 * hidden if i < n_layers - 1 else hidden, 1) for i in range(n_layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        last = len(self.in_layers) - 1
        for i, (conv, rs) in enumerate(zip(self.in_layers, self.res_skip_layers, strict=True)):
            a = conv(x)
            acts = torch.tanh(a[:, : self.hidden]) * torch.sigmoid(a[:, self.hidden :])
            res_skip = rs(acts)
            if i < last:
                x = (x + res_skip[:, : self.hidden]) * mask
                out = out + res_skip[:, self.hidden :]
            else:
                out = out + res_skip
        return out * mask


class CouplingLayer(nn.Module):
    """Mean-only residual coupling: the second half is shifted by a WaveNet of the first."""

    def __init__(self, channels: int, kernel: int, n_layers: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, channels, 1)
        self.enc = WaveNet(channels, kernel, n_layers)
        self.post = nn.Conv1d(channels, self.half, 1)

    def reverse(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x0, x1 = x[:, : self.half], x[:, self.half :]
        m = self.post(self.enc(self.pre(x0) * mask, mask)) * mask
        return torch.cat([x0, (x1 - m) * mask], dim=1)


class Flow(nn.Module):
    def __init__(self, cfg: VITSConfig) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(cfg.flow_layers):
            self.flows.append(CouplingLayer(cfg.hidden, cfg.flow_kernel, cfg.flow_wn_layers))
            self.flows.append(nn.Identity())  # channel flip

    def reverse(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for flow in reversed(self.flows):
            z = torch.flip(z, [1]) if isinstance(flow, nn.Identity) else flow.reverse(z, mask)
        return z


class ResBlock2(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2) for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, 0.1))
        return x


class HiFiGANGenerator(nn.Module):
    """Latents (B, 192, T_y) -> waveform (B, 1, T_y * hop)."""

    def __init__(self, cfg: VITSConfig) -> None:
        super().__init__()
        ch = cfg.upsample_initial
        self.conv_pre = nn.Conv1d(cfg.hidden, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernels, strict=True)):
            out_ch = ch // (2 ** (i + 1))
            self.ups.append(nn.ConvTranspose1d(ch // (2**i), out_ch, kernel, rate, padding=(kernel - rate) // 2))
            for k, dil in zip(cfg.resblock_kernels, cfg.resblock_dilations, strict=True):
                self.resblocks.append(ResBlock2(out_ch, k, dil))
        self.num_kernels = len(cfg.resblock_kernels)
        self.conv_post = nn.Conv1d(out_ch, 1, 7, padding=3, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(z)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


@dataclass
class VITSOutput:
    audio: torch.Tensor
    """(B, T_y * hop) waveform in [-1, 1]."""
    durations: torch.Tensor
    """(B, T_x) frames per phoneme id (integers, zero on padding)."""
    z: torch.Tensor
    """(B, hidden, T_y) latents fed to the waveform decoder."""
    frame_lengths: torch.Tensor
    """(B,) valid latent frames per row."""


class VITS(nn.Module):
    """Piper/VITS inference: text encoder -> durations -> prior sample -> flow^-1 -> HiFi-GAN."""

    def __init__(self, cfg: VITSConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc_p = TextEncoder(cfg)
        self.dp = StochasticDurationPredictor(cfg.hidden, cfg.dp_filter)
        self.flow = Flow(cfg)
        self.dec = HiFiGANGenerator(cfg)

    def infer(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        noise_scale: float = 0.667,
        length_scale: float = 1.0,
        noise_w: float = 0.8,
        generator: torch.Generator | None = None,
        noise_dp: torch.Tensor | None = None,
        noise_prior: torch.Tensor | None = None,
        durations: torch.Tensor | None = None,
    ) -> VITSOutput:
        """Synthesize (B, T_x) phoneme ids.

        Noise: ``noise_dp`` (B, 2, >=T_x) and ``noise_prior`` (B, hidden, >=T_y) are used when given
        (their prefixes; this is how the ONNX voice and this module produce the same audio),
        otherwise drawn with ``generator``. ``durations`` (B, T_x) overrides the predicted ones.
        """
        if lengths is None:
            lengths = torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long)
        x, m_p, logs_p, x_mask = self.enc_p(ids, lengths)
        if durations is None:
            if noise_dp is None:
                noise_dp = torch.randn(x.shape[0], 2, x.shape[2], generator=generator, dtype=x.dtype)
            noise = noise_dp[:, :, : x.shape[2]] * noise_w
            logw = self.dp(x, x_mask, noise)
            durations = torch.ceil(torch.exp(logw) * x_mask * length_scale)[:, 0]
        durations = durations.to(torch.long) * x_mask[:, 0].long()
        frame_lengths = durations.sum(1).clamp_min(1)
        t_y = int(frame_lengths.max())
        # Expand per-phoneme prior statistics to frames (the monotonic "path" of VITS).
        m_f = torch.zeros(x.shape[0], m_p.shape[1], t_y, dtype=m_p.dtype)
        logs_f = torch.zeros_like(m_f)
        for b in range(x.shape[0]):
            n = int(durations[b].sum())
            m_f[b, :, :n] = torch.repeat_interleave(m_p[b], durations[b], dim=1)
            logs_f[b, :, :n] = torch.repeat_interleave(logs_p[b], durations[b], dim=1)
        y_mask = sequence_mask(frame_lengths, t_y)[:, None, :].to(m_f.dtype)
        if noise_prior is None:
            eps = torch.randn(m_f.shape, generator=generator, dtype=m_f.dtype)
        else:
            if noise_prior.shape[2] < t_y:
                raise ValueError(f"noise_prior has {noise_prior.shape[2]} frames, {t_y} needed")
            eps = noise_prior[:, :, :t_y]
        z_p = m_f + eps * torch.exp(logs_f) * noise_scale
        z = self.flow.reverse(z_p, y_mask) * y_mask
        audio = self.dec(z)[:, 0]
        return VITSOutput(audio=audio, durations=durations, z=z, frame_lengths=frame_lengths)
