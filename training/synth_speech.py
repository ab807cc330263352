"""A small synthetic speech corpus for the encoder stages (format: ``training.speech_data``).

SYNTHETIC: user voices are espeak-ng voices (base voice x variant, random rate and pitch); text
is chatterbot-corpus English. The test split holds out both voices (variants and base accents
never used in train) and text (a hash of the normalised sentence), so held-out figures measure
unseen voices and unseen text.

Episodes are whole synthetic dialogues on the *user* channel, labelled per 160 ms chunk by the
shared contract (see ``label_chunks``); the agent's speech is only present as the per-chunk
"agent speaking" flag (the user channel is echo-free). A mid-turn pause is silence inserted at a
word boundary (after a word that leaves the sentence unfinished) of one rendering of the whole
sentence (``speak_with_pause``), so the words before it keep their mid-sentence prosody.

This generator exists so every stage can be built and tested before the project's full corpus
(``training.data``) lands; ``python -m training.synth_speech --out DIR`` writes one.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agent.text_metrics import normalize
from speech_io.wav import resample, write_wav

SR = 16000
CHUNK_S = 0.16
BASES_TRAIN = ["en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland", "en-029"]
BASES_TEST = ["en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
VARIANTS_TRAIN = ["m1", "m2", "m3", "m4", "f1", "f2", "f3", "Andy", "Annie", "Alex", "Belinda", "David", "Ed",
                  "Mike", "Linda", "Paul", "Robert", "Steph", "john", "max", "klatt", "klatt2", "shelby", "victor"]
VARIANTS_TEST = ["m6", "m7", "f4", "f5", "Alicia", "Gene", "Lee", "Marco", "Steph2", "klatt4", "travis", "Zac"]
BACKCHANNELS = ["mm-hm", "yeah", "uh-huh", "right", "okay", "I see", "sure", "mm", "yes", "got it"]
BARGE_INS = ["wait", "hold on", "no, actually", "sorry, wait", "hang on", "stop, wait"]
# Words after which a sentence is left syntactically unfinished (where a mid-turn pause goes).
DANGLING = {"the", "a", "an", "to", "and", "of", "in", "is", "my", "your", "because", "that", "with", "for",
            "but", "so", "are", "was", "about", "on", "if", "or", "what", "when", "can", "do", "i"}


def espeak(text: str, voice: str, rate: int = 170, pitch: int = 50) -> np.ndarray:
    """espeak-ng -> float32 mono at 16 kHz, trimmed to the voiced part (+10 ms each side)."""
    from training.data.voices import EspeakEngine

    a, sr = EspeakEngine()._run(_spec(voice, rate, pitch), text)
    a = resample(a, sr, SR)
    # espeak pads ~50-100 ms of silence at both ends.
    span = _voiced_span(a)
    return (a[span[0] : span[1]] if span else a).astype(np.float32)


def _spec(voice: str, rate: int, pitch: int):
    """This module's (voice, words per minute, 0-99 pitch) as the data issue's espeak `VoiceSpec`."""
    from training.data.voices import VoiceSpec

    return VoiceSpec("espeak", name=voice, pitch=float(pitch - 50), speed=rate / 175)


def _voiced_span(a: np.ndarray) -> tuple[int, int] | None:
    """[start, stop) of the samples above 0.01, widened by 10 ms each side; None when all quiet."""
    idx = np.flatnonzero(np.abs(a) > 0.01)
    if not len(idx):
        return None
    return max(0, int(idx[0]) - 160), int(idx[-1]) + 160


def corpus_sentences() -> tuple[list[str], list[str]]:
    """(sentences, questions) from chatterbot-corpus English, deduplicated."""
    import chatterbot_corpus
    import yaml

    folder = os.path.join(os.path.dirname(chatterbot_corpus.__file__), "data", "english")
    lines: dict[str, str] = {}
    questions: dict[str, str] = {}
    for f in sorted(glob.glob(os.path.join(folder, "*.yml"))):
        data = yaml.safe_load(open(f)) or {}
        for conv in data.get("conversations", []):
            for i, s in enumerate(conv):
                if not isinstance(s, str):
                    continue
                s = " ".join(s.replace("\u2019", "'").split())
                words = normalize(s).split()
                if 2 <= len(words) <= 22 and s.isascii():
                    lines.setdefault(normalize(s), s)
                if i == 0 and s.endswith("?") and 3 <= len(words) <= 16 and s.isascii():
                    questions.setdefault(normalize(s), s)
    return list(lines.values()), list(questions.values())


def _text_hash(text: str) -> int:
    return int(hashlib.sha1(normalize(text).encode()).hexdigest()[:8], 16)


def is_test_text(text: str, frac: float = 0.12) -> bool:
    return (_text_hash(text) % 10000) / 10000 < frac


def voice_for(rng: random.Random, split: str) -> tuple[str, int, int]:
    bases, variants = (BASES_TEST, VARIANTS_TEST) if split == "test" else (BASES_TRAIN, VARIANTS_TRAIN)
    return f"{rng.choice(bases)}+{rng.choice(variants)}", rng.randint(140, 200), rng.randint(30, 70)


# -- episodes ------------------------------------------------------------------------------------


@dataclass
class Timeline:
    """User-channel events (start, end, kind) and agent speech intervals, in seconds."""

    events: list[tuple[float, float, str]] = field(default_factory=list)
    agent: list[tuple[float, float]] = field(default_factory=list)
    turn_ends: list[tuple[float, float]] = field(default_factory=list)
    """(end of user turn e, reply start r)."""
    length: float = 0.0


def label_chunks(tl: Timeline, n_chunks: int) -> tuple[list[int], list[bool], list[str]]:
    """The shared per-chunk contract (decision with audio up to the chunk's end te):

    - agent speaking at the chunk: CONTINUE if it overlaps a barge-in, else REJECT
      (silence, backchannels, noise while the agent talks);
    - else INTERRUPT if te in [e + 0.08, r] for a user turn ending at e with reply start r;
    - else REJECT if it overlaps a backchannel / noise / background speech;
    - else CONTINUE (user speaking, mid-turn pause, or plain silence with nobody speaking).
    """
    labels, speaking, tags = [], [], []
    for k in range(n_chunks):
        t0, te = k * CHUNK_S, (k + 1) * CHUNK_S
        spk = any(a < te - 1e-6 and b > t0 + 1e-6 for a, b in tl.agent)
        kinds = {kind for (a, b, kind) in tl.events if a < te and b > t0}
        # What the chunk holds, most specific first.
        tag = next((k_ for k_ in _TAG_ORDER if k_ in kinds), "agent-silence" if spk else "silence")
        if spk:
            lab = 0 if "bargein" in kinds else 2
        elif any(e + 0.08 - 1e-6 <= te <= r + 1e-6 for e, r in tl.turn_ends):
            lab, tag = 1, "gap"
        elif kinds & {"backchannel", "noise", "background"}:
            lab = 2
        else:
            lab = 0
        labels.append(lab)
        speaking.append(spk)
        tags.append(tag)
    return labels, speaking, tags


_TAG_ORDER = ("bargein", "backchannel", "noise", "background", "speech", "pause")


def _snap_up(t: float) -> float:
    return float(np.ceil(t / CHUNK_S - 1e-9) * CHUNK_S)


def _split_for_pause(rng: random.Random, text: str) -> tuple[str, str] | None:
    words = text.split()
    cuts = [i for i in range(1, len(words) - 1) if words[i - 1].lower().strip(",") in DANGLING]
    if not cuts:
        return None
    i = rng.choice(cuts)
    return " ".join(words[:i]), " ".join(words[i:])


def speak_with_pause(first: str, rest: str, voice: str, rate: int = 170, pitch: int = 50
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """The sentence ``first rest`` rendered once and cut between the two parts; None when the
    boundary cannot be located. The caller puts the mid-turn pause between the two pieces.

    Rendering the sentence in one piece keeps espeak's mid-clause prosody at the cut: the words
    before the pause do not get the sentence-final fall they get when rendered alone, and a
    speaker who stops mid-sentence does not produce one either. (``bench duplex`` makes its pause
    material the same way, so training and the runtime benchmark now agree.)
    """
    from agent.phonemize import normalize_text
    from agent.word_timing import sentence_words
    from training.data.voices import EspeakEngine

    rendered = EspeakEngine().render(_spec(voice, rate, pitch), f"{first} {rest}")
    k = len(sentence_words(normalize_text(first)))
    if not 0 < k < len(rendered.words):
        return None
    a = resample(rendered.audio, rendered.sample_rate, SR).astype(np.float32)
    hop = SR // 100
    lo = max(0, int((rendered.words[k - 1].end - 0.03) * SR))
    hi = min(len(a), int((rendered.words[k].start + 0.03) * SR))
    if hi - lo < hop:
        return None
    # Cut at the quietest 10 ms around the word boundary (robust to small alignment errors).
    frames = a[lo : lo + (hi - lo) // hop * hop].reshape(-1, hop)
    at = lo + hop * int(np.argmin((frames**2).mean(axis=1))) + hop // 2
    voiced = np.flatnonzero(np.abs(a) > 0.01)
    if not len(voiced) or not voiced[0] < at < voiced[-1]:
        return None
    span = _voiced_span(a)
    # Trim to the voiced part (+10 ms) like `espeak`, and each piece at the cut too.
    head, tail = a[span[0] : at], a[at : span[1]]
    sh, st = _voiced_span(head), _voiced_span(tail)
    if sh is None or st is None:
        return None
    return head[: sh[1]].copy(), tail[st[0] :].copy()


def make_episode(rng: random.Random, split: str, sentences: list[str], exchanges: int = 3
                 ) -> tuple[np.ndarray, Timeline]:
    """One synthetic dialogue on the user channel (float32 audio, timeline)."""
    voice, rate, pitch = voice_for(rng, split)
    other = voice_for(rng, split)
    pieces: list[tuple[float, np.ndarray]] = []
    tl = Timeline()

    def put(t: float, audio: np.ndarray, kind: str, gain: float = 1.0) -> float:
        pieces.append((t, audio * gain))
        end = t + len(audio) / SR
        tl.events.append((t, end, kind))
        return end

    t = rng.uniform(0.3, 1.0)
    for _ in range(exchanges):
        # The user's turn (or the rest of a barge-in), possibly with a mid-turn pause.
        text = rng.choice(sentences)
        split_parts = _split_for_pause(rng, text) if rng.random() < 0.45 else None
        pieces_ = speak_with_pause(*split_parts, voice, rate, pitch) if split_parts else None
        for j, piece in enumerate(pieces_ or [espeak(text, voice, rate, pitch)]):
            if j:
                gap = rng.uniform(0.5, 1.4)  # mid-turn pause: the sentence is unfinished (continue)
                tl.events.append((t, t + gap, "pause"))
                t += gap
            t = put(t, piece, "speech")
        e = t
        r = _snap_up(e + rng.uniform(0.25, 0.7))
        tl.turn_ends.append((e, r))
        # The agent replies from r; what the user does meanwhile.
        dur = rng.uniform(1.6, 4.0)
        stop = r + dur
        event = rng.choices(["silence", "backchannel", "noise", "background", "bargein"], [2, 3, 1.5, 1, 2])[0]
        if event == "backchannel":
            put(r + rng.uniform(0.3, max(0.4, dur - 0.8)), espeak(rng.choice(BACKCHANNELS), voice, rate, pitch), "backchannel")
        elif event == "noise":
            n = int(SR * rng.uniform(0.2, 0.8))
            noise = np.asarray(np.random.default_rng(rng.randrange(1 << 30)).standard_normal(n), dtype=np.float32)
            noise *= np.hanning(n).astype(np.float32) * rng.uniform(0.02, 0.15)
            put(r + rng.uniform(0.2, max(0.3, dur - 0.9)), noise, "noise")
        elif event == "background":
            bg = espeak(rng.choice(sentences), other[0], other[1], other[2])[: int(SR * (dur - 0.3))]
            put(r + rng.uniform(0.1, 0.4), bg, "background", gain=rng.uniform(0.08, 0.2))
        elif event == "bargein":
            tb = _snap_up(r + rng.uniform(0.5, max(0.6, dur - 0.4))) + rng.uniform(0.0, 0.1)
            lead = rng.choice(BARGE_INS)
            follow = rng.choice(sentences)
            # The first barge-in chunk stops the agent (the runtime acts on that chunk).
            stop = _snap_up(tb + 0.02)
            t = put(tb, espeak(f"{lead}, {follow}", voice, rate, pitch), "bargein")
            tl.agent.append((r, stop))
            e = t
            r = _snap_up(e + rng.uniform(0.25, 0.7))
            tl.turn_ends.append((e, r))
            stop = r + rng.uniform(1.6, 4.0)
        tl.agent.append((r, stop))
        t = stop + rng.uniform(0.3, 1.2)
    tl.length = t + 0.3
    n = int(np.ceil(tl.length / CHUNK_S))
    audio = np.zeros(int(n * CHUNK_S * SR), dtype=np.float32)
    for start, piece in pieces:
        i = int(start * SR)
        piece = piece[: max(0, len(audio) - i)]
        audio[i : i + len(piece)] += piece
    return np.clip(audio, -1, 1), tl


# -- writer --------------------------------------------------------------------------------------


def write_corpus(out: Path, n_asr: int, n_episodes: int, seed: int = 0, test_frac: float = 0.15,
                 max_questions: int | None = None, only: tuple[str, ...] = ("asr", "qa", "episodes")) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(exist_ok=True)
    rng = random.Random(seed)
    sentences, questions = corpus_sentences()
    qs = (questions[:max_questions] if max_questions else questions) if "qa" in only else []
    # Held-out questions: the 30% with the lowest text hash (an exact share at any size); their
    # text never appears in training utterances either.
    test_q = {normalize(q) for q in sorted(qs, key=_text_hash)[: round(0.3 * len(qs))]}
    train_s = [s for s in sentences if not is_test_text(s) and normalize(s) not in test_q]
    test_s = [s for s in sentences if is_test_text(s)]
    old_manifest = out / "manifest.json"
    counts = {"asr": 0, "qa": 0, "episodes": 0}
    if old_manifest.is_file():
        counts.update(json.loads(old_manifest.read_text()).get("counts", {}))

    def dump(kind: str, rows: list[dict]) -> None:
        tmp = out / f".{kind}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, out / f"{kind}.jsonl")
        counts[kind] = len(rows)

    every = max(2, round(1 / test_frac))  # every k-th item is held out (exact fraction, any size)
    rows = []
    for i in tqdm(range(n_asr if "asr" in only else 0), desc="asr utterances"):
        split = "test" if i % every == every - 1 else "train"
        text = rng.choice(test_s if split == "test" else train_s)
        voice, rate, pitch = voice_for(rng, split)
        path = f"audio/asr-{i:05d}.wav"
        write_wav(out / path, espeak(text, voice, rate, pitch), SR)
        rows.append({"id": f"asr-{i:05d}", "audio": path, "text": text, "speaker": voice, "split": split})
    if "asr" in only:
        dump("asr", rows)

    rows = []
    for i, q in enumerate(tqdm(qs, desc="spoken questions")):
        split = "test" if normalize(q) in test_q else "train"
        voice, rate, pitch = voice_for(rng, split)
        path = f"audio/qa-{i:05d}.wav"
        write_wav(out / path, espeak(q, voice, rate, pitch), SR)
        rows.append({"id": f"qa-{i:05d}", "audio": path, "question": q, "speaker": voice, "split": split})
    if "qa" in only:
        dump("qa", rows)

    rows = []
    for i in tqdm(range(n_episodes if "episodes" in only else 0), desc="episodes"):
        split = "test" if i % every == every - 1 else "train"
        audio, tl = make_episode(rng, split, test_s if split == "test" else train_s)
        n = int(round(len(audio) / (CHUNK_S * SR)))
        labels, speaking, tags = label_chunks(tl, n)
        path = f"audio/ep-{i:05d}.wav"
        write_wav(out / path, audio, SR)
        rows.append({"id": f"ep-{i:05d}", "audio": path, "labels": labels, "speaking": [int(s) for s in speaking],
                     "tags": tags, "speaker": "", "split": split})
    if "episodes" in only:
        dump("episodes", rows)
    meta = {"kind": "speech-corpus", "synthetic": True, "generator": "training.synth_speech", "seed": seed,
            "sample_rate": SR, "chunk_s": CHUNK_S, "counts": counts}
    (out / "manifest.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a small synthetic speech corpus (espeak-ng voices).")
    p.add_argument("--out", required=True)
    p.add_argument("--asr", type=int, default=3000, help="utterances")
    p.add_argument("--episodes", type=int, default=300, help="dialogue episodes")
    p.add_argument("--max-questions", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", choices=["asr", "qa", "episodes"], default=["asr", "qa", "episodes"])
    args = p.parse_args(argv)
    meta = write_corpus(Path(args.out), args.asr, args.episodes, args.seed, max_questions=args.max_questions,
                        only=tuple(args.only))
    print(json.dumps(meta["counts"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
