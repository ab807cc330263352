"""Held-out spoken material for ``bench duplex`` (synthetic; cached).

Held out exactly as the data issue holds out its test split (``training/data``): texts whose
stable hash puts them in the ``test`` split (questions, pause sentences, lines for barge-ins) and
the held-out user voices (espeak-ng / Piper variants never used in training). Rendered once with
the data issue's own ``VoiceBank`` (word times included) and cached under
``~/.cache/duplex-agent/bench-duplex/``. When the project dataset's test manifest exists
(``data_dir/manifests/qa.jsonl``), its held-out spoken questions are used instead.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 16000


@dataclass
class Utterance:
    text: str
    audio: np.ndarray
    """(T,) float32 at 16 kHz."""
    words: list[tuple[str, float, float]]
    voice: str

    @property
    def start(self) -> float:
        return self.words[0][1] if self.words else 0.0

    @property
    def end(self) -> float:
        return self.words[-1][2] if self.words else len(self.audio) / RATE


@dataclass
class PauseUtterance(Utterance):
    pause_start: float = 0.0
    """End of the last word before the inserted pause (s)."""
    resume: float = 0.0
    """Start of the first word after it (s)."""


def _cache_dir() -> Path:
    d = Path("~/.cache/duplex-agent/bench-duplex").expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


class Renderer:
    def __init__(self, cfg) -> None:
        from training.data.voices import VoiceBank, heldout_user_voices

        self.bank = VoiceBank(cfg.voice)
        self.voices = heldout_user_voices()

    def render(self, text: str, index: int) -> Utterance:
        voice = self.voices[index % len(self.voices)]
        key = hashlib.sha1(f"{voice.id}|{text}|{index}".encode()).hexdigest()[:16]
        npz, meta = _cache_dir() / f"{key}.npz", _cache_dir() / f"{key}.json"
        if npz.exists() and meta.exists():
            info = json.loads(meta.read_text())
            return Utterance(text, np.load(npz)["audio"], [tuple(w) for w in info["words"]], info["voice"])
        from speech_io.wav import resample

        r = self.bank.render(voice, text, seed=index)
        audio = resample(r.audio, r.sample_rate, RATE).astype(np.float32)
        peak = float(np.max(np.abs(audio))) or 1.0
        audio = (audio * min(1.0, 0.7 / peak)).astype(np.float32)
        words = [(w.word, float(w.start), float(w.end)) for w in r.words]
        tmp = npz.with_suffix(".tmp.npz")
        np.savez(tmp, audio=audio)
        tmp.replace(npz)
        meta.write_text(json.dumps({"voice": voice.id, "text": text, "words": words}))
        return Utterance(text, audio, words, voice.id)


def with_pause(u: Utterance, cut: int, pause_s: float) -> PauseUtterance:
    """The utterance with ``pause_s`` of silence inserted after word ``cut`` (1-based count)."""
    end_prev = u.words[cut - 1][2]
    start_next = u.words[cut][1]
    at = int(round(0.5 * (end_prev + start_next) * RATE))
    gap = np.zeros(int(round(pause_s * RATE)), np.float32)
    audio = np.concatenate([u.audio[:at], gap, u.audio[at:]])
    shift = len(gap) / RATE
    words = [w if i < cut else (w[0], w[1] + shift, w[2] + shift) for i, w in enumerate(u.words)]
    return PauseUtterance(u.text, audio, words, u.voice, pause_start=end_prev, resume=start_next + shift)


@dataclass
class Material:
    questions: list[Utterance]
    pauses: list[PauseUtterance]
    bargeins: list[Utterance]
    backchannels: list[Utterance]
    source: str


def heldout_material(cfg, n: int, seed: int = 0) -> Material:
    """``n`` of each: questions, questions with a mid-turn pause (0.5-1.0 s), barge-ins, backchannels."""
    from training.data.synth import text_pools
    from training.data.text_sources import BACKCHANNELS, BARGEIN_OPENERS

    rng = np.random.default_rng(seed)
    pools = text_pools(cfg)
    renderer = Renderer(cfg)
    source = "synthetic held-out (test-split text, held-out voices)"
    questions = _manifest_questions(cfg, n)
    if questions:
        source = f"{cfg.units_train.data_dir} qa test split"
    else:
        qs = [t for _, t, cut in pools.prompts["test"] if cut is None]
        questions = [renderer.render(t, i) for i, t in enumerate(qs[:n])]
    pause_prompts = [(t, cut) for _, t, cut in pools.prompts["test"] if cut is not None]
    pauses = []
    for i, (t, cut) in enumerate(pause_prompts[:n]):
        u = renderer.render(t, 1000 + i)
        if len(u.words) > cut:
            pauses.append(with_pause(u, cut, float(rng.uniform(0.5, 1.0))))
    lines = [t for _, t in pools.lines["test"] if 3 <= len(t.split()) <= 12]
    bargeins = [renderer.render(f"{BARGEIN_OPENERS[i % len(BARGEIN_OPENERS)].capitalize()}, {lines[i % len(lines)]}",
                                2000 + i) for i in range(n)]
    backchannels = [renderer.render(BACKCHANNELS[i % len(BACKCHANNELS)][1].capitalize() + ".", 3000 + i)
                    for i in range(n)]
    return Material(questions, pauses, bargeins, backchannels, source)


def _manifest_questions(cfg, n: int) -> list[Utterance]:
    root = Path(cfg.units_train.data_dir)
    if not (root / "manifests" / "qa.jsonl").exists():
        return []
    from training.data import load_manifest

    out = []
    for item in load_manifest(root, "qa", "test"):
        if not item.heldout_voice:
            continue
        audio = item.load_question_audio(RATE)
        words = [(w.word, w.start, w.end) for w in item.question_words]
        out.append(Utterance(item.question, audio.astype(np.float32), words, item.voice))
        if len(out) >= n:
            break
    return out


def normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
