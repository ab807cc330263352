"""The reference voice: Piper en_US-joe-medium (VITS), text -> 22.05 kHz speech.

It is the agent's teacher voice (synthetic data) and the neutral target of our unit decoder.
Two back ends share one text front end and one noise recipe, so for a given seed they produce
the same audio:
- `PiperVoice`: the ONNX graph on onnxruntime (fast; for bulk synthesis and the CLI), patched at
  `assets prepare` time so its random draws come from us and it reports durations and latents;
- `agent.piper_torch.TorchPiperVoice`: our PyTorch port (gradients through the decoder).
Phonemes come from the espeak-ng program (agent.phonemize); ids follow Piper's convention: BOS,
then every phoneme followed by the pad id, then EOS.
"""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.assets import load_card, prepared_dir
from agent.phonemize import EspeakPhonemizer
from agent.word_timing import WordTiming, align_words, phoneme_word_frames, sentence_words
from configs.schema import VoiceConfig

PAD, BOS, EOS = "_", "^", "$"
LATENT_CHANNELS = 192
# Upper bound on latent frames per phoneme id when sizing the prior noise (typical is ~3).
_FRAMES_PER_ID = 24


@dataclass
class SentenceInput:
    text: str
    phonemes: str
    ids: list[int]
    id_positions: list[int]
    """Index in ``ids`` of each NFD phoneme character (-1 where the voice has no such symbol)."""


@dataclass
class SentenceRender:
    text: str
    phonemes: str
    ids: list[int]
    durations: np.ndarray
    """(len(ids),) latent frames per phoneme id."""
    latents: np.ndarray
    """(192, T_y) latents the waveform decoder turned into this sentence's audio."""
    offset: int
    """First sample of this sentence in the utterance."""


@dataclass
class Synthesis:
    audio: np.ndarray
    """(T,) float32 in [-1, 1]."""
    sample_rate: int
    words: list[WordTiming] = field(default_factory=list)
    """Every written word with its start/end in seconds (from the duration predictor)."""
    sentences: list[SentenceRender] = field(default_factory=list)
    hop: int = 256

    @property
    def durations(self) -> list[np.ndarray]:
        return [s.durations for s in self.sentences]

    @property
    def latents(self) -> list[np.ndarray]:
        return [s.latents for s in self.sentences]

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass
class VoiceTiming:
    first_audio_s: float
    """Seconds from the call to the first sentence's audio."""
    total_s: float
    """Seconds for the whole text."""
    audio_s: float
    """Seconds of audio produced."""


def sentence_seed(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def draw_noise(rng: np.random.Generator, n_ids: int, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(1, 2, n_ids) duration noise and (1, 192, max_frames) prior noise.

    Drawn frame-major, so the first k frames are the same whatever ``max_frames`` is.
    """
    dp = rng.standard_normal((n_ids, 2), dtype=np.float32).T[None]
    prior = rng.standard_normal((max_frames, LATENT_CHANNELS), dtype=np.float32).T[None]
    return np.ascontiguousarray(dp), np.ascontiguousarray(prior)


class PiperFrontEnd:
    """Text -> phoneme ids, noise, and assembly of sentence renders into a `Synthesis`."""

    def __init__(self, meta: dict, cfg: VoiceConfig) -> None:
        self.cfg = cfg
        self.sample_rate = int(meta["audio"]["sample_rate"])
        self.id_map: dict[str, int] = {k: int(v[0]) for k, v in meta["phoneme_id_map"].items()}
        self.phonemizer = EspeakPhonemizer(cfg.espeak_voice or meta.get("espeak", {}).get("voice", "en-us"))
        self.hop = 256

    def scales(self, length_scale: float | None, noise_scale: float | None, noise_w: float | None) -> tuple[float, float, float]:
        return (
            self.cfg.noise_scale if noise_scale is None else noise_scale,
            self.cfg.length_scale if length_scale is None else length_scale,
            self.cfg.noise_w if noise_w is None else noise_w,
        )

    def phoneme_ids(self, phonemes: str) -> list[int]:
        return self._encode(phonemes)[0]

    def _encode(self, phonemes: str) -> tuple[list[int], list[int]]:
        ids = [self.id_map[BOS], self.id_map[PAD]]
        positions: list[int] = []
        for ch in unicodedata.normalize("NFD", phonemes):
            if ch in self.id_map:  # Piper skips symbols its voice never saw
                positions.append(len(ids))
                ids += [self.id_map[ch], self.id_map[PAD]]
            else:
                positions.append(-1)
        ids.append(self.id_map[EOS])
        return ids, positions

    def sentence_inputs(self, text: str) -> list[SentenceInput]:
        out = []
        for sentence, phonemes in self.phonemizer.sentence_pairs(text):
            ids, positions = self._encode(phonemes)
            out.append(SentenceInput(text=sentence, phonemes=phonemes, ids=ids, id_positions=positions))
        return out

    def max_frames(self, n_ids: int, length_scale: float) -> int:
        return max(64, int(n_ids * _FRAMES_PER_ID * max(length_scale, 1.0)))

    def words_of(self, sent: SentenceInput, durations: np.ndarray, offset: int) -> list[WordTiming]:
        spans = phoneme_word_frames(sent.phonemes, sent.id_positions, durations)
        to_s = self.hop / self.sample_rate
        base = offset / self.sample_rate
        return [WordTiming(w, base + a * to_s, base + b * to_s) for w, a, b in align_words(sentence_words(sent.text), spans)]

    def assemble(self, parts: list[tuple[SentenceInput, np.ndarray, np.ndarray, np.ndarray]], sentence_silence: float) -> Synthesis:
        """parts: (sentence, audio, durations, latents) -> one utterance with word timings."""
        gap = np.zeros(int(sentence_silence * self.sample_rate), dtype=np.float32)
        audio_parts: list[np.ndarray] = []
        renders: list[SentenceRender] = []
        words: list[WordTiming] = []
        offset = 0
        for i, (sent, audio, durations, latents) in enumerate(parts):
            renders.append(SentenceRender(sent.text, sent.phonemes, sent.ids, durations, latents, offset))
            words += self.words_of(sent, durations, offset)
            audio_parts.append(audio)
            offset += len(audio)
            if i < len(parts) - 1:
                audio_parts.append(gap)
                offset += len(gap)
        audio_all = np.concatenate(audio_parts) if audio_parts else np.zeros(0, dtype=np.float32)
        return Synthesis(audio=audio_all, sample_rate=self.sample_rate, words=words, sentences=renders, hop=self.hop)


def _voice_files(cfg: VoiceConfig) -> tuple[Path, dict]:
    folder = prepared_dir(load_card(cfg.card, family="piper-vits", role="voice"))
    return folder, json.loads((folder / "voice.json").read_text())


class PiperVoice(PiperFrontEnd):
    """The Piper voice on onnxruntime. Deterministic for a given ``seed``."""

    def __init__(self, folder: Path, meta: dict, cfg: VoiceConfig, num_threads: int = 1) -> None:
        import onnxruntime as ort

        super().__init__(meta, cfg)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / "voice.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])

    @classmethod
    def load(cls, cfg: VoiceConfig, num_threads: int = 1) -> PiperVoice:
        folder, meta = _voice_files(cfg)
        return cls(folder, meta, cfg, num_threads=num_threads)

    def _run(self, ids: list[int], rng: np.random.Generator, scales: tuple[float, float, float]) -> tuple[np.ndarray, ...]:
        max_frames = self.max_frames(len(ids), scales[1])
        noise_dp, noise_prior = draw_noise(rng, len(ids), max_frames)
        audio, durations, latents = self.session.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array(scales, dtype=np.float32),
                "noise_dp": noise_dp,
                "noise_prior": noise_prior,
            },
        )
        return np.clip(audio.reshape(-1), -1.0, 1.0).astype(np.float32), durations.reshape(-1).astype(np.int64), latents[0]

    def synthesize_ids(
        self, ids: list[int], seed: int | None = None, length_scale: float | None = None,
        noise_scale: float | None = None, noise_w: float | None = None,
    ) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return self._run(ids, rng, self.scales(length_scale, noise_scale, noise_w))[0]

    def _renders(self, text: str, seed: int | None, scales: tuple[float, float, float]) -> Iterator[tuple]:
        base = int(np.random.SeedSequence().generate_state(1)[0]) if seed is None else seed
        for i, sent in enumerate(self.sentence_inputs(text)):
            audio, durations, latents = self._run(sent.ids, sentence_seed(base, i), scales)
            yield sent, audio, durations, latents

    def render(
        self, text: str, *, seed: int | None = None, length_scale: float | None = None,
        noise_scale: float | None = None, noise_w: float | None = None, sentence_silence: float = 0.15,
    ) -> Synthesis:
        """Full synthesis with word timings, durations and latents."""
        scales = self.scales(length_scale, noise_scale, noise_w)
        return self.assemble(list(self._renders(text, seed, scales)), sentence_silence)

    def stream(
        self, text: str, *, seed: int | None = None, sentence_silence: float = 0.15, length_scale: float | None = None,
        noise_scale: float | None = None, noise_w: float | None = None,
    ) -> Iterator[np.ndarray]:
        """Audio sentence by sentence (first audio after the first sentence, not the whole text)."""
        scales = self.scales(length_scale, noise_scale, noise_w)
        gap = np.zeros(int(sentence_silence * self.sample_rate), dtype=np.float32)
        first = True
        for _, audio, _, _ in self._renders(text, seed, scales):
            if not first:
                yield gap
            first = False
            yield audio

    def synthesize(
        self, text: str, *, seed: int | None = None, sentence_silence: float = 0.15, length_scale: float | None = None,
        noise_scale: float | None = None, noise_w: float | None = None,
    ) -> np.ndarray:
        parts = list(self.stream(text, seed=seed, sentence_silence=sentence_silence, length_scale=length_scale,
                                 noise_scale=noise_scale, noise_w=noise_w))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def timed(self, text: str, seed: int | None = None) -> tuple[np.ndarray, VoiceTiming]:
        t0 = time.perf_counter()
        first = None
        parts = []
        for part in self.stream(text, seed=seed):
            if first is None:
                first = time.perf_counter() - t0
            parts.append(part)
        total = time.perf_counter() - t0
        audio = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return audio, VoiceTiming(first_audio_s=first or total, total_s=total, audio_s=len(audio) / self.sample_rate)
