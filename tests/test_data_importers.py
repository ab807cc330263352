"""Importers on tiny corpus trees made here: LibriSpeech, ESD, Fisher-style two-channel."""

from __future__ import annotations

import numpy as np
import pytest

from speech_io.wav import write_wav
from training.data import load_manifest
from training.data.importers import ImportError_, import_esd, import_fisher, import_librispeech

RATE = 16000


def tone(seconds: float, f: float = 200.0, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def write_flac(path, audio: np.ndarray, rate: int = RATE) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flac") as out:
        st = out.add_stream("flac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for p in st.encode(frame):
            out.mux(p)
        for p in st.encode(None):
            out.mux(p)


def test_librispeech(tmp_path):
    src = tmp_path / "LibriSpeech"
    for subset, spk, chap, n in (("train-clean-100", "19", "198", 2), ("dev-clean", "84", "121", 1), ("test-clean", "61", "70", 1)):
        d = src / subset / spk / chap
        lines = []
        for i in range(n):
            uid = f"{spk}-{chap}-{i:04d}"
            write_flac(d / f"{uid}.flac", tone(0.5 + 0.25 * i))
            lines.append(f"{uid} HELLO WORLD NUMBER {i}")
        (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "ls-manifest"
    assert import_librispeech(src, out) == {"utterances": 4}
    utts = {u.id: u for u in load_manifest(out, "utterances")}
    u = utts["librispeech-19-198-0001"]
    assert u.split == "train" and u.text == "hello world number 1" and u.voice == "librispeech:19"
    assert u.duration == pytest.approx(0.75, abs=0.01) and u.sample_rate == RATE
    audio = u.load_audio()
    assert len(audio) == pytest.approx(0.75 * RATE, abs=50) and np.abs(audio).max() == pytest.approx(0.3, abs=0.01)
    assert {x.split for x in utts.values()} == {"train", "val", "test"}
    assert not u.audio.startswith("/")  # relative to the manifest root
    with pytest.raises(ImportError_):
        import_librispeech(tmp_path / "nothing-here", out)


def test_esd(tmp_path):
    src = tmp_path / "ESD"
    lines = []
    for spk in ("0011", "0012"):
        rows = []
        for k, (emo, folder) in enumerate((("Neutral", "Neutral"), ("Happy", "Happy"), ("Surprise", "Surprise"))):
            uid = f"{spk}_{k * 350 + 1:06d}"
            write_wav(src / spk / folder / ("train" if spk == "0011" else "test") / f"{uid}.wav", tone(0.4, 150 + 50 * k), RATE)
            rows.append(f"{uid}\tThe same sentence.\t{emo}")
        (src / spk / f"{spk}.txt").write_text("\n".join(rows) + "\n")
        lines += rows
    out = tmp_path / "esd-manifest"
    assert import_esd(src, out) == {"emotions": 6}
    recs = load_manifest(out, "emotions")
    assert sorted({r.emotion for r in recs}) == ["happy", "neutral", "surprised"]
    assert {r.split for r in recs if r.voice == "esd:0011"} == {"train"}
    assert {r.split for r in recs if r.voice == "esd:0012"} == {"test"}
    assert len({r.group for r in recs}) == 2  # one sentence per speaker, three emotions each
    assert all(r.synthetic is False for r in recs)
    assert len(recs[0].load_audio()) == int(0.4 * RATE)


def write_sphere_ulaw(path, stereo: np.ndarray, rate: int = 8000) -> None:
    """A two-channel u-law NIST SPHERE file (Fisher's format)."""
    x = np.clip(stereo, -1, 1)
    mag = np.log1p(255 * np.abs(x)) / np.log1p(255)
    # G.711 u-law via the continuous formula (close enough for a test of the decoder's plumbing)
    ulaw = (~((np.sign(x) < 0).astype(np.uint8) << 7 | (np.round(mag * 127)).astype(np.uint8))).astype(np.uint8)
    header = (f"NIST_1A\n   1024\nsample_rate -i {rate}\nchannel_count -i 2\nsample_count -i {len(x)}\n"
              "sample_n_bytes -i 1\nsample_coding -s4 ulaw\nend_head\n").encode()
    path.write_bytes(header.ljust(1024, b" ") + ulaw.reshape(-1).tobytes())


def test_fisher_two_channel_with_heuristic_labels(tmp_path):
    src = tmp_path / "fisher"
    src.mkdir()
    rate = 8000
    dur = 8.0
    a = np.zeros(int(dur * rate), np.float32)
    b = np.zeros(int(dur * rate), np.float32)
    # B (user) asks 0.5-2.0, A (agent) answers 2.6-5.5, B says "yeah" at 3.5-3.8 (backchannel), B again 6.0-7.0
    b[int(0.5 * rate) : int(2.0 * rate)] = tone(1.5, 180, rate)
    a[int(2.6 * rate) : int(5.5 * rate)] = tone(2.9, 120, rate)
    b[int(3.5 * rate) : int(3.8 * rate)] = tone(0.3, 250, rate)
    b[int(6.0 * rate) : int(7.0 * rate)] = tone(1.0, 220, rate)
    write_sphere_ulaw(src / "fe_03_00001.sph", np.stack([a, b], axis=1), rate)
    (src / "fe_03_00001.txt").write_text(
        "# fe_03_00001.sph\n\n0.50 2.00 B: so what do you think about the weather\n2.60 5.50 A: i think it is going to rain later\n"
        "3.50 3.80 B: yeah\n6.00 7.00 B: okay thanks\n")
    write_wav(src / "conv2.wav", np.stack([a, b], axis=1)[: 4 * rate], rate)
    (src / "conv2.txt").write_text("0.50 2.00 B: hello there\n2.60 3.90 A: hi\n")
    out = tmp_path / "fisher-manifest"
    assert import_fisher(src, out) == {"dialogues": 2}
    d = {x.id: x for x in load_manifest(out, "dialogues")}["fisher-fe_03_00001"]
    audio = d.load_audio()
    assert audio.shape == (int(dur * rate), 2)
    # channel 0 is the user (B), channel 1 the agent (A), whatever order the file has
    assert np.abs(audio[int(1.0 * rate), 0]) > 0 or np.abs(audio[int(1.0 * rate) : int(1.1 * rate), 0]).max() > 0.1
    assert np.abs(audio[int(1.0 * rate) : int(1.1 * rate), 1]).max() < 0.01
    kinds = [(s.channel, s.kind) for s in d.segments]
    assert kinds == [("user", "turn"), ("agent", "turn"), ("user", "backchannel"), ("user", "turn")]
    lab = d.label_array()
    assert lab[int(1.0 / 0.16)] == 0  # user speaking
    assert lab[int(2.24 / 0.16) - 1] == 1  # 2.0 + 0.08 <= t <= 2.6
    assert lab[int(3.68 / 0.16) - 1] == 2  # the backchannel
    assert d.extra["labels_source"] == "transcript-heuristic"
