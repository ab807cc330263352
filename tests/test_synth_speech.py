"""The synthetic speech corpus's mid-turn pauses (training.synth_speech)."""

import random

import numpy as np
import pytest

from training.synth_speech import espeak, make_episode, speak_with_pause

pytestmark = pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="needs espeak-ng")


def test_pause_pieces_are_cut_from_one_rendering_of_the_whole_sentence():
    first, rest = "I would really like to", "take a cooking class"
    pieces = speak_with_pause(first, rest, "en-us+m1", 170, 50)
    assert pieces is not None
    head, tail = pieces
    whole = espeak(f"{first} {rest}", "en-us+m1", 170, 50)
    # The words before the pause are the sentence's own opening (mid-clause prosody), not the
    # prefix rendered alone, which espeak ends with a sentence-final fall and lengthening.
    n = len(head) - 400
    assert np.allclose(head[:n], whole[:n], atol=1e-3)
    alone = espeak(first, "en-us+m1", 170, 50)
    assert len(head) < len(alone) - 0.05 * 16000
    assert not np.allclose(head[:n], alone[:n], atol=1e-3)
    # Both pieces together are the sentence (up to the trimmed quiet at the cut).
    assert abs(len(head) + len(tail) - len(whole)) < 0.1 * 16000
    i = int(np.flatnonzero(np.abs(tail) > 0.01)[0])
    j = len(whole) - len(tail) + i
    assert np.allclose(tail[i : i + 4000], whole[j : j + 4000], atol=1e-3)


def test_episode_pause_sits_inside_the_users_turn():
    sentences = ["I would really like to take a cooking class", "Tell me about the weather in Paris"]
    for seed in range(40):
        _, tl = make_episode(random.Random(seed), "train", sentences, exchanges=1)
        pauses = [(a, b) for a, b, kind in tl.events if kind == "pause"]
        if pauses:
            break
    else:
        pytest.fail("no mid-turn pause in 40 episodes (the generator pauses ~45% of turns)")
    (a, b), speech = pauses[0], [(s, e) for s, e, kind in tl.events if kind == "speech"]
    assert 0.5 <= b - a <= 1.4
    assert any(abs(e - a) < 1e-6 for _, e in speech) and any(abs(s - b) < 1e-6 for s, _ in speech)
    assert b <= tl.turn_ends[0][0]
