"""Scoring one simulated call, and pooling calls into the figures of a sweep point.

What the user heard of the agent (the downlink's output) is transcribed by the Whisper judge
(word timestamps snapped to the audio's energy) and segmented by the VAD; the scripted dialogue
says where the user paused, ended a turn or barged in. The definitions are Full-Duplex-Bench v1's
(``duplex/turn_metrics.py``): a take-over is an utterance starting in the window that lasts >= 1 s
or has more than 3 words. Pooled rates are over all cases of all dialogues (micro average).
"""

from __future__ import annotations

import dataclasses
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


REGION_GAP_S = 1.0
"""Agent speech closer than this is transcribed in one piece (the utterance gap of ``turn_metrics``)."""
REGION_PAD_S = 0.15
REGION_MAX_S = 28.0
"""Whisper decodes 30 s windows; longer regions are cut at their widest gap (or hard, if none)."""


def speech_regions(segments: list[tuple[float, float]], duration: float) -> list[tuple[float, float]]:
    """VAD segments -> padded regions to transcribe one by one (gaps < ``REGION_GAP_S`` bridged)."""
    groups: list[list[tuple[float, float]]] = []
    for a, b in sorted(segments):
        if groups and a - groups[-1][-1][1] < REGION_GAP_S:
            groups[-1].append((a, b))
        else:
            groups.append([(a, b)])
    pieces: list[tuple[float, float]] = []
    while groups:
        g = groups.pop(0)
        if g[-1][1] - g[0][0] <= REGION_MAX_S:
            pieces.append((g[0][0], g[-1][1]))
            continue
        cuts = [i for i in range(1, len(g)) if g[i][0] - g[0][0] <= REGION_MAX_S]
        if cuts:  # split at the widest gap that leaves a first part Whisper can take whole
            i = max(cuts, key=lambda k: g[k][0] - g[k - 1][1])
            groups[:0] = [g[:i], g[i:]]
        else:  # one segment longer than a window
            a, b = g[0][0], g[-1][1]
            pieces += [(t, min(b, t + REGION_MAX_S)) for t in np.arange(a, b, REGION_MAX_S)]
    out = []
    for i, (a, b) in enumerate(pieces):
        lo = (out[-1][1] if out else 0.0)
        hi = pieces[i + 1][0] if i + 1 < len(pieces) else duration
        out.append((max(lo, a - REGION_PAD_S), min(hi, b + REGION_PAD_S)))
    return out


def judge_words(judge: Any, audio: np.ndarray, rate: int = 16000,
                segments: list[tuple[float, float]] | None = None) -> list[Any]:
    """The judge's timed words of ``audio``: greedy decoding (deterministic; no sampling fallback),
    punctuation-only "words" (what Whisper makes of noise) dropped.

    With the channel's VAD ``segments``, each stretch of speech is transcribed on its own
    (``speech_regions``) and its words moved to channel time. Decoding the whole channel, even
    with silences of 2 s and more cut first (faster-whisper's ``vad_filter``, what runs without
    segments), Whisper skipped whole replies: in a simulated call (dlg-overlap-0000) it heard
    "Block." in 9.5 s of agent speech that it transcribes word by word on its own.
    """
    if segments is None:
        words = judge.transcribe(audio, rate, temperature=0.0, vad_filter=True).words
    else:
        words = []
        for a, b in speech_regions(segments, len(audio) / rate):
            part = judge.transcribe(audio[int(a * rate) : int(b * rate)], rate, temperature=0.0).words
            words += [dataclasses.replace(w, start=w.start + a, end=w.end + a) for w in part]
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
