"""Importers: real corpora -> our JSONL manifests (audio stays where it is; paths are relative).

* LibriSpeech layout: ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` + ``*.flac``
  -> ``utterances`` (split from the subset name: train-* / dev-* / test-*).
* ESD (Emotional Speech Dataset) layout: ``<speaker>/<speaker>.txt`` (``id<TAB>text<TAB>Emotion``)
  and ``<speaker>/<Emotion>/[train|evaluation|test/]<id>.wav`` -> ``emotions`` (real, acted
  emotions; speakers alternate between classifier halves A/B).
* Fisher-style two-channel conversations: one 2-channel audio file per conversation (``.sph``
  u-law/PCM or ``.wav``/``.flac``) and a transcript ``<name>.txt`` with lines
  ``start end A: text`` -> ``dialogues``. Speaker A is mapped to the agent channel and B to the
  user channel; state labels are derived from the transcript with the same rules as the
  synthetic data, backchannels being short "yeah"/"uh-huh"-only lines over the other speaker
  (``labels_source: transcript-heuristic``).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from training.data.manifest import Dialogue, EmotionUtterance, Segment, Utterance, r6, write_manifest
from training.data.text_sources import stable_hash, text_split


class ImportError_(ValueError):
    """A corpus folder that does not have the expected layout."""


def _rel(path: Path, out: Path) -> str:
    return os.path.relpath(path.resolve(), out.resolve())


def audio_info(path: Path) -> tuple[int, float, int]:
    """(sample rate, duration s, channels) without decoding the whole file where possible."""
    if path.suffix.lower() == ".wav":
        import wave

        with wave.open(str(path)) as w:
            return w.getframerate(), w.getnframes() / w.getframerate(), w.getnchannels()
    if path.suffix.lower() == ".sph":
        header = _sphere_header(path)
        rate = int(header["sample_rate"])
        return rate, int(header["sample_count"]) / rate, int(header.get("channel_count", 1))
    import av

    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        rate = s.codec_context.sample_rate
        dur = float(s.duration * s.time_base) if s.duration else float(c.duration or 0) / 1e6
        return rate, dur, s.codec_context.channels


# --- LibriSpeech ---------------------------------------------------------------------------------

def import_librispeech(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, int]:
    src, out = Path(src), Path(out)
    trans = sorted(src.rglob("*.trans.txt"))
    if not trans:
        raise ImportError_(f"{src}: no */*/*/<speaker>-<chapter>.trans.txt files (LibriSpeech layout)")
    recs = []
    for tf in trans:
        subset = tf.parent.parent.parent.name
        split = "test" if subset.startswith("test") else ("val" if subset.startswith("dev") else "train")
        for line in tf.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            uid, _, text = line.partition(" ")
            audio = tf.parent / f"{uid}.flac"
            if not audio.exists():
                alt = tf.parent / f"{uid}.wav"
                if not alt.exists():
                    raise ImportError_(f"{tf}: audio for {uid} not found (.flac or .wav)")
                audio = alt
            rate, dur, _ = audio_info(audio)
            speaker = uid.split("-")[0]
            recs.append(Utterance(id=f"librispeech-{uid}", split=split, role="user", voice=f"librispeech:{speaker}",
                                  text=text.strip().lower(), audio=_rel(audio, out), sample_rate=rate, duration=r6(dur),
                                  source=f"librispeech:{subset}", extra={"synthetic": False}))
    write_manifest(out, "utterances", recs)
    return {"utterances": len(recs)}


# --- ESD -----------------------------------------------------------------------------------------

_ESD_EMOTIONS = {"neutral": "neutral", "happy": "happy", "sad": "sad", "angry": "angry", "surprise": "surprised",
                 "surprised": "surprised"}
_ESD_SPLITS = {"train": "train", "evaluation": "val", "test": "test"}


def import_esd(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, int]:
    src, out = Path(src), Path(out)
    speakers = sorted(p for p in src.iterdir() if p.is_dir() and (p / f"{p.name}.txt").is_file())
    if not speakers:
        raise ImportError_(f"{src}: no <speaker>/<speaker>.txt files (ESD layout)")
    recs = []
    for spk in speakers:
        texts: dict[str, tuple[str, str]] = {}
        for line in (spk / f"{spk.name}.txt").read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.strip().split("\t")
            if len(parts) >= 3:
                texts[parts[0]] = (parts[1].strip(), parts[2].strip().lower())
        half = "A" if stable_hash("esd-half", spk.name) % 2 == 0 else "B"
        for wav in sorted(spk.rglob("*.wav")):
            uid = wav.stem
            if uid not in texts:
                continue
            text, emo_name = texts[uid]
            emotion = _ESD_EMOTIONS.get(emo_name) or _ESD_EMOTIONS.get(wav.parent.name.lower()) \
                or _ESD_EMOTIONS.get(wav.parent.parent.name.lower())
            if emotion is None:
                continue
            split = _ESD_SPLITS.get(wav.parent.name.lower()) or text_split(f"esd:{text}", 0.05, 0.07)
            num = int(re.sub(r"\D", "", uid.split("_")[-1]) or 0)
            rate, dur, _ = audio_info(wav)
            recs.append(EmotionUtterance(id=f"esd-{uid}", split=split, group=f"esd-{spk.name}-{(num - 1) % 350:03d}",
                                         emotion=emotion, voice=f"esd:{spk.name}", voice_half=half, text=text,
                                         audio=_rel(wav, out), sample_rate=rate, duration=r6(dur), synthetic=False))
    write_manifest(out, "emotions", recs)
    return {"emotions": len(recs)}


# --- Fisher --------------------------------------------------------------------------------------

def _sphere_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        head = f.read(1024)
    if not head.startswith(b"NIST_1A"):
        raise ImportError_(f"{path}: not a NIST SPHERE file")
    size = int(head.split(b"\n")[1].strip())
    with open(path, "rb") as f:
        head = f.read(size)
    fields: dict[str, Any] = {"header_size": size}
    for line in head.decode("ascii", errors="replace").splitlines()[2:]:
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0] != "end_head":
            name, kind, value = parts
            fields[name] = int(value) if kind == "-i" else (float(value) if kind == "-r" else value.strip())
    return fields


def _ulaw_decode(data: np.ndarray) -> np.ndarray:
    u = ~data.astype(np.uint8)
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa.astype(np.int32) << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.float32) / 32768.0


def read_sphere(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """(audio (T,) or (T, C) float32, rate) from an uncompressed NIST SPHERE file (PCM or u-law)."""
    path = Path(path)
    h = _sphere_header(path)
    coding = str(h.get("sample_coding", "pcm"))
    if "shorten" in coding or "wavpack" in coding:
        raise ImportError_(f"{path}: compressed SPHERE ({coding}); decompress it first (e.g. with sph2pipe)")
    channels = int(h.get("channel_count", 1))
    raw = Path(path).read_bytes()[h["header_size"]:]
    if coding.startswith("ulaw") or coding.startswith("mu-law"):
        audio = _ulaw_decode(np.frombuffer(raw, dtype=np.uint8))
    else:
        order = "<" if str(h.get("sample_byte_format", "01")) == "01" else ">"
        audio = np.frombuffer(raw, dtype=f"{order}i2").astype(np.float32) / 32768.0
    audio = audio[: (len(audio) // channels) * channels].reshape(-1, channels)
    return (audio[:, 0] if channels == 1 else audio), int(h["sample_rate"])


_LINE = re.compile(r"^\s*([\d.]+)\s+([\d.]+)\s+([AB])\s*:\s*(.*)$")
_BACKCHANNEL_WORDS = {"yeah", "uh-huh", "uhhuh", "mm-hm", "mhm", "mm", "hm", "right", "okay", "ok", "yes", "yep",
                      "sure", "oh", "uh", "huh", "[laughter]", "really", "wow", "i", "see"}


def _is_backchannel(text: str) -> bool:
    words = [w.strip(".,?!").lower() for w in text.split()]
    return 0 < len(words) <= 3 and all(w in _BACKCHANNEL_WORDS for w in words)


def import_fisher(src: str | os.PathLike[str], out: str | os.PathLike[str], max_pause: float = 1.0,
                  chunk: float = 0.16) -> dict[str, int]:
    from training.data.dialogue import labels_for

    src, out = Path(src), Path(out)
    audio_files = {p.stem: p for p in src.rglob("*") if p.suffix.lower() in (".sph", ".wav", ".flac")}
    recs = []
    for tf in sorted(src.rglob("*.txt")):
        lines = [m for m in (_LINE.match(x) for x in tf.read_text(encoding="utf-8", errors="replace").splitlines()) if m]
        if not lines:
            continue
        audio = audio_files.get(tf.stem)
        if audio is None:
            raise ImportError_(f"{tf}: no audio file {tf.stem}.sph/.wav/.flac next to the transcripts")
        rate, dur, channels = audio_info(audio)
        if channels != 2:
            raise ImportError_(f"{audio}: expected 2 channels (one per speaker), got {channels}")
        raw = defaultdict(list)
        for m in lines:
            raw[m.group(3)].append((float(m.group(1)), float(m.group(2)), m.group(4).strip()))
        segs = _fisher_segments(raw, max_pause)
        n = int(round(dur * rate))
        labels = labels_for(segs, n, rate, chunk)
        cid = tf.stem
        recs.append(Dialogue(id=f"fisher-{cid}", split=text_split(f"fisher:{cid}", 0.01, 0.01), stage="overlap",
                             audio=_rel(audio, out), sample_rate=rate, duration=r6(dur), chunk_seconds=chunk,
                             labels=labels, segments=segs, user_voice=f"fisher:{cid}:B", agent_voice=f"fisher:{cid}:A",
                             source=f"fisher:{cid}",
                             extra={"channel_order": ["agent", "user"], "labels_source": "transcript-heuristic",
                                    "synthetic": False}))
    if not recs:
        raise ImportError_(f"{src}: no Fisher-style transcripts (lines 'start end A: text')")
    write_manifest(out, "dialogues", recs)
    return {"dialogues": len(recs)}


def _fisher_segments(raw: dict[str, list[tuple[float, float, str]]], max_pause: float) -> list[Segment]:
    chan = {"A": "agent", "B": "user"}
    other_spans = {k: [(s, e) for s, e, _ in v] for k, v in raw.items()}
    segs: list[Segment] = []
    for spk, items in raw.items():
        channel = chan[spk]
        other = other_spans.get("B" if spk == "A" else "A", [])
        current: Segment | None = None
        for s, e, text in sorted(items):
            inside_other = any(os_ < s and e < oe + 0.3 for os_, oe in other)
            if channel == "user" and _is_backchannel(text) and inside_other:
                segs.append(Segment(channel, "backchannel", r6(s), r6(e), text=text))
                continue
            if current is not None and s - current.end <= max_pause:
                current.pauses.append([current.end, r6(s)])
                current.end = r6(e)
                current.text += " " + text
                continue
            current = Segment(channel, "turn", r6(s), r6(e), text=text)
            segs.append(current)
    segs.sort(key=lambda x: (x.start, x.channel))
    # An agent (A) turn answers the last user (B) turn that ended before it started (+1 s slack).
    answered: set[int] = set()
    for a in segs:
        if a.channel != "agent":
            continue
        cands = [j for j, u in enumerate(segs) if u.channel == "user" and u.kind == "turn" and u.start < a.start
                 and u.end <= a.start + 1.0 and j not in answered]
        if cands:
            j = max(cands, key=lambda k: segs[k].end)
            a.reply_to = j
            answered.add(j)
    return segs
