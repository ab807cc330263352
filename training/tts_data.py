"""Training data of the unit decoder: Piper renderings (audio + the exact latents that made it)
and their 25 Hz units, cached once on disk and sampled as short windows.

Synthetic data. Text: the English conversations of ``chatterbot-corpus`` (BSD-3-Clause), split
by a hash of the text (test = held-out text). Speech: the bundled Piper voice (`PiperVoice.render`,
seeded, so every item can be re-rendered bit for bit). Each sentence of a rendering is one item:
its audio and its latents (192, T) with T * 256 = len(audio).

Layout of a cache directory::

    renders/index.jsonl          one line per item: id, text, split, seed, frames
    renders/<id>.npz             audio (float16, 22.05 kHz), latents (float16, 192 x T)
    units/<tokenizer id>.npz     units per item id (int16), for each tokenizer used

Everything is written atomically and skipped when present, so the build is resumable.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from agent.tts import HOP, UNIT_SAMPLES, frames_before

SPLITS = ("train", "val", "test")


class UnitSource(Protocol):
    """What the cache needs of a unit tokenizer (`agent.units.UnitTokenizer` fits it)."""

    def extract(self, audio: np.ndarray, rate: int = 16000) -> np.ndarray: ...


@dataclass
class TTSText:
    id: str
    text: str
    split: str


def split_of(key: str, val: float = 0.04, test: float = 0.06) -> str:
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test else "val" if h < test + val else "train"


def corpus_texts() -> list[TTSText]:
    """Unique English lines of chatterbot-corpus conversations, with a stable split."""
    import glob

    import chatterbot_corpus
    import yaml

    folder = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    seen: dict[str, TTSText] = {}
    for path in sorted(glob.glob(str(folder / "*.yml"))):
        for conv in yaml.safe_load(Path(path).read_text()).get("conversations", []):
            for line in conv:
                if not isinstance(line, str):
                    continue
                text = " ".join(line.split())
                if not (2 <= len(text.split()) <= 40) or text in seen:
                    continue
                key = hashlib.sha256(text.encode()).hexdigest()[:10]
                seen[text] = TTSText(id=f"cb-{key}", text=text, split=split_of(text))
    return sorted(seen.values(), key=lambda t: t.id)


def _atomic_npz(path: Path, **arrays: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _append_line(path: Path, obj: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_index(cache: Path) -> list[dict]:
    path = Path(cache) / "renders" / "index.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def render_corpus(voice, texts: Iterable[TTSText], cache: str | Path, seeds: int = 1, progress: bool = True,
                  noise_scale: float | None = None) -> int:
    """Render every text with ``seeds`` seeds; one item per sentence. Returns items added."""
    from tqdm import tqdm

    folder = Path(cache) / "renders"
    folder.mkdir(parents=True, exist_ok=True)
    done = {(r["text_id"], r["seed"]) for r in read_index(Path(cache))}
    todo = [(t, s) for t in texts for s in range(seeds) if (t.id, s) not in done]
    added = 0
    for t, s in tqdm(todo, desc="render", unit="utt", disable=not progress):
        syn = voice.render(t.text, seed=s, noise_scale=noise_scale)
        items = []
        for k, sent in enumerate(syn.sentences):
            frames = sent.latents.shape[1]
            audio = syn.audio[sent.offset : sent.offset + frames * HOP]
            item_id = f"{t.id}-s{s}-{k}"
            _atomic_npz(folder / f"{item_id}.npz", audio=audio.astype(np.float16), latents=sent.latents.astype(np.float16))
            items.append({"id": item_id, "text_id": t.id, "text": sent.text, "split": t.split, "seed": s, "frames": frames,
                          "noise_scale": noise_scale})
        for it in items:  # index lines last: an item is listed only once its file exists
            _append_line(folder / "index.jsonl", it)
        if not items:
            _append_line(folder / "index.jsonl", {"id": "", "text_id": t.id, "seed": s, "text": t.text, "split": t.split, "frames": 0})
        added += len(items)
    return added


def units_path(cache: str | Path, identity: str) -> Path:
    return Path(cache) / "units" / f"{identity}.npz"


def extract_units(tokenizer: UnitSource, identity: str, cache: str | Path, progress: bool = True) -> Path:
    """Units of every cached item (resumable: partial results are checkpointed every 200 items)."""
    from tqdm import tqdm

    from agent.tts import SAMPLE_RATE

    path = units_path(cache, identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    have: dict[str, np.ndarray] = dict(np.load(path)) if path.is_file() else {}
    todo = [r for r in read_index(Path(cache)) if r["id"] and r["id"] not in have]
    for i, r in enumerate(tqdm(todo, desc="units", unit="item", disable=not progress)):
        audio = np.load(Path(cache) / "renders" / f"{r['id']}.npz")["audio"].astype(np.float32)
        have[r["id"]] = tokenizer.extract(audio, SAMPLE_RATE).astype(np.int16)
        if (i + 1) % 200 == 0:
            _atomic_npz(path, **have)
    _atomic_npz(path, **have)
    return path


@dataclass
class Item:
    id: str
    text: str
    split: str
    units: np.ndarray
    """(n,) int64 units."""
    latents: np.ndarray
    """(192, T) float32 Piper latents."""
    audio: np.ndarray
    """(T * 256,) float32 audio."""


def load_items(cache: str | Path, identity: str, splits: tuple[str, ...] = SPLITS, limit: int | None = None) -> list[Item]:
    units = np.load(units_path(cache, identity))
    out = []
    for r in read_index(Path(cache)):
        if not r["id"] or r["split"] not in splits or r["id"] not in units:
            continue
        z = np.load(Path(cache) / "renders" / f"{r['id']}.npz")
        out.append(Item(id=r["id"], text=r["text"], split=r["split"], units=units[r["id"]].astype(np.int64),
                        latents=z["latents"].astype(np.float32), audio=z["audio"].astype(np.float32)))
        if limit is not None and len(out) >= limit:
            break
    return out


@dataclass
class Batch:
    units: torch.Tensor
    """(B, W) unit ids of the windows."""
    lengths: torch.Tensor
    """(B,) units per window."""
    offset: torch.Tensor
    """(B,) samples before each window's first unit (frame grid of the whole utterance)."""
    latents: torch.Tensor
    """(B, 192, F) target latents of the window's frames (zeros where the item has none)."""
    frame_mask: torch.Tensor
    """(B, F) True where a target frame exists."""
    audio: torch.Tensor
    """(B, F * 256) target audio of those frames."""


def sample_windows(items: list[Item], batch: int, window: int, rng: np.random.Generator) -> Batch:
    """Random windows of ``window`` units (whole items when shorter) and their neutral targets."""
    picks = [items[i] for i in rng.integers(0, len(items), size=batch)]
    rows = []
    for it in picks:
        n = len(it.units)
        u0 = int(rng.integers(0, n - window + 1)) if n > window else 0
        u1 = min(n, u0 + window)
        j0 = int(frames_before(torch.tensor(u0 * UNIT_SAMPLES)))
        j1 = int(frames_before(torch.tensor(u1 * UNIT_SAMPLES)))
        rows.append((it, u0, u1, j0, j1))
    w = max(r[2] - r[1] for r in rows)
    f = max(r[4] - r[3] for r in rows)
    units = torch.full((batch, w), 0, dtype=torch.long)
    lat = torch.zeros(batch, rows[0][0].latents.shape[0], f)
    fmask = torch.zeros(batch, f, dtype=torch.bool)
    audio = torch.zeros(batch, f * HOP)
    lengths, offset = torch.zeros(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.long)
    for b, (it, u0, u1, j0, j1) in enumerate(rows):
        units[b, : u1 - u0] = torch.from_numpy(it.units[u0:u1])
        lengths[b], offset[b] = u1 - u0, u0 * UNIT_SAMPLES
        t = it.latents.shape[1]
        k = max(0, min(j1, t) - j0)  # the last unit is padded (ceil): it may have no target frames
        lat[b, :, :k] = torch.from_numpy(it.latents[:, j0 : j0 + k])
        fmask[b, :k] = True
        audio[b, : k * HOP] = torch.from_numpy(it.audio[j0 * HOP : (j0 + k) * HOP])
    return Batch(units=units, lengths=lengths, offset=offset, latents=lat, frame_mask=fmask, audio=audio)


# ---------------------------------------------------------------------------------------------
# Emotional targets
# ---------------------------------------------------------------------------------------------
# The plugins learn to turn the units of a NEUTRAL rendering into emotional speech of the same
# text. Targets are made by the data issue's analysis-resynthesis recipe
# (training/data/emotion.py: F0 level/range, energy, rate, spectral tilt via WORLD, each item's
# setting jittered around the emotion's centre) applied to our cached Piper renderings, so each
# neutral item has its emotional twins, time-aligned up to a uniform rate factor. Synthetic,
# acted-by-signal-processing emotions: not real emotional speech.

EMOTION_NAMES = ("neutral", "happy", "sad", "angry", "surprised")


def emotions_dir(cache: str | Path) -> Path:
    return Path(cache) / "emotions"


def build_emotion_pairs(cache: str | Path, splits: dict[str, int], seed: int = 0, progress: bool = True) -> int:
    """Resynthesise ``splits[name]`` items of each split in all five emotions (resumable)."""
    from tqdm import tqdm

    from agent.tts import SAMPLE_RATE
    from training.data.emotion import emotion_prosody, render_emotions

    folder = emotions_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    # seed-0 renderings only: more seeds in the cache must not change which items are picked
    rows = [r for r in read_index(Path(cache)) if r["id"] and r.get("seed", 0) == 0]
    todo = []
    for split, count in splits.items():
        pool = sorted((r for r in rows if r["split"] == split), key=lambda r: r["id"])
        rng = np.random.default_rng(seed)
        pick = [pool[i] for i in sorted(rng.choice(len(pool), size=min(count, len(pool)), replace=False))]
        todo += [r for r in pick if not (folder / f"{r['id']}.npz").is_file()]
    for r in tqdm(todo, desc="emotion targets", unit="item", disable=not progress):
        audio = np.load(Path(cache) / "renders" / f"{r['id']}.npz")["audio"].astype(np.float32)
        rng = np.random.default_rng(int(hashlib.sha256(r["id"].encode()).hexdigest()[:8], 16) + seed)
        prosody = {e: emotion_prosody(e, rng) for e in EMOTION_NAMES}
        outs = render_emotions(audio, SAMPLE_RATE, prosody)
        arrays = {e: outs[e].astype(np.float16) for e in EMOTION_NAMES}
        arrays["params"] = np.frombuffer(json.dumps({e: p.as_dict() for e, p in prosody.items()}).encode(), dtype=np.uint8)
        _atomic_npz(folder / f"{r['id']}.npz", **arrays)
    return len(todo)


@dataclass
class EmotionItem:
    id: str
    text: str
    split: str
    units: np.ndarray
    """(n,) units of the NEUTRAL Piper rendering (what the decoder is given)."""
    audio: dict[str, np.ndarray]
    """emotion -> resynthesised audio (22.05 kHz)."""
    rate: dict[str, float]
    """emotion -> speaking-rate factor of its resynthesis (>1 faster)."""


def load_emotion_items(cache: str | Path, identity: str, splits: tuple[str, ...] = SPLITS) -> list[EmotionItem]:
    units = np.load(units_path(cache, identity))
    out = []
    for r in read_index(Path(cache)):
        path = emotions_dir(cache) / f"{r['id']}.npz"
        if not r["id"] or r["split"] not in splits or not path.is_file() or r["id"] not in units:
            continue
        z = np.load(path)
        params = json.loads(z["params"].tobytes().decode())
        out.append(EmotionItem(id=r["id"], text=r["text"], split=r["split"], units=units[r["id"]].astype(np.int64),
                               audio={e: z[e].astype(np.float32) for e in EMOTION_NAMES},
                               rate={e: float(params[e]["rate"]) for e in EMOTION_NAMES}))
    return out


@dataclass
class EmotionBatch:
    units: torch.Tensor
    """(B, W) neutral units."""
    lengths: torch.Tensor
    """(B,) units per window."""
    durations: torch.Tensor
    """(B, W) output samples per unit in the emotional target (882 / rate)."""
    offset: torch.Tensor
    """(B,) samples before the window in the emotional target."""
    log_scale: torch.Tensor
    """(B,) target log time-scale of the duration head (-log rate)."""
    audio: torch.Tensor
    """(B, F * 256) emotional target audio of the window's frames."""
    frames: torch.Tensor
    """(B,) frames per window."""


def sample_emotion_windows(items: list[EmotionItem], emotion: str, batch: int, window: int,
                           rng: np.random.Generator) -> EmotionBatch:
    """Windows of neutral units with the matching stretch of the ``emotion`` resynthesis."""
    picks = [items[i] for i in rng.integers(0, len(items), size=batch)]
    rows = []
    for it in picks:
        n = len(it.units)
        u0 = int(rng.integers(0, n - window + 1)) if n > window else 0
        u1 = min(n, u0 + window)
        d = int(round(UNIT_SAMPLES / it.rate[emotion]))
        j0 = int(frames_before(torch.tensor(u0 * d)))
        j1 = int(frames_before(torch.tensor(u1 * d)))
        j1 = min(j1, len(it.audio[emotion]) // HOP)
        rows.append((it, u0, u1, d, j0, j1))
    w = max(r[2] - r[1] for r in rows)
    f = max(r[5] - r[4] for r in rows)
    out = EmotionBatch(units=torch.zeros(batch, w, dtype=torch.long), lengths=torch.zeros(batch, dtype=torch.long),
                       durations=torch.full((batch, w), UNIT_SAMPLES), offset=torch.zeros(batch, dtype=torch.long),
                       log_scale=torch.zeros(batch), audio=torch.zeros(batch, f * HOP),
                       frames=torch.zeros(batch, dtype=torch.long))
    for b, (it, u0, u1, d, j0, j1) in enumerate(rows):
        out.units[b, : u1 - u0] = torch.from_numpy(it.units[u0:u1])
        out.lengths[b], out.offset[b] = u1 - u0, u0 * d
        out.durations[b] = d
        out.log_scale[b] = -float(np.log(it.rate[emotion]))
        k = max(0, j1 - j0)
        out.audio[b, : k * HOP] = torch.from_numpy(it.audio[emotion][j0 * HOP : (j0 + k) * HOP])
        out.frames[b] = k
    return out


# ---------------------------------------------------------------------------------------------
# Frame-level phoneme labels (auxiliary target of the decoder)
# ---------------------------------------------------------------------------------------------
def phonemes_dir(cache: str | Path) -> Path:
    return Path(cache) / "phonemes"


def extract_phoneme_labels(cfg_voice, cache: str | Path, progress: bool = True) -> int:
    """The Piper phoneme id of every latent frame of every cached item (resumable).

    Re-runs only the voice's text encoder and duration predictor with the rendering's own noise
    (same seed recipe as `PiperVoice.render`), so the durations are the ones that made the audio;
    checked against the cached frame count.
    """
    from tqdm import tqdm

    from agent.piper import draw_noise, sentence_seed
    from agent.piper_torch import TorchPiperVoice

    voice = TorchPiperVoice.load(cfg_voice)
    folder = phonemes_dir(cache)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [r for r in read_index(Path(cache)) if r["id"] and not (folder / f"{r['id']}.npy").is_file()]
    by_text: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        by_text.setdefault((r["text_id"], r["seed"]), []).append(r)
    texts = {t.id: t.text for t in corpus_texts()}
    done = 0
    for (text_id, seed), items in tqdm(by_text.items(), desc="phoneme labels", disable=not progress):
        sentences = voice.sentence_inputs(texts[text_id])
        for k, sent in enumerate(sentences):
            r = next((x for x in items if x["id"].endswith(f"-s{seed}-{k}")), None)
            if r is None:
                continue
            rng = sentence_seed(seed, k)
            noise_scale, length_scale, noise_w = voice.scales(None, r.get("noise_scale"), None)
            noise_dp, _ = draw_noise(rng, len(sent.ids), voice.max_frames(len(sent.ids), length_scale))
            ids = torch.tensor([sent.ids])
            with torch.no_grad():
                x, _, _, x_mask = voice.model.enc_p(ids, torch.tensor([len(sent.ids)]))
                logw = voice.model.dp(x, x_mask, torch.from_numpy(noise_dp)[:, :, : x.shape[2]] * noise_w)
                dur = torch.ceil(torch.exp(logw) * x_mask * length_scale)[0, 0].long()
            labels = torch.repeat_interleave(ids[0], dur).numpy().astype(np.int16)
            if len(labels) != r["frames"]:
                continue  # a ceil() that rounded differently from onnxruntime: skip the item
            np.save(folder / f"{r['id']}.npy", labels)
            done += 1
    return done
