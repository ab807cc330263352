"""Stage 2 (Freeze-Omni b): align encoder + adapter to the frozen LLM through ASR.

The LLM reads ``[system prefix][instruction][speech embeddings][end of user turn]`` and must
produce the transcript (then its end-of-turn token); the loss is on those text tokens only.
Trainable: encoder and adapter. The LLM is frozen; gradients flow through it to the speech
embeddings. The constant system prefix is run once (``PrefixCache``) rather than per example.

    python -m training.stage2_align --preset default --data DIR --init runs/stage1/final.safetensors --out runs/stage2
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

from agent.adapter import token_ctc_logits
from agent.llm import FrozenLLM
from agent.speech_input import ChatLayout, PrefixCache, SpeechInput, pack_sequences, text_to_ctc
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
from training.speech_data import SpeechCorpus, Utterance, batch_audio
from training.speech_eval import transcribe_cer

STAGE = 2


class AlignObjective(nn.Module):
    """Speech -> frozen LLM -> cross-entropy on the transcript tokens, plus token CTC. What DDP wraps."""

    def __init__(self, speech: SpeechInput, llm: FrozenLLM, layout: ChatLayout, prefix: PrefixCache,
                 token_ctc_weight: float, vocab: list[int], char_ctc_weight: float = 0.0, llm_batch: int = 0) -> None:
        super().__init__()
        self.char_ctc_weight = char_ctc_weight
        self.llm_batch = llm_batch
        # Token CTC runs over the tokens the training transcripts use (a few thousand, not 49k):
        # the same pull towards the right embedding at a fraction of the cost.
        self.register_buffer("vocab", torch.tensor(sorted(set(vocab)), dtype=torch.long), persistent=False)
        self._index = {int(t): i + 1 for i, t in enumerate(self.vocab.tolist())}  # 0 is the blank
        self.speech = speech
        # Not registered as submodules: the LLM is frozen and never part of what DDP syncs or we save.
        self.__dict__["llm"] = llm
        self.__dict__["prefix"] = prefix
        self.layout = layout
        self.token_ctc_weight = token_ctc_weight

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]], use_llm: bool = True,
                texts: list[str] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        llm: FrozenLLM = self.__dict__["llm"]
        frames, n_frames = self.speech.encode(audio, lengths)
        embeds = self.speech.adapter(frames)
        chunks = torch.div(lengths + self.speech.chunk_samples - 1, self.speech.chunk_samples, rounding_mode="floor")
        n = chunks.clamp(min=1) * self.speech.positions_per_chunk
        parts: dict[str, float] = {}
        total = embeds.new_zeros(())
        if self.char_ctc_weight > 0 and texts is not None:
            chars = [torch.tensor(text_to_ctc(t)) for t in texts]
            logp_c = self.speech.ctc(frames).float().log_softmax(-1)
            char_ctc = F.ctc_loss(logp_c.transpose(0, 1), torch.cat(chars), n_frames, torch.tensor([len(c) for c in chars]),
                                  blank=0, zero_infinity=True)
            total = total + self.char_ctc_weight * char_ctc
            parts["char_ctc"] = float(char_ctc.detach())
        if self.token_ctc_weight > 0 or not use_llm:
            table = llm.model.get_input_embeddings().weight[self.vocab]
            logp = token_ctc_logits(self.speech.adapter, embeds, table).log_softmax(-1)
            flat = torch.tensor([self._index[t] for tgt in targets for t in tgt], dtype=torch.long)
            ctc = F.ctc_loss(logp.transpose(0, 1), flat, n, torch.tensor([len(t) for t in targets]), blank=0,
                             zero_infinity=True)
            total = total + (self.token_ctc_weight if use_llm else 1.0) * ctc
            parts["token_ctc"] = float(ctc.detach())
        if use_llm:
            instr = llm.embed(torch.tensor(self.layout.instruction, dtype=torch.long))
            suffix = llm.embed(torch.tensor(self.layout.suffix, dtype=torch.long))
            rows, labels = [], []
            for i, tgt in enumerate(targets[: self.llm_batch or None]):
                ids = torch.tensor(tgt + self.layout.end, dtype=torch.long)
                rows.append([instr, embeds[i, : int(n[i])].to(instr.dtype), suffix, llm.embed(ids)])
                labels.append([torch.full((len(instr) + int(n[i]) + len(suffix),), -100), ids])
            x, lab, _ = pack_sequences(rows, labels)
            nxt = F.pad(lab[:, 1:], (0, 1), value=-100)
            mask = nxt != -100
            _, logits = self.__dict__["prefix"].forward(x, mask)
            ce = F.cross_entropy(logits.float(), nxt[mask])
            total = total + ce
            parts["transcript_ce"] = float(ce.detach())
        return total, parts


@dataclass
class Stage2Run:
    cfg: AgentConfig
    run_dir: Path
    info: DistInfo
    llm: FrozenLLM
    speech: SpeechInput
    layout: ChatLayout
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batcher: LengthBatcher
    train_set: list[Utterance]
    targets: list[list[int]]
    test_set: list[Utterance]
    total_steps: int
    curve: LossCurve
    eval_curve: LossCurve
    llm_sum: float
    step: int = 0
    gen: torch.Generator = field(default_factory=torch.Generator)
    progress: bool = True


def setup(cfg: AgentConfig, data_dir: str | Path, run_dir: str | Path, init: str | None = None,
          steps: int | None = None, eval_limit: int | None = None, progress: bool = True) -> Stage2Run:
    info = init_distributed()
    stage = cfg.speech.stage2
    set_threads(stage)
    llm, speech = load_models(cfg, init, stage.llm_dtype)
    params = speech.set_stage(STAGE, extra=["ctc."] if stage.char_ctc_weight > 0 else [])
    speech.train()
    layout = ChatLayout.for_llm(llm, cfg.speech.transcribe_instruction)
    corpus = SpeechCorpus(data_dir)
    train_set = corpus.utterances("train", stage.max_audio_s)
    targets = [llm.encode_text(u.text.strip()) for u in train_set]
    test_set = corpus.utterances("test", stage.max_audio_s, limit=eval_limit)
    optimizer = torch.optim.AdamW(param_groups(speech, params, stage), lr=stage.lr, weight_decay=stage.weight_decay)
    batcher = LengthBatcher([len(u.audio) for u in train_set], stage.batch_size, info.rank, info.world, cfg.seed)
    run_dir = Path(run_dir)
    vocab = [t for tgt in targets for t in tgt]
    model = wrap_ddp(AlignObjective(speech, llm, layout, PrefixCache(llm, layout.prefix), stage.token_ctc_weight,
                                    vocab, stage.char_ctc_weight, stage.llm_batch), info)
    run = Stage2Run(cfg=cfg, run_dir=run_dir, info=info, llm=llm, speech=speech, layout=layout, model=model,
                    optimizer=optimizer, batcher=batcher, train_set=train_set, targets=targets, test_set=test_set,
                    total_steps=steps or stage.steps, curve=LossCurve(run_dir, "loss"),
                    eval_curve=LossCurve(run_dir, "eval"), llm_sum=llm_fingerprint(llm),
                    progress=progress and info.is_main)
    run.gen.manual_seed(cfg.seed * 1000 + info.rank + 17)
    run.step, extra = ckpt.resume(run_dir, speech, optimizer)
    if extra:
        batcher.load_state_dict(extra["batcher"])
        run.gen.set_state(extra["gen"])
    if info.is_main:
        run.curve.truncate(run.step)
        run.eval_curve.truncate(run.step)
    return run


def evaluate(run: Stage2Run) -> dict:
    """Held-out transcript CER, speech -> frozen LLM, greedy decoding."""
    return transcribe_cer(run.speech, run.llm, run.layout, run.test_set)


def save_checkpoint(run: Stage2Run) -> None:
    if run.info.is_main:
        ckpt.save_checkpoint(run.run_dir, run.step, run.speech, run.optimizer,
                             extra={"batcher": run.batcher.state_dict(), "gen": run.gen.get_state()},
                             meta={"stage": STAGE, "preset": run.cfg.preset})
    barrier(run.info)


def train(run: Stage2Run, stop_after: int | None = None) -> dict:
    """Train to ``run.total_steps`` (or stop after ``stop_after`` steps, as a crash would: checkpoints
    stay, the final save and evaluation do not happen)."""
    stage = run.cfg.speech.stage2
    bar = tqdm(total=run.total_steps, initial=run.step, desc="stage2 align", disable=not run.progress)
    running: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    while run.step < run.total_steps:
        lr = ckpt.lr_at(run.step, stage.lr, stage.warmup, run.total_steps)
        set_lr(run.optimizer, lr)
        idx = run.batcher.next()
        audio, lengths = batch_audio([run.train_set[i].audio for i in idx])
        audio = augment_audio(audio, lengths, run.gen, noise_prob=0.3)
        with autocast(stage):
            loss, parts = run.model(audio, lengths, [run.targets[i] for i in idx],
                                    use_llm=run.step >= stage.token_ctc_only_steps,
                                    texts=[run.train_set[i].text for i in idx])
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for p in run.speech.parameters() if p.requires_grad], stage.grad_clip)
        run.optimizer.step()
        run.step += 1
        for k, v in parts.items():
            running.setdefault(k, []).append(v)
        bar.update(1)
        bar.set_postfix({k: f"{v[-1]:.3f}" for k, v in running.items()})
        if run.step % stage.log_every == 0 or run.step == run.total_steps:
            avg = {k: mean_across(sum(v) / len(v), run.info) for k, v in running.items()}
            if run.info.is_main:
                steps_logged = max(len(v) for v in running.values())
                run.curve.log(run.step, **avg, lr=lr, sec_per_step=(time.perf_counter() - t0) / steps_logged)
                run.curve.plot("stage 2: token CTC, then + transcript cross-entropy through the frozen LLM")
            running, t0 = {}, time.perf_counter()
        if stage.eval_every and run.step % stage.eval_every == 0 and run.info.is_main:
            run.eval_curve.log(run.step, cer=evaluate(run)["cer"])
            run.eval_curve.plot("stage 2: held-out transcript CER")
        if run.step % stage.save_every == 0 or run.step == run.total_steps:
            save_checkpoint(run)
        if stop_after is not None and run.step >= stop_after:
            bar.close()
            return {"stage": STAGE, "steps": run.step, "stopped": True}
    bar.close()
    return finish_stage(run, STAGE, evaluate, curve_key="transcript_ce")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_args(p)
    return run_from_args(p.parse_args(argv))


def run_from_args(args: argparse.Namespace) -> int:
    """Thin entry point shared by ``python -m`` / torchrun and ``duplex-agent train``."""
    return run_recipe(args, setup, train, lambda r: f"stage 2 done: step {r['steps']}, held-out transcript CER {r.get('cer', float('nan')):.3f}")


if __name__ == "__main__":
    sys.exit(main())
