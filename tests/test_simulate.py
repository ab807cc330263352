"""The latency simulation: the network path in a call, the metrics of a call on a hand-built
timeline, the Full-Duplex-Bench runner on a synthetic tree, and a reproducible sweep.

The agent runs on the tiny preset (random weights, so what it says is noise); what is under test
is the harness: timing through the channel, the metric arithmetic, the files, determinism.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import numpy as np
import pytest

from duplex.netsim import ChannelConfig
from duplex.sim_dialogues import Pause, ScriptedDialogue, TurnEnd
from tests.word_timelines import W, word_run

RATE = 16000


def _bursts(spans: list[tuple[float, float]], duration: float, seed: int = 0) -> np.ndarray:
    """Synthetic 'speech': noise-modulated tones in the given spans (a VAD hears them as speech)."""
    rng = np.random.default_rng(seed)
    x = np.zeros(int(duration * RATE), np.float32)
    for a, b in spans:
        i, j = int(a * RATE), int(b * RATE)
        t = np.arange(j - i) / RATE
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
        x[i:j] = (0.3 * env * (np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 660 * t))
                  + 0.02 * rng.standard_normal(j - i)).astype(np.float32)
    return x


def _lag_s(ref: np.ndarray, sig: np.ndarray, max_lag_s: float = 1.5) -> float:
    n = len(ref)
    spec = np.fft.rfft(sig[:n], 2 * n) * np.conj(np.fft.rfft(ref, 2 * n))
    corr = np.fft.irfft(spec)[: int(max_lag_s * RATE)]
    return int(np.argmax(corr)) / RATE


@pytest.mark.parametrize("delay_ms", [0.0, 120.0])
def test_a_call_carries_the_channel_delay_both_ways(delay_ms):
    from duplex.sim_run import run_call
    from speech_io.echo import EchoAgentFactory

    user = _bursts([(0.3, 1.5)], 3.0)
    res = asyncio.run(run_call(EchoAgentFactory(0.3), user, ChannelConfig(delay_ms=delay_ms, seed=1), tail_s=0.5))
    # echo delay + uplink + downlink + one 20 ms capture frame (+ < 1 ms of resampling filters)
    assert _lag_s(res.user, res.heard) == pytest.approx(0.3 + 2 * delay_ms / 1000 + 0.02, abs=0.003)
    # what the agent sent is only one way behind the user
    assert _lag_s(res.user, res.sent) == pytest.approx(0.3 + delay_ms / 1000 + 0.02, abs=0.003)
    assert res.uplink["lost"] == 0 and res.uplink["gaps"] == 0 and res.downlink["late"] == 0


def test_a_lossy_call_conceals_lost_packets_with_silence():
    from duplex.sim_run import run_call
    from speech_io.echo import EchoAgentFactory

    user = _bursts([(0.2, 3.8)], 4.0, seed=3)
    cfg = ChannelConfig(delay_ms=60, loss=0.2, seed=5)
    res = asyncio.run(run_call(EchoAgentFactory(0.1), user, cfg, tail_s=0.3))
    up, down = res.uplink, res.downlink
    assert 0.1 < up["lost"] / up["sent"] < 0.3 and 0.1 < down["lost"] / down["sent"] < 0.3
    assert up["gaps"] >= up["lost"] - 2  # every lost packet is a silent slot at the receiver
    # Both directions lose about a fifth each: about 0.8 * 0.8 of the echoed frames arrive.
    clean = asyncio.run(run_call(EchoAgentFactory(0.1), user, dataclasses.replace(cfg, loss=0.0), tail_s=0.3))

    def audible(x):
        frames = x[int(0.6 * RATE) : int(3.6 * RATE)].reshape(-1, 320)
        return float(np.mean(np.sqrt(np.mean(frames**2, axis=1)) > 0.01))

    assert 0.5 < audible(res.heard) / audible(clean.heard) < 0.78


def _dialogue() -> ScriptedDialogue:
    # user turns 0-3 s (pause 1.0-1.8), 6-8 s, 10-11 s (a barge-in); labels on 160 ms chunks
    labels = np.array([0] * 20 + [1] * 5 + [2] * 5, dtype=np.int64)
    return ScriptedDialogue(
        id="d", stage="overlap", user=np.zeros(12 * RATE, np.float32), reference_agent=np.zeros(12 * RATE, np.float32),
        duration=12.0, pauses=[Pause(1.0, 1.8)],
        turn_ends=[TurnEnd(3.0, 6.0, False, 0.0), TurnEnd(8.0, 10.0, False, 6.0), TurnEnd(11.0, 17.0, True, 10.0)],
        user_turns=[(0.0, 3.0), (6.0, 8.0), (10.0, 11.0)], user_segments=[], reference_agent_turns=[(3.4, 5.8)],
        labels=labels)


def test_score_and_pool_a_hand_built_call():
    from duplex.sim_metrics import pool, score_call

    d = _dialogue()
    # agent: a backchannel in the pause (not a take-over), answers 0.4 s after the first turn,
    # nothing after the second, answers 0.6 s after the barge-in ends.
    words = [W("mm", 1.2, 1.4)] + word_run(3.4, 6) + word_run(11.6, 5)
    segments = [(1.2, 1.4), (3.4, 5.15), (11.6, 13.05)]
    head = [(k, [0.8, 0.1, 0.1]) for k in range(25)] + [(k, [0.1, 0.1, 0.8]) for k in range(25, 30)]
    got = score_call(d, words, segments, head)
    assert got["pause"] == [False]
    assert got["smooth"] == [True, False] and got["smooth_latency"] == pytest.approx([0.4])
    assert got["interruption"] == [True] and got["interruption_latency"] == pytest.approx([0.6])
    assert got["backchannels"] == 1 and got["floor_s"] == pytest.approx(6.0)
    # user 0-3 -> agent 3.4 (gap 0.4); agent ends 5.15 -> user 6.0 (gap 0.85); user 10-11 -> agent 11.6 (0.6)
    assert got["fto"] == pytest.approx([0.4, 0.85, 0.6])
    # head: chunks 0-19 right (continue), 20-24 wrong (said continue, label interrupt), 25-29 right
    assert got["head"]["chunks"] == 30 and got["head"]["correct"] == 25
    eager = score_call(d, word_run(1.1, 5), [(1.1, 2.5)], [])
    fig = pool([got, eager])
    assert fig["pause_tor"] == 0.5  # one of the two calls took over in the pause
    assert fig["turn_taking_tor"] == 0.25 and fig["turn_taking_latency_s"] == pytest.approx(0.4)
    assert fig["interruption_tor"] == 0.5 and fig["interruption_latency_s"] == pytest.approx(0.6)
    assert fig["head_accuracy"] == pytest.approx(25 / 30, abs=1e-4) and fig["head_recall"]["interrupt"] == 0.0
    assert fig["cases"] == {"pause": 2, "turn_taking": 4, "interruption": 2, "floor_transfers": 3, "head_chunks": 30}


def test_only_the_users_next_turn_closes_a_turn_taking_window(tmp_path):
    from duplex.sim_dialogues import from_record
    from speech_io.wav import write_wav

    write_wav(tmp_path / "d.wav", np.zeros((10 * RATE, 2), np.float32), RATE)
    seg = lambda ch, kind, a, b, **kw: dict(channel=ch, kind=kind, start=a, end=b, **kw)  # noqa: E731
    rec = {"id": "d", "audio": "d.wav", "segments": [
        seg("user", "turn", 0.5, 2.0, pauses=[[1.0, 1.6]]), seg("agent", "turn", 2.4, 5.0),
        seg("user", "backchannel", 3.0, 3.4), seg("user", "noise", 3.8, 4.0),
        seg("user", "turn", 5.5, 6.5, bargein=True), seg("user", "side", 7.0, 7.5)]}
    d = from_record(rec, tmp_path)
    # The "mm-hm" at 3.0 and the cough at 3.8 do not end the agent's window: the next turn (5.5) does.
    assert [(t.end, t.window_end) for t in d.smooth_turns] == [(2.0, 5.5)]
    # No user turn after the barge-in: the window runs past the end (side talk does not close it).
    assert [(t.end, t.window_end) for t in d.interruptions] == [(6.5, 15.0)]
    assert d.pauses == [Pause(1.0, 1.6)] and d.user_turns == [(0.5, 2.0), (5.5, 6.5)]


def _fdb_tree(root, audio):
    from speech_io.wav import write_wav

    specs = {  # one sample per task, in the benchmark's layout (synthetic audio)
        "synthetic_pause_handling/0001": ("pause.json", [{"text": "[PAUSE]", "timestamp": [1.0, 2.0]}]),
        "candor_turn_taking/0001": ("turn_taking.json", [{"text": "[TURN-TAKING]", "timestamp": [3.0, 0.0]}]),
        "synthetic_user_interruption/0001": ("interrupt.json", [{"context": "c", "interrupt": "i",
                                                                 "timestamp": [2.0, 3.0]}]),
        "v1_5/user_interruption/user_interrupt_001": ("metadata.json", {"context_text": "c", "current_turn_text": "i",
                                                                        "timestamps": [2.0, 3.0]}),
        "icc_backchannel/0001": ("transcription.json", {"text": "", "chunks": []}),
        "v1_5/background_speech/bg_speech_001": ("metadata.json", {"timestamps": [1.5, 2.5]}),
    }
    for rel, (name, content) in specs.items():
        d = root / rel
        d.mkdir(parents=True)
        write_wav(d / "input.wav", audio, RATE)
        (d / name).write_text(json.dumps(content))
    return root


def test_fdb_layout_and_scoring(tmp_path):
    from duplex.fdb import find_samples, score_sample, summarize

    root = _fdb_tree(tmp_path / "fdb", _bursts([(0.2, 1.0), (2.0, 3.0)], 4.0))
    samples = {s.dir.relative_to(root).as_posix(): s for s in find_samples(root)}
    assert {k: (s.task, s.ref) for k, s in samples.items()} == {
        "synthetic_pause_handling/0001": ("pause_handling", (1.0, 2.0)),
        "candor_turn_taking/0001": ("smooth_turn_taking", (3.0, 0.0)),
        "synthetic_user_interruption/0001": ("user_interruption", (2.0, 3.0)),
        "v1_5/user_interruption/user_interrupt_001": ("user_interruption", (2.0, 3.0)),
        "icc_backchannel/0001": ("backchannel", None),
        "v1_5/background_speech/bg_speech_001": ("v1.5/background_speech", (1.5, 2.5)),
    }
    answer = word_run(3.5, 5)
    rows = [
        {"task": "pause_handling", **score_sample(samples["synthetic_pause_handling/0001"], word_run(1.2, 4), [], 4.0)},
        {"task": "smooth_turn_taking", **score_sample(samples["candor_turn_taking/0001"], answer, [], 6.0)},
        {"task": "user_interruption", **score_sample(samples["synthetic_user_interruption/0001"], answer, [], 6.0)},
        {"task": "user_interruption", **score_sample(samples["synthetic_user_interruption/0001"], [], [], 6.0)},
        {"task": "backchannel", **score_sample(samples["icc_backchannel/0001"], [W("mm", 1.0, 1.3)],
                                               [(1.0, 1.3)], 4.0)},
        {"task": "v1.5/background_speech", **score_sample(samples["v1_5/background_speech/bg_speech_001"],
                                                          word_run(2.2, 5), [], 4.0)},
    ]
    assert [r["tor"] for r in rows] == [True, True, True, False, False, True]
    fig = summarize(rows)
    assert fig["pause_handling"] == {"samples": 1, "tor": 1.0}
    assert fig["smooth_turn_taking"] == {"samples": 1, "tor": 1.0, "latency_s": 0.5}
    assert fig["user_interruption"] == {"samples": 2, "tor": 0.5, "latency_s": 0.5}
    assert fig["backchannel"] == {"samples": 1, "tor": 0.0, "frequency": 0.25}
    # the agent started 0.3 s before the background talker stopped: a take-over, latency clipped to 0
    assert fig["v1.5/background_speech"] == {"samples": 1, "tor": 1.0, "latency_s": 0.0}


def test_eval_fdb_runs_the_agent_and_writes_outputs(tmp_path, tiny_cfg):
    from duplex.cli import main

    root = _fdb_tree(tmp_path / "fdb", _bursts([(0.2, 1.0), (1.6, 2.4)], 3.0))
    out = tmp_path / "m.json"
    assert main(["eval", "fdb", "--data", str(root), "--preset", "tiny", "--json", "--out", str(out),
                 "--set", "sim.words=vad", "--set", "sim.tail_s=0.5"]) == 0
    result = json.loads(out.read_text())
    assert set(result["tasks"]) == {"pause_handling", "smooth_turn_taking", "user_interruption", "backchannel",
                                    "v1.5/background_speech"}
    assert result["tasks"]["user_interruption"]["samples"] == 2
    from speech_io.wav import read_wav

    for s in result["samples"]:
        d = root / s["sample"]
        audio, rate = read_wav(d / "output.wav")
        assert rate == RATE and len(audio) >= 3 * RATE  # starts with input.wav; runs on until the agent is silent
        chunks = json.loads((d / "output.json").read_text())["chunks"]
        assert all(c["timestamp"][0] <= c["timestamp"][1] for c in chunks)


def test_same_seed_same_report(tmp_path, tiny_cfg):
    from configs.loader import apply_overrides, parse_set_args
    from duplex.simulate import run_sweep

    cfg = apply_overrides(tiny_cfg, parse_set_args(["sim.dialogue_seconds=8", "sim.tail_s=0.5", "sim.seed=3"]))
    cfg = dataclasses.replace(cfg, preset="tiny")
    data = tmp_path / "a"
    a = run_sweep(cfg, data, delays=[0, 200], n=1, progress=False)
    # the second run spreads its calls over two processes: same report
    b = run_sweep(cfg, tmp_path / "b", data=str(data / "dialogues"), delays=[0, 200], n=1, progress=False, workers=2)
    for name in ("report.json", "report.md"):
        assert (data / name).read_text() == (tmp_path / "b" / name).read_text()
    assert set(a["delays"]) == {"0", "200"} and set(a["delays"]["0"]) == {"on", "off"}
    for point in a["delays"].values():
        for fig in point.values():
            assert {"pause_tor", "turn_taking_tor", "interruption_tor", "turn_taking_latency_s"} <= set(fig)
            assert fig["cases"]["head_chunks"] > 0 and fig["agent_speech_s"] is not None
    assert b["timing"]["calls_run"] == 4
    for png in ("metrics_vs_delay.png", "fto_hist.png"):
        assert (data / png).stat().st_size > 1000
    wavs = sorted((data / "runs").rglob("*.wav"))
    assert len(wavs) == 4
    # A resumed run reuses the calls already made and gives the same report.
    c = run_sweep(cfg, data, delays=[0, 200], n=1, progress=False)
    assert c["timing"]["calls_run"] == 0 and c["delays"] == a["delays"]


def test_judge_words_are_deterministic_and_skip_punctuation(tiny_cfg, voice):
    from agent.judge import WhisperJudge
    from duplex.sim_metrics import judge_words
    from speech_io.wav import resample

    syn = voice.render("Please tell me about the weather tomorrow.", seed=4)
    speech = resample(syn.audio, syn.sample_rate, RATE)
    rng = np.random.default_rng(0)
    x = np.concatenate([np.zeros(RATE // 2, np.float32), speech,
                        0.05 * rng.standard_normal(RATE).astype(np.float32)])  # then a second of noise
    judge = WhisperJudge(dataclasses.replace(tiny_cfg.judge, num_threads=1))  # greedy, as the tiny sweeps
    a, b = judge_words(judge, x), judge_words(judge, x)
    assert [(w.text, w.start, w.end) for w in a] == [(w.text, w.start, w.end) for w in b]
    assert len(a) >= 5 and all(any(c.isalnum() for c in w.text) for w in a)
    assert a[0].start == pytest.approx(0.5 + syn.words[0].start, abs=0.15)
    # Silences of seconds are cut before decoding; the words keep their times on the channel.
    y = np.zeros(20 * RATE, np.float32)
    y[3 * RATE : 3 * RATE + len(speech)] = speech
    y[14 * RATE : 14 * RATE + len(speech)] = speech
    c = judge_words(judge, y)
    first = [w.start for w in c if w.text.lower().strip(".,") == a[0].text.lower().strip(".,")]
    assert len(first) == 2
    assert first[0] == pytest.approx(3 + syn.words[0].start, abs=0.15)
    assert first[1] == pytest.approx(14 + syn.words[0].start, abs=0.15)
    # Region by region (the VAD's segments), the same words at the same channel times.
    speech_s = len(speech) / RATE
    d = judge_words(judge, y, segments=[(3.0, 3.0 + speech_s), (14.0, 14.0 + speech_s)])
    assert [w.text for w in d] == [w.text for w in a] * 2
    for i, (u, v) in enumerate(zip(d, a + a, strict=True)):
        shift = 3.0 - 0.5 if i < len(a) else 14.0 - 0.5  # ``a`` was rendered 0.5 s into its clip
        assert u.start == pytest.approx(v.start + shift, abs=0.15)


def test_speech_regions_bridge_short_gaps_pad_and_fit_whisper_windows():
    from duplex.sim_metrics import REGION_MAX_S, speech_regions

    assert speech_regions([(5.0, 6.0), (1.0, 2.0), (2.5, 3.0)], 10.0) == [
        pytest.approx((0.85, 3.15)), pytest.approx((4.85, 6.15))]
    # Padding never crosses the channel's ends or a neighbouring region.
    assert speech_regions([(0.05, 1.0), (2.05, 2.95)], 3.0) == [pytest.approx((0.0, 1.15)), pytest.approx((1.9, 3.0))]
    # 40 s of talk with 0.5 s gaps and one 0.9 s gap at 20 s: cut there, not mid-word.
    segs = [(float(t), t + 0.5) for t in range(40) if t != 20]
    segs = [(a, b) for a, b in segs if a < 19.5] + [(20.4, 20.9)] + [(a, b) for a, b in segs if a > 20.5]
    regions = speech_regions(segs, 45.0)
    assert len(regions) == 2 and regions[0][1] == pytest.approx(19.65) and regions[1][0] == pytest.approx(20.25)
    assert all(b - a <= REGION_MAX_S + 0.3 for a, b in regions)
    # One segment longer than a window: hard cuts.
    regions = speech_regions([(1.0, 61.0)], 62.0)
    assert len(regions) == 3 and all(b - a <= REGION_MAX_S + 0.3 for a, b in regions)
    assert regions[0][0] == pytest.approx(0.85) and regions[-1][1] == pytest.approx(61.15)


def test_two_agents_hear_each_other_through_the_channel():
    from duplex.sim_pair import run_pair
    from speech_io.echo import EchoAgentFactory

    opener = _bursts([(0.2, 1.0)], 1.2, seed=7)
    res = asyncio.run(run_pair(EchoAgentFactory(0.3), opener, ChannelConfig(delay_ms=100, seed=2), seconds=4.0))
    # A echoes the opener 0.3 s + one capture frame later; B echoes A, and A hears it after both
    # directions of the path (2 x 100 ms) and B's own 0.3 s + one frame.
    assert _lag_s(res.opener, res.a, max_lag_s=0.6) == pytest.approx(0.32, abs=0.003)
    assert _lag_s(res.a, res.b_heard, max_lag_s=0.8) == pytest.approx(0.32 + 0.2, abs=0.003)
    assert res.links["a_to_b"]["lost"] == 0 and res.links["b_to_a"]["gaps"] == 0
