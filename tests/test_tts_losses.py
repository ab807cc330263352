"""The decoder's audio losses: the periodicity term finds the period and pulls pitch where log-mel does not."""

from __future__ import annotations

import math

import torch

from training.tts_losses import F0_MAX, frame_autocorrelation, mel_loss, periodicity_loss, target_periods

SR = 22050


def _voice(f0: torch.Tensor | float, seconds: float = 0.5) -> torch.Tensor:
    """A harmonic tone (3 partials) at ``f0`` Hz, (1, S)."""
    t = torch.arange(int(SR * seconds)) / SR
    return sum(a * torch.sin(2 * math.pi * k * f0 * t) for k, a in ((1, 1.0), (2, 0.5), (3, 0.3)))[None]


def test_autocorrelation_peaks_at_the_period_and_not_on_noise():
    for f0 in (90.0, 150.0, 310.0):
        ac = frame_autocorrelation(_voice(f0))
        assert float(ac.amax()) > 0.95
        # the period, not one of its multiples (they peak as high: octave ambiguity)
        lag = target_periods(ac, int(SR / F0_MAX))[0] + int(SR / F0_MAX)
        assert all(abs(SR / int(x) - f0) / f0 < 0.01 for x in lag[1:-1]), lag
    torch.manual_seed(0)
    noise = 0.1 * torch.randn(1, SR)
    assert float((frame_autocorrelation(noise).amax(-1) >= 0.5).float().mean()) == 0.0


def test_periodicity_loss_is_zero_on_the_target_and_grows_with_the_pitch_gap():
    n = torch.tensor([SR // 2])
    target = _voice(120.0)
    gaps = [float(periodicity_loss(_voice(f), target, n)) for f in (120.0, 124.0, 135.0)]
    assert gaps[0] < 1e-6 < gaps[1] < gaps[2]


def test_gradient_descent_on_pitch_reaches_a_three_semitone_shift_only_with_periodicity():
    """120 Hz -> 143 Hz (+3 semitones): what the happy plugin must learn."""
    torch.set_num_threads(1)
    n = torch.tensor([SR // 2])
    target = _voice(torch.tensor(143.0))

    def fit(loss_fn) -> float:
        f0 = torch.tensor(120.0, requires_grad=True)
        opt = torch.optim.Adam([f0], lr=1.0)
        for _ in range(60):
            loss = loss_fn(_voice(f0), target, n)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return float(f0.detach())

    assert abs(fit(periodicity_loss) - 143.0) < 2.0
    assert abs(fit(mel_loss) - 143.0) > 10.0  # why the term exists: log-mel L1 stalls near the start
