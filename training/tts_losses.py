"""Losses of the unit decoder: masked latent L1 and a multi-resolution log-mel L1 on audio."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

RESOLUTIONS = ((512, 128, 64), (1024, 256, 80), (2048, 512, 128))
"""(n_fft, hop, n_mels) of the mel loss."""


@lru_cache(maxsize=8)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filterbank."""
    fmax = fmax or sample_rate / 2

    def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mels = torch.linspace(float(hz_to_mel(torch.tensor(fmin))), float(hz_to_mel(torch.tensor(fmax))), n_mels + 2)
    edges = mel_to_hz(mels)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (centre - lower)
    down = (upper - freqs[None]) / (upper - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def log_mel(audio: torch.Tensor, sample_rate: int, n_fft: int, hop: int, n_mels: int) -> torch.Tensor:
    """(B, S) -> (B, n_mels, frames) natural-log mel magnitudes."""
    spec = torch.stft(audio, n_fft, hop, window=torch.hann_window(n_fft, device=audio.device), center=True,
                      return_complex=True).abs()
    mel = mel_filters(sample_rate, n_fft, n_mels).to(audio.device) @ spec
    return torch.log(mel.clamp_min(1e-5))


def mel_loss(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor, sample_rate: int = 22050) -> torch.Tensor:
    """Mean over resolutions of the L1 between log-mels, on frames inside each row's length."""
    total = pred.new_zeros(())
    for n_fft, hop, n_mels in RESOLUTIONS:
        a, b = log_mel(pred, sample_rate, n_fft, hop, n_mels), log_mel(target, sample_rate, n_fft, hop, n_mels)
        frames = torch.arange(a.shape[-1])[None, :] * hop < lengths[:, None]
        m = frames[:, None, :].to(a.dtype)
        total = total + ((a - b).abs() * m).sum() / (m.sum() * a.shape[1]).clamp_min(1)
    return total / len(RESOLUTIONS)


def latent_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """pred/target (B, C, T), mask (B, T) bool -> mean L1 over masked frames."""
    t = min(pred.shape[-1], target.shape[-1])
    m = mask[:, None, :t].to(pred.dtype)
    return ((pred[..., :t] - target[..., :t]).abs() * m).sum() / (m.sum() * pred.shape[1]).clamp_min(1)


def cosine_lr(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))
