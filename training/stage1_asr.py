"""Stage 1 (Freeze-Omni a): the streaming encoder learns ASR with CTC on characters.

Trainable: the encoder and the CTC head. The encoder runs offline over whole utterances under
its block-causal chunk mask, so what it learns is exactly what the streamed encoder computes.
The frozen LLM is loaded only to size the speech input and is checked untouched at the end.

    python -m training.stage1_asr --preset default --data DIR --out runs/stage1
    torchrun --nproc_per_node 2 -m training.stage1_asr --preset tiny --data DIR --out runs/s1
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from agent.llm import FrozenLLM
from agent.speech_input import SpeechInput, ctc_greedy, text_to_ctc
from agent.text_metrics import cer
from configs import AgentConfig
from training import checkpoint as ckpt
from training.common import (
    LengthBatcher,
    augment_audio,
    autocast,
    finish_stage,
    llm_fingerprint,
    load_models,
    param_groups,
    run_recipe,
    set_lr,
    set_threads,
    spec_augment,
)
from training.curves import LossCurve
from training.distributed import (
    DistInfo,
    barrier,
    init_distributed,
    mean_across,
    wrap_ddp,
)
from training.recipe_args import add_recipe_args
from training.speech_data import SpeechCorpus, Utterance, batch_audio, iter_batches

STAGE = 1


class CTCObjective(nn.Module):
    """audio -> encoder (chunk mask) -> CTC over characters. What DDP wraps."""

    def __init__(self, speech: SpeechInput) -> None:
        super().__init__()
        self.speech = speech

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor,
                gen: torch.Generator | None = None) -> torch.Tensor:
        enc = self.speech.encoder
        audio = F.pad(audio, (0, (-audio.shape[1]) % enc.chunk_samples))
        mel = enc.mel(audio)
        if gen is not None:
            mel = spec_augment(mel, gen)
        frames = enc.forward_mel(mel)
        frame_lengths = torch.div(lengths + 319, 320, rounding_mode="floor").clamp(max=frames.shape[1])
        logp = self.speech.ctc(frames).float().log_softmax(-1)
        return F.ctc_loss(logp.transpose(0, 1), targets, frame_lengths, target_lengths, blank=0, zero_infinity=True)


@dataclass
class Stage1Run:
    cfg: AgentConfig
    run_dir: Path
    info: DistInfo
    llm: FrozenLLM
    speech: SpeechInput
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batcher: LengthBatcher
    train_set: list[Utterance]
    test_set: list[Utterance]
    total_steps: int
    curve: LossCurve
    eval_curve: LossCurve
    llm_sum: float
    step: int = 0
    gen: torch.Generator = field(default_factory=torch.Generator)
    progress: bool = True


def setup(cfg: AgentConfig, data_dir: str | Path, run_dir: str | Path, init: str | None = None,
          steps: int | None = None, eval_limit: int | None = None, progress: bool = True) -> Stage1Run:
    info = init_distributed()
    stage = cfg.speech.stage1
    set_threads(stage)
    llm, speech = load_models(cfg, init, stage.llm_dtype)
    params = speech.set_stage(STAGE)
    speech.train()
    corpus = SpeechCorpus(data_dir)
    train_set = [u for u in corpus.utterances("train", stage.max_audio_s) if text_to_ctc(u.text)]
    test_set = corpus.utterances("test", stage.max_audio_s, limit=eval_limit)
    optimizer = torch.optim.AdamW(param_groups(speech, params, stage), lr=stage.lr, weight_decay=stage.weight_decay)
    batcher = LengthBatcher([len(u.audio) for u in train_set], stage.batch_size, info.rank, info.world, cfg.seed)
    run_dir = Path(run_dir)
    run = Stage1Run(cfg=cfg, run_dir=run_dir, info=info, llm=llm, speech=speech, model=wrap_ddp(CTCObjective(speech), info),
                    optimizer=optimizer, batcher=batcher, train_set=train_set, test_set=test_set,
                    total_steps=steps or stage.steps, curve=LossCurve(run_dir, "loss"),
                    eval_curve=LossCurve(run_dir, "eval"), llm_sum=llm_fingerprint(llm),
                    progress=progress and info.is_main)
    run.gen.manual_seed(cfg.seed * 1000 + info.rank)
    run.step, extra = ckpt.resume(run_dir, speech, optimizer)
    if extra:
        batcher.load_state_dict(extra["batcher"])
        run.gen.set_state(extra["gen"])
    if info.is_main:
        run.curve.truncate(run.step)
        run.eval_curve.truncate(run.step)
    return run


def _batch(run: Stage1Run, idx: list[int]) -> tuple[torch.Tensor, ...]:
    utts = [run.train_set[i] for i in idx]
    audio, lengths = batch_audio([u.audio for u in utts])
    audio = augment_audio(audio, lengths, run.gen)
    tgt = [torch.tensor(text_to_ctc(u.text)) for u in utts]
    return audio, lengths, torch.cat(tgt), torch.tensor([len(t) for t in tgt])


@torch.no_grad()
def evaluate(run: Stage1Run, batch_size: int = 16) -> dict:
    """Greedy-CTC character error rate on the held-out split (unseen voices and text)."""
    speech = run.speech
    was_training = speech.training
    speech.eval()
    refs, hyps = [], []
    for utts in iter_batches(run.test_set, batch_size):
        audio, lengths = batch_audio([u.audio for u in utts])
        frames, n = speech.encode(audio, lengths)
        logits = speech.ctc(frames)
        for i, u in enumerate(utts):
            refs.append(u.text)
            hyps.append(ctc_greedy(logits[i], int(n[i])))
    speech.train(was_training)
    return {"ctc_cer": cer(refs, hyps) if refs else float("nan"), "n": len(refs),
            "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps, strict=True))[:5]]}


def save_checkpoint(run: Stage1Run) -> None:
    if run.info.is_main:
        ckpt.save_checkpoint(run.run_dir, run.step, run.speech, run.optimizer,
                             extra={"batcher": run.batcher.state_dict(), "gen": run.gen.get_state()},
                             meta={"stage": STAGE, "preset": run.cfg.preset})
    barrier(run.info)


def train(run: Stage1Run, stop_after: int | None = None) -> dict:
    """Train to ``run.total_steps`` (or stop after ``stop_after`` steps, as a crash would: checkpoints
    stay, the final save and evaluation do not happen)."""
    stage = run.cfg.speech.stage1
    bar = tqdm(total=run.total_steps, initial=run.step, desc="stage1 ctc", disable=not run.progress)
    running, t0 = [], time.perf_counter()
    while run.step < run.total_steps:
        lr = ckpt.lr_at(run.step, stage.lr, stage.warmup, run.total_steps)
        set_lr(run.optimizer, lr)
        with autocast(stage):
            loss = run.model(*_batch(run, run.batcher.next()), gen=run.gen)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for p in run.speech.parameters() if p.requires_grad], stage.grad_clip)
        run.optimizer.step()
        run.step += 1
        running.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{running[-1]:.3f}")
        if run.step % stage.log_every == 0 or run.step == run.total_steps:
            avg = mean_across(sum(running) / len(running), run.info)
            if run.info.is_main:
                run.curve.log(run.step, loss=avg, lr=lr, sec_per_step=(time.perf_counter() - t0) / len(running))
                run.curve.plot("stage 1: CTC loss")
            running, t0 = [], time.perf_counter()
        if stage.eval_every and run.step % stage.eval_every == 0 and run.info.is_main:
            run.eval_curve.log(run.step, ctc_cer=evaluate(run)["ctc_cer"])
            run.eval_curve.plot("stage 1: held-out CTC CER")
        if run.step % stage.save_every == 0 or run.step == run.total_steps:
            save_checkpoint(run)
        if stop_after is not None and run.step >= stop_after:
            bar.close()
            return {"stage": STAGE, "steps": run.step, "stopped": True}
    bar.close()
    return finish_stage(run, STAGE, evaluate)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_args(p)
    return run_from_args(p.parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    """Thin entry point shared by ``python -m`` / torchrun and ``duplex-agent train``."""
    return run_recipe(args, setup, train, lambda r: f"stage 1 done: step {r['steps']}, held-out CTC CER {r.get('ctc_cer', float('nan')):.3f}")


if __name__ == "__main__":
    sys.exit(main())
