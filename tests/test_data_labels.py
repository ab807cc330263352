"""The per-chunk state-label contract (training/data/labels.py) on hand-made timelines."""

import numpy as np
import pytest

from training.data.labels import (
    CONTINUE as C,
)
from training.data.labels import (
    INTERRUPT as I,
)
from training.data.labels import (
    REJECT as R,
)
from training.data.labels import (
    Span,
    UserTurn,
    chunk_labels,
    labels_from_string,
    labels_to_string,
    num_chunks,
)


def at(labels: np.ndarray, t_end: float) -> int:
    """Label of the chunk whose END time is t_end."""
    return int(labels[int(round(t_end / 0.16)) - 1])


def test_turn_pause_interrupt_then_agent():
    # User speaks 0.50-2.00 with a pause 1.00-1.60 inside; agent replies at 2.60 until 4.00.
    turn = UserTurn(start=0.5, end=2.0, reply_start=2.6)
    lab = chunk_labels(num_chunks(int(4.8 * 16000), 16000), [turn], [], [Span(2.6, 4.0)])
    assert len(lab) == 30
    assert at(lab, 0.48) == C  # silence, agent not speaking
    assert all(at(lab, t) == C for t in (0.64, 1.12, 1.28, 1.44, 1.92))  # speech and the mid-turn pause
    # 2.00 + 0.08 = 2.08: the chunk ending exactly at 2.08 is the first interrupt; t <= 2.60 until 2.56
    assert [at(lab, t) for t in (1.92, 2.08, 2.24, 2.40, 2.56)] == [C, I, I, I, I]
    assert at(lab, 2.72) == R and at(lab, 4.00) == R  # agent speaking, user silent
    assert at(lab, 4.16) == C  # silence after the agent finished


def test_overlapping_reply_still_gets_one_interrupt_chunk():
    turn = UserTurn(start=0.2, end=1.5, reply_start=1.3)  # the agent starts 0.2 s before the user ends
    lab = chunk_labels(20, [turn], [], [Span(1.3, 3.0)])
    assert at(lab, 1.44) == C  # still the user's turn (t < e + 0.08)
    assert at(lab, 1.60) == I  # the first chunk with t >= 1.58, although the reply already started
    assert at(lab, 1.76) == R


def test_backchannel_and_noise_are_reject_bargein_is_continue():
    agent = [Span(0.0, 3.0)]
    bc = Span(0.9, 1.2)  # "mm-hm" during the agent's turn
    cough = Span(3.5, 3.7)  # a cough while nobody speaks
    barge = UserTurn(start=2.0, end=2.9, reply_start=3.3)
    lab = chunk_labels(30, [barge], [bc, cough], agent)
    assert at(lab, 0.48) == R  # agent speaking
    assert at(lab, 0.96) == R and at(lab, 1.28) == R  # chunks overlapping the backchannel
    assert at(lab, 2.08) == C  # the barge-in's first speech chunk (covers 1.92-2.08)
    assert at(lab, 2.88) == C
    assert at(lab, 3.04) == I and at(lab, 3.20) == I  # 2.9 + 0.08 <= t <= 3.3
    assert at(lab, 3.52) == R and at(lab, 3.84) == R  # the cough: overlapping chunks only
    assert at(lab, 4.00) == C


def test_no_reply_means_interrupt_to_the_end_and_precedence():
    turn = UserTurn(start=0.3, end=1.0, reply_start=None)
    background = Span(0.5, 2.0)  # background talker over the turn and after it
    lab = chunk_labels(15, [turn], [background], [])
    assert at(lab, 0.64) == C  # a real turn beats background speech
    assert all(v == I for v in lab[int(np.ceil(1.08 / 0.16)) - 1 :])  # interrupt beats reject


@pytest.mark.parametrize("s", ["", "0", "0120012"])
def test_string_roundtrip(s):
    arr = labels_from_string(s)
    assert labels_to_string(arr) == s
