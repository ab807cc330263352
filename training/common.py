"""Small pieces the three encoder recipes share: models, batching, augmentation, run options."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from agent.llm import FrozenLLM, load_llm
from agent.speech_input import SpeechInput, build_speech_input
from agent.speech_weights import load_weights
from configs import AgentConfig, load_config, to_dict
from configs.schema import StageConfig
from training.speech_data import ShardedSampler


def config_from(args: argparse.Namespace) -> AgentConfig:
    return load_config(args.preset, args.overrides)


def set_threads(stage: StageConfig) -> None:
    if stage.num_threads > 0:
        torch.set_num_threads(stage.num_threads)


def load_models(cfg: AgentConfig, init: str | None, llm_dtype: str | None = None,
                fresh_if_reshaped: tuple[str, ...] = ()) -> tuple[FrozenLLM, SpeechInput]:
    """The frozen LLM (in ``llm_dtype`` if given) and an untrained-or-``init`` SpeechInput (never
    the bundled weights: we train). ``fresh_if_reshaped``: see ``load_weights``."""
    torch.manual_seed(cfg.seed)
    llm = load_llm(dataclasses.replace(cfg.llm, dtype=llm_dtype) if llm_dtype else cfg.llm)
    speech = build_speech_input(cfg.speech, llm, load_weights=False, init_pretrained=init is None)
    if init:
        load_weights(speech, init, fresh_if_reshaped=fresh_if_reshaped)
    return llm, speech


def llm_fingerprint(llm: FrozenLLM) -> float:
    """A float64 checksum of every LLM parameter (equal before/after training = untouched)."""
    with torch.no_grad():
        return float(sum(p.double().sum() * (i + 1) for i, p in enumerate(llm.model.parameters())))


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def write_run_config(run_dir: Path, cfg: AgentConfig, args: argparse.Namespace) -> None:
    write_json(run_dir / "config.json", {"config": to_dict(cfg), "args": {k: v for k, v in vars(args).items()
                                                                          if not callable(v)}})


class LengthBatcher:
    """Batches of similar lengths: a pool of ``pool`` batches is drawn from a sharded sampler,
    sorted by length, cut, and served in random order. Resumable (sampler + queued batches)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, rank: int = 0, world: int = 1, seed: int = 0,
                 pool: int = 16) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.pool = pool
        self.sampler = ShardedSampler(len(self.lengths), rank, world, seed)
        self.queue: list[list[int]] = []
        self.rng = random.Random(seed * 7919 + rank)

    def next(self) -> list[int]:
        if not self.queue:
            idx = sorted(self.sampler.take(self.batch_size * self.pool), key=lambda i: self.lengths[i])
            self.queue = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
            self.rng.shuffle(self.queue)
        return self.queue.pop()

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "queue": [list(q) for q in self.queue],
                "rng": self.rng.getstate()}

    def load_state_dict(self, d: dict) -> None:
        self.sampler.load_state_dict(d["sampler"])
        self.queue = [list(q) for q in d["queue"]]
        self.rng.setstate(d["rng"])


def augment_audio(audio: torch.Tensor, lengths: torch.Tensor, gen: torch.Generator, noise_prob: float = 0.5
                  ) -> torch.Tensor:
    """Random gain (+-8 dB) and, sometimes, white noise at 15-40 dB SNR; (B, S) -> (B, S)."""
    b = audio.shape[0]
    gain = 10 ** ((torch.rand(b, generator=gen) * 16 - 8) / 20)
    out = audio * gain[:, None]
    valid = torch.arange(audio.shape[1])[None] < lengths[:, None]
    power = (out.square() * valid).sum(1) / lengths.clamp(min=1)
    snr_db = torch.rand(b, generator=gen) * 25 + 15
    use = torch.rand(b, generator=gen) < noise_prob
    sigma = torch.sqrt(power / 10 ** (snr_db / 10)) * use
    out = out + torch.randn(out.shape, generator=gen) * sigma[:, None] * valid
    return out.clamp(-1, 1)


def spec_augment(mel: torch.Tensor, gen: torch.Generator, freq_masks: int = 2, freq_width: int = 12,
                 time_masks: int = 2, time_width: int = 20) -> torch.Tensor:
    """SpecAugment on (B, M, T) mel: masked bands/spans are set to the batch minimum (silence)."""
    b, m, t = mel.shape
    out = mel.clone()
    floor = float(mel.min())
    for i in range(b):
        for _ in range(freq_masks):
            w = int(torch.randint(0, freq_width + 1, (1,), generator=gen))
            f0 = int(torch.randint(0, max(1, m - w), (1,), generator=gen))
            out[i, f0 : f0 + w] = floor
        for _ in range(time_masks):
            w = int(torch.randint(0, time_width + 1, (1,), generator=gen))
            t0 = int(torch.randint(0, max(1, t - w), (1,), generator=gen))
            out[i, :, t0 : t0 + w] = floor
    return out


def param_groups(speech: SpeechInput, params: list[torch.nn.Parameter], stage: StageConfig) -> list[dict]:
    """Optimiser groups: ``stage.lr`` scaled per name prefix by ``stage.lr_scales``."""
    names = {id(p): n for n, p in speech.named_parameters()}
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for p in params:
        scale = next((s for prefix, s in stage.lr_scales.items() if names[id(p)].startswith(prefix)), 1.0)
        groups.setdefault(scale, []).append(p)
    return [{"params": ps, "lr_scale": s, "lr": stage.lr * s} for s, ps in groups.items()]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def autocast(stage: StageConfig) -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=stage.autocast_bf16)


def finish_stage(run: Any, stage: int, evaluate: Callable[[Any], dict], curve_key: str = "loss") -> dict:
    """End of a speech-input stage (every rank): ranks in sync; on rank 0 the held-out figures,
    final weights, the frozen-LLM check and the first/last ``curve_key`` of the loss curve go to
    ``result.json``."""
    from agent.speech_weights import save_weights
    from training.distributed import barrier, params_in_sync

    result: dict = {"stage": stage, "steps": run.step,
                    "ranks_in_sync": params_in_sync([p for p in run.speech.parameters() if p.requires_grad], run.info)}
    if run.info.is_main:
        result.update(evaluate(run))
        save_weights(run.speech, run.run_dir / "final.safetensors", meta={"stage": stage, "preset": run.cfg.preset})
        result["llm_unchanged"] = llm_fingerprint(run.llm) == run.llm_sum
        run.llm.assert_frozen()
        values = [r[curve_key] for r in run.curve.rows if curve_key in r]
        result[f"{curve_key}_first"] = values[0] if values else None
        result[f"{curve_key}_last"] = values[-1] if values else None
        write_json(run.run_dir / "result.json", result)
    barrier(run.info)
    return result


def run_recipe(args: argparse.Namespace, setup: Callable[..., Any], train: Callable[[Any], dict],
               summary: Callable[[dict], str]) -> int:
    """The thin entry point of each speech stage (``python -m``, torchrun, ``duplex-agent train``):
    config -> setup -> run config saved -> train -> one summary line (rank 0) -> shutdown."""
    from training.distributed import shutdown

    cfg = config_from(args)
    random.seed(cfg.seed)
    run = setup(cfg, args.data, args.out, args.init, args.steps, args.eval_limit, not args.no_progress)
    if run.info.is_main:
        write_run_config(run.run_dir, cfg, args)
    result = train(run)
    if run.info.is_main:
        print(f"{summary(result)}, weights {run.run_dir / 'final.safetensors'}")
    shutdown(run.info)
    return 0
