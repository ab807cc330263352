"""The JSONL manifest format of every dataset (synthetic or imported) and its loader.

A dataset root holds ``manifests/<kind>.jsonl``, one JSON object per line, sorted by ``id``,
with keys sorted (so the same content is the same bytes). Kinds:

* ``utterances`` - single utterances with a transcript (ASR, units, the TTS decoder).
* ``qa`` - spoken questions in user voices, the typed question and the frozen LLM's own answer
  (text, and the agent voice speaking it).
* ``dialogues`` - two-channel dialogues (one stereo WAV: channel 0 = user, channel 1 = agent) with
  segments (turns, backchannels, ...), word times and per-chunk state labels.
* ``emotions`` - the same text in neutral/happy/sad/angry/surprised.

Common rules: ``id`` is stable (derived from the plan, never from run order); ``split`` is
``train``, ``val`` or ``test`` (test = held-out text AND, for user voices, held-out voices);
audio paths are relative to the dataset root (``..`` allowed for imported corpora that stay in
place); all times are seconds from the start of the item's audio. Unknown keys are kept
(``extra``) so a newer writer does not break an older reader.

Load with ``load_manifest(root, kind, split)``; every record has ``load_audio(rate=None)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

KINDS = ("utterances", "qa", "dialogues", "emotions")
SPLITS = ("train", "val", "test")
EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised")


class ManifestError(ValueError):
    """A manifest line that does not fit the format."""


def r6(x: float) -> float:
    """Times and durations are stored rounded to the microsecond (stable JSON)."""
    return round(float(x), 6)


@dataclass
class WordTime:
    word: str
    start: float
    end: float


def _words(raw: Any) -> list[WordTime]:
    return [w if isinstance(w, WordTime) else WordTime(**w) for w in (raw or [])]


def load_audio_file(path: str | os.PathLike[str], rate: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """WAV via the standard library, anything else (FLAC, Opus, ...) via PyAV; optional resampling."""
    from speech_io.wav import read_wav, resample

    path = Path(path)
    if path.suffix.lower() == ".wav":
        audio, sr = read_wav(path, mono=mono)
    elif path.suffix.lower() == ".sph":
        from training.data.importers import read_sphere

        audio, sr = read_sphere(path)
        if mono and audio.ndim == 2:
            audio = audio.mean(axis=1)
    else:
        audio, sr = _decode_av(path, mono)
    if rate is not None and rate != sr:
        audio, sr = resample(audio, sr, rate), rate
    return audio.astype(np.float32, copy=False), sr


def _decode_av(path: Path, mono: bool) -> tuple[np.ndarray, int]:
    import av

    from speech_io.wav import AudioFormatError

    try:
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            frames = [f.to_ndarray() for f in container.decode(stream)]
            sr = stream.codec_context.sample_rate
    except (av.error.FFmpegError, IndexError) as exc:
        raise AudioFormatError(f"{path}: cannot decode audio ({exc})") from exc
    if not frames:
        return np.zeros(0, np.float32), sr
    # PyAV gives (C, T) planar or (1, T*C) packed arrays; normalise to (T, C) float.
    chans = stream.codec_context.channels if hasattr(stream.codec_context, "channels") else 1
    parts = []
    for f in frames:
        a = f.astype(np.float32)
        if f.dtype == np.int16:
            a /= 32768.0
        elif f.dtype == np.int32:
            a /= 2147483648.0
        a = a.reshape(chans, -1).T if a.shape[0] == chans else a.reshape(-1, chans)
        parts.append(a)
    audio = np.concatenate(parts, axis=0)
    return (audio.mean(axis=1) if mono else audio), sr


@dataclass
class Record:
    """Fields every manifest record has; ``root`` is set by the loader (not stored)."""

    kind: ClassVar[str] = ""
    id: str
    split: str
    extra: dict[str, Any] = field(default_factory=dict)
    root: str = field(default="", compare=False, repr=False)

    def path(self, rel: str) -> Path:
        return Path(self.root) / rel

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("root")
        extra = d.pop("extra")
        d.update(extra)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], root: str = "") -> Record:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "root"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        try:
            rec = cls(**known, extra=extra, root=root)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ManifestError(f"{cls.kind} record {d.get('id', '?')!r}: {exc}") from exc
        rec._post_load()
        return rec

    def _post_load(self) -> None:
        if self.split not in SPLITS:
            raise ManifestError(f"{self.id}: split must be one of {SPLITS}, got {self.split!r}")


@dataclass
class Utterance(Record):
    """One speaker saying one text."""

    kind: ClassVar[str] = "utterances"
    role: str = "user"
    """``agent`` (the agent voice) or ``user``."""
    voice: str = ""
    """Voice id (see training/data/voices.py), or a speaker id for imported data."""
    heldout_voice: bool = False
    text: str = ""
    audio: str = ""
    sample_rate: int = 0
    duration: float = 0.0
    words: list[WordTime] = field(default_factory=list)
    emotion: str = "neutral"
    augment: dict[str, Any] = field(default_factory=dict)
    """Augmentations applied (empty = clean)."""
    source: str = ""
    """Where the text came from (e.g. ``chatterbot:food/3``, ``llm-answer``, ``librispeech``)."""

    def _post_load(self) -> None:
        super()._post_load()
        self.words = _words(self.words)

    def load_audio(self, rate: int | None = None) -> np.ndarray:
        return load_audio_file(self.path(self.audio), rate)[0]


@dataclass
class QAItem(Record):
    """A spoken question and the frozen LLM's own answer to the typed question."""

    kind: ClassVar[str] = "qa"
    question: str = ""
    question_audio: str = ""
    question_sample_rate: int = 0
    question_duration: float = 0.0
    question_words: list[WordTime] = field(default_factory=list)
    voice: str = ""
    heldout_voice: bool = False
    augment: dict[str, Any] = field(default_factory=dict)
    answer: str = ""
    """The LLM's reply exactly as ``FrozenLLM.answer`` produced it (the QA training target)."""
    answer_spoken: str = ""
    """The reply cleaned for speech (no markup, cut to whole sentences); what answer_audio says."""
    answer_audio: str = ""
    answer_sample_rate: int = 0
    answer_duration: float = 0.0
    answer_words: list[WordTime] = field(default_factory=list)
    llm: str = ""
    """Card of the LLM that answered."""

    def _post_load(self) -> None:
        super()._post_load()
        self.question_words = _words(self.question_words)
        self.answer_words = _words(self.answer_words)

    def load_question_audio(self, rate: int | None = None) -> np.ndarray:
        return load_audio_file(self.path(self.question_audio), rate)[0]

    def load_answer_audio(self, rate: int | None = None) -> np.ndarray:
        return load_audio_file(self.path(self.answer_audio), rate)[0]


@dataclass
class Segment:
    """One stretch of sound on one channel of a dialogue."""

    channel: str
    """``user`` or ``agent``."""
    kind: str
    """``turn`` (a real turn), or on the user channel ``backchannel``, ``side`` (talking to
    someone else), ``noise`` (cough, knock), ``background`` (another talker far away)."""
    start: float
    end: float
    """Speech extent (s): first sound to the end of the last word."""
    text: str = ""
    words: list[WordTime] = field(default_factory=list)
    voice: str = ""
    emotion: str = "neutral"
    pauses: list[list[float]] = field(default_factory=list)
    """Mid-turn pauses ``[start, end]`` of a user turn (the user has not finished)."""
    bargein: bool = False
    """A user turn that starts while the agent speaks."""
    truncated: bool = False
    """An agent turn cut off by a barge-in (words after the cut are dropped)."""
    reply_to: int | None = None
    """For an agent turn: index (in ``segments``) of the user turn it answers."""

    @staticmethod
    def from_json(d: dict[str, Any]) -> Segment:
        d = dict(d)
        d["words"] = _words(d.get("words"))
        return Segment(**d)


@dataclass
class Dialogue(Record):
    kind: ClassVar[str] = "dialogues"
    stage: str = "overlap"
    """SyncLLM stage: ``turn`` (turn-based), ``duplex`` (timed, no overlap), ``overlap``."""
    audio: str = ""
    """Stereo WAV: channel 0 = user, channel 1 = agent."""
    sample_rate: int = 16000
    duration: float = 0.0
    chunk_seconds: float = 0.16
    labels: str = ""
    """Per-chunk state labels, one digit per chunk (training/data/labels.py)."""
    segments: list[Segment] = field(default_factory=list)
    user_voice: str = ""
    agent_voice: str = ""
    heldout_voice: bool = False
    augment: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def _post_load(self) -> None:
        super()._post_load()
        self.segments = [s if isinstance(s, Segment) else Segment.from_json(s) for s in self.segments]

    def load_audio(self, rate: int | None = None) -> np.ndarray:
        """(T, 2) float32: [:, 0] user, [:, 1] agent (imported files may store them the other way
        round; ``extra["channel_order"]`` says so and they are swapped here)."""
        audio = load_audio_file(self.path(self.audio), rate, mono=False)[0]
        if self.extra.get("channel_order") == ["agent", "user"]:
            audio = audio[:, ::-1]
        return np.ascontiguousarray(audio)

    def label_array(self) -> np.ndarray:
        from training.data.labels import labels_from_string

        return labels_from_string(self.labels)


@dataclass
class EmotionUtterance(Record):
    kind: ClassVar[str] = "emotions"
    group: str = ""
    """Id shared by the five renderings of one text by one voice."""
    emotion: str = "neutral"
    voice: str = ""
    voice_half: str = "A"
    """``A`` or ``B``: the emotion classifier trains on voices of half A and is tested on B."""
    text: str = ""
    audio: str = ""
    sample_rate: int = 0
    duration: float = 0.0
    words: list[WordTime] = field(default_factory=list)
    params: dict[str, float] = field(default_factory=dict)
    """The analysis-resynthesis settings (F0 shift/range, rate, gain, tilt)."""
    synthetic: bool = True

    def _post_load(self) -> None:
        super()._post_load()
        self.words = _words(self.words)
        if self.emotion not in EMOTIONS:
            raise ManifestError(f"{self.id}: emotion must be one of {EMOTIONS}, got {self.emotion!r}")

    def load_audio(self, rate: int | None = None) -> np.ndarray:
        return load_audio_file(self.path(self.audio), rate)[0]


RECORD_TYPES: dict[str, type[Record]] = {
    "utterances": Utterance, "qa": QAItem, "dialogues": Dialogue, "emotions": EmotionUtterance,
}


def manifest_path(root: str | os.PathLike[str], kind: str) -> Path:
    if kind not in RECORD_TYPES:
        raise ManifestError(f"unknown manifest kind {kind!r}; known: {', '.join(KINDS)}")
    return Path(root) / "manifests" / f"{kind}.jsonl"


def dumps(record: Record | dict[str, Any]) -> str:
    d = record.to_json() if isinstance(record, Record) else record
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_manifest(root: str | os.PathLike[str], kind: str, records: Iterable[Record | dict[str, Any]]) -> Path:
    """Write ``manifests/<kind>.jsonl`` atomically, sorted by id."""
    rows = [(r.id if isinstance(r, Record) else r["id"], dumps(r)) for r in records]
    rows.sort()
    return atomic_write_text(manifest_path(root, kind), "".join(line + "\n" for _, line in rows))


def load_manifest(root: str | os.PathLike[str], kind: str, split: str | None = None) -> list[Any]:
    """Records of ``kind`` (utterances|qa|dialogues|emotions) in ``split`` (None = all)."""
    path = manifest_path(root, kind)
    if not path.is_file():
        raise FileNotFoundError(f"no {kind} manifest at {path}; run `duplex-agent data synth --out {root}` or an importer")
    if split is not None and split not in SPLITS:
        raise ManifestError(f"split must be one of {SPLITS} or None, got {split!r}")
    cls = RECORD_TYPES[kind]
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path}:{n}: not JSON ({exc.msg})") from exc
            rec = cls.from_json(d, root=str(root))
            if split is None or rec.split == split:
                out.append(rec)
    return out
