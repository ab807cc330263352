"""Held-out two-channel dialogues as scripted users for the latency simulation.

A scripted user plays the user channel of a synthetic dialogue (``training/data``) at its fixed
times, as Full-Duplex-Bench plays its ``input.wav``; the reference agent channel is kept only to
compare gap/overlap distributions. The dialogue's segments give the scripted truth every metric
needs: mid-turn pauses, the ends of user turns, barge-ins, backchannels, and the per-chunk state
labels of ``training/data/labels.py``.

Held out: ``synthesize_heldout`` renders dialogues from the test-split text pools only, spoken by
the held-out user voices (``data.test_text_fraction=1``), the way the data issue holds out its
test split; an existing corpus can be used instead (its non-train dialogues).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RATE = 16000


@dataclass(frozen=True)
class Pause:
    start: float
    end: float


@dataclass(frozen=True)
class TurnEnd:
    """A user turn that ended: the agent should take the turn in [end, window_end), window_end being the
    start of the user's next turn (other user sounds do not end the window)."""

    end: float
    window_end: float
    bargein: bool
    """The turn barged in on the (reference) agent: a user-interruption case."""
    start: float = 0.0


@dataclass
class ScriptedDialogue:
    id: str
    stage: str
    user: np.ndarray
    """(T,) the user channel at 16 kHz (what the scripted user plays)."""
    reference_agent: np.ndarray
    """(T,) the reference agent channel at 16 kHz (never played; for comparison)."""
    duration: float
    pauses: list[Pause] = field(default_factory=list)
    turn_ends: list[TurnEnd] = field(default_factory=list)
    user_turns: list[tuple[float, float]] = field(default_factory=list)
    """Speech extents of the user's real turns (s)."""
    user_segments: list[tuple[float, float, str]] = field(default_factory=list)
    """Every user-channel segment (start, end, kind)."""
    reference_agent_turns: list[tuple[float, float]] = field(default_factory=list)
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """(n,) per-160 ms-chunk state labels (0 continue, 1 interrupt, 2 reject) of the reference timeline."""

    @property
    def interruptions(self) -> list[TurnEnd]:
        return [t for t in self.turn_ends if t.bargein]

    @property
    def smooth_turns(self) -> list[TurnEnd]:
        return [t for t in self.turn_ends if not t.bargein]


def from_record(rec: dict[str, Any], root: Path) -> ScriptedDialogue:
    """A dialogue manifest row (``manifests/dialogues.jsonl``) -> its scripted user."""
    from speech_io.wav import read_wav, resample

    audio, rate = read_wav(root / rec["audio"], mono=False)
    if audio.ndim != 2 or audio.shape[1] < 2:
        raise ValueError(f"{rec['audio']}: expected a two-channel dialogue (user, agent)")
    audio = resample(audio, rate, RATE) if rate != RATE else audio
    duration = len(audio) / RATE
    segs = rec["segments"]
    user_turns = [(s["start"], s["end"]) for s in segs if s["channel"] == "user" and s["kind"] == "turn"]
    user_all = [(s["start"], s["end"], s["kind"]) for s in segs if s["channel"] == "user"]
    pauses = [Pause(float(a), float(b)) for s in segs if s["channel"] == "user" and s["kind"] == "turn"
              for a, b in s.get("pauses", [])]
    ends: list[TurnEnd] = []
    for s in segs:
        if s["channel"] != "user" or s["kind"] != "turn":
            continue
        # Only the user's next real turn closes the window: a backchannel, a cough, side talk or
        # background speech does not take the floor back (Full-Duplex-Bench v1.5 asks the agent to
        # talk on through them), and an agent that paused for one and resumed still took the turn.
        nxt = [u[0] for u in user_all if u[0] > s["end"] + 0.05 and u[2] == "turn"]
        window_end = min(nxt) if nxt else duration + 5.0
        ends.append(TurnEnd(end=float(s["end"]), window_end=float(window_end), bargein=bool(s.get("bargein")),
                            start=float(s["start"])))
    labels = np.array([int(c) for c in rec.get("labels", "")], dtype=np.int64)
    return ScriptedDialogue(
        id=rec["id"], stage=rec.get("stage", ""), user=np.ascontiguousarray(audio[:, 0]),
        reference_agent=np.ascontiguousarray(audio[:, 1]), duration=duration, pauses=pauses, turn_ends=ends,
        user_turns=user_turns, user_segments=user_all,
        reference_agent_turns=[(s["start"], s["end"]) for s in segs if s["channel"] == "agent"], labels=labels)


def load_dialogues(data_dir: str | Path, n: int, splits: tuple[str, ...] = ("test", "val")) -> list[ScriptedDialogue]:
    """The first ``n`` held-out dialogues (sorted by id) of a synthetic corpus."""
    root = Path(data_dir)
    manifest = root / "manifests" / "dialogues.jsonl"
    if not manifest.exists():
        raise FileNotFoundError(f"{manifest} not found: point --data at a `duplex-agent data synth` output folder")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    held = sorted((r for r in rows if r.get("split") in splits), key=lambda r: r["id"])
    if not held:
        raise FileNotFoundError(f"{manifest}: no dialogues in the {'/'.join(splits)} split(s)")
    return [from_record(r, root) for r in held[:n]]


def heldout_overrides(cfg: Any, n: int) -> list[str]:
    """Config overrides that make ``data synth`` render ``n`` held-out scripted dialogues only."""
    s = cfg.sim
    duplex = n // 2
    return [
        "data.test_text_fraction=1.0", "data.val_text_fraction=0.0",
        "data.agent_utterances=0", "data.user_utterances=0", "data.qa_questions=0", "data.emotion_texts=0",
        "data.emotion_other_voices=0", "data.turn_dialogues=0",
        f"data.duplex_dialogues={duplex}", f"data.overlap_dialogues={n - duplex}",
        f"data.dialogue_seconds={s.dialogue_seconds}", f"data.pause_prob={s.pause_prob}",
        f"data.bargein_prob={s.bargein_prob}",
    ]


def synthesize_heldout(cfg: Any, out: str | Path, n: int, seed: int, progress: bool = True) -> Path:
    """Render (or finish rendering; it is resumable) ``n`` held-out scripted dialogues into ``out``."""
    from configs.loader import apply_overrides, parse_set_args
    from training.data.synth import synthesize

    dcfg = apply_overrides(cfg, parse_set_args(heldout_overrides(cfg, n)))
    dcfg = dataclasses.replace(dcfg, data=dataclasses.replace(dcfg.data, workers=1))
    synthesize(dcfg, out, seed=seed, workers=1, progress=progress)
    return Path(out)
