"""25 Hz speech units: one API, two backends (``whisper`` bundled, ``hubert`` bring-your-own).

A ``UnitTokenizer`` turns 16 kHz audio into one unit id in ``[0, K)`` per 40 ms (K = 500 by
default; the sequence format adds its specials on top, see ``agent.sync_format``):

    audio (B, S) -> features (B, S / 640, D) at 25 Hz -> nearest k-means centroid -> (B, S / 640)

Backends (the codebook file says which one it was fitted on, with every setting it needs):

- ``whisper`` (bundled default): the frozen, original Whisper tiny.en weights run by the project's
  block-causal streaming encoder (``agent.encoder.StreamingSpeechEncoder``: causal log-mel,
  causal conv stem, attention within the current 160 ms chunk and a bounded number of past
  chunks). Features are the output of encoder layer ``layer`` (50 Hz), averaged over frame pairs
  to 25 Hz. Streaming therefore equals offline exactly, with no lookahead.
- ``hubert``: any transformers ``HubertModel`` (hubert-base, mHuBERT-25Hz, ...) and a codebook
  fitted on one of its layers. HuBERT attends over the whole input, so it streams with a sliding
  window: the units of each 160 ms chunk come from a pass over the last ``window_s`` seconds of
  audio ending with that chunk (frames are framed causally: each ends where its hop ends). The
  offline pass computes the same windows, so the two agree exactly.

The codebook (``KMeansCodebook``) is a safetensors file: centroids (K, D), per-dimension feature
mean/std (features are standardised before the distance), the fraction of frames of each unit
that were silence when it was fitted, and metadata (backend, layer, encoder settings).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agent.streaming import StreamingModule, StreamingState
from configs.schema import UnitsConfig

SAMPLE_RATE = 16000
"""Every backend reads 16 kHz mono audio."""
UNIT_SAMPLES = 640
"""Samples per unit (40 ms at 16 kHz, 25 Hz)."""
SILENCE_DBFS = -50.0
"""A 40 ms frame quieter than this (RMS, dB full scale) counts as silence when fitting."""


class UnitError(ValueError):
    """A codebook or unit input that does not fit (one line, says what to do)."""


# ---------------------------------------------------------------------------------------------
# Codebook
# ---------------------------------------------------------------------------------------------
class KMeansCodebook(nn.Module):
    """Nearest-centroid quantiser over standardised features. (B, T, D) -> (B, T) unit ids."""

    def __init__(self, centroids: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 silence: torch.Tensor | None = None, meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        k, d = centroids.shape
        if mean.shape != (d,) or std.shape != (d,):
            raise UnitError(f"codebook mean/std must be ({d},), got {tuple(mean.shape)}/{tuple(std.shape)}")
        self.register_buffer("centroids", centroids.float())
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float().clamp_min(1e-5))
        self.register_buffer("silence", torch.zeros(k) if silence is None else silence.float())
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def num_units(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., D) raw features -> (...) nearest unit ids (squared Euclidean after standardising)."""
        z = self.normalise(features)
        flat = z.reshape(-1, self.dim)
        c = self.centroids
        dist = (c * c).sum(-1)[None] - 2.0 * flat @ c.T  # |z|^2 is the same for every centroid
        return dist.argmin(-1).reshape(z.shape[:-1])

    def silent_units(self, threshold: float = 0.5) -> set[int]:
        """Units whose frames were mostly silence when the codebook was fitted."""
        return {int(i) for i in torch.nonzero(self.silence > threshold).flatten()}

    def silence_unit(self) -> int:
        """The unit most associated with silence (fills unknown user chunks)."""
        return int(torch.argmax(self.silence))

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tensors = {k: getattr(self, k).contiguous() for k in ("centroids", "mean", "std", "silence")}
        save_file(tensors, str(tmp), metadata={"units": json.dumps(self.meta, sort_keys=True)})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> KMeansCodebook:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise UnitError(f"unit codebook not found: {path}; fit one with `duplex-agent units fit`")
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("units", "null") or "null")
            if meta is None:
                raise UnitError(f"{path}: not a unit codebook (no 'units' metadata)")
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        return cls(t["centroids"], t["mean"], t["std"], t.get("silence"), meta)


def kmeans(x: torch.Tensor, k: int, iters: int = 30, seed: int = 0, init_sample: int = 20000,
           batch: int = 65536, progress: Callable[[int, float], None] | None = None) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding on a subsample. x (N, D) -> centroids (k, D).

    Empty clusters are re-seeded with the points farthest from their centroid. Deterministic for
    a given seed.
    """
    n, d = x.shape
    if n < k:
        raise UnitError(f"k-means needs at least k={k} frames, got {n}")
    g = torch.Generator().manual_seed(seed)
    sub = x[torch.randperm(n, generator=g)[: min(n, init_sample)]]
    cent = torch.empty(k, d)
    cent[0] = sub[torch.randint(len(sub), (1,), generator=g)]
    best = ((sub - cent[0]) ** 2).sum(-1)
    for i in range(1, k):
        probs = best / best.sum().clamp_min(1e-12)
        idx = torch.multinomial(probs, 1, generator=g)
        cent[i] = sub[idx]
        best = torch.minimum(best, ((sub - cent[i]) ** 2).sum(-1))
    for it in range(iters):
        sums = torch.zeros(k, d)
        counts = torch.zeros(k)
        far_d = torch.empty(0)
        far_x = torch.empty(0, d)
        inertia = 0.0
        for s in range(0, n, batch):
            xb = x[s : s + batch]
            dist = (cent * cent).sum(-1)[None] - 2.0 * xb @ cent.T
            dmin, a = dist.min(-1)
            sums.index_add_(0, a, xb)
            counts.index_add_(0, a, torch.ones(len(a)))
            true_d = dmin + (xb * xb).sum(-1)
            inertia += float(true_d.sum())
            top = torch.topk(true_d, min(k, len(true_d))).indices
            far_d, far_x = torch.cat([far_d, true_d[top]]), torch.cat([far_x, xb[top]])
        empty = torch.nonzero(counts == 0).flatten()
        cent = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], cent)
        if len(empty):
            order = torch.argsort(far_d, descending=True)[: len(empty)]
            cent[empty[: len(order)]] = far_x[order]
        if progress is not None:
            progress(it, inertia / n)
    return cent


def frame_dbfs(audio: np.ndarray) -> np.ndarray:
    """RMS level of each whole 40 ms frame of 16 kHz audio, in dB full scale."""
    t = len(audio) // UNIT_SAMPLES
    frames = np.asarray(audio[: t * UNIT_SAMPLES], dtype=np.float64).reshape(t, UNIT_SAMPLES)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


# ---------------------------------------------------------------------------------------------
# Feature backends
# ---------------------------------------------------------------------------------------------
@dataclass
class _NoState(StreamingState):
    def reset(self, mask: torch.Tensor) -> None:
        pass


class UnitFeatures(StreamingModule[Any]):
    """A backend: (B, S) 16 kHz audio -> (B, S / 640, D) features at 25 Hz.

    ``forward`` is the offline pass; ``step`` the streaming pass inside ``with m.streaming(B):``.
    Both take whole blocks of ``block_samples`` samples.
    """

    dim: int
    block_samples: int
    backend: str

    def describe(self) -> dict[str, Any]:
        """Metadata stored in a codebook fitted on these features (enough to rebuild them)."""
        raise NotImplementedError


class WhisperUnitFeatures(UnitFeatures):
    """Frozen Whisper tiny.en through the project's block-causal streaming encoder, layer ``layer``."""

    backend = "whisper"

    def __init__(self, encoder: nn.Module, layer: int, encoder_settings: dict[str, Any]) -> None:
        super().__init__()
        if not 1 <= layer <= len(encoder.layers):
            raise UnitError(f"whisper layer must be 1..{len(encoder.layers)}, got {layer}")
        # Drop the layers above the one we read: no compute and no streaming state for them.
        encoder.layers = encoder.layers[:layer]
        encoder.requires_grad_(False)
        encoder.eval()
        self.encoder = encoder
        self.layer = layer
        self.encoder_settings = dict(encoder_settings)
        self.dim = int(encoder.dim)
        self.block_samples = int(encoder.chunk_samples)
        if self.block_samples % UNIT_SAMPLES:
            raise UnitError(f"encoder chunk of {self.block_samples} samples is not a whole number of 40 ms units")

    @classmethod
    def build(cls, layer: int = 4, card: str = "whisper-tiny-en", **settings: Any) -> WhisperUnitFeatures:
        """From the Whisper card with the encoder settings (chunk_ms, left_chunks, ...) given."""
        from transformers.utils import logging as hf_logging

        from agent.encoder import build_encoder
        from configs.schema import EncoderConfig

        hf_logging.disable_progress_bar()
        cfg = EncoderConfig(init_card=card, dropout=0.0, **settings)
        encoder = build_encoder(cfg, init_pretrained=True)
        described = {k: v for k, v in vars(cfg).items() if k != "dropout"}
        return cls(encoder, layer, described)

    def train(self, mode: bool = True) -> WhisperUnitFeatures:
        super().train(mode)
        self.encoder.eval()  # frozen, always
        return self

    def _init_streaming_state(self, batch_size: int) -> _NoState:
        return _NoState(batch_size=batch_size)

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.reshape(b, t // 2, 2, d).mean(2)

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        from agent.encoder import block_causal_mask

        enc = self.encoder
        x = enc.stem(enc.mel(audio))
        mask = block_causal_mask(x.shape[1], enc.block, enc.cfg.left_chunks)
        for layer in enc.layers:
            x = layer(x, mask)
        return self._pool(x)

    @torch.no_grad()
    def step(self, audio: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        x = enc.stem.step(enc.mel.step(audio))
        for layer in enc.layers:
            x = layer.step(x)
        return self._pool(x)

    def describe(self) -> dict[str, Any]:
        return {"backend": "whisper", "layer": self.layer, "encoder": self.encoder_settings}


@dataclass
class HubertWindowState(StreamingState):
    history: torch.Tensor
    """(B, W) the last W input samples (zeros before the stream starts)."""
    seen: torch.Tensor
    """(B,) samples consumed since the last reset."""

    def reset(self, mask: torch.Tensor) -> None:
        self.history[mask] = 0.0
        self.seen[mask] = 0


class HubertUnitFeatures(UnitFeatures):
    """A transformers ``HubertModel`` layer, streamed with a sliding window of past audio.

    Frames are framed causally (the conv front end's receptive field ends where the frame's hop
    ends: the stream is left-padded by ``receptive - stride`` zeros), so no lookahead is needed.
    Each block's frames come from one model pass over the window that ends with the block.
    """

    backend = "hubert"

    def __init__(self, model: nn.Module, layer: int, window_s: float = 2.0, block_ms: int = 160,
                 source: str = "") -> None:
        super().__init__()
        cfg = model.config
        if not 0 <= layer <= cfg.num_hidden_layers:
            raise UnitError(f"hubert layer must be 0..{cfg.num_hidden_layers}, got {layer}")
        self.stride = int(np.prod(cfg.conv_stride))
        if (UNIT_SAMPLES % self.stride) != 0:
            raise UnitError(f"HuBERT frame hop {self.stride} samples does not divide 40 ms (640 samples)")
        rf = 1
        for k, s in zip(reversed(cfg.conv_kernel), reversed(cfg.conv_stride), strict=True):
            rf = (rf - 1) * s + k
        self.receptive = rf
        self.pad = max(0, rf - self.stride)
        self.pool = UNIT_SAMPLES // self.stride
        model.requires_grad_(False)
        model.eval()
        self.model = model
        self.layer = layer
        self.source = source
        self.block_samples = int(block_ms) * SAMPLE_RATE // 1000
        if self.block_samples % UNIT_SAMPLES or self.block_samples <= 0:
            raise UnitError(f"block_ms must be a positive multiple of 40 ms, got {block_ms}")
        blocks = max(1, math.ceil(window_s * SAMPLE_RATE / self.block_samples))
        self.window_samples = blocks * self.block_samples
        self.window_s = window_s
        self.block_ms = block_ms
        self.dim = int(cfg.hidden_size)

    @classmethod
    def build(cls, model: str, layer: int, window_s: float = 2.0, block_ms: int = 160) -> HubertUnitFeatures:
        """``model``: a local transformers directory or ``hub:org/name``."""
        from transformers import HubertModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        where = model[len("hub:"):] if model.startswith("hub:") else model
        try:
            net = HubertModel.from_pretrained(where)
        except OSError as exc:
            raise UnitError(f"cannot load HubertModel from {model!r}: {str(exc).splitlines()[0]}") from exc
        return cls(net, layer, window_s, block_ms, source=model)

    def train(self, mode: bool = True) -> HubertUnitFeatures:
        super().train(mode)
        self.model.eval()
        return self

    def _init_streaming_state(self, batch_size: int) -> HubertWindowState:
        return HubertWindowState(
            batch_size=batch_size,
            history=torch.zeros(batch_size, self.window_samples + self.pad),
            seen=torch.zeros(batch_size, dtype=torch.long),
        )

    def _window_features(self, window: torch.Tensor, valid: int) -> torch.Tensor:
        """window (B, pad + W) whose last ``valid`` samples are real -> (B, block/640, D) of the last block."""
        # Only the real part (plus the causal pad) is fed, so a window near the stream start
        # is shorter, exactly as the offline pass computes it.
        x = window[:, -(valid + self.pad):]
        out = self.model(x, output_hidden_states=True)
        h = out.hidden_states[self.layer]  # (B, frames, D)
        n = self.block_samples // self.stride
        h = h[:, -n:]
        b, t, d = h.shape
        return h.reshape(b, t // self.pool, self.pool, d).mean(2)

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        b, s = audio.shape
        if s % self.block_samples:
            raise UnitError(f"offline input must be whole blocks of {self.block_samples} samples")
        padded = torch.cat([audio.new_zeros(b, self.pad), audio], dim=1)
        outs = []
        for end in range(self.block_samples, s + 1, self.block_samples):
            valid = min(end, self.window_samples)
            outs.append(self._window_features(padded[:, : end + self.pad], valid))
        return torch.cat(outs, dim=1)

    @torch.no_grad()
    def step(self, audio: torch.Tensor) -> torch.Tensor:
        st = self.streaming_state
        b, s = audio.shape
        if s % self.block_samples:
            raise UnitError(f"streaming input must be whole blocks of {self.block_samples} samples")
        outs = []
        for i in range(0, s, self.block_samples):
            block = audio[:, i : i + self.block_samples]
            st.history = torch.cat([st.history[:, self.block_samples:], block], dim=1)
            st.seen += self.block_samples
            seen = int(st.seen.min())
            if int(st.seen.max()) != seen:
                raise UnitError("hubert streaming rows must advance together (reset rows only between streams)")
            outs.append(self._window_features(st.history, min(seen, self.window_samples)))
        return torch.cat(outs, dim=1)

    def describe(self) -> dict[str, Any]:
        return {"backend": "hubert", "layer": self.layer, "model": self.source,
                "window_s": self.window_s, "block_ms": self.block_ms}


def build_features(meta: dict[str, Any]) -> UnitFeatures:
    """Rebuild the backend described by a codebook's metadata."""
    backend = meta.get("backend")
    if backend == "whisper":
        enc = dict(meta.get("encoder", {}))
        card = enc.pop("init_card", "whisper-tiny-en")
        return WhisperUnitFeatures.build(layer=int(meta["layer"]), card=card, **enc)
    if backend == "hubert":
        if not meta.get("model"):
            raise UnitError("hubert codebook does not say which model it was fitted on (metadata 'model')")
        return HubertUnitFeatures.build(str(meta["model"]), int(meta["layer"]), float(meta.get("window_s", 2.0)),
                                        int(meta.get("block_ms", 160)))
    raise UnitError(f"unknown unit backend {backend!r}; expected whisper or hubert")


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------
@dataclass
class TokenizerState(StreamingState):
    buffer: torch.Tensor
    """(B, block) samples received but not yet a whole block."""
    fill: int = 0
    """Samples in ``buffer`` (all rows receive the same amount)."""

    def reset(self, mask: torch.Tensor) -> None:
        self.buffer[mask] = 0.0
        if bool(mask.all()):
            self.fill = 0


class UnitTokenizer(StreamingModule[TokenizerState]):
    """Audio -> 25 Hz unit ids. Offline: ``extract`` / ``forward``; streaming: ``push`` inside
    ``with tok.streaming(B):`` (any number of samples per call; units come out per whole block)."""

    def __init__(self, features: UnitFeatures, codebook: KMeansCodebook) -> None:
        super().__init__()
        if features.dim != codebook.dim:
            raise UnitError(f"codebook is {codebook.dim}-d but the {features.backend} features are {features.dim}-d")
        self.features = features
        self.codebook = codebook

    @property
    def num_units(self) -> int:
        return self.codebook.num_units

    @property
    def block_samples(self) -> int:
        return self.features.block_samples

    def silent_units(self) -> set[int]:
        return self.codebook.silent_units()

    def _init_streaming_state(self, batch_size: int) -> TokenizerState:
        return TokenizerState(batch_size=batch_size, buffer=torch.zeros(batch_size, self.block_samples))

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, S) 16 kHz, S a multiple of ``block_samples`` -> (B, S / 640) unit ids."""
        return self.codebook(self.features(audio))

    @torch.no_grad()
    def features_of(self, audio: np.ndarray, rate: int = SAMPLE_RATE) -> torch.Tensor:
        """Offline (T, D) features of one signal (T = ceil(len / 640) at 16 kHz)."""
        x = _prepare(audio, rate)
        t = math.ceil(len(x) / UNIT_SAMPLES)
        padded = _pad_blocks(torch.from_numpy(x)[None], self.block_samples)
        return self.features(padded)[0, :t]

    def extract(self, audio: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
        """Units of one signal, (ceil(seconds * 25),) int64; the tail is padded with silence."""
        return self.codebook(self.features_of(audio, rate)).numpy().astype(np.int64)

    @torch.no_grad()
    def push(self, audio: torch.Tensor) -> torch.Tensor:
        """Streaming: (B, S) new samples (any S) -> (B, n) units of the blocks they completed."""
        st = self.streaming_state
        if audio.dim() == 1:
            audio = audio[None]
        out = []
        pos = 0
        s = audio.shape[1]
        while pos < s:
            take = min(self.block_samples - st.fill, s - pos)
            st.buffer[:, st.fill : st.fill + take] = audio[:, pos : pos + take]
            st.fill += take
            pos += take
            if st.fill == self.block_samples:
                out.append(self.codebook(self.features.step(st.buffer.clone())))
                st.fill = 0
        if not out:
            return torch.zeros(audio.shape[0], 0, dtype=torch.long)
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def flush(self) -> torch.Tensor:
        """Pad the buffered partial block with silence and return its units (empty if none)."""
        st = self.streaming_state
        if st.fill == 0:
            return torch.zeros(st.batch_size, 0, dtype=torch.long)
        n = math.ceil(st.fill / UNIT_SAMPLES)
        return self.push(torch.zeros(st.batch_size, self.block_samples - st.fill))[:, :n]


def _prepare(audio: np.ndarray, rate: int) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise UnitError(f"expected mono audio (T,), got shape {x.shape}")
    if rate != SAMPLE_RATE:
        from speech_io.wav import resample

        x = resample(x, rate, SAMPLE_RATE).astype(np.float32)
    return x


def _pad_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    s = x.shape[-1]
    target = max(block, math.ceil(s / block) * block)
    return F.pad(x, (0, target - s))


def codebook_path(spec: str) -> Path:
    """A card name, card YAML or a ``.safetensors`` path -> the codebook file."""
    from agent.assets import load_card, source_path

    if spec.endswith(".safetensors"):
        return Path(spec).expanduser()
    card = load_card(spec, family="unit-codebook", role="speech-units")
    return source_path(card)


def probe_signal() -> np.ndarray:
    """A fixed 2 s test signal (a gliding harmonic tone with pauses): its units fingerprint a backend."""
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    f0 = 110 + 90 * t
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 6)) * (np.sin(2 * np.pi * 2.5 * t) > -0.2)
    return (0.2 * tone).astype(np.float32)


def probe_units(features: UnitFeatures, codebook: KMeansCodebook) -> list[int]:
    return UnitTokenizer(features, codebook).extract(probe_signal()).tolist()


def load_unit_tokenizer(cfg: UnitsConfig, check: bool = True) -> UnitTokenizer:
    """Factory: ``cfg.card`` -> codebook -> the backend it was fitted on -> a tokenizer (eval).

    The codebook stores the units of ``probe_signal()`` from when it was fitted; they are
    recomputed here, so a change of the backend's code (which would silently change every unit
    the decoder and generator were trained on) is an error instead.
    """
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    codebook = KMeansCodebook.load(codebook_path(cfg.card))
    tok = UnitTokenizer(build_features(codebook.meta), codebook)
    tok.eval()
    want = codebook.meta.get("probe_units")
    if check and want is not None:
        got = tok.extract(probe_signal()).tolist()
        same = float(np.mean([a == b for a, b in zip(got, want, strict=False)])) if len(got) == len(want) else 0.0
        if same < 0.9:
            raise UnitError(
                f"unit codebook {cfg.card}: the {codebook.meta.get('backend')} features changed since it was fitted "
                f"(probe units agree {same:.0%}); refit it with `duplex-agent units fit` or restore the encoder code"
            )
    return tok


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------
def fit_codebook(
    features: UnitFeatures,
    signals: Iterable[np.ndarray],
    num_units: int = 500,
    iters: int = 30,
    seed: int = 0,
    max_frames: int = 300_000,
    description: str = "",
    progress: bool = True,
) -> KMeansCodebook:
    """Fit a ``num_units`` k-means codebook on the features of 16 kHz ``signals``.

    Frames are subsampled uniformly to at most ``max_frames``; every frame's silence flag
    (RMS < SILENCE_DBFS) is kept to record how silent each unit is.
    """
    from tqdm import tqdm

    feats, silent = [], []
    total = 0
    for audio in tqdm(signals, desc="features", unit="utt", disable=not progress):
        x = _prepare(audio, SAMPLE_RATE)
        t = math.ceil(len(x) / UNIT_SAMPLES)
        f = features(_pad_blocks(torch.from_numpy(x)[None], features.block_samples))[0, :t]
        db = frame_dbfs(np.pad(x, (0, t * UNIT_SAMPLES - len(x))))
        feats.append(f.float())
        silent.append(torch.from_numpy(db < SILENCE_DBFS))
        total += t
    if not feats:
        raise UnitError("no audio to fit the codebook on")
    x = torch.cat(feats)
    sil = torch.cat(silent)
    if len(x) > max_frames:
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:max_frames]
        x, sil = x[idx], sil[idx]
    mean, std = x.mean(0), x.std(0).clamp_min(1e-5)
    z = (x - mean) / std
    bar = tqdm(total=iters, desc="k-means", disable=not progress)

    def _tick(it: int, inertia: float) -> None:
        bar.set_postfix(inertia=f"{inertia:.2f}")
        bar.update(1)

    cent = kmeans(z, num_units, iters=iters, seed=seed, progress=_tick)
    bar.close()
    meta = dict(features.describe())
    meta.update({"num_units": num_units, "frame_rate": 25, "fitted_frames": len(x), "description": description})
    book = KMeansCodebook(cent, mean, std, meta=meta)
    assign = book(x)
    counts = torch.bincount(assign, minlength=num_units).float()
    sil_counts = torch.bincount(assign[sil], minlength=num_units).float()
    book.silence.copy_(torch.where(counts > 0, sil_counts / counts.clamp_min(1), torch.zeros_like(counts)))
    book.meta["probe_units"] = probe_units(features, book)
    return book
