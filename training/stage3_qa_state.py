"""Stage 3 (Freeze-Omni c): prompt embeddings + state head, multi-task on spoken QA and state labels.

Encoder and adapter are frozen (their speech embeddings are computed once and cached); the LLM is
frozen. Trainable: the prompt embeddings (they steer the LLM from transcribing to answering),
the "agent speaking" vector and the state head.

- QA: ``[system prefix][prompt][speech of the question][end of user turn]`` -> the LLM's own
  answer to the *typed* question (``training.speech_answers``): cross-entropy on its tokens plus
  a KL term towards the LLM's distributions given the typed question (self-distillation).
- State: listening contexts of labelled episodes (``episode_segments``): the head reads the
  LLM's hidden state at each chunk's last position; class-balanced cross-entropy.

    python -m training.stage3_qa_state --preset default --data DIR --init runs/stage2/final.safetensors --out runs/stage3
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from agent.llm import FrozenLLM
from agent.speech_input import ChatLayout, PrefixCache, SpeechInput, pack_sequences
from configs import AgentConfig
from training import checkpoint as ckpt
from training.common import (
    autocast,
    finish_stage,
    llm_fingerprint,
    load_models,
    param_groups,
    run_recipe,
    set_lr,
    set_threads,
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
from training.speech_data import Episode, ShardedSampler, SpeechCorpus, SpokenQuestion, episode_segments
from training.speech_eval import qa_agreement, segment_inputs, speech_embeddings, state_metrics

STAGE = 3
PROMPT_INIT_TEXT = "Please listen to my question and answer it."


@dataclass
class QAItem:
    emb: torch.Tensor
    """(N, D) cached speech embeddings of the spoken question."""
    question_ids: list[int]
    answer_ids: list[int]


@dataclass
class SegmentItem:
    emb: torch.Tensor
    speaking: np.ndarray
    labels: np.ndarray
    start: int
    end: int
    weights: np.ndarray | None = None
    """(C,) per-chunk loss multipliers (None = 1 everywhere)."""


class QAStateObjective(nn.Module):
    """QA cross-entropy + self-distillation KL + weighted state cross-entropy. What DDP wraps."""

    def __init__(self, speech: SpeechInput, llm: FrozenLLM, layout: ChatLayout, prefix: PrefixCache,
                 class_weights: torch.Tensor, state_weight: float, kl_weight: float = 1.0) -> None:
        super().__init__()
        self.speech = speech
        self.__dict__["llm"] = llm
        self.__dict__["prefix"] = prefix
        self.layout = layout
        self.register_buffer("class_weights", class_weights)
        self.state_weight = state_weight
        self.kl_weight = kl_weight

    def qa_loss(self, items: list[QAItem]) -> tuple[torch.Tensor, torch.Tensor]:
        llm: FrozenLLM = self.__dict__["llm"]
        prefix: PrefixCache = self.__dict__["prefix"]
        suffix = llm.embed(torch.tensor(self.layout.suffix))
        student_rows, teacher_rows, labels_s, labels_t = [], [], [], []
        for it in items:
            ans = torch.tensor(it.answer_ids + self.layout.end)
            ans_emb = llm.embed(ans)
            student_rows.append([self.speech.prompt, it.emb, suffix, ans_emb])
            labels_s.append([torch.full((self.speech.prompt.shape[0] + it.emb.shape[0] + suffix.shape[0],), -100), ans])
            teacher_rows.append([llm.embed(torch.tensor(it.question_ids)), suffix, ans_emb])
            labels_t.append([torch.full((len(it.question_ids) + suffix.shape[0],), -100), ans])
        xs, ls, _ = pack_sequences(student_rows, labels_s)
        nxt = F.pad(ls[:, 1:], (0, 1), value=-100)
        _, logits = prefix.forward(xs, nxt != -100)
        ce = F.cross_entropy(logits.float(), nxt[nxt != -100])
        if self.kl_weight <= 0:
            return ce, ce.new_zeros(())
        with torch.no_grad():
            xt, lt, _ = pack_sequences(teacher_rows, labels_t)
            nxt_t = F.pad(lt[:, 1:], (0, 1), value=-100)
            _, teacher = prefix.forward(xt, nxt_t != -100)
        kl = F.kl_div(logits.float().log_softmax(-1), teacher.float().log_softmax(-1), log_target=True,
                      reduction="batchmean")
        return ce, kl

    def state_loss(self, items: list[SegmentItem]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        prefix: PrefixCache = self.__dict__["prefix"]
        inputs = [segment_inputs(self.speech, it.emb, it.speaking, it.start, it.end) for it in items]
        rows = [[x] for x, _ in inputs]
        packed, _, _ = pack_sequences(rows, [[torch.zeros(x.shape[0], dtype=torch.long)] for x, _ in inputs])
        hidden, _ = prefix.forward(packed)
        logits = torch.cat([self.speech.state_head(hidden[i, last]) for i, (_, last) in enumerate(inputs)])
        target = torch.cat([torch.as_tensor(it.labels[it.start : it.end]) for it in items])
        # Class-weighted mean as F.cross_entropy(weight=...) computes it, times each chunk's multiplier.
        w = self.class_weights[target] * torch.cat([
            torch.ones(it.end - it.start) if it.weights is None else torch.as_tensor(it.weights[it.start : it.end])
            for it in items])
        loss = (F.cross_entropy(logits, target, reduction="none") * w).sum() / w.sum()
        return loss, logits.detach(), target

    def forward(self, qa: list[QAItem], segs: list[SegmentItem]) -> tuple[torch.Tensor, dict[str, float]]:
        ce, kl = self.qa_loss(qa)
        st, logits, target = self.state_loss(segs)
        total = ce + self.kl_weight * kl + self.state_weight * st
        acc = float((logits.argmax(-1) == target).float().mean())
        return total, {"qa_ce": float(ce.detach()), "qa_kl": float(kl.detach()), "state_ce": float(st.detach()),
                       "state_acc": acc}


@dataclass
class Stage3Run:
    cfg: AgentConfig
    run_dir: Path
    info: DistInfo
    llm: FrozenLLM
    speech: SpeechInput
    layout: ChatLayout
    model: nn.Module
    optimizer: torch.optim.Optimizer
    qa_items: list[QAItem]
    seg_items: list[SegmentItem]
    qa_sampler: ShardedSampler
    seg_sampler: ShardedSampler
    test_questions: list[SpokenQuestion]
    test_episodes: list[Episode]
    total_steps: int
    curve: LossCurve
    eval_curve: LossCurve
    llm_sum: float
    step: int = 0
    progress: bool = True
    meta: dict = field(default_factory=dict)


def _class_weights(items: list[SegmentItem]) -> torch.Tensor:
    counts = np.bincount(np.concatenate([it.labels[it.start : it.end] for it in items]), minlength=3).astype(float)
    w = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def _chunk_weights(ep: Episode, pause_weight: float) -> np.ndarray | None:
    """``pause_weight`` on the episode's mid-turn pause chunks (tag "pause"), 1 elsewhere."""
    if pause_weight == 1.0 or not ep.tags:
        return None
    if len(ep.tags) != len(ep.labels):
        raise ValueError(f"episode {ep.id}: {len(ep.tags)} tags for {len(ep.labels)} chunks")
    return np.where(np.asarray(ep.tags) == "pause", pause_weight, 1.0).astype(np.float32)


def setup(cfg: AgentConfig, data_dir: str | Path, run_dir: str | Path, init: str | None = None,
          steps: int | None = None, eval_limit: int | None = None, progress: bool = True) -> Stage3Run:
    info = init_distributed()
    stage = cfg.speech.stage3
    set_threads(stage)
    # Stage 3 trains the state head; an init whose head has another window width gives none.
    llm, speech = load_models(cfg, init, stage.llm_dtype, fresh_if_reshaped=("state_head.",))
    layout = ChatLayout.for_llm(llm, cfg.speech.transcribe_instruction)
    run_dir = Path(run_dir)
    # The typed answers are the targets (the dataset's, or computed once per corpus and LLM by rank 0).
    corpus = SpeechCorpus(data_dir)
    if info.is_main:
        corpus.answered_questions("train", llm, progress=progress)
    barrier(info)
    questions = corpus.answered_questions("train", llm)
    episodes = corpus.episodes("train")
    # Encoder and adapter are frozen here: their outputs are computed once.
    q_emb = speech_embeddings(speech, [q.audio for q in questions])
    qa_items = [QAItem(e, llm.encode_text(q.question), llm.encode_text(q.answer.strip()))
                for q, e in zip(questions, q_emb, strict=True)]
    e_emb = speech_embeddings(speech, [e.audio for e in episodes])
    seg_items = [SegmentItem(emb, ep.speaking, ep.labels, s, e, _chunk_weights(ep, stage.pause_weight))
                 for ep, emb in zip(episodes, e_emb, strict=True) for s, e in episode_segments(ep.labels)]
    test_questions = corpus.answered_questions("test", llm, limit=eval_limit)
    test_episodes = corpus.episodes("test", limit=eval_limit)
    params = speech.set_stage(STAGE)
    speech.train()
    optimizer = torch.optim.AdamW(param_groups(speech, params, stage), lr=stage.lr, weight_decay=0.0)
    model = wrap_ddp(QAStateObjective(speech, llm, layout, PrefixCache(llm, layout.prefix), _class_weights(seg_items),
                                      cfg.speech.state_loss_weight), info)
    run = Stage3Run(cfg=cfg, run_dir=run_dir, info=info, llm=llm, speech=speech, layout=layout, model=model,
                    optimizer=optimizer, qa_items=qa_items, seg_items=seg_items,
                    qa_sampler=ShardedSampler(len(qa_items), info.rank, info.world, cfg.seed),
                    seg_sampler=ShardedSampler(len(seg_items), info.rank, info.world, cfg.seed + 1),
                    test_questions=test_questions, test_episodes=test_episodes, total_steps=steps or stage.steps,
                    curve=LossCurve(run_dir, "loss"), eval_curve=LossCurve(run_dir, "eval"),
                    llm_sum=llm_fingerprint(llm), progress=progress and info.is_main)
    run.step, extra = ckpt.resume(run_dir, speech, optimizer)
    if extra:
        run.qa_sampler.load_state_dict(extra["qa_sampler"])
        run.seg_sampler.load_state_dict(extra["seg_sampler"])
    else:
        _init_prompt(speech, llm)
    if info.is_main:
        run.curve.truncate(run.step)
        run.eval_curve.truncate(run.step)
    return run


@torch.no_grad()
def _init_prompt(speech: SpeechInput, llm: FrozenLLM) -> None:
    """Start the prompt from the embeddings of a plain request (a better start than noise)."""
    ids = llm.encode_text(PROMPT_INIT_TEXT)
    p = speech.prompt.shape[0]
    ids = (ids * (p // max(1, len(ids)) + 1))[:p]
    speech.prompt.copy_(llm.embed(torch.tensor(ids)).to(speech.prompt.dtype))


def evaluate(run: Stage3Run) -> dict:
    out = state_metrics(run.speech, run.llm, run.layout, run.test_episodes)
    out.update(qa_agreement(run.speech, run.llm, run.layout, run.test_questions))
    return out


def save_checkpoint(run: Stage3Run) -> None:
    if run.info.is_main:
        ckpt.save_checkpoint(run.run_dir, run.step, run.speech, run.optimizer,
                             extra={"qa_sampler": run.qa_sampler.state_dict(), "seg_sampler": run.seg_sampler.state_dict()},
                             meta={"stage": STAGE, "preset": run.cfg.preset})
    barrier(run.info)


def train(run: Stage3Run, stop_after: int | None = None) -> dict:
    """Train to ``run.total_steps`` (or stop after ``stop_after`` steps, as a crash would: checkpoints
    stay, the final save and evaluation do not happen)."""
    stage = run.cfg.speech.stage3
    bar = tqdm(total=run.total_steps, initial=run.step, desc="stage3 qa+state", disable=not run.progress)
    running: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    seg_batch = max(1, stage.batch_size // 2)
    while run.step < run.total_steps:
        lr = ckpt.lr_at(run.step, stage.lr, stage.warmup, run.total_steps)
        set_lr(run.optimizer, lr)
        qa = [run.qa_items[i] for i in run.qa_sampler.take(stage.batch_size)]
        segs = [run.seg_items[i] for i in run.seg_sampler.take(seg_batch)]
        with autocast(stage):
            loss, parts = run.model(qa, segs)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for p in run.speech.parameters() if p.requires_grad], stage.grad_clip)
        run.optimizer.step()
        run.step += 1
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            running.setdefault(k, []).append(v)
        bar.update(1)
        bar.set_postfix(loss=f"{running['loss'][-1]:.3f}", acc=f"{parts['state_acc']:.2f}")
        if run.step % stage.log_every == 0 or run.step == run.total_steps:
            avg = {k: mean_across(sum(v) / len(v), run.info) for k, v in running.items()}
            if run.info.is_main:
                n = len(running["loss"])
                run.curve.log(run.step, **avg, lr=lr, sec_per_step=(time.perf_counter() - t0) / n)
                run.curve.plot("stage 3: QA CE + KL, state CE")
            running, t0 = {}, time.perf_counter()
        if stage.eval_every and run.step % stage.eval_every == 0 and run.info.is_main:
            ev = evaluate(run)
            run.eval_curve.log(run.step, state_macro_f1=ev["state_macro_f1"], qa_agreement=ev["qa_agreement"])
            run.eval_curve.plot("stage 3: held-out state macro-F1 and QA agreement")
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
    return run_recipe(args, setup, train, lambda r: (
        f"stage 3 done: step {r['steps']}, state macro-F1 {r.get('state_macro_f1', float('nan')):.3f}, "
        f"QA agreement {r.get('qa_agreement', float('nan')):.3f}"))


if __name__ == "__main__":
    sys.exit(main())
