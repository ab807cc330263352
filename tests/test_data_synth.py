"""`data synth` on the tiny preset: manifests, label correctness, determinism, resuming after a kill."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from training.data import load_manifest
from training.data.labels import END_MARGIN, REJECT_KINDS

REPO = Path(__file__).resolve().parents[1]
CHUNK = 0.16
CLI = [sys.executable, "-c", "import sys; from duplex.cli import main; sys.exit(main())"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from configs import load_config
    from training.data.synth import synthesize

    out = tmp_path_factory.mktemp("data") / "tiny-seed1"
    report = synthesize(load_config("tiny"), out, seed=1, workers=1, progress=False)
    assert report.manifests, "synth did not finish"
    return out


def tree_digest(root: Path) -> dict[str, str]:
    """sha1 of every manifest and audio file (relative path -> digest)."""
    out = {}
    for sub in ("manifests", "audio"):
        for p in sorted((root / sub).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def test_manifests_load_with_audio_splits_and_voices(tiny_data):
    utts = load_manifest(tiny_data, "utterances")
    assert {u.role for u in utts} == {"agent", "user"}
    for u in utts:
        audio = u.load_audio()
        assert abs(len(audio) / u.sample_rate - u.duration) < 1e-3
        assert np.abs(audio).max() > 0.05
        times = [(w.start, w.end) for w in u.words]
        assert all(0 <= s <= e <= u.duration + 1e-3 for s, e in times)
        assert all(a[1] <= b[0] + 1e-6 for a, b in zip(times, times[1:], strict=False))  # monotone, no overlap
        if u.role == "user":
            assert u.heldout_voice == (u.split == "test")  # held-out voices speak only held-out text
    assert {u.split for u in utts} == {"train", "val", "test"}
    qa = load_manifest(tiny_data, "qa")
    assert qa and all(q.question and q.llm == "tiny-random-llama" for q in qa)
    assert all(len(q.load_question_audio(16000)) > 8000 for q in qa)
    emo = load_manifest(tiny_data, "emotions")
    assert sorted({e.emotion for e in emo}) == ["angry", "happy", "neutral", "sad", "surprised"]
    assert {e.voice_half for e in emo} == {"A", "B"}
    assert (tiny_data / "DATA_CARD.md").read_text().count("synthetic") >= 3


def _overlaps(a0, a1, b0, b1):
    return a0 < b1 and b0 < a1


def test_every_chunk_label_agrees_with_the_timeline_and_the_audio(tiny_data):
    """Labels checked against the segments by independent per-chunk rules, and the segments
    checked against the rendered audio (silence where nothing is placed)."""
    dialogues = load_manifest(tiny_data, "dialogues")
    assert {d.stage for d in dialogues} == {"turn", "duplex", "overlap"}
    seen = {"pause": 0, "reject_event": 0, "interrupt": 0, "agent_silence": 0, "turn": 0}
    for d in dialogues:
        audio = d.load_audio()
        lab = d.label_array()
        assert len(lab) == len(audio) // int(CHUNK * d.sample_rate)
        segs = d.segments
        turns = [s for s in segs if s.channel == "user" and s.kind == "turn"]
        events = [s for s in segs if s.channel == "user" and s.kind in REJECT_KINDS]
        agent = [s for s in segs if s.channel == "agent"]
        windows = []  # (first interrupt t, last interrupt t) per user turn
        for i, t in enumerate(segs):
            if t.channel == "user" and t.kind == "turn":
                r = min((a.start for a in agent if a.reply_to == i), default=None)
                assert r is not None, "every user turn gets a reply"
                windows.append((t.end + END_MARGIN, max(r, t.end + END_MARGIN + CHUNK)))
        for k, label in enumerate(lab):
            t0, t1 = k * CHUNK, (k + 1) * CHUNK
            in_window = any(w0 <= t1 + 1e-9 and t1 <= w1 + 1e-9 for w0, w1 in windows)
            in_turn = any(u.start < t1 and t1 < u.end + END_MARGIN for u in turns)
            if any(p0 <= t0 and t1 <= p1 for u in turns for p0, p1 in u.pauses):
                assert label == 0, f"{d.id} chunk {k}: inside a mid-turn pause must be continue"
                seen["pause"] += 1
            if any(u.start <= t0 and t1 <= u.end for u in turns):
                assert label == 0, f"{d.id} chunk {k}: inside a user turn must be continue"
                seen["turn"] += 1
            if any(_overlaps(t0, t1, e.start, e.end) for e in events) and not in_turn and not in_window:
                assert label == 2, f"{d.id} chunk {k}: overlaps a backchannel/noise/side talk"
                seen["reject_event"] += 1
            if in_window:
                assert label == 1, f"{d.id} chunk {k}: the user's turn is over, the agent has not replied"
                seen["interrupt"] += 1
            user_quiet = not any(_overlaps(t0, t1, s.start, s.end) for s in turns + events)
            if any(a.start < t1 <= a.end for a in agent) and user_quiet and not in_window:
                assert label == 2, f"{d.id} chunk {k}: silence while the agent speaks"
                seen["agent_silence"] += 1
        # The audio matches the segments: the agent channel is silent outside agent segments and
        # sounds at their start; an unaugmented user channel is silent outside user segments.
        rate = d.sample_rate
        mask_a = np.zeros(len(audio), bool)
        for a in agent:
            mask_a[int(round(a.start * rate)) : int(round(a.end * rate))] = True
            head = audio[int(round(a.start * rate)) : int(round((a.start + 0.1) * rate)), 1]
            assert np.abs(head).max() > 0.01, f"{d.id}: agent segment at {a.start} starts in silence"
        assert np.abs(audio[~mask_a, 1]).max() < 1e-3
        if not d.augment:
            mask_u = np.zeros(len(audio), bool)
            for s in turns + events:
                mask_u[int(round(s.start * rate)) : int(round(s.end * rate))] = True
            for u in turns:
                for p0, p1 in u.pauses:
                    mask_u[int(round(p0 * rate)) : int(round(p1 * rate))] = False
            assert np.abs(audio[~mask_u, 0]).max() < 1e-3
        for u in turns:  # pauses are quiet compared with the words around them
            for p0, p1 in u.pauses:
                pause = audio[int((p0 + 0.05) * rate) : int((p1 - 0.02) * rate), 0]
                speech = audio[int(u.start * rate) : int(p0 * rate), 0]
                assert np.sqrt(np.mean(pause**2)) < 0.5 * np.sqrt(np.mean(speech**2))
    assert seen["interrupt"] > 0 and seen["agent_silence"] > 0 and seen["turn"] > 0


def test_same_seed_same_bytes_after_a_partial_run(tiny_data, tmp_path):
    """Resume (stopped after some jobs) + a different worker count -> byte-identical dataset."""
    from configs import load_config
    from training.data.synth import PlanMismatchError, synthesize

    out = tmp_path / "resumed"
    partial = synthesize(load_config("tiny"), out, seed=1, workers=1, max_jobs=6, progress=False)
    assert not partial.manifests and not (out / "manifests").exists()
    done = synthesize(load_config("tiny"), out, seed=1, workers=2, progress=False)
    assert done.skipped == 6 and done.manifests
    assert tree_digest(out) == tree_digest(tiny_data)
    with pytest.raises(PlanMismatchError):
        synthesize(load_config("tiny"), out, seed=2, workers=1, progress=False)


def test_killed_synth_resumes_to_the_same_result(tiny_data, tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [*CLI, "data", "synth", "--preset", "tiny", "--seed", "1", "--out", str(out),
           "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "items").glob("*.json"))) < 5:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: no chance to clean up
    proc.wait()
    n_done = len(list((out / "items").glob("*.json")))
    assert 5 <= n_done < 16, "the run should have been killed half way"
    assert not (out / "manifests").exists()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{n_done} already done" in res.stdout
    assert not list(out.rglob(".*.tmp"))
    assert tree_digest(out) == tree_digest(tiny_data)


def test_stats_json_has_the_stable_keys(tiny_data, tmp_path):
    import json

    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([*CLI, "data", "stats", str(tiny_data), "--json",
                          "--plots", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    stats = json.loads(res.stdout)
    assert stats["items"] == sum(stats["items_by_kind"].values()) > 0
    assert 0 < stats["hours"] < 1
    dialogues = load_manifest(tiny_data, "dialogues")
    assert sum(stats["label_counts"].values()) == sum(len(d.labels) for d in dialogues)
    assert set(stats["label_counts"]) == {"continue", "interrupt", "reject"}
    assert stats["emotion_counts"] == {e: 2 for e in ("angry", "happy", "neutral", "sad", "surprised")}
    assert all((tmp_path / name).stat().st_size > 1000 for name in
               ("gaps_overlaps_pauses.png", "labels_emotions.png", "example_dialogue.png"))
