"""The three speech-input recipes on the tiny preset: loss falls, the LLM is untouched, resume, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from configs import load_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A tiny SYNTHETIC corpus (espeak-ng voices, chatterbot text)."""
    from training.synth_speech import write_corpus

    out = tmp_path_factory.mktemp("speech-corpus")
    write_corpus(out, n_asr=32, n_episodes=6, seed=1, test_frac=0.25, max_questions=10)
    return out


# The tiny preset with a sharper random LLM (see the fixture card): its outputs depend on its input.
SHARP_LLM = str(ROOT / "tests" / "fixtures" / "tiny-llama-sharp.yaml")


def _cfg(stage: str, steps: int = 30, **extra: object):
    sets = {f"speech.{stage}.steps": steps, f"speech.{stage}.num_threads": 1, **extra}
    return load_config("tiny", [f"{k}={v}" for k, v in sets.items()])


def _falls(rows: list[dict], key: str = "loss") -> tuple[float, float]:
    vals = [r[key] for r in rows if key in r]
    k = max(1, len(vals) // 3)
    return sum(vals[:k]) / k, sum(vals[-k:]) / k


def test_stage1_loss_falls_llm_unchanged(corpus, tmp_path):
    from training import stage1_asr

    run = stage1_asr.setup(_cfg("stage1"), corpus, tmp_path / "s1", eval_limit=4, progress=False)
    result = stage1_asr.train(run)
    first, last = _falls(run.curve.rows)
    assert last < first * 0.85, (first, last)
    assert result["llm_unchanged"] and result["ranks_in_sync"]
    assert (tmp_path / "s1" / "loss.png").stat().st_size > 1000
    assert (tmp_path / "s1" / "loss.csv").read_text().startswith("step,loss")
    # Adapter-only save: nothing of the LLM in the file.
    keys = load_file(str(tmp_path / "s1" / "final.safetensors")).keys()
    assert any(k.startswith("encoder.") for k in keys) and not any("embed_tokens" in k for k in keys)


def test_stage1_resume_after_crash_matches_straight_run(corpus, tmp_path):
    from training import stage1_asr

    cfg = _cfg("stage1", steps=12, **{"speech.stage1.save_every": 4, "speech.stage1.log_every": 2})
    straight = stage1_asr.setup(cfg, corpus, tmp_path / "a", eval_limit=2, progress=False)
    stage1_asr.train(straight)
    crashed = stage1_asr.setup(cfg, corpus, tmp_path / "b", eval_limit=2, progress=False)
    stage1_asr.train(crashed, stop_after=8)
    resumed = stage1_asr.setup(cfg, corpus, tmp_path / "b", eval_limit=2, progress=False)
    assert resumed.step == 8
    stage1_asr.train(resumed)
    a = load_file(str(tmp_path / "a" / "final.safetensors"))
    b = load_file(str(tmp_path / "b" / "final.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    rows_a = [r["loss"] for r in straight.curve.rows]
    rows_b = [r["loss"] for r in resumed.curve.rows]
    assert len(rows_a) == len(rows_b) == 6
    assert rows_a == pytest.approx(rows_b, rel=1e-5)


def test_stage2_loss_falls_llm_unchanged(corpus, tmp_path):
    from training import stage2_align
    from training.speech_data import batch_audio

    cfg = _cfg("stage2", **{"llm.card": SHARP_LLM, "speech.stage2.lr": 0.01})
    run = stage2_align.setup(cfg, corpus, tmp_path / "s2", eval_limit=2, progress=False)
    audio, lengths = batch_audio([u.audio for u in run.train_set[:8]])

    def fixed_loss() -> float:  # the objective on a fixed batch: no sampling noise
        with torch.no_grad():
            return float(run.model(audio, lengths, run.targets[:8])[0])

    before = fixed_loss()
    result = stage2_align.train(run)
    after = fixed_loss()
    assert after < before - 0.15, (before, after)
    assert result["llm_unchanged"] and result["ranks_in_sync"] and 0.0 <= result["cer"]
    # Only encoder and adapter learn in stage 2.
    trained = {n.split(".")[0] for n, p in run.speech.named_parameters() if p.requires_grad}
    assert trained == {"encoder", "adapter"}


def test_stage3_loss_falls_llm_unchanged_encoder_frozen(corpus, tmp_path):
    from training import stage3_qa_state

    cfg = _cfg("stage3", **{"llm.card": SHARP_LLM})
    run = stage3_qa_state.setup(cfg, corpus, tmp_path / "s3", eval_limit=3, progress=False)
    enc_before = {k: v.clone() for k, v in run.speech.encoder.state_dict().items()}
    qa, segs = run.qa_items[:6], run.seg_items[:4]

    def fixed_losses() -> dict:
        with torch.no_grad():
            return run.model(qa, segs)[1]

    before = fixed_losses()
    result = stage3_qa_state.train(run)
    after = fixed_losses()
    assert after["qa_ce"] < before["qa_ce"] - 0.1, (before, after)
    assert after["state_ce"] < before["state_ce"] * 0.8, (before, after)
    assert result["llm_unchanged"]
    for k, v in run.speech.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), k
    assert {"state_macro_f1", "qa_agreement", "pause_continue_recall"} <= set(result)


def test_stage3_pause_weight_scales_only_pause_chunks(corpus, tmp_path):
    import dataclasses

    import torch.nn.functional as F

    from training import stage3_qa_state
    from training.speech_data import SpeechCorpus

    for ep in SpeechCorpus(corpus).episodes("train"):
        w = stage3_qa_state._chunk_weights(ep, 4.0)
        is_pause = [t == "pause" for t in ep.tags]
        assert w is not None and w.tolist() == [4.0 if p else 1.0 for p in is_pause]
        assert stage3_qa_state._chunk_weights(ep, 1.0) is None

    cfg = _cfg("stage3", **{"llm.card": SHARP_LLM, "speech.stage3.pause_weight": 4.0})
    run = stage3_qa_state.setup(cfg, corpus, tmp_path / "s3", eval_limit=2, progress=False)
    segs = [it for it in run.seg_items if (it.weights[it.start : it.end] > 1).any()][:3]
    assert segs, "the tiny corpus should hold mid-turn pauses"
    obj = run.model.module if hasattr(run.model, "module") else run.model
    with torch.no_grad():
        plain, logits, target = obj.state_loss([dataclasses.replace(it, weights=None) for it in segs])
        weighted, _, _ = obj.state_loss(segs)
    # Without chunk weights: exactly the class-weighted cross-entropy.
    assert torch.allclose(plain, F.cross_entropy(logits, target, weight=obj.class_weights), atol=1e-6)
    per = F.cross_entropy(logits, target, reduction="none")
    w = obj.class_weights[target] * torch.cat([torch.as_tensor(it.weights[it.start : it.end]) for it in segs])
    assert torch.allclose(weighted, (per * w).sum() / w.sum(), atol=1e-6)
    assert not torch.allclose(weighted, plain)


def test_stage1_ddp_two_processes(corpus, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "training.stage1_asr", "--preset", "tiny", "--data", str(corpus), "--out", str(out),
           "--steps", "8", "--eval-limit", "2", "--no-progress",
           "--set", "speech.stage1.num_threads=1", "--set", "speech.stage1.log_every=2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 8 and result["ranks_in_sync"] and result["llm_unchanged"]
    assert (out / "checkpoints" / "latest").is_file()


def test_cli_train_eval_bench(corpus, tmp_path, capsys):
    from duplex.cli import main

    run_dir = tmp_path / "cli-s1"
    assert main(["train", "stage1", "--preset", "tiny", "--data", str(corpus), "--out", str(run_dir), "--steps", "3",
                 "--eval-limit", "2", "--no-progress"]) == 0
    weights = run_dir / "final.safetensors"
    assert weights.is_file()
    capsys.readouterr()
    assert main(["eval", "encoder", "--preset", "tiny", "--data", str(corpus), "--weights", str(weights),
                 "--limit", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"cer", "state_macro_f1", "qa_agreement"} <= set(result)
    assert result["cer_n"] == 2 and 0.0 <= result["cer"] and result["state_chunks"] > 0
    # The tiny random LLM's typed answers are blank lines, which the judge skips.
    assert result["qa_n"] == 0 or 0.0 <= result["qa_agreement"] <= 1.0
    assert main(["bench", "encoder", "--preset", "tiny", "--json", "--repeats", "1"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["chunk_ms_p50"] > 0 and bench["rtf"] == pytest.approx(bench["chunk_ms_p50"] / 160.0)
    assert main(["eval", "encoder", "--preset", "tiny", "--data", str(tmp_path / "nope")]) == 2
