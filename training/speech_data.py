"""Speech training data for the three encoder stages: utterances, spoken questions, episodes.

A corpus directory holds (all audio 16 kHz mono 16-bit WAV, paths relative to the directory):

- ``asr.jsonl``: ``{"id", "audio", "text", "speaker", "split"}``: one utterance and its transcript;
- ``qa.jsonl``: ``{"id", "audio", "question", "speaker", "split"}``: a spoken question; its typed
  answer is the frozen LLM's own and is cached per LLM in ``answers-<card>.jsonl``
  (``{"id", "answer"}``) by ``training.speech_answers``;
- ``episodes.jsonl``: ``{"id", "audio", "speaking", "labels", "tags", "speaker", "split"}``: a
  user channel with, per 160 ms chunk, whether the agent is speaking, the state label
  (0 continue, 1 interrupt, 2 reject) and a tag naming what the chunk holds (``speech``,
  ``pause``, ``silence``, ``gap``, ``backchannel``, ``noise``, ``background``, ``bargein``, ...).

``split`` is ``train`` or ``test``; ``test`` rows are unseen voices *and* unseen text.
Everything is synthetic (espeak-ng voices, chatterbot-corpus text) unless a corpus says otherwise.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from speech_io.wav import read_wav, resample

SAMPLE_RATE = 16000


class DataError(ValueError):
    """A corpus directory that is missing or malformed (one-line message)."""


@dataclass
class Utterance:
    id: str
    audio: np.ndarray
    """int16 samples at 16 kHz (kept as int16 in memory: half the RAM of float32)."""
    text: str
    speaker: str = ""


@dataclass
class SpokenQuestion:
    id: str
    audio: np.ndarray
    question: str
    answer: str = ""
    """The frozen LLM's answer to the typed question (filled from the answers cache)."""
    speaker: str = ""
    llm: str = ""
    """Card of the LLM that gave ``answer`` ("" = ours, computed for the current LLM)."""


@dataclass
class Episode:
    id: str
    audio: np.ndarray
    speaking: np.ndarray
    """(C,) bool: the agent is speaking during chunk c."""
    labels: np.ndarray
    """(C,) int64 state labels."""
    tags: list[str] = field(default_factory=list)
    speaker: str = ""


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise DataError(f"{path}:{i}: not JSON ({exc})") from exc
    return rows


def load_audio16(path: Path) -> np.ndarray:
    audio, rate = read_wav(path)
    if rate != SAMPLE_RATE:
        audio = resample(audio, rate, SAMPLE_RATE)
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def to_float(audio: np.ndarray) -> np.ndarray:
    return audio.astype(np.float32) / 32768.0


class SpeechCorpus:
    """One or more corpus directories (``a,b`` or a list) read as one.

    Two layouts are understood: this module's (``asr.jsonl``, ``qa.jsonl``, ``episodes.jsonl``;
    ``training.synth_speech``) and the project dataset's (``manifests/*.jsonl``; ``training.data``,
    ``duplex-agent data synth``). Train utterances never hold a text that a test row holds.
    """

    def __init__(self, roots: str | Path | Sequence[str | Path]) -> None:
        if isinstance(roots, (str, Path)):
            roots = [r for r in str(roots).split(",") if r]
        self.roots = [Path(r) for r in roots]
        for root in self.roots:
            if not root.is_dir():
                raise DataError(f"no speech corpus at {root}; make one: python -m training.synth_speech --out {root} "
                                f"(or duplex-agent data synth --out {root})")

    @staticmethod
    def _is_manifest(root: Path) -> bool:
        return (root / "manifests").is_dir()

    def _rows(self, root: Path, kind: str, split: str) -> list[dict]:
        return [r for r in _read_jsonl(root / f"{kind}.jsonl") if r.get("split", "train") == split]

    def _records(self, root: Path, kind: str, split: str) -> list:
        from training.data import load_manifest

        try:
            return load_manifest(root, kind, split)
        except FileNotFoundError:
            return []

    def held_out_texts(self) -> set[str]:
        """Normalised texts of every test row (utterances and questions) of every root."""
        from agent.text_metrics import normalize

        out: set[str] = set()
        for root in self.roots:
            if self._is_manifest(root):
                out |= {normalize(r.text) for r in self._records(root, "utterances", "test")}
                out |= {normalize(r.question) for r in self._records(root, "qa", "test")}
            else:
                out |= {normalize(r["text"]) for r in self._rows(root, "asr", "test")}
                out |= {normalize(r["question"]) for r in self._rows(root, "qa", "test")}
        return out

    def utterances(self, split: str, max_s: float = 1e9, limit: int | None = None) -> list[Utterance]:
        """Utterances of ``split`` (test: user voices only); train never holds a held-out text."""
        from agent.text_metrics import normalize

        banned = self.held_out_texts() if split == "train" else set()
        out: list[Utterance] = []
        for root in self.roots:
            if self._is_manifest(root):
                recs = [r for r in self._records(root, "utterances", split) if split == "train" or r.role == "user"]
                items = [(r.id, r.text, r.voice, r.duration, lambda r=r: r.load_audio(SAMPLE_RATE)) for r in recs]
            else:
                items = [(r["id"], r["text"], r.get("speaker", ""), None,
                          lambda r=r, root=root: load_audio16(root / r["audio"])) for r in self._rows(root, "asr", split)]
            for uid, text, speaker, dur, load in items:
                if limit is not None and len(out) >= limit:
                    return out
                if normalize(text) in banned or (dur is not None and dur > max_s):
                    continue
                a = load()
                a = a if a.dtype == np.int16 else _to_int16(a)
                if len(a) <= max_s * SAMPLE_RATE:
                    out.append(Utterance(id=uid, audio=a, text=text, speaker=speaker))
        return out

    def questions(self, split: str, answers_file: str | None = None, limit: int | None = None) -> list[SpokenQuestion]:
        """Spoken questions; ``answer`` from the dataset (manifest layout) or ``answers_file`` (ours)."""
        out: list[SpokenQuestion] = []
        for root in self.roots:
            if self._is_manifest(root):
                for r in self._records(root, "qa", split):
                    out.append(SpokenQuestion(id=r.id, audio=_to_int16(r.load_question_audio(SAMPLE_RATE)),
                                              question=r.question, answer=r.answer, speaker=r.voice, llm=r.llm))
            else:
                answers = {a["id"]: a["answer"] for a in _read_jsonl(root / answers_file)} if answers_file else {}
                for r in self._rows(root, "qa", split):
                    out.append(SpokenQuestion(id=r["id"], audio=load_audio16(root / r["audio"]), question=r["question"],
                                              answer=answers.get(r["id"], ""), speaker=r.get("speaker", "")))
        return out[:limit]

    def answered_questions(self, split: str, llm, limit: int | None = None, progress: bool = False
                           ) -> list[SpokenQuestion]:
        """Spoken questions with the frozen ``llm``'s typed answers: the dataset's own where its
        ``llm`` card matches, else computed once and cached next to our layout's ``qa.jsonl``."""
        from training.speech_answers import ensure_answers

        out: list[SpokenQuestion] = []
        for root in self.roots:
            sub = SpeechCorpus([root])
            if self._is_manifest(root):
                qs = [q for q in sub.questions(split) if q.llm == llm.cfg.card and q.answer.strip()]
            else:
                name = ensure_answers(llm, root, progress=progress)
                qs = [q for q in sub.questions(split, name) if q.answer.strip()]
            out += qs
        return out[:limit]

    def episodes(self, split: str, limit: int | None = None) -> list[Episode]:
        out: list[Episode] = []
        for root in self.roots:
            if self._is_manifest(root):
                for d in self._records(root, "dialogues", split):
                    if limit is not None and len(out) >= limit:
                        break
                    out.append(_episode_from_dialogue(d))
            else:
                for r in self._rows(root, "episodes", split):
                    if limit is not None and len(out) >= limit:
                        break
                    out.append(Episode(
                        id=r["id"], audio=load_audio16(root / r["audio"]),
                        speaking=np.asarray(r["speaking"], dtype=bool), labels=np.asarray(r["labels"], dtype=np.int64),
                        tags=list(r.get("tags", [])), speaker=r.get("speaker", ""),
                    ))
        return out


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)


def _episode_from_dialogue(d) -> Episode:  # d: training.data.Dialogue
    """A project-dataset dialogue -> user channel, per-chunk labels, agent-speaking flags and tags.

    The agent speaks in chunk k when its turn covers the chunk's end t (start < t <= end), the
    same rule the label contract uses for "silence while the agent speaks".
    """
    audio = d.load_audio(SAMPLE_RATE)[:, 0]
    labels = d.label_array()
    n = len(labels)
    ends = (np.arange(n) + 1) * d.chunk_seconds
    starts = ends - d.chunk_seconds
    speaking = np.zeros(n, dtype=bool)
    for s in d.segments:
        if s.channel == "agent" and s.kind == "turn":
            speaking |= (ends > s.start + 1e-9) & (ends <= s.end + 1e-9)
    tags = np.array(["agent-silence" if sp else "silence" for sp in speaking], dtype=object)
    # Lowest priority first; later assignments win.
    for s in d.segments:
        if s.channel != "user" or s.kind != "turn":
            continue
        over = (starts < s.end) & (ends > s.start)
        tags[over] = "speech"
        for ps, pe in s.pauses:
            # Chunks decided inside the pause, once the speech has stopped for the contract's
            # end margin: where a silence-based end-of-turn detector would cut the user off.
            tags[(ends >= ps + 0.08 - 1e-9) & (ends <= pe + 1e-9)] = "pause"
    for s in d.segments:
        if s.channel == "user" and s.kind in ("backchannel", "noise", "background", "side"):
            tags[(starts < s.end) & (ends > s.start)] = s.kind
        if s.channel == "user" and s.kind == "turn" and s.bargein:
            tags[(starts < s.end) & (ends > s.start) & speaking] = "bargein"
    tags[labels == 1] = "gap"
    return Episode(id=d.id, audio=_to_int16(audio), speaking=speaking, labels=labels.astype(np.int64),
                   tags=[str(t) for t in tags], speaker=d.user_voice)


def batch_audio(clips: Sequence[np.ndarray], gain_db: Sequence[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """int16 clips -> right-padded float (B, S) and lengths (B,), optional per-clip gain."""
    lengths = torch.tensor([len(c) for c in clips])
    out = torch.zeros(len(clips), int(lengths.max()))
    for i, c in enumerate(clips):
        x = torch.from_numpy(to_float(c))
        if gain_db is not None:
            x = (x * 10 ** (gain_db[i] / 20)).clamp(-1, 1)
        out[i, : len(c)] = x
    return out, lengths


class ShardedSampler:
    """Endless shuffled index stream for one rank: epoch e is a permutation seeded by (seed, e),
    cut into ``world`` interleaved shards. Resumable from (epoch, position)."""

    def __init__(self, n: int, rank: int = 0, world: int = 1, seed: int = 0) -> None:
        if n == 0:
            raise DataError("no training examples (empty split)")
        self.n, self.rank, self.world, self.seed = n, rank, world, seed
        self.epoch, self.pos = 0, 0

    def _perm(self) -> list[int]:
        idx = list(range(self.n))
        random.Random(self.seed * 100003 + self.epoch).shuffle(idx)
        return idx[self.rank :: self.world] or idx[:1]

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        perm = self._perm()
        while len(out) < k:
            if self.pos >= len(perm):
                self.epoch, self.pos = self.epoch + 1, 0
                perm = self._perm()
            out.append(perm[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, d: dict) -> None:
        self.epoch, self.pos = int(d["epoch"]), int(d["pos"])


def iter_batches(items: Sequence, batch_size: int) -> Iterator[list]:
    for i in range(0, len(items), batch_size):
        yield list(items[i : i + batch_size])


def episode_segments(labels: np.ndarray, max_chunks: int = 150) -> list[tuple[int, int]]:
    """Cut an episode into listening contexts, [start, end) in chunks.

    The runtime restarts its listening context when it takes the turn (the INTERRUPT decision),
    so a context runs from just after one run of INTERRUPT labels to the end of the next one
    (the reply starts there). Contexts longer than ``max_chunks`` keep their last ``max_chunks``
    chunks only when that still starts at a silence-or-agent chunk; otherwise they are cut
    into consecutive pieces (the labels stay valid: the head sees a shorter history).
    """
    ends = [i + 1 for i in range(len(labels)) if labels[i] == 1 and (i + 1 == len(labels) or labels[i + 1] != 1)]
    bounds, start = [], 0
    for e in ends + ([len(labels)] if not ends or ends[-1] < len(labels) else []):
        if e > start:
            bounds.append((start, e))
        start = e
    out = []
    for s, e in bounds:
        while e - s > max_chunks:
            out.append((s, s + max_chunks))
            s += max_chunks
        out.append((s, e))
    return out
