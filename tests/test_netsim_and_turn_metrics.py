"""The network channel simulator and the Full-Duplex-Bench-style metrics on hand-built timelines."""

import numpy as np
import pytest

from duplex import turn_metrics as tm
from duplex.netsim import PACKET_S, ChannelConfig, NetworkChannel, PlayoutBuffer
from tests.word_timelines import W, word_run


def _send(cfg: ChannelConfig, n: int = 20000) -> tuple[NetworkChannel, list]:
    ch = NetworkChannel(cfg)
    for seq in range(n):
        ch.send(seq, seq * PACKET_S)
    return ch, ch.deliver(float("inf"))


@pytest.mark.parametrize("dist", ["normal", "uniform", "exponential", "pareto"])
def test_delay_and_jitter_statistics_match_the_config(dist):
    cfg = ChannelConfig(delay_ms=240, jitter_ms=20, jitter_dist=dist, seed=1)
    _, got = _send(cfg)
    extra = np.array([p.arrival - p.sent for p in got]) - 0.240
    assert extra.min() >= 0
    expected_mean = {"normal": 0.020 * np.sqrt(2 / np.pi), "uniform": 0.010, "exponential": 0.020, "pareto": 0.020}[dist]
    assert extra.mean() == pytest.approx(expected_mean, rel=0.08)


def test_independent_and_bursty_loss_rates():
    ch, got = _send(ChannelConfig(loss=0.05, seed=2))
    assert ch.lost / ch.sent == pytest.approx(0.05, abs=0.006)
    assert len(got) == ch.sent - ch.lost
    ch, got = _send(ChannelConfig(loss=0.05, loss_burst=4.0, seed=3), n=60000)
    assert ch.lost / ch.sent == pytest.approx(0.05, abs=0.01)
    lost = sorted(set(range(ch.sent)) - {p.seq for p in got})
    bursts = np.diff(np.flatnonzero(np.diff([-2] + lost) != 1).tolist() + [len(lost)])
    assert bursts.mean() == pytest.approx(4.0, rel=0.15)


def test_reordering_and_in_order_without_jitter():
    _, got = _send(ChannelConfig(delay_ms=80, seed=4), n=1000)
    assert [p.seq for p in got] == list(range(1000))
    _, got = _send(ChannelConfig(delay_ms=80, reorder=0.05, reorder_ms=50, seed=4), n=10000)
    seqs = [p.seq for p in got]
    inversions = sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b < a)
    assert 0.03 < inversions / len(seqs) < 0.07


def test_same_seed_same_packets():
    cfg = ChannelConfig(delay_ms=100, jitter_ms=30, loss=0.1, reorder=0.02, seed=9)
    a = [(p.seq, p.arrival) for p in _send(cfg, 2000)[1]]
    b = [(p.seq, p.arrival) for p in _send(cfg, 2000)[1]]
    assert a == b
    c = [(p.seq, p.arrival) for p in _send(ChannelConfig(delay_ms=100, jitter_ms=30, loss=0.1, reorder=0.02, seed=10), 2000)[1]]
    assert a != c


def test_playout_buffer_absorbs_jitter_within_its_slack():
    ch = NetworkChannel(ChannelConfig(delay_ms=100, jitter_ms=10, jitter_dist="uniform", seed=5))
    buf = PlayoutBuffer(buffer_s=0.012)
    played = []
    for tick in range(3000):
        t = tick * PACKET_S
        ch.send(tick, t)
        for p in ch.deliver(t):
            buf.push(p)
        played += buf.pop_due(t)
    # uniform jitter in [0, 10) ms and the first packet's own jitter: 12 ms of slack loses nothing
    assert buf.gaps == 0 and buf.late == 0
    assert [s for s, _ in played] == list(range(len(played)))
    tight = PlayoutBuffer(buffer_s=0.0)
    ch = NetworkChannel(ChannelConfig(delay_ms=100, jitter_ms=40, seed=5))
    for tick in range(3000):
        ch.send(tick, tick * PACKET_S)
        for p in ch.deliver(tick * PACKET_S):
            tight.push(p)
        tight.pop_due(tick * PACKET_S)
    assert tight.gaps > 100  # too little slack for 40 ms jitter


def test_take_over_rule():
    assert not tm.takes_turn([])
    assert not tm.takes_turn(word_run(0, 3, step=0.2))  # 0.65 s, 3 words: a short reply, not a turn
    assert tm.takes_turn(word_run(0, 4, step=0.2))  # 4 words
    assert tm.takes_turn([W("well", 0.0, 0.5), W("yes", 0.8, 1.1)])  # lasts 1.1 s


def test_pause_turn_taking_and_interruption_on_a_timeline():
    # user: speaks 0-2 s, pauses 2-2.8 s, speaks 2.8-4 s, ends at 4 s; agent answers at 4.35 s
    agent = [W("mm", 2.3, 2.5)] + word_run(4.35, 6)
    pause = tm.pause_handling(agent, 2.0, 2.8)
    assert not pause.took  # a lone "mm" during the pause is not a take-over
    turn = tm.smooth_turn_taking(agent, user_end=4.0, window_end=10.0)
    assert turn.took and turn.latency == pytest.approx(0.35)
    eager = tm.pause_handling(word_run(2.1, 5), 2.0, 2.8)
    assert eager.took and eager.latency == pytest.approx(0.1)
    # interruption ends at 7.0; agent starts its answer 0.4 s later
    inter = tm.user_interruption(word_run(7.4, 5), interruption_end=7.0, window_end=12.0)
    assert inter.took and inter.latency == pytest.approx(0.4)
    assert not tm.user_interruption([], 7.0, 12.0).took
    assert tm.rate([True, False, True, True]) == 0.75


def test_backchannel_classification_frequency_and_jsd():
    words = [W("mhm", 1.0, 1.3), W("yeah", 5.0, 5.3)]
    res = tm.backchannel([(1.0, 1.35), (5.0, 5.35)], words, duration=10.0)
    assert not res.took_turn and len(res.backchannels) == 2 and res.frequency == pytest.approx(0.2)
    same = tm.timing_histogram([(1.0, 1.35), (5.0, 5.35)], 10.0)
    assert tm.backchannel([(1.0, 1.35), (5.0, 5.35)], words, 10.0, reference=same).jsd == pytest.approx(0.0, abs=1e-6)
    other = tm.timing_histogram([(8.0, 8.3)], 10.0)
    far = tm.backchannel([(1.0, 1.35), (5.0, 5.35)], words, 10.0, reference=other).jsd
    assert 0.5 < far <= np.sqrt(np.log(2)) + 1e-9
    long = tm.backchannel([(1.0, 4.5)], word_run(1.0, 10), duration=10.0)
    assert long.took_turn and long.backchannels == [] and long.jsd == 1.0


def test_js_distance_matches_scipy():
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(0)
    p, q = rng.random(40), rng.random(40)
    assert tm.js_distance(p, q) == pytest.approx(float(jensenshannon(p, q)), abs=1e-9)


def test_floor_transfer_offsets():
    user = [(0.0, 2.0), (5.0, 7.0)]
    agent = [(2.3, 4.8), (6.8, 9.0), (3.0, 3.2)]
    # user->agent gap 0.3; agent->user gap 0.2; user->agent overlap -0.2 (the 0.2 s blip is a backchannel)
    assert tm.floor_transfer_offsets(user, agent, min_turn_s=0.5) == pytest.approx([0.3, 0.2, -0.2])
    assert tm.merge_segments([(0, 1), (1.1, 2), (3, 4)], max_gap=0.3) == [(0, 2), (3, 4)]
