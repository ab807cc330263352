"""TEMPORARY 25 Hz unit tokenizer for the TTS decoder, used only until `agent.units` lands.

Not the project's unit tokenizer (that is `agent.units.UnitTokenizer`, the units issue): this one
exists so the decoder pipeline (data cache, training, streaming, plugins, CLI) can be built and
tested before the real codebook exists. It mimics the real one's whisper backend and API:
Whisper tiny.en encoder (full attention over the utterance, not the streaming encoder), final
layer, frame pairs averaged to 25 Hz, nearest of K k-means centroids;
``extract(audio, rate) -> (ceil(seconds * 25),) int64``. Unit ids of this tokenizer mean nothing
to the real one: a decoder trained on them must be retrained on the real units (the weights
file records which tokenizer it was trained with, see `identity`).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SAMPLE_RATE = 16000
UNIT_SAMPLES = 640


class TemporaryWhisperUnits:
    """Whisper-tiny-encoder features + k-means. ``identity`` names the fitted codebook."""

    def __init__(self, centroids: torch.Tensor | None = None, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None, path: str = "") -> None:
        from transformers import WhisperFeatureExtractor, WhisperModel

        from agent.assets import prepared_dir

        folder = prepared_dir("whisper-tiny-en")
        self.encoder = WhisperModel.from_pretrained(str(folder)).encoder.eval()
        self.features = WhisperFeatureExtractor.from_pretrained(str(folder))
        self.centroids, self.mean, self.std = centroids, mean, std
        self.path = path

    @property
    def identity(self) -> str:
        if self.centroids is None:
            return "tmp-whisper-unfitted"
        digest = hashlib.sha256(self.centroids.numpy().tobytes()).hexdigest()[:12]
        return f"tmp-whisper-k{len(self.centroids)}-{digest}"

    @torch.no_grad()
    def embed(self, audio: np.ndarray, rate: int = SAMPLE_RATE) -> torch.Tensor:
        """(T,) audio -> (ceil(T / 640 at 16 kHz), 384) features at 25 Hz."""
        from speech_io.wav import resample

        x = np.asarray(audio, dtype=np.float32)
        if rate != SAMPLE_RATE:
            x = resample(x, rate, SAMPLE_RATE).astype(np.float32)
        n_units = max(1, math.ceil(len(x) / UNIT_SAMPLES))
        x = np.pad(x, (0, n_units * UNIT_SAMPLES - len(x)))
        mel = self.features(x, sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="do_not_pad").input_features
        mel = mel[..., : n_units * 4]
        if mel.shape[-1] < n_units * 4:
            mel = F.pad(mel, (0, n_units * 4 - mel.shape[-1]), value=float(mel.min()))
        enc = self.encoder
        h = F.gelu(enc.conv2(F.gelu(enc.conv1(mel)))).transpose(1, 2)  # (1, 2n, 384) at 50 Hz
        h = h + enc.embed_positions.weight[: h.shape[1]]
        for layer in enc.layers:
            out = layer(h, attention_mask=None)
            h = out[0] if isinstance(out, tuple) else out
        h = enc.layer_norm(h)[0]
        return h.reshape(n_units, 2, -1).mean(1)

    def extract(self, audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
        if self.centroids is None:
            raise RuntimeError("temporary unit codebook not fitted")
        z = (self.embed(audio, rate) - self.mean) / self.std
        dist = (self.centroids**2).sum(-1)[None] - 2 * z @ self.centroids.T
        return dist.argmin(-1).numpy().astype(np.int64)

    def fit(self, signals: list[np.ndarray], rate: int, k: int = 500, iters: int = 25, seed: int = 0,
            max_frames: int = 120_000) -> None:
        from tqdm import tqdm

        feats = torch.cat([self.embed(a, rate) for a in tqdm(signals, desc="tmp units: features", unit="utt")])
        g = torch.Generator().manual_seed(seed)
        if len(feats) > max_frames:
            feats = feats[torch.randperm(len(feats), generator=g)[:max_frames]]
        self.mean, self.std = feats.mean(0), feats.std(0).clamp_min(1e-5)
        z = (feats - self.mean) / self.std
        cent = z[torch.randperm(len(z), generator=g)[:k]].clone()  # random init, then Lloyd
        for _ in tqdm(range(iters), desc="tmp units: k-means"):
            assign = ((cent**2).sum(-1)[None] - 2 * z @ cent.T).argmin(-1)
            sums = torch.zeros_like(cent).index_add_(0, assign, z)
            counts = torch.bincount(assign, minlength=k).float()
            empty = counts == 0
            cent = torch.where(empty[:, None], z[torch.randint(len(z), (k,), generator=g)], sums / counts.clamp_min(1)[:, None])
        self.centroids = cent

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        assert self.centroids is not None and self.mean is not None and self.std is not None
        save_file({"centroids": self.centroids, "mean": self.mean, "std": self.std}, str(tmp),
                  metadata={"temporary": "true", "identity": self.identity, "note": json.dumps(__doc__[:200])})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TemporaryWhisperUnits:
        from safetensors.torch import load_file

        t = load_file(str(path))
        return cls(t["centroids"], t["mean"], t["std"], path=str(path))
