"""Voices for the synthetic data, behind one small interface.

A voice is a value (`VoiceSpec`: engine + settings, with a stable id string) and a `VoiceBank`
renders text with it: ``bank.render(spec, text, seed) -> Rendered(audio, sample_rate, words)``.

* ``piper``: the agent's voice (Piper en_US-joe-medium, `agent.piper.PiperVoice`, seeded and
  deterministic, word times from its duration predictor). With other rate/noise settings and an
  F0 shift (WORLD) it is also one of the user voices.
* ``espeak``: the espeak-ng program (never its GPL library) with its accents and voice variants,
  pitch and speed: the diverse user side. Word times come from `training.data.align`.

User voices are a fixed catalogue (`user_voices()`); a stable hash of each id puts ~25% of them
in the held-out set that only ever speaks test text. The catalogue lists only variants the
Whisper judge understood in a survey (docs in the data card); the split is made after that
filter, so held-out voices are as hard as training ones.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import wave
from dataclasses import dataclass, field
from functools import lru_cache
from xml.sax.saxutils import escape

import numpy as np

from agent.phonemize import PhonemizerError, normalize_text
from agent.word_timing import sentence_words
from training.data.manifest import WordTime, r6
from training.data.text_sources import stable_hash

AGENT_VOICE_ID = "piper:joe"


@dataclass(frozen=True)
class VoiceSpec:
    engine: str
    """``piper`` or ``espeak``."""
    name: str = ""
    """espeak voice+variant (``en-us+f3``); unused for piper (the configured card)."""
    pitch: float = 0.0
    """piper: F0 shift in semitones (WORLD); espeak: the -p value minus 50."""
    speed: float = 1.0
    """Speaking-rate factor (piper: 1/length_scale; espeak: times 175 words per minute)."""
    noise_scale: float | None = None
    """piper only: prior noise (None = the voice config's)."""
    noise_w: float | None = None
    """piper only: duration noise (None = the voice config's)."""

    @property
    def id(self) -> str:
        if self.engine == "piper":
            if self.pitch == 0 and self.speed == 1 and self.noise_scale is None and self.noise_w is None:
                return AGENT_VOICE_ID
            return (f"piper:joe:st{self.pitch:+.1f}:sp{self.speed:.2f}"
                    f":ns{self.noise_scale if self.noise_scale is not None else 'd'}"
                    f":nw{self.noise_w if self.noise_w is not None else 'd'}")
        return f"espeak:{self.name}:p{50 + int(self.pitch)}:s{int(round(175 * self.speed))}"

    @staticmethod
    def parse(voice_id: str) -> VoiceSpec:
        parts = voice_id.split(":")
        if voice_id == AGENT_VOICE_ID:
            return VoiceSpec("piper")
        if parts[0] == "piper" and len(parts) == 6:
            ns, nw = parts[4][2:], parts[5][2:]
            return VoiceSpec("piper", pitch=float(parts[2][2:]), speed=float(parts[3][2:]),
                             noise_scale=None if ns == "d" else float(ns), noise_w=None if nw == "d" else float(nw))
        if parts[0] == "espeak" and len(parts) == 4:
            return VoiceSpec("espeak", name=parts[1], pitch=float(int(parts[2][1:]) - 50), speed=int(parts[3][1:]) / 175)
        raise ValueError(f"not a voice id: {voice_id!r}")

    @property
    def heldout(self) -> bool:
        return is_heldout(self.id)


AGENT_VOICE = VoiceSpec("piper")
HELDOUT_FRACTION = 0.25


def is_heldout(voice_id: str) -> bool:
    """Stable membership of the held-out user voices (never the agent voice)."""
    if voice_id == AGENT_VOICE_ID:
        return False
    return stable_hash("heldout-voice", voice_id) % 1000 < HELDOUT_FRACTION * 1000


# espeak-ng accent+variant voices that the Whisper judge (tiny.en, greedy) transcribed with a
# WER <= 17% on 8 probe sentences (66 words), out of ~110 combinations surveyed (en-us, en-gb,
# gmw/en, en-gb-x-rp, en-us-nyc x variants; e.g. klatt*, belinda, annie, travis and most rp/nyc
# combinations failed). Note "en-gb+VARIANT" silently ignores the variant; "gmw/en+VARIANT" works.
# The held-out split is drawn after this filter, so held-out voices are as hard as training ones.
ESPEAK_VOICES = (
    "en-us+Mike", "en-us+croak", "en-us+m1", "en-us+m3", "en-us+m5", "en-us+m6", "en-us+m7", "en-us+victor",
    "en-us+Alex", "en-us+f5", "en-us+steph", "en-gb", "gmw/en+f2", "gmw/en+m6",
)


@lru_cache(maxsize=1)
def user_voices() -> tuple[VoiceSpec, ...]:
    """The user-voice catalogue: espeak voices at 2 pitch/speed settings each + Piper variants."""
    out: list[VoiceSpec] = []
    for name in ESPEAK_VOICES:
        h = stable_hash("espeak-settings", name)
        for k in range(2):
            pitch = float((h >> (8 * k)) % 31 - 15)  # -15..+15 on espeak's 0-99 scale
            speed = (150 + (h >> (8 * k + 4)) % 46) / 175  # 150-195 wpm
            out.append(VoiceSpec("espeak", name=name, pitch=pitch, speed=round(speed, 4)))
    for st, sp, ns, nw in ((-4.0, 0.9, 0.5, 0.6), (-2.0, 1.1, 0.8, 1.0), (3.0, 0.95, 0.667, 0.8),
                           (5.0, 1.05, 0.4, 0.5), (-6.0, 1.0, 0.6, 0.9), (7.0, 0.85, 0.7, 0.7)):
        out.append(VoiceSpec("piper", pitch=st, speed=sp, noise_scale=ns, noise_w=nw))
    return tuple(out)


_FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5", "steph", "linda", "belinda", "annie", "anika", "alicia", "andrea")


def pitch_level(spec: VoiceSpec) -> float:
    """Rough voice pitch in semitones above a default male voice (to balance voice halves)."""
    if spec.engine == "piper":
        return spec.pitch
    variant = spec.name.split("+", 1)[1].lower() if "+" in spec.name else ""
    return (12.0 if variant in _FEMALE_VARIANTS else 0.0) + spec.pitch / 4


def train_user_voices() -> tuple[VoiceSpec, ...]:
    return tuple(v for v in user_voices() if not v.heldout)


def heldout_user_voices() -> tuple[VoiceSpec, ...]:
    return tuple(v for v in user_voices() if v.heldout)


@dataclass
class Rendered:
    audio: np.ndarray
    """(T,) float32."""
    sample_rate: int
    words: list[WordTime] = field(default_factory=list)
    """Seconds from the start of ``audio``."""

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


def _read_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        rate = w.getframerate()
        raw = w.readframes(w.getnframes())
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0, rate


class EspeakEngine:
    def __init__(self, executable: str = "espeak-ng") -> None:
        path = shutil.which(executable)
        if path is None:
            raise PhonemizerError("espeak-ng is not installed; run ./install.sh (or: apt-get install espeak-ng)")
        self.exe = path

    def _run(self, spec: VoiceSpec, text: str, ssml: bool = False) -> tuple[np.ndarray, int]:
        args = [self.exe, "-v", spec.name, "-p", str(50 + int(spec.pitch)), "-s", str(int(round(175 * spec.speed))),
                "--stdout"]
        if ssml:
            args.append("-m")
        proc = subprocess.run(args + ["--", text], capture_output=True, timeout=60, check=False)
        if proc.returncode != 0 or len(proc.stdout) < 44:
            raise PhonemizerError(f"espeak-ng failed for voice {spec.name}: {proc.stderr.decode(errors='replace')[:200]}")
        return _read_wav_bytes(proc.stdout)

    def render(self, spec: VoiceSpec, text: str) -> Rendered:
        from training.data.align import align_words, split_on_silence

        audio, sr = self._run(spec, text)
        words = sentence_words(normalize_text(text))
        if not words:
            return Rendered(audio, sr, [])
        # Every word alone, separated by long breaks (exact zeros), then DTW onto the sentence.
        ssml = "<speak>" + ' <break time="400ms"/> '.join(escape(w) for w in words) + "</speak>"
        iso, _ = self._run(spec, ssml, ssml=True)
        pieces = split_on_silence(iso, sr, len(words))
        if pieces is None:
            spans = _even_spans(audio, sr, words)
        else:
            spans = align_words(audio, sr, pieces)
        return Rendered(audio, sr, [WordTime(w, r6(s), r6(e)) for w, (s, e) in zip(words, spans, strict=True)])


def _even_spans(audio: np.ndarray, sr: int, words: list[str]) -> list[tuple[float, float]]:
    """Fallback: the speech span shared by letter counts (used only when isolation fails)."""
    from training.data.align import trim

    trimmed, start = trim(audio, sr)
    a, b = start / sr, (start + len(trimmed)) / sr
    w = np.cumsum([0] + [max(1, len(x)) for x in words]) / max(1, sum(max(1, len(x)) for x in words))
    return [(a + w[i] * (b - a), a + w[i + 1] * (b - a)) for i in range(len(words))]


class VoiceBank:
    """Renders any `VoiceSpec`; engines are loaded on first use (one bank per worker process)."""

    def __init__(self, voice_cfg) -> None:  # configs.schema.VoiceConfig
        self.voice_cfg = voice_cfg
        self._piper = None
        self._espeak: EspeakEngine | None = None

    @property
    def piper(self):
        if self._piper is None:
            from agent.piper import PiperVoice

            self._piper = PiperVoice.load(self.voice_cfg, num_threads=1)
        return self._piper

    @property
    def espeak(self) -> EspeakEngine:
        if self._espeak is None:
            self._espeak = EspeakEngine()
        return self._espeak

    def render(self, spec: VoiceSpec, text: str, seed: int) -> Rendered:
        text = re.sub(r"\s+", " ", text).strip()
        if spec.engine == "espeak":
            return self.espeak.render(spec, text)
        if spec.engine != "piper":
            raise ValueError(f"unknown voice engine {spec.engine!r}")
        syn = self.piper.render(text, seed=seed % (2**63), length_scale=None if spec.speed == 1 else 1.0 / spec.speed,
                                noise_scale=spec.noise_scale, noise_w=spec.noise_w)
        audio = syn.audio
        if spec.pitch:
            from training.data.emotion import pitch_shift

            audio = pitch_shift(audio, syn.sample_rate, spec.pitch)
        words = [WordTime(w.text, r6(w.start), r6(w.end)) for w in syn.words]
        return Rendered(audio, syn.sample_rate, words)
