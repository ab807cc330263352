"""The reference voice: a Piper VITS ONNX model run with onnxruntime.

It is the agent's teacher voice (synthetic data) and the neutral target of our unit decoder.
Phonemes come from the espeak-ng program (agent.phonemize); ids follow Piper's convention:
BOS, then every phoneme followed by the pad id, then EOS.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.assets import check_source, load_card, source_path
from agent.phonemize import EspeakPhonemizer
from configs.schema import VoiceConfig

PAD, BOS, EOS = "_", "^", "$"


@dataclass
class VoiceTiming:
    first_audio_s: float
    """Seconds from the call to the first sentence's audio."""
    total_s: float
    """Seconds for the whole text."""
    audio_s: float
    """Seconds of audio produced."""


class PiperVoice:
    """Text -> 22.05 kHz float32 mono audio in [-1, 1]."""

    def __init__(self, model_path: Path, config_path: Path, cfg: VoiceConfig, num_threads: int = 1) -> None:
        import onnxruntime as ort

        self.cfg = cfg
        meta = json.loads(Path(config_path).read_text())
        self.sample_rate = int(meta["audio"]["sample_rate"])
        self.id_map: dict[str, int] = {k: int(v[0]) for k, v in meta["phoneme_id_map"].items()}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.phonemizer = EspeakPhonemizer(cfg.espeak_voice or meta.get("espeak", {}).get("voice", "en-us"))

    @classmethod
    def load(cls, cfg: VoiceConfig, num_threads: int = 1, verify: bool = False) -> PiperVoice:
        card = load_card(cfg.card, family="piper-vits", role="voice")
        model_path = check_source(card) if verify else source_path(card)
        from agent.assets.cards import package_file

        config_path = package_file(card, card.source["extra_files"]["config"])
        return cls(model_path, config_path, cfg, num_threads=num_threads)

    def phoneme_ids(self, phonemes: str) -> list[int]:
        ids = [self.id_map[BOS], self.id_map[PAD]]
        for ch in unicodedata.normalize("NFD", phonemes):
            if ch in self.id_map:  # Piper skips symbols its voice never saw
                ids += [self.id_map[ch], self.id_map[PAD]]
        ids.append(self.id_map[EOS])
        return ids

    def synthesize_ids(
        self, ids: list[int], length_scale: float | None = None, noise_scale: float | None = None,
        noise_w: float | None = None,
    ) -> np.ndarray:
        scales = np.array(
            [
                self.cfg.noise_scale if noise_scale is None else noise_scale,
                self.cfg.length_scale if length_scale is None else length_scale,
                self.cfg.noise_w if noise_w is None else noise_w,
            ],
            dtype=np.float32,
        )
        out = self.session.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": scales,
            },
        )[0]
        return np.clip(out.reshape(-1).astype(np.float32), -1.0, 1.0)

    def stream(self, text: str, sentence_silence: float = 0.15, **scales: float | None) -> Iterator[np.ndarray]:
        """Audio sentence by sentence (first audio after the first sentence, not the whole text)."""
        sentences = self.phonemizer.sentences(text)
        gap = np.zeros(int(sentence_silence * self.sample_rate), dtype=np.float32)
        for i, phonemes in enumerate(sentences):
            audio = self.synthesize_ids(self.phoneme_ids(phonemes), **scales)
            yield np.concatenate([audio, gap]) if i < len(sentences) - 1 else audio

    def synthesize(self, text: str, sentence_silence: float = 0.15, **scales: float | None) -> np.ndarray:
        parts = list(self.stream(text, sentence_silence=sentence_silence, **scales))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def timed(self, text: str) -> tuple[np.ndarray, VoiceTiming]:
        t0 = time.perf_counter()
        first = None
        parts = []
        for part in self.stream(text):
            if first is None:
                first = time.perf_counter() - t0
            parts.append(part)
        total = time.perf_counter() - t0
        audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return audio, VoiceTiming(first_audio_s=first or total, total_s=total, audio_s=len(audio) / self.sample_rate)
