"""Recipe: one LoRA emotion plugin of the unit decoder (``duplex-agent train emotion --emotion happy``).

EELE's second stage: the neutral decoder is frozen, a LoRA adapter named after the emotion is
inserted at the positions of a scheme, and only the adapter learns, from the units of a neutral
rendering, to produce the emotional resynthesis of the same text (synthetic targets, see
training/tts_data.py). Losses: multi-resolution log-mel L1 on the audio through the decoder
(gradients flow through the frozen Piper HiFi-GAN) with the target's durations forced, plus the
duration head's log time-scale regressed onto the target's -log(rate), plus (``emotion_pitch_weight``)
a periodicity loss on voiced frames that pulls the output's pitch to the target's. ``full=True`` is the
full fine-tune baseline: no LoRA, every parameter of the decoder trained.

setup / train / save_checkpoint / evaluate, thin `run_from_args`.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agent.tts import UnitTTS, unit_durations
from agent.tts_emotion import EmotionTTS, PluginInfo
from configs.schema import AgentConfig
from training.tts_data import EmotionItem, build_emotion_pairs, load_emotion_items, sample_emotion_windows
from training.tts_losses import cosine_lr, mel_loss, periodicity_loss
from training.tts_neutral import cache_dir

DURATION_WEIGHT = 10.0
EDGE_FRAMES = 8
"""Frames at each window edge left out of the mel loss (decoder receptive field sees padding)."""
FULL_LR_SCALE = 0.05
"""Full fine-tuning uses this fraction of the LoRA learning rate (all weights move)."""


def neutral_weights_path(cfg: AgentConfig, weights: str | None = None) -> Path:
    from agent.assets import load_card, source_path

    spec = weights or cfg.tts.card
    if spec.endswith(".safetensors"):
        return Path(spec)
    return source_path(load_card(spec, family="unit-tts", role="tts"))


def load_neutral(cfg: AgentConfig, weights: str | None = None) -> tuple[UnitTTS, str]:
    """The trained neutral decoder (eval, frozen) and the units identity it was trained on."""
    from agent.piper_torch import load_vits
    from agent.tts import build_tts, load_tts_weights, read_tts_meta

    path = neutral_weights_path(cfg, weights)
    meta = read_tts_meta(path)
    vits, _ = load_vits(cfg.voice)
    model = load_tts_weights(build_tts(meta.config, vits.dec), path).eval()
    model.requires_grad_(False)
    return model, meta.units


def prepare_pairs(cfg: AgentConfig, progress: bool = True) -> None:
    tc = cfg.tts_train
    build_emotion_pairs(cache_dir(cfg), {"train": tc.emotion_train_items, "test": tc.emotion_test_items},
                        seed=tc.seed, progress=progress)


@dataclass
class EmotionRun:
    cfg: AgentConfig
    emotion: str
    scheme: str
    rank: int
    model: UnitTTS
    """The model being trained (a LoRA-wrapped UnitTTS, or a full copy)."""
    plugins: EmotionTTS | None
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    items: list[EmotionItem]
    out_dir: Path
    info: PluginInfo | None = None
    step: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    @property
    def full(self) -> bool:
        return self.plugins is None

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.params)


def setup(cfg: AgentConfig, neutral: UnitTTS, emotion: str, scheme: str, rank: int, items: list[EmotionItem],
          full: bool = False, out_dir: str | Path | None = None) -> EmotionRun:
    tc = cfg.tts_train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    torch.manual_seed(tc.seed)
    model = copy.deepcopy(neutral)
    plugins: EmotionTTS | None = None
    info = None
    if full:
        params = list(model.parameters())
        for p in params:
            p.requires_grad_(True)
        lr = tc.emotion_lr * FULL_LR_SCALE
    else:
        plugins = EmotionTTS(model)
        info = plugins.add_plugin(emotion, scheme, rank)
        plugins.set_emotion(emotion)
        params = plugins.trainable(emotion)
        lr = tc.emotion_lr
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.8, 0.99), weight_decay=0.0)
    name = "full" if full else f"{scheme}-r{rank}"
    out = Path(out_dir) if out_dir else Path(tc.out_dir) / "emotion" / name
    return EmotionRun(cfg=cfg, emotion=emotion, scheme="full" if full else scheme, rank=0 if full else rank, model=model,
                      plugins=plugins, params=params, optimizer=optimizer, items=items, out_dir=out, info=info)


def _loss(run: EmotionRun, rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    tc = run.cfg.tts_train
    b = sample_emotion_windows(run.items, run.emotion, tc.emotion_batch, tc.emotion_window_units, rng)
    out = run.model.offline(b.units, b.lengths, durations=b.durations, offset=b.offset, vocode=True)
    assert out.audio is not None
    f = int(b.frames.min())
    lo, hi = EDGE_FRAMES * 256, max(EDGE_FRAMES + 8, f - EDGE_FRAMES) * 256
    span = torch.full((b.units.shape[0],), hi - lo)
    loss_mel = mel_loss(out.audio[:, lo:hi], b.audio[:, lo:hi], span)
    valid = torch.arange(b.units.shape[1])[None] < b.lengths[:, None]
    loss_dur = (((out.log_scale - b.log_scale[:, None]) ** 2) * valid).sum() / valid.sum()
    row = {"mel_l1": float(loss_mel.detach()), "duration_mse": float(loss_dur.detach())}
    loss = loss_mel + DURATION_WEIGHT * loss_dur
    if tc.emotion_pitch_weight > 0:
        loss_pitch = periodicity_loss(out.audio[:, lo:hi], b.audio[:, lo:hi], span)
        loss = loss + tc.emotion_pitch_weight * loss_pitch
        row["periodicity"] = float(loss_pitch.detach())
    return loss, row


def train(run: EmotionRun, steps: int, progress: bool = True) -> None:
    from tqdm import tqdm

    tc = run.cfg.tts_train
    rng = np.random.default_rng(tc.seed)
    peak = run.optimizer.param_groups[0]["lr"]
    run.model.train()
    if run.plugins is not None:
        run.plugins.train()
    t0 = time.perf_counter()
    for _ in tqdm(range(run.step, steps), desc=f"{run.emotion} {run.scheme} r{run.rank}", disable=not progress, leave=False):
        for g in run.optimizer.param_groups:
            g["lr"] = cosine_lr(run.step, steps, peak, warmup=min(30, steps // 5))
        loss, row = _loss(run, rng)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.params, 1.0)
        run.optimizer.step()
        run.step += 1
        if run.step % tc.log_every == 0 or run.step == steps:
            run.history.append({"step": run.step, **row})
    run.seconds += time.perf_counter() - t0
    run.model.eval()
    if run.plugins is not None:
        run.plugins.eval()


def save_checkpoint(run: EmotionRun, path: str | Path | None = None) -> Path:
    """The plugin alone (safetensors); for the full fine-tune, the whole trained state."""
    from safetensors.torch import save_file

    extra = {"steps": run.step, "train_seconds": round(run.seconds, 1), "history": run.history[-5:],
             "data": "synthetic: WORLD resynthesis (training/data/emotion.py) of Piper renderings"}
    if run.plugins is not None:
        path = Path(path) if path else run.out_dir / f"{run.emotion}.safetensors"
        return run.plugins.save_plugin(run.emotion, path, extra=extra)
    path = Path(path) if path else run.out_dir / f"{run.emotion}_full.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous() for k, v in run.model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata={"emotion": run.emotion, "scheme": "full", "extra": json.dumps(extra)})
    tmp.replace(path)
    return path


def load_classifier(cfg: AgentConfig, items: list[EmotionItem] | None = None, progress: bool = True):
    """The data issue's emotion classifier; if it has not been trained yet, the same classifier
    (training/data/emotion_classifier.py) fitted on our train-split resyntheses (says which)."""
    from training.data.emotion_classifier import EmotionClassifier

    path = Path(cfg.tts_train.emotion_classifier)
    if path.is_file():
        return EmotionClassifier.load(path), f"data issue classifier {path}"
    fallback = cache_dir(cfg) / "emotion_classifier_fallback.pt"
    if not fallback.is_file():
        if items is None:
            raise FileNotFoundError(f"no emotion classifier at {path} and no items to fit the fallback on")
        fit_fallback_classifier(items, fallback, progress=progress)
    return EmotionClassifier.load(fallback), f"FALLBACK: data-issue EmotionClassifier fitted on our train resyntheses ({fallback})"


def fit_fallback_classifier(items: list[EmotionItem], path: Path, epochs: int = 300, progress: bool = True) -> None:
    from tqdm import tqdm

    from training.data.emotion_classifier import EmotionClassifier, emotion_features
    from training.data.manifest import EMOTIONS

    xs, ys = [], []
    for it in tqdm(items, desc="classifier features", disable=not progress):
        for e in EMOTIONS:
            xs.append(emotion_features(it.audio[e], 22050))
            ys.append(EMOTIONS.index(e))
    x, y = torch.from_numpy(np.stack(xs)), torch.tensor(ys)
    torch.manual_seed(0)
    model = EmotionClassifier(x.shape[1])
    model.mean.copy_(x.mean(0))
    model.std.copy_(x.std(0) + 1e-3)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    for _ in range(epochs):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save(path, meta={"fallback": True, "items": len(items)})


@torch.no_grad()
def evaluate(speak, items: list[EmotionItem], emotion: str, classifier, judge, limit: int = 12) -> dict:
    """``speak(units (1, n)) -> audio``; accuracy of the classifier on the intended emotion, WER."""
    from agent.text_metrics import wer

    refs, hyps, preds = [], [], []
    probs: list[float] = []
    for it in items[:limit]:
        audio = speak(torch.from_numpy(it.units)[None])
        pred, p = classifier.predict(audio, 22050)
        preds.append(pred)
        probs.append(p.get(emotion, 0.0))
        refs.append(it.text)
        hyps.append(judge.transcribe(audio, 22050).text)
    counts = {e: preds.count(e) for e in sorted(set(preds))}
    return {"emotion": emotion, "items": len(refs), "accuracy": float(np.mean([p == emotion for p in preds])),
            "mean_prob": float(np.mean(probs)), "predicted": counts, "wer": float(wer(refs, hyps))}


def speaker(run_or_model, emotion: str | None = None):
    """A ``speak(units) -> np.ndarray`` for a trained run (its emotion) or a plain model."""
    model = run_or_model.model if isinstance(run_or_model, EmotionRun) else run_or_model

    def speak(units: torch.Tensor) -> np.ndarray:
        out = model.offline(units)
        return out.audio[0, : int(out.lengths[0])].numpy()

    return speak


def run_from_args(args) -> int:
    from agent.judge import WhisperJudge
    from duplex.cli.common import config_from_args, print_json

    cfg = config_from_args(args)
    progress = not args.no_progress
    neutral, units = load_neutral(cfg, args.weights)
    prepare_pairs(cfg, progress)
    train_items = load_emotion_items(cache_dir(cfg), units, ("train",))
    scheme = args.scheme or cfg.tts_train.emotion_scheme
    rank = args.rank or cfg.tts_train.emotion_rank
    run = setup(cfg, neutral, args.emotion, scheme, rank, train_items)
    train(run, cfg.tts_train.emotion_steps, progress)
    path = save_checkpoint(run, args.export)
    result = {"emotion": args.emotion, "scheme": scheme, "rank": rank, "plugin": str(path),
              "parameters": run.trainable_parameters, "train_seconds": round(run.seconds, 1),
              "data": "synthetic (WORLD resynthesis of Piper renderings)"}
    if not args.no_eval:
        test = load_emotion_items(cache_dir(cfg), units, ("test",))
        classifier, which = load_classifier(cfg, train_items, progress)
        result["eval"] = evaluate(speaker(run), test, args.emotion, classifier, WhisperJudge(cfg.judge),
                                  cfg.tts_train.eval_items)
        result["classifier"] = which
    print_json(result)
    return 0


__all__ = ["EmotionRun", "evaluate", "load_neutral", "save_checkpoint", "setup", "train", "unit_durations"]
