"""The three unit-generator stages on the tiny preset: falling loss, resume == uninterrupted,
torchrun with two gloo processes. Data: synthetic unit dialogues (no audio), see
training/unit_synthetic.py; LLM vectors from the tiny random LLM through the real preparation code."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training.unit_data import reply_hidden
from training.unit_synthetic import synthetic_dialogues
from training.units_common import UnitCorpus

WORDS = ["hello", "there", "friend", "weather", "tomorrow", "is", "sunny", "and", "warm", "unbelievable",
         "Paris", "capital", "France", "twenty", "minutes", "train", "leaves", "soon", "dinner", "pasta"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_llm):
    lexicon = [tiny_llm.encode_text(" " + w) for w in WORDS]
    out = tmp_path_factory.mktemp("unit-cache")
    for split, n, seed in (("train", 16, 0), ("val", 4, 100)):
        dialogues = []
        for j, kind in enumerate(("turn", "duplex", "overlap")):
            for d in synthetic_dialogues(n, lexicon, kind=kind, seed=seed + j):
                for t in d.agent_turns:
                    t.hidden = reply_hidden(tiny_llm, "How are you?", t.token_ids.tolist())
                dialogues.append(d)
        UnitCorpus(dialogues, 500, [0], 0).save(out, split)
    return out


def _rows(run: Path) -> list[dict[str, float]]:
    with open(run / "loss.csv", newline="") as f:
        return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def _args(cache: Path, out: Path, extra: list[str] = ()) -> list[str]:
    return ["--preset", "tiny", "--data", str(cache), "--out", str(out), "--no-progress",
            "--set", f"units_train.out_dir={out.parent}", *extra]


def test_three_stages_tiny_loss_falls(cache, tmp_path):
    from training import units_stage1, units_stage2, units_stage3

    runs = tmp_path / "runs"
    assert units_stage1.main(_args(cache, runs / "stage1")) == 0
    assert units_stage2.main(_args(cache, runs / "stage2")) == 0
    assert units_stage3.main(_args(cache, runs / "stage3", ["--eval-dialogues", "3"])) == 0
    for stage in (1, 2, 3):
        run = runs / f"stage{stage}"
        rows = _rows(run)
        first, last = rows[0]["loss"], rows[-1]["loss"]
        bar = 0.8 if stage == 1 else 0.9  # later stages start from the previous one, lower already
        assert last < bar * first, f"stage {stage}: loss {first:.3f} -> {last:.3f}"
        assert "val_loss" in rows[-1] and (run / "loss.png").is_file() and (run / "final.safetensors").is_file()
    # Stages 2 and 3 start from the previous stage: their first loss is already below stage 1's.
    assert _rows(runs / "stage2")[0]["loss"] < _rows(runs / "stage1")[0]["loss"]
    import json

    metrics = json.loads((runs / "stage3" / "metrics.json").read_text())
    assert 0.0 <= metrics["user_speech_silence_acc"] <= 1.0 and metrics["user_chunks_scored"] > 0


def test_stage_with_phonemes_fits_an_inventory_and_continues_on_it(cache, tmp_path):
    """``units_train.phonemes``: stage 1 fits the IPA inventory of the training words, learns
    with the phoneme slots, stores the inventory; stage 2 from it keeps the same inventory."""
    from agent.unit_generator import load_generator_file
    from training import units_stage1, units_stage2

    on = ["--set", "units_train.phonemes=true"]
    runs = tmp_path / "runs"
    assert units_stage1.main(_args(cache, runs / "stage1", on)) == 0
    rows = _rows(runs / "stage1")
    assert rows[-1]["loss"] < 0.8 * rows[0]["loss"]
    arch = load_generator_file(runs / "stage1" / "final.safetensors").model.arch
    assert {"ˈ", "ɹ", "n"} <= set(arch.phoneme_symbols)  # "friend", "train", ...
    assert units_stage2.main(_args(cache, runs / "stage2", on + ["--steps", "4"])) == 0
    assert load_generator_file(runs / "stage2" / "final.safetensors").model.arch.phoneme_symbols == arch.phoneme_symbols


def test_resume_equals_uninterrupted(cache, tmp_path):
    from agent.unit_generator import load_generator_file
    from training import units_stage1

    straight, split = tmp_path / "a" / "stage1", tmp_path / "b" / "stage1"
    common = ["--set", "units_train.eval_every=10"]
    assert units_stage1.main(_args(cache, straight, common + ["--steps", "20"])) == 0
    assert units_stage1.main(_args(cache, split, common + ["--steps", "20", "--stop-at", "7"])) == 0
    assert (split / "checkpoints" / "latest").read_text().strip() == "step-000007"
    assert not (split / "final.safetensors").exists()
    assert units_stage1.main(_args(cache, split, common + ["--steps", "20"])) == 0  # resumes at 7
    a = load_generator_file(straight / "final.safetensors").model.state_dict()
    b = load_generator_file(split / "final.safetensors").model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    steps = [r["step"] for r in _rows(split)]
    assert steps == sorted(set(steps)) and steps[-1] == 20


def test_torchrun_two_processes(cache, tmp_path):
    out = tmp_path / "ddp" / "stage1"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training.units_stage1", *_args(cache, out, ["--steps", "12", "--set", "units_train.eval_every=6"])]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(out)
    assert rows[-1]["step"] == 12 and np.isfinite(rows[-1]["loss"]) and (out / "final.safetensors").is_file()
    assert '"world": 2' in (out / "config.json").read_text()
