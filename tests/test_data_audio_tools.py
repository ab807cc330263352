"""Augmentations, WORLD emotions, espeak word alignment and the emotion classifier's save/load."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import augment as aug

RATE = 16000


def tone_bursts(rate: int = RATE) -> np.ndarray:
    """0.5 s silence, 0.6 s of a harmonic 140 Hz tone, 0.4 s silence, 0.5 s tone, 0.5 s silence."""
    t = np.arange(int(0.6 * rate)) / rate
    burst = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8)).astype(np.float32) * 0.2
    z = lambda s: np.zeros(int(s * rate), np.float32)  # noqa: E731
    return np.concatenate([z(0.5), burst, z(0.4), burst[: int(0.5 * rate)], z(0.5)])


def onset(x: np.ndarray, rate: int = RATE) -> float:
    e = np.abs(x) > 0.05 * np.abs(x).max()
    return np.flatnonzero(e)[0] / rate


def lag(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    spec = np.fft.irfft(np.fft.rfft(b[:n], 2 * n) * np.conj(np.fft.rfft(a[:n], 2 * n)))
    return int(np.argmax(np.r_[spec[-200:], spec[:200]])) - 200


def test_opus_roundtrip_keeps_length_and_alignment():
    x = tone_bursts()
    y = aug.opus_roundtrip(x, RATE, 16000)
    assert len(y) == len(x)
    assert lag(x, y) == 0
    assert np.corrcoef(x, y)[0, 1] > 0.9


def test_reverb_and_noise_keep_timing_speed_changes_length():
    rng = np.random.default_rng(0)
    x = tone_bursts()
    r = aug.reverb(x, RATE, 0.5, rng)
    assert len(r) == len(x) and abs(onset(r) - onset(x)) < 0.002
    tail = r[int(1.1 * RATE) : int(1.2 * RATE)]  # just after the first burst: the room rings on
    assert np.sqrt(np.mean(tail**2)) > 1e-3
    for kind in ("white", "pink"):
        nz = aug.white_noise(len(x), rng) if kind == "white" else aug.pink_noise(len(x), rng)
        y = aug.add_noise(x, nz, snr_db=20.0)
        snr = 10 * np.log10(aug.active_rms(x) ** 2 / aug.rms(y - x) ** 2)
        assert snr == pytest.approx(20.0, abs=0.5)
    fast = aug.speed(x, 1.1)
    assert len(fast) == pytest.approx(len(x) / 1.1, abs=2)
    # pink noise really is pink: more power below 500 Hz than above 4 kHz
    p = np.abs(np.fft.rfft(aug.pink_noise(RATE * 2, rng))) ** 2
    f = np.fft.rfftfreq(RATE * 2, 1 / RATE)
    assert p[(f > 50) & (f < 500)].mean() > 5 * p[f > 4000].mean()


def test_world_emotions_move_f0_rate_and_level():
    import pyworld as pw

    from training.data.emotion import EMOTION_CENTRES, Prosody, analyze, render, render_emotions

    x = tone_bursts()
    feat = analyze(x, RATE)
    up = render(feat, Prosody(f0_shift=3.0))
    slow = render(feat, Prosody(rate=0.8))
    assert len(up) == len(x) and len(slow) == int(round(len(x) / 0.8))

    def median_f0(y):
        f0, _ = pw.dio(y.astype(np.float64), RATE, frame_period=5.0)
        return np.median(f0[f0 > 0])

    assert 12 * np.log2(median_f0(up) / median_f0(x)) == pytest.approx(3.0, abs=0.5)
    outs = render_emotions(x, RATE, dict(EMOTION_CENTRES))
    level = {k: 20 * np.log10(aug.rms(v)) for k, v in outs.items()}
    assert level["angry"] > level["neutral"] + 3 > level["sad"] + 3
    assert median_f0(outs["surprised"]) > median_f0(outs["happy"]) > median_f0(outs["neutral"]) > median_f0(outs["sad"])
    assert len(outs["sad"]) > len(outs["neutral"]) > len(outs["angry"])  # slower / faster


def test_dtw_word_alignment_recovers_known_boundaries():
    from training.data.align import align_words

    def word(f: float, dur: float) -> np.ndarray:  # a "word": a harmonic tone with a falling glide
        t = np.arange(int(dur * RATE)) / RATE
        inst = f * (1 - 0.2 * t / dur)
        phase = 2 * np.pi * np.cumsum(inst) / RATE
        return (np.sin(phase) + 0.3 * np.sin(3 * phase)).astype(np.float32) * 0.3

    spec = ((150, 0.3), (300, 0.25), (220, 0.35), (420, 0.3))
    words = [word(f, d) for f, d in spec]
    # The "sentence": the same words at other speaking rates, with a 0.25 s pause after word 2.
    stretched = [word(f, d * s) for (f, d), s in zip(spec, (1.1, 0.8, 1.0, 1.25), strict=True)]
    gap = np.zeros(int(0.25 * RATE), np.float32)
    sentence = np.concatenate([stretched[0], stretched[1], gap, stretched[2], stretched[3]])
    truth, pos = [], 0
    for i, w in enumerate(stretched):
        truth.append((pos / RATE, (pos + len(w)) / RATE))
        pos += len(w) + (len(gap) if i == 1 else 0)
    spans = align_words(sentence, RATE, words)
    for (s, e), (ts, te) in zip(spans, truth, strict=True):
        assert abs(s - ts) <= 0.04 and abs(e - te) <= 0.04  # 25 ms windows, 10 ms hop


def test_espeak_voice_word_times_follow_the_audio(default_cfg):
    from training.data.align import frame_energy_db
    from training.data.voices import VoiceBank, VoiceSpec

    r = VoiceBank(default_cfg.voice).render(VoiceSpec("espeak", name="en-us+m3"), "I was thinking, about going to the park.", 0)
    assert [w.word for w in r.words] == ["I", "was", "thinking", "about", "going", "to", "the", "park"]
    e = frame_energy_db(r.audio, r.sample_rate)
    # The comma is an exact pause in espeak's output (the longest silent run between "thinking"
    # and "going"): "thinking" must end before it and "about" start after it.
    silent = e < -100
    lo, hi = int(r.words[2].start * 100), int(r.words[4].start * 100)
    best, run, best_end = 0, 0, 0
    for i in range(lo, hi):
        run = run + 1 if silent[i] else 0
        if run > best:
            best, best_end = run, i + 1
    assert best >= 5
    gap_start, gap_end = (best_end - best) / 100, best_end / 100
    assert r.words[2].end <= gap_start + 0.02
    assert r.words[3].start >= gap_end - 0.02


def test_voice_ids_round_trip_and_heldout_is_stable():
    from training.data.voices import (
        AGENT_VOICE,
        VoiceSpec,
        heldout_user_voices,
        train_user_voices,
        user_voices,
    )

    for v in user_voices() + (AGENT_VOICE,):
        assert VoiceSpec.parse(v.id).id == v.id
    held, train = heldout_user_voices(), train_user_voices()
    assert held and train and not {v.id for v in held} & {v.id for v in train}
    assert not AGENT_VOICE.heldout
    assert {v.engine for v in train} == {"espeak", "piper"}


def test_emotion_classifier_save_load_predicts_the_same(tmp_path):
    import torch

    from training.data.emotion import EMOTION_CENTRES, render_emotions
    from training.data.emotion_classifier import EmotionClassifier, emotion_features
    from training.data.manifest import EMOTIONS

    outs = render_emotions(tone_bursts(), RATE, dict(EMOTION_CENTRES))
    raw = np.stack([emotion_features(outs[e], RATE) for e in EMOTIONS])
    x = torch.from_numpy(raw - raw.mean(0)).float()  # speaker-normalised: relative to this voice's mean
    y = torch.arange(len(EMOTIONS))
    model = EmotionClassifier(x.shape[1])
    model.mean.copy_(x.mean(0))
    model.std.copy_(x.std(0) + 1e-3)
    model.agent_reference.copy_(torch.from_numpy(raw.mean(0)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        loss = torch.nn.functional.cross_entropy(model.train()(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1  # five clearly different renderings are separable
    path = model.save(tmp_path / "clf.pt")
    loaded = EmotionClassifier.load(path)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    label, probs = loaded.predict(outs["sad"], RATE)  # relative to the stored reference
    assert label == "sad" and abs(sum(probs.values()) - 1) < 1e-5
    assert loaded.predict_voice([outs[e] for e in EMOTIONS], RATE) == list(EMOTIONS)
