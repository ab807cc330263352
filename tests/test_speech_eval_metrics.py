"""Speech-input evaluation metrics on hand-built inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest


def test_interrupt_threshold_sweep_on_hand_built_segments():
    from training.speech_eval import interrupt_threshold_sweep

    # Turn A: speech (continue), a 3-chunk pause with p(interrupt) 0.6/0.7/0.2, more speech, end at chunk 7.
    y_a = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1])
    p_a = np.array([0.1, 0.1, 0.6, 0.7, 0.2, 0.1, 0.1, 0.85, 0.99, 0.99])
    tags_a = ["speech", "speech", "pause", "pause", "pause", "speech", "speech", "end", "end", "end"]
    # Turn B: no pause; the head fires 1 chunk after the end at 0.9, never reaches 0.95.
    y_b = np.array([0, 0, 1, 1])
    p_b = np.array([0.0, 0.0, 0.3, 0.9])
    rows = {r["threshold"]: r for r in interrupt_threshold_sweep(
        [(y_a, p_a, tags_a), (y_b, p_b, ["speech"] * 2 + ["end"] * 2)], thresholds=(0.5, 0.8, 0.95))}
    assert rows[0.5]["pause_kept"] == pytest.approx(1 / 3)   # 0.6 and 0.7 fire
    assert rows[0.5]["turns_cut_early"] == 0.5 and rows[0.5]["turns_taken"] == 0.5
    assert rows[0.8]["pause_kept"] == 1.0 and rows[0.8]["turns_cut_early"] == 0.0
    assert rows[0.8]["turns_taken"] == 1.0 and rows[0.8]["take_turn_delay_chunks_p50"] == 0.5  # delays 0 and 1
    assert rows[0.95]["turns_taken"] == 0.5 and rows[0.95]["take_turn_delay_chunks_p50"] == 1.0
