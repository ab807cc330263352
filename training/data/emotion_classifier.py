"""A small emotion classifier: prosodic + spectral-shape features -> a 2-layer MLP, 5 classes.

It proves that the synthetic emotions are distinct (trained on voices of half A, tested on the
unseen voices of half B) and is reused to judge the emotional TTS later:

    clf = EmotionClassifier.load("emotion_classifier.pt")
    emotion, probs = clf.predict(audio, sample_rate)        # agent voice: its stored reference
    labels = clf.predict_voice([a1, a2, ...], sample_rate)  # any voice: normalised by the set

Speaker normalisation (standard in speech emotion recognition): emotions move F0, energy and
rate by amounts comparable to the differences between voices, so features are taken relative
to the voice's mean feature vector over a set of its utterances (no labels needed). For one
utterance of the agent voice, the agent's mean from training is used. Without normalisation
the classifier still works on the voices it was trained on but transfers worse to new voices.

Features (per utterance, 16 kHz): log-F0 statistics in semitones (level, spread, range, final
slope, movement), voicing ratio, frame energy statistics, speaking-rate proxy (energy-envelope
peaks per second of speech), spectral tilt and centroid, and the 32-band mean log-mel shape
(mean removed, so overall gain does not leak in twice).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.data.manifest import EMOTIONS, load_manifest

RATE = 16000
N_MELS = 32


def emotion_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(D,) float32 feature vector of one utterance."""
    import pyworld as pw
    from scipy.signal import find_peaks

    from speech_io.wav import resample
    from training.data.align import frame_energy_db, log_mel, trim

    x = resample(np.asarray(audio, dtype=np.float32), sample_rate, RATE)
    x, _ = trim(x, RATE, threshold_db=-40.0)
    if len(x) < RATE // 10:
        x = np.pad(x, (0, RATE // 10 - len(x)))
    f0, _ = pw.dio(x.astype(np.float64), RATE, frame_period=10.0, f0_floor=60.0, f0_ceil=700.0)
    voiced = f0 > 0
    if voiced.sum() >= 3:
        st = 12 * np.log2(f0[voiced] / 100.0)
        k = max(2, len(st) // 4)
        tail = st[-k:]
        slope = float(np.polyfit(np.arange(k), tail, 1)[0]) * 10  # semitones per 100 ms
        f0_feats = [st.mean(), st.std(), np.percentile(st, 90) - np.percentile(st, 10), np.percentile(st, 95),
                    np.percentile(st, 5), slope, tail.mean() - st.mean(), np.mean(np.abs(np.diff(st)))]
    else:
        f0_feats = [0.0] * 8
    e = frame_energy_db(x, RATE)
    active = e > e.max() - 35
    ea = e[active] if active.any() else e
    env = np.convolve(np.maximum(e - (e.max() - 35), 0), np.ones(5) / 5, mode="same")
    peaks, _ = find_peaks(env, prominence=3.0, distance=8)
    speech_s = max(active.sum() * 0.01, 0.1)
    mel = log_mel(x, RATE, n_mels=N_MELS)
    n = min(len(mel), len(active))
    m = mel[:n][active[:n]] if active[:n].any() else mel
    shape = m.mean(axis=0)
    centres = np.arange(N_MELS)
    tilt = float(np.polyfit(centres, shape, 1)[0])
    power = np.exp(shape - shape.max())
    centroid = float((power * centres).sum() / power.sum())
    hi_lo = float(shape[N_MELS // 2 :].mean() - shape[: N_MELS // 2].mean())
    feats = f0_feats + [voiced.mean(), ea.mean(), ea.std(), np.percentile(ea, 90) - np.percentile(ea, 10),
                        len(peaks) / speech_s, speech_s / (len(x) / RATE), tilt, centroid, hi_lo]
    return np.concatenate([np.asarray(feats, dtype=np.float32), (shape - shape.mean()).astype(np.float32)])


class EmotionClassifier(nn.Module):
    """Speaker-normalised, standardised features -> MLP -> logits over ``EMOTIONS``."""

    def __init__(self, n_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        # Mean raw feature vector of the agent voice: a single agent utterance is taken relative to it.
        self.register_buffer("agent_reference", torch.zeros(n_features))
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, len(EMOTIONS)))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, D) speaker-normalised features -> (B, 5) logits."""
        return self.net((feats - self.mean) / self.std)

    @torch.no_grad()
    def predict(self, audio: np.ndarray, sample_rate: int, voice_mean: np.ndarray | None = None) -> tuple[str, dict[str, float]]:
        """One utterance; relative to ``voice_mean`` (default: the agent voice's reference)."""
        self.eval()
        ref = self.agent_reference.numpy() if voice_mean is None else voice_mean
        f = torch.from_numpy(emotion_features(audio, sample_rate) - ref)[None].float()
        p = torch.softmax(self(f), dim=-1)[0]
        return EMOTIONS[int(p.argmax())], {e: float(p[i]) for i, e in enumerate(EMOTIONS)}

    @torch.no_grad()
    def predict_voice(self, audios: list[np.ndarray], sample_rate: int) -> list[str]:
        """Several utterances of ONE voice (roughly balanced over emotions), normalised by their mean."""
        self.eval()
        x = np.stack([emotion_features(a, sample_rate) for a in audios])
        logits = self(torch.from_numpy(x - x.mean(0)).float())
        return [EMOTIONS[int(i)] for i in logits.argmax(-1)]

    def save(self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save({"state": self.state_dict(), "n_features": int(self.mean.numel()),
                    "hidden": int(self.net[0].out_features), "emotions": list(EMOTIONS), "meta": meta or {}}, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EmotionClassifier:
        if not Path(path).is_file():
            raise FileNotFoundError(f"no emotion classifier at {path}; run `duplex-agent data emotion-classifier train DIR`")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if list(blob["emotions"]) != list(EMOTIONS):
            raise ValueError(f"{path}: trained for emotions {blob['emotions']}, expected {list(EMOTIONS)}")
        model = cls(int(blob["n_features"]), int(blob["hidden"]))
        model.load_state_dict(blob["state"])
        return model.eval()


def normalise_by_voice(x: np.ndarray, voices: np.ndarray) -> np.ndarray:
    """Subtract each voice's mean feature vector (over its utterances; labels are not used)."""
    out = x.copy()
    for v in np.unique(voices):
        idx = voices == v
        out[idx] = x[idx] - x[idx].mean(0)
    return out


def _dataset(root: str | os.PathLike[str], half: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from tqdm import tqdm

    recs = [r for r in load_manifest(root, "emotions") if r.voice_half == half]
    feats = [emotion_features(r.load_audio(), r.sample_rate) for r in tqdm(recs, desc=f"features half {half}", leave=False)]
    x = np.stack(feats) if feats else np.zeros((0, 1), np.float32)
    y = np.array([EMOTIONS.index(r.emotion) for r in recs], dtype=np.int64)
    return x, y, np.array([r.voice for r in recs])


def _confusion(model: EmotionClassifier, x: np.ndarray, y: np.ndarray) -> tuple[float, list[list[int]]]:
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(x).float()).argmax(-1).numpy()
    conf = np.zeros((len(EMOTIONS), len(EMOTIONS)), dtype=int)
    for t, p in zip(y, pred, strict=True):
        conf[t, p] += 1
    return float((pred == y).mean()) if len(y) else 0.0, conf.tolist()


def _fit(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> EmotionClassifier:
    torch.manual_seed(seed)
    model = EmotionClassifier(x.shape[1])
    model.mean.copy_(torch.from_numpy(x.mean(0)))
    model.std.copy_(torch.from_numpy(x.std(0) + 1e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y)
    for _ in range(epochs):
        model.train()
        loss = nn.functional.cross_entropy(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def train(root: str | os.PathLike[str], weights: str | os.PathLike[str], epochs: int = 300, seed: int = 0,
          agent_voice: str = "piper:joe") -> dict[str, Any]:
    """Train on voices of half A, report accuracy on the unseen voices of half B, save weights."""
    xa, ya, va = _dataset(root, "A")
    xb, yb, vb = _dataset(root, "B")
    if len(ya) == 0:
        raise FileNotFoundError(f"{root}: no emotion utterances of voice half A to train on")
    model = _fit(normalise_by_voice(xa, va), ya, epochs, seed)
    if (va == agent_voice).any():
        model.agent_reference.copy_(torch.from_numpy(xa[va == agent_voice].mean(0)))
    acc_a, _ = _confusion(model, normalise_by_voice(xa, va), ya)
    acc_b, conf = _confusion(model, normalise_by_voice(xb, vb), yb) if len(yb) else (float("nan"), [])
    # For the record: the same recipe without speaker normalisation.
    raw = _fit(xa, ya, epochs, seed)
    acc_b_raw, _ = _confusion(raw, xb, yb) if len(yb) else (float("nan"), [])
    result = {"accuracy_train_voices": round(acc_a, 4), "accuracy_heldout_voices": round(acc_b, 4),
              "accuracy_heldout_voices_without_speaker_norm": round(acc_b_raw, 4),
              "n_train": int(len(ya)), "n_eval": int(len(yb)), "train_voices": sorted(set(va.tolist())),
              "eval_voices": sorted(set(vb.tolist())), "emotions": list(EMOTIONS), "confusion": conf, "epochs": epochs}
    model.save(weights, meta={k: v for k, v in result.items() if k != "confusion"})
    result["weights"] = str(weights)
    return result


def evaluate(root: str | os.PathLike[str], weights: str | os.PathLike[str]) -> dict[str, Any]:
    model = EmotionClassifier.load(weights)
    xb, yb, vb = _dataset(root, "B")
    acc, conf = _confusion(model, normalise_by_voice(xb, vb), yb)
    return {"accuracy_heldout_voices": round(acc, 4), "n_eval": int(len(yb)), "eval_voices": sorted(set(vb.tolist())),
            "emotions": list(EMOTIONS), "confusion": conf, "weights": str(weights)}
