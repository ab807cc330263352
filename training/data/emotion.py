"""Synthetic emotional speech by analysis-resynthesis with the WORLD vocoder (pyworld).

There is no emotional voice here, so emotions are made from neutral speech along the dimensions
real emotional speech differs in (Scherer; Banse & Scherer): F0 level and range, energy, speaking
rate and spectral tilt (vocal effort), plus a final rise for surprise. ALL FIVE renderings,
neutral included, go through the same analysis-resynthesis, so a classifier cannot tell them
apart by vocoder artefacts. These are acted-by-signal-processing emotions, not real ones: the
data card says so.

WORLD (modified BSD) through pyworld-prebuilt (MIT), a wheel build of pyworld.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FRAME_MS = 5.0


@dataclass(frozen=True)
class Prosody:
    """One analysis-resynthesis setting."""

    f0_shift: float = 0.0
    """Semitones added to the F0 level."""
    f0_range: float = 1.0
    """Scale of log-F0 excursions around the utterance mean (2 = twice as lively)."""
    rate: float = 1.0
    """Speaking-rate factor (>1 faster, durations divided by it)."""
    tilt: float = 0.0
    """Spectral tilt change in dB per octave above 1 kHz (>0 brighter, more vocal effort)."""
    gain_db: float = 0.0
    """Loudness change relative to the neutral rendering."""
    final_rise: float = 0.0
    """Semitones of rising F0 over the last quarter of the voiced frames."""

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in asdict(self).items()}


# Centres of each emotion; items jitter around them (see ``emotion_prosody``).
EMOTION_CENTRES: dict[str, Prosody] = {
    "neutral": Prosody(),
    # higher and livelier pitch, a little faster and brighter
    "happy": Prosody(f0_shift=3.5, f0_range=1.6, rate=1.1, tilt=1.0, gain_db=2.0),
    # low, flat, slow, soft and dark
    "sad": Prosody(f0_shift=-3.0, f0_range=0.5, rate=0.8, tilt=-4.0, gain_db=-6.0),
    # high vocal effort: loud and bright, fast, pitch only a little raised and not livelier
    "angry": Prosody(f0_shift=0.5, f0_range=0.9, rate=1.15, tilt=6.0, gain_db=6.0),
    # highest pitch, widest range, slower, with a rising end
    "surprised": Prosody(f0_shift=5.0, f0_range=2.0, rate=0.9, tilt=0.0, gain_db=1.0, final_rise=6.0),
}


def emotion_prosody(emotion: str, rng: np.random.Generator, jitter: float = 0.2) -> Prosody:
    """The emotion's centre with each deviation from neutral scaled by 1 +- ``jitter``."""
    c = EMOTION_CENTRES[emotion]
    if emotion == "neutral":
        return c

    def j(x: float, ref: float) -> float:
        return ref + (x - ref) * float(rng.uniform(1 - jitter, 1 + jitter))

    return Prosody(
        f0_shift=j(c.f0_shift, 0.0), f0_range=j(c.f0_range, 1.0), rate=j(c.rate, 1.0),
        tilt=j(c.tilt, 0.0), gain_db=j(c.gain_db, 0.0), final_rise=j(c.final_rise, 0.0),
    )


@dataclass
class WorldFeatures:
    f0: np.ndarray
    sp: np.ndarray
    ap: np.ndarray
    sample_rate: int
    length: int


def analyze(audio: np.ndarray, sample_rate: int) -> WorldFeatures:
    import pyworld as pw

    x = np.ascontiguousarray(audio, dtype=np.float64)
    f0, t = pw.dio(x, sample_rate, frame_period=FRAME_MS, f0_floor=60.0, f0_ceil=600.0)
    f0 = pw.stonemask(x, f0, t, sample_rate)
    sp = pw.cheaptrick(x, f0, t, sample_rate)
    ap = pw.d4c(x, f0, t, sample_rate)
    return WorldFeatures(f0=f0, sp=sp, ap=ap, sample_rate=sample_rate, length=len(audio))


def _retime(x: np.ndarray, n_out: int) -> np.ndarray:
    n_in = len(x)
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (pos - lo)[:, None] if x.ndim == 2 else pos - lo
    return x[lo] * (1 - w) + x[hi] * w


def render(feat: WorldFeatures, p: Prosody) -> np.ndarray:
    """Resynthesise with prosody ``p``; the output is ``round(length / rate)`` samples long."""
    import pyworld as pw

    f0, sp, ap = feat.f0.copy(), feat.sp, feat.ap
    voiced = f0 > 0
    if voiced.any():
        lf = np.log(f0[voiced])
        mean = lf.mean()
        lf = mean + (lf - mean) * p.f0_range + p.f0_shift * np.log(2) / 12
        if p.final_rise:
            idx = np.flatnonzero(voiced)
            k = max(1, len(idx) // 4)
            ramp = np.zeros(len(idx))
            ramp[-k:] = np.linspace(0, p.final_rise, k)
            lf = lf + ramp * np.log(2) / 12
        f0[voiced] = np.clip(np.exp(lf), 50.0, 900.0)
    if p.tilt:
        freqs = np.linspace(0, feat.sample_rate / 2, sp.shape[1])
        octaves = np.log2(np.maximum(freqs, 1000.0) / 1000.0)
        sp = sp * (10 ** (p.tilt * octaves / 10))[None, :]
    n_frames = len(f0)
    n_out = max(2, int(round(n_frames / p.rate)))
    if n_out != n_frames:
        # Voicing decisions are carried by nearest frame (no F0 blended with unvoiced zeros).
        pos = np.clip(np.round(np.linspace(0, n_frames - 1, n_out)).astype(int), 0, n_frames - 1)
        f0 = f0[pos]
        sp = _retime(sp, n_out)
        ap = _retime(ap, n_out)
    y = pw.synthesize(np.ascontiguousarray(f0), np.ascontiguousarray(sp), np.ascontiguousarray(ap),
                      feat.sample_rate, FRAME_MS)
    target = int(round(feat.length / p.rate))
    y = y[:target] if len(y) >= target else np.pad(y, (0, target - len(y)))
    y = y * 10 ** (p.gain_db / 20)
    return y.astype(np.float32)


def render_emotions(audio: np.ndarray, sample_rate: int, emotions: dict[str, Prosody]) -> dict[str, np.ndarray]:
    """One analysis, one resynthesis per emotion; neutral is resynthesised too (same artefacts).

    Levels are set relative to the neutral rendering (normalised to the input's RMS), then the
    whole group is scaled down together if any rendering would clip.
    """
    feat = analyze(audio, sample_rate)
    outs = {name: render(feat, p) for name, p in emotions.items()}
    ref = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-9)
    neutral = outs["neutral"] if "neutral" in outs else render(feat, Prosody())
    scale = ref / (float(np.sqrt(np.mean(neutral.astype(np.float64) ** 2))) + 1e-9)
    peak = max(float(np.max(np.abs(y))) * scale for y in outs.values()) if outs else 0.0
    if peak > 0.99:
        scale *= 0.99 / peak
    return {k: (v * np.float32(scale)).astype(np.float32) for k, v in outs.items()}


def pitch_shift(audio: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """Same length, F0 moved by ``semitones`` (formants kept): a different-sounding speaker."""
    if not semitones or audio.size < sample_rate // 50:
        return audio
    feat = analyze(audio, sample_rate)
    return render(feat, Prosody(f0_shift=semitones))
