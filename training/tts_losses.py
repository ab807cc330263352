"""Losses of the unit decoder: masked latent L1, a multi-resolution log-mel L1 on audio, and a
periodicity loss (autocorrelation at the target's period) that carries pitch."""

from __future__ import annotations

import math
from functools import lru_cache

import torch

RESOLUTIONS = ((512, 128, 64), (1024, 256, 80), (2048, 512, 128))
"""(n_fft, hop, n_mels) of the mel loss."""
F0_MIN, F0_MAX = 60.0, 400.0
"""Pitch range (Hz) of the periodicity loss."""
PITCH_FFT, PITCH_HOP = 1024, 256
"""Frame and hop (samples) of the periodicity loss's autocorrelation."""


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


def frame_autocorrelation(audio: torch.Tensor, sample_rate: int = 22050, n_fft: int = PITCH_FFT, hop: int = PITCH_HOP,
                          fmin: float = F0_MIN, fmax: float = F0_MAX) -> torch.Tensor:
    """(B, S) -> (B, frames, lags): normalised autocorrelation of Hann-windowed frames at the lags of
    ``fmax``..``fmin`` Hz, divided by the window's own autocorrelation (Boersma 1993), so a periodic
    frame peaks near 1 at its period."""
    lo, hi = int(sample_rate / fmax), int(math.ceil(sample_rate / fmin))
    window = torch.hann_window(n_fft, periodic=False, device=audio.device, dtype=audio.dtype)
    frames = audio.unfold(-1, n_fft, hop)
    frames = (frames - frames.mean(-1, keepdim=True)) * window

    def acf(x: torch.Tensor) -> torch.Tensor:
        r = torch.fft.irfft(torch.fft.rfft(x, n=2 * n_fft).abs() ** 2, n=2 * n_fft)[..., : hi + 1]
        return r / r[..., :1].clamp_min(1e-8)

    return (acf(frames) / acf(window))[..., lo : hi + 1]


def target_periods(ac: torch.Tensor, first_lag: int, rise: float = 0.85, span: float = 0.15) -> torch.Tensor:
    """(B, F, L) autocorrelation whose index 0 is lag ``first_lag`` -> (B, F) index of the period:
    the top of the FIRST peak that reaches ``rise`` x the frame's maximum, searched within ``span``
    of its rise (the multiples of the period peak as high: taking the first avoids octave errors)."""
    lags = torch.arange(ac.shape[-1], device=ac.device)
    first = (ac > rise * ac.amax(-1, keepdim=True)).to(torch.int8).argmax(-1, keepdim=True)
    window = (lags >= first) & (lags <= first + (span * (first + first_lag)).long() + 2)
    return ac.masked_fill(~window, -2.0).argmax(-1)


def periodicity_loss(pred: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor, sample_rate: int = 22050,
                     voiced_threshold: float = 0.5) -> torch.Tensor:
    """1 - the autocorrelation of ``pred`` at the target's period, on the target's voiced frames.

    The log-mel L1 barely rewards moving harmonics that do not overlap yet (a pitch change of a
    few semitones); this term is highest when ``pred`` repeats itself at exactly the target's
    period, and its gradient points there from anywhere within about half an octave."""
    a = frame_autocorrelation(pred, sample_rate)
    with torch.no_grad():
        b = frame_autocorrelation(target, sample_rate)
        inside = (torch.arange(b.shape[1], device=b.device)[None] * PITCH_HOP + PITCH_FFT) <= lengths[:, None]
        voiced = (b.amax(-1) >= voiced_threshold) & inside
        period = target_periods(b, int(sample_rate / F0_MAX))
    at = a.gather(-1, period[..., None])[..., 0]
    m = voiced.to(a.dtype)
    return ((1.0 - at) * m).sum() / m.sum().clamp_min(1)


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
