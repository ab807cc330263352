"""SyncLLM interleaved format: de-duplication, interpolation, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from agent.sync_format import (
    FormatError,
    UnitVocab,
    dedup,
    deinterleave,
    frames_per_chunk,
    interleave,
    interpolate,
    split_chunks,
)

V = UnitVocab(500)


def test_paper_example_one_unit_fills_the_chunk():
    # SyncLLM Fig. 2: a 160 ms chunk whose 4 frames are one unit is modelled as that unit once
    # and interpolated back to 4 copies.
    assert dedup([7, 7, 7, 7]) == ([7], [0])
    assert interpolate([7], 4) == [7, 7, 7, 7]
    # Several units share the frames equally, the first ones take the remainder.
    assert interpolate([1, 2, 3], 4) == [1, 1, 2, 3]
    assert interpolate([1, 2], 6) == [1, 1, 1, 2, 2, 2]
    assert dedup([5, 5, 9, 5]) == ([5, 9, 5], [0, 2, 3])


@pytest.mark.parametrize("chunk_ms", [160, 200, 240])
def test_round_trip_lossless_without_repeats(chunk_ms):
    n = frames_per_chunk(chunk_ms)
    rng = np.random.default_rng(chunk_ms)
    t = 7 * n
    # Streams whose chunks never repeat a unit consecutively.
    agent = np.array([(i * 7 + 3) % 500 for i in range(t)])
    user = rng.permutation(500)[:t]
    tokens = interleave(agent, user, chunk_ms, V)
    assert tokens.count(V.s0) == 7 and tokens.count(V.s1) == 7
    a2, u2 = deinterleave(tokens, chunk_ms, V)
    np.testing.assert_array_equal(a2, agent)
    np.testing.assert_array_equal(u2, user)


@pytest.mark.parametrize("chunk_ms", [160, 200, 240])
def test_round_trip_keeps_chunk_timing_with_repeats(chunk_ms):
    n = frames_per_chunk(chunk_ms)
    rng = np.random.default_rng(1)
    t = 25 * n + 3  # a trailing partial chunk too
    agent = np.repeat(rng.integers(0, 500, t), rng.integers(1, 6, t))[:t]
    user = np.where(rng.random(t) < 0.6, 0, rng.integers(0, 500, t))
    tokens = interleave(agent, user, chunk_ms, V)
    a2, u2 = deinterleave(tokens, chunk_ms, V)
    k = -(-t // n)
    assert len(a2) == len(u2) == k * n  # every chunk keeps exactly its n frames
    for stream, back in ((agent, a2), (user, u2)):
        padded = np.concatenate([stream, np.full(k * n - t, stream[-1])])
        for c in range(k):
            orig, rec = padded[c * n : (c + 1) * n], back[c * n : (c + 1) * n]
            # Same units in the same order inside the chunk; only their durations may move.
            assert dedup(orig)[0] == dedup(rec)[0]
            assert rec[0] == orig[0] and rec[-1] == orig[-1]
        # Lossless wherever the chunk had no repeats.
        for c in range(k):
            orig = padded[c * n : (c + 1) * n]
            if len(dedup(orig)[0]) == n:
                np.testing.assert_array_equal(back[c * n : (c + 1) * n], orig)
    # Re-interleaving the reconstruction gives the same model sequence (a fixed point).
    assert interleave(a2, u2, chunk_ms, V) == tokens


def test_markers_take_no_time():
    n = frames_per_chunk(160)
    seq = [V.s0, V.text, V.text, 4, V.word, V.text, 9, V.s1, 1, V.s0, V.eot, 9, V.s1, 2, 3]
    chunks = split_chunks(seq, V)
    assert [c.agent for c in chunks] == [[4, 9], [9]] and [c.user for c in chunks] == [[1], [2, 3]]
    a, u = deinterleave(seq, 160, V)
    assert a.tolist() == [4, 4, 9, 9] + [9] * n
    assert u.tolist() == [1] * n + [2, 2, 3, 3]


def test_bad_input_is_rejected():
    with pytest.raises(FormatError):
        frames_per_chunk(100)
    with pytest.raises(FormatError):
        split_chunks([V.s1, 3], V)
    with pytest.raises(FormatError):
        split_chunks([3, V.s0], V)
    with pytest.raises(FormatError):
        deinterleave([V.s0, 1, 2, 3, 4, 5, V.s1, 1], 160, V)  # 5 units in a 4-frame chunk
    with pytest.raises(FormatError):
        interleave(np.zeros(8, int), np.zeros(4, int), 160, V)
