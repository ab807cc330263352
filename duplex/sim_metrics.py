"""Scoring one simulated call, and pooling calls into the figures of a sweep point.

What the user heard of the agent (the downlink's output) is transcribed by the Whisper judge
(word timestamps snapped to the audio's energy) and segmented by the VAD; the scripted dialogue
says where the user paused, ended a turn or barged in. The definitions are Full-Duplex-Bench v1's
(``duplex/turn_metrics.py``): a take-over is an utterance starting in the window that lasts >= 1 s
or has more than 3 words. Pooled rates are over all cases of all dialogues (micro average).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from duplex import turn_metrics as tm
from duplex.sim_dialogues import ScriptedDialogue

TURN_MERGE_GAP_S = 0.5
"""Agent VAD segments closer than this form one turn (floor-transfer offsets)."""
MIN_TURN_S = 0.5
"""Turns shorter than this are backchannels, not floor transfers."""


@dataclass(frozen=True)
class SegWord:
    """A VAD segment standing in for a word (``words=vad``: no ASR)."""

    text: str
    start: float
    end: float


def vad_words(segments: list[tuple[float, float]]) -> list[SegWord]:
    return [SegWord("<speech>", s, e) for s, e in segments]


def judge_words(judge: Any, audio: np.ndarray, rate: int = 16000) -> list[Any]:
    """The judge's timed words of ``audio``: greedy decoding (deterministic; no sampling fallback),
    silences of 2 s and more cut first, punctuation-only "words" (what Whisper makes of noise)
    dropped. Without the cut, Whisper decoding a whole agent channel (speech between long
    silences) skipped whole replies: 4 s of agent speech got no word in a simulated call."""
    words = judge.transcribe(audio, rate, temperature=0.0, vad_filter=True).words
    return [w for w in words if any(c.isalnum() for c in w.text)]


def agent_segments(audio: np.ndarray, rate: int, backend: Any) -> list[tuple[float, float]]:
    from speech_io.vad import detect_segments

    return [(round(s.start, 4), round(s.end, 4)) for s in detect_segments(audio, rate, backend)]


def head_accuracy(dialogue: ScriptedDialogue, head: list[tuple[int, list[float]]]) -> dict[str, Any]:
    """The state head's own argmax against the scripted per-chunk labels (reference timeline)."""
    n = len(dialogue.labels)
    pairs = [(int(np.argmax(p)), int(dialogue.labels[k])) for k, p in head if k < n]
    if not pairs:
        return {"chunks": 0, "correct": 0, "per_label": {}}
    per = {}
    for lab in (0, 1, 2):
        sel = [d == t for d, t in pairs if t == lab]
        per[str(lab)] = [int(sum(sel)), len(sel)]
    return {"chunks": len(pairs), "correct": int(sum(d == t for d, t in pairs)), "per_label": per}


def score_call(dialogue: ScriptedDialogue, words: list[Any], segments: list[tuple[float, float]],
               head: list[tuple[int, list[float]]]) -> dict[str, Any]:
    """Per-case outcomes of one call (lists, so calls pool by concatenation)."""
    pauses = [tm.pause_handling(words, p.start, p.end).took for p in dialogue.pauses]
    smooth = [tm.smooth_turn_taking(words, t.end, t.window_end) for t in dialogue.smooth_turns]
    inter = [tm.user_interruption(words, t.end, t.window_end) for t in dialogue.interruptions]
    # Backchannels: agent segments that start while the user holds the floor (inside a user turn).
    during = [s for s in segments if any(u0 <= s[0] < u1 for u0, u1 in dialogue.user_turns)]
    floor_s = sum(u1 - u0 for u0, u1 in dialogue.user_turns)
    bc = tm.backchannel(during, words, floor_s) if during else None
    agent_turns = tm.merge_segments(segments, TURN_MERGE_GAP_S)
    fto = tm.floor_transfer_offsets(dialogue.user_turns, agent_turns, MIN_TURN_S)
    return {
        "pause": pauses,
        "smooth": [t.took for t in smooth],
        "smooth_latency": [round(t.latency, 4) for t in smooth if t.latency is not None],
        "interruption": [t.took for t in inter],
        "interruption_latency": [round(t.latency, 4) for t in inter if t.latency is not None],
        "backchannels": len(bc.backchannels) if bc is not None else 0,
        "backchannel_took_turn": bool(bc.took_turn) if bc is not None else False,
        "floor_s": round(floor_s, 4),
        "fto": [round(x, 4) for x in fto],
        "head": head_accuracy(dialogue, head),
        "agent_speech_s": round(sum(e - s for s, e in segments), 4),
        "words": len(words),
    }


def reference_fto(dialogues: list[ScriptedDialogue]) -> list[float]:
    """Floor-transfer offsets of the reference dialogues (what the synthetic data's agent did)."""
    out: list[float] = []
    for d in dialogues:
        out += tm.floor_transfer_offsets(d.user_turns, tm.merge_segments(d.reference_agent_turns, TURN_MERGE_GAP_S),
                                         MIN_TURN_S)
    return [round(x, 4) for x in out]


def _r(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def pool(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures of one sweep point (delay x prediction) from its calls."""

    def cat(key: str) -> list[Any]:
        return [v for c in calls for v in c[key]]

    pause, smooth, inter = cat("pause"), cat("smooth"), cat("interruption")
    fto = cat("fto")
    head_n = sum(c["head"]["chunks"] for c in calls)
    head_ok = sum(c["head"]["correct"] for c in calls)
    per = {lab: [sum(c["head"]["per_label"].get(lab, [0, 0])[i] for c in calls) for i in (0, 1)] for lab in "012"}
    floor = sum(c["floor_s"] for c in calls)
    bc_turns = sum(c["backchannel_took_turn"] for c in calls)
    return {
        "pause_tor": _r(tm.rate(pause)),
        "turn_taking_tor": _r(tm.rate(smooth)),
        "interruption_tor": _r(tm.rate(inter)),
        "turn_taking_latency_s": _r(tm.mean(cat("smooth_latency"))),
        "interruption_latency_s": _r(tm.mean(cat("interruption_latency"))),
        "backchannel_per_s": _r(sum(c["backchannels"] for c in calls) / floor) if floor else None,
        "backchannel_took_turn_rate": _r(bc_turns / len(calls)) if calls else None,
        "fto_median_s": _r(float(np.median(fto))) if fto else None,
        "overlap_rate": _r(float(np.mean([x < 0 for x in fto]))) if fto else None,
        "head_accuracy": _r(head_ok / head_n) if head_n else None,
        "head_recall": {name: _r(per[lab][0] / per[lab][1]) if per[lab][1] else None
                        for lab, name in zip("012", ("continue", "interrupt", "reject"), strict=True)},
        "cases": {"pause": len(pause), "turn_taking": len(smooth), "interruption": len(inter),
                  "floor_transfers": len(fto), "head_chunks": head_n},
        "agent_speech_s": _r(sum(c["agent_speech_s"] for c in calls)),
        "fto": fto,
    }
