"""Recipe: the neutral unit decoder, distilled from the Piper voice (``duplex-agent train tts``).

Stage "data": render the text corpus with the Piper voice (audio + the latents its decoder
turned into that audio), tokenize the audio into 25 Hz units. Stage "latent": the front end and
upsampler learn units -> latents (masked L1) on 2 s windows, decoder untouched. Stage "mel": the
same plus a multi-resolution log-mel L1 on the audio of 0.8 s windows, through the frozen Piper
decoder (gradients flow through it). Then the held-out texts are spoken from their units and
judged by Whisper (WER). Resumable: a checkpoint every ``eval_every`` steps, data cached on disk.

setup / train / save_checkpoint / evaluate / export, thin `main`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agent.tts import UnitTTS, UnitTTSConfig, build_tts, load_tts_weights, read_tts_meta, save_tts
from configs.schema import AgentConfig
from training.tts_data import (
    Item,
    corpus_texts,
    extract_units,
    load_items,
    render_corpus,
    sample_windows,
)
from training.tts_losses import cosine_lr, latent_l1, mel_loss

EDGE_FRAMES = 12
"""Frames at each window edge left out of the mel loss (the decoder's receptive field sees the
window's zero padding there, the target saw real context)."""


def cache_dir(cfg: AgentConfig) -> Path:
    return Path(os.path.expanduser(cfg.tts_train.cache_dir))


def prepare_data(cfg: AgentConfig, progress: bool = True) -> str:
    """Render the corpus and extract units (both resumable). Returns the units identity."""
    from agent.piper import PiperVoice

    cache = cache_dir(cfg)
    voice = PiperVoice.load(cfg.voice, num_threads=1)
    render_corpus(voice, corpus_texts(), cache, seeds=cfg.tts_train.render_seeds, progress=progress,
                  noise_scale=cfg.tts_train.render_noise_scale)
    tokenizer, identity = training_units(cfg)
    extract_units(tokenizer, identity, cache, progress=progress)
    return identity


def training_units(cfg: AgentConfig):
    """The tokenizer to train on, and its identity: the project's units (``units.card``)."""
    from agent.tts_units import project_tokenizer

    if cfg.tts_train.units != "project":
        raise ValueError(f"tts_train.units={cfg.tts_train.units!r}: only 'project' (the units.card codebook) "
                         "is supported; choose another codebook with --set units.card=NAME")
    return project_tokenizer(cfg)


@dataclass
class NeutralRun:
    cfg: AgentConfig
    model: UnitTTS
    optimizer: torch.optim.Optimizer
    train_items: list[Item]
    val_items: list[Item]
    units: str
    out_dir: Path
    step: int = 0
    history: list[dict] = field(default_factory=list)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)


def setup(cfg: AgentConfig, units: str, resume: bool = True) -> NeutralRun:
    from agent.piper_torch import load_vits

    tc = cfg.tts_train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    torch.manual_seed(tc.seed)
    vits, _ = load_vits(cfg.voice)
    ckpt = Path(tc.out_dir) / "neutral" / "checkpoint.pt"
    init = tc.init if tc.init and not (resume and ckpt.is_file()) else ""
    if init:
        meta = read_tts_meta(init)
        if meta.units != units:
            raise ValueError(f"tts_train.init={init} was trained on units {meta.units}, not {units}")
        arch = dataclasses.replace(meta.config, dropout=tc.dropout)
    else:
        arch = UnitTTSConfig(lookahead=tc.lookahead, dropout=tc.dropout)
    model = build_tts(arch, vits.dec)
    if init:
        load_tts_weights(model, init)
        print(f"front end and upsampler from {init}")
    model.decoder.requires_grad_(False)  # the Piper decoder stays as it is
    model.upsampler.duration.requires_grad_(False)  # neutral units last 40 ms: log-scale stays 0
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=(0.8, 0.99), weight_decay=0.01)
    items = load_items(cache_dir(cfg), units, ("train", "val"))
    run = NeutralRun(cfg=cfg, model=model, optimizer=optimizer,
                     train_items=[i for i in items if i.split == "train"], val_items=[i for i in items if i.split == "val"],
                     units=units, out_dir=Path(tc.out_dir) / "neutral", rng=np.random.default_rng(tc.seed))
    if resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        if state["units"] != units:
            raise ValueError(f"{ckpt} was trained on units {state['units']}, not {units}; use a new out_dir")
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        run.step, run.history = state["step"], state["history"]
        run.rng = np.random.default_rng(tc.seed + run.step)
        print(f"resumed {ckpt} at step {run.step}")
    return run


def save_checkpoint(run: NeutralRun) -> Path:
    run.out_dir.mkdir(parents=True, exist_ok=True)
    path = run.out_dir / "checkpoint.pt"
    tmp = path.with_suffix(".tmp")
    torch.save({"model": {k: v for k, v in run.model.state_dict().items() if not k.startswith("decoder.")},
                "optimizer": run.optimizer.state_dict(), "step": run.step, "history": run.history,
                "units": run.units}, tmp)
    tmp.replace(path)
    return path


def _train_step(run: NeutralRun, mel: bool) -> dict:
    tc = run.cfg.tts_train
    batch = sample_windows(run.train_items, tc.mel_batch if mel else tc.batch,
                           tc.mel_window_units if mel else tc.window_units, run.rng)
    out = run.model.offline(batch.units, batch.lengths, offset=batch.offset, vocode=mel)
    loss_lat = latent_l1(out.latents, batch.latents, batch.frame_mask)
    loss = loss_lat
    row = {"latent_l1": float(loss_lat.detach())}
    if mel:
        assert out.audio is not None
        f = int(batch.frame_mask.sum(1).min())
        a, b = EDGE_FRAMES * 256, max(EDGE_FRAMES + 8, f - EDGE_FRAMES) * 256
        lengths = torch.full((batch.units.shape[0],), b - a)
        loss_mel = mel_loss(out.audio[:, a:b], batch.audio[:, a:b], lengths)
        loss = loss + tc.mel_weight * loss_mel
        row["mel_l1"] = float(loss_mel.detach())
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], 1.0)
    run.optimizer.step()
    return row


@torch.no_grad()
def val_latent_l1(run: NeutralRun, windows: int = 32) -> float:
    rng = np.random.default_rng(123)
    batch = sample_windows(run.val_items, windows, run.cfg.tts_train.window_units, rng)
    out = run.model.offline(batch.units, batch.lengths, offset=batch.offset, vocode=False)
    return float(latent_l1(out.latents, batch.latents, batch.frame_mask))


def train(run: NeutralRun, eval_every: int = 250, progress: bool = True) -> None:
    from tqdm import tqdm

    tc = run.cfg.tts_train
    total = tc.steps + tc.mel_steps
    bar = tqdm(total=total, initial=run.step, desc="train tts", disable=not progress)
    t0 = time.perf_counter()
    run.model.train()
    while run.step < total:
        mel = run.step >= tc.steps
        lr = cosine_lr(run.step, total, tc.lr)
        for g in run.optimizer.param_groups:
            g["lr"] = lr
        row = _train_step(run, mel)
        run.step += 1
        bar.update(1)
        if run.step % tc.log_every == 0 or run.step == total:
            row.update(step=run.step, lr=lr, seconds=time.perf_counter() - t0)
            if run.step % eval_every == 0 or run.step == total:
                run.model.eval()
                row["val_latent_l1"] = val_latent_l1(run)
                run.model.train()
                save_checkpoint(run)
            run.history.append(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k.endswith("l1")})
            if not progress:
                print(json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    bar.close()
    run.model.eval()
    save_checkpoint(run)
    write_curves(run)


def write_curves(run: NeutralRun) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run.out_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in run.history for k in r})
    with open(run.out_dir / "curves.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(run.history)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in ("latent_l1", "val_latent_l1", "mel_l1"):
        pts = [(r["step"], r[k]) for r in run.history if k in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=k)
    ax.axvline(run.cfg.tts_train.steps, color="grey", ls=":", label="mel stage")
    ax.set_xlabel("step")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("unit decoder distillation (synthetic Piper data)")
    fig.tight_layout()
    fig.savefig(run.out_dir / "curves.png", dpi=110)
    plt.close(fig)


@torch.no_grad()
def evaluate(model: UnitTTS, items: list[Item], cfg: AgentConfig, limit: int = 40, progress: bool = True) -> dict:
    """Whisper-judge WER of held-out items spoken from their units (and of the Piper audio itself)."""
    from tqdm import tqdm

    from agent.judge import WhisperJudge
    from agent.text_metrics import wer

    judge = WhisperJudge(cfg.judge)
    model.eval()
    refs, hyps, piper_hyps = [], [], []
    for it in tqdm(items[:limit], desc="judge", disable=not progress):
        out = model.offline(torch.from_numpy(it.units)[None])
        audio = out.audio[0, : int(out.lengths[0])].numpy()
        refs.append(it.text)
        hyps.append(judge.transcribe(audio, 22050).text)
        piper_hyps.append(judge.transcribe(it.audio, 22050).text)
    return {
        "items": len(refs),
        "wer": float(wer(refs, hyps)),
        "wer_piper_reference": float(wer(refs, piper_hyps)),
        "examples": [{"text": r, "heard": h} for r, h in list(zip(refs, hyps, strict=True))[:8]],
    }


def export(run: NeutralRun, path: str | Path, report: dict | None = None) -> Path:
    return save_tts(run.model, path, units=run.units, half=True,
                    extra={"steps": run.step, "cache": str(cache_dir(run.cfg)), "report": report or {}})


def main(cfg: AgentConfig, *, stages: tuple[str, ...] = ("data", "train", "eval"), export_to: str | None = None,
         progress: bool = True) -> dict:
    result: dict = {}
    units = prepare_data(cfg, progress) if "data" in stages else training_units(cfg)[1]
    result["units"] = units
    run = setup(cfg, units)
    if "train" in stages:
        train(run, progress=progress)
    if "eval" in stages:
        test = load_items(cache_dir(cfg), units, ("test",))
        result["eval"] = evaluate(run.model, test, cfg, cfg.tts_train.eval_items, progress)
        run.out_dir.mkdir(parents=True, exist_ok=True)  # an eval-only run of a fresh out_dir
        (run.out_dir / "eval.json").write_text(json.dumps(result["eval"], indent=2))
    if export_to:
        result["weights"] = str(export(run, export_to, result.get("eval")))
    return result


def run_from_args(args) -> int:
    from duplex.cli.common import config_from_args, print_json

    cfg = config_from_args(args)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    print_json(main(cfg, stages=stages, export_to=args.export, progress=not args.no_progress))
    return 0
