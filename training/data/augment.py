"""Augmentations of user-side audio: speed, pitch, gain, noise, reverb, an Opus round trip.

Every function is pure (audio in, audio out) and takes its randomness from a numpy Generator,
so an item's augmentation depends only on its own seed. Functions that keep the timeline keep
the length (noise, reverb, gain, Opus); ``speed`` changes it by a known factor (times scale by
``1/factor``). ``random_chain`` draws a chain and returns what it did, for the manifest.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from speech_io.wav import resample


def speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Tape-style speed change (tempo and pitch together): ``factor`` > 1 is faster and shorter."""
    if abs(factor - 1.0) < 1e-4:
        return audio
    from scipy.signal import resample_poly

    up = 1000
    down = int(round(1000 * factor))
    return resample_poly(audio, up, down).astype(np.float32)


def gain(audio: np.ndarray, db: float) -> np.ndarray:
    return (audio * np.float32(10 ** (db / 20))).astype(np.float32)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2) + 1e-12))


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power noise by shaping white noise in the frequency domain (unit RMS)."""
    spec = np.fft.rfft(rng.standard_normal(max(n, 2)))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / np.sqrt(f), n=max(n, 2))[:n]
    return (x / (np.std(x) + 1e-12)).astype(np.float32)


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float, reference_rms: float | None = None) -> np.ndarray:
    """Mix ``noise`` (looped/cut to length) at ``snr_db`` below the speech level."""
    if len(noise) == 0 or len(audio) == 0:
        return audio
    reps = int(np.ceil(len(audio) / len(noise)))
    nz = np.tile(noise, reps)[: len(audio)]
    level = reference_rms if reference_rms is not None else active_rms(audio)
    nz = nz * np.float32(level / (rms(nz) * 10 ** (snr_db / 20)))
    return (audio + nz).astype(np.float32)


def active_rms(audio: np.ndarray, frame: int = 320) -> float:
    """RMS over the louder frames (speech level, not diluted by silence)."""
    n = len(audio) // frame
    if n == 0:
        return rms(audio)
    e = np.mean(audio[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)
    top = e[e >= np.percentile(e, 50)]
    return float(np.sqrt(np.mean(top) + 1e-12))


def room_impulse(sample_rate: int, rt60: float, rng: np.random.Generator, direct_to_reverb_db: float = 6.0) -> np.ndarray:
    """A simple synthetic room: the direct path at t=0 then exponentially decaying noise."""
    n = max(2, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # -60 dB at rt60
    tail[: int(0.003 * sample_rate)] = 0.0  # first reflections arrive after a few ms
    tail *= 10 ** (-direct_to_reverb_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-12)
    tail[0] = 1.0
    return tail.astype(np.float32)


def reverb(audio: np.ndarray, sample_rate: int, rt60: float, rng: np.random.Generator, drr_db: float = 6.0) -> np.ndarray:
    """Convolve with a synthetic room; the direct path is undelayed, so times stay put (same length)."""
    from scipy.signal import fftconvolve

    ir = room_impulse(sample_rate, rt60, rng, drr_db)
    out = fftconvolve(audio, ir)[: len(audio)].astype(np.float32)
    return out * np.float32(rms(audio) / (rms(out) + 1e-12))


def opus_roundtrip(audio: np.ndarray, sample_rate: int, bitrate: int = 24000) -> np.ndarray:
    """Encode to Opus (48 kHz, as WebRTC does) and decode back; same length and alignment."""
    import av

    x = resample(audio.astype(np.float32), sample_rate, 48000)
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        st = out.add_stream("libopus", rate=48000, layout="mono")
        st.bit_rate = int(bitrate)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, :]), format="flt", layout="mono")
        frame.sample_rate = 48000
        frame.pts = 0
        for p in st.encode(frame):
            out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    buf.seek(0)
    with av.open(buf) as inp:
        y = np.concatenate([f.to_ndarray().reshape(-1) for f in inp.decode(audio=0)]).astype(np.float32)
    y = y[: len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))
    out_audio = resample(y, 48000, sample_rate)
    n = len(audio)
    return out_audio[:n] if len(out_audio) >= n else np.pad(out_audio, (0, n - len(out_audio)))


@dataclass
class Chain:
    """What ``random_chain`` decided: applied in order speed, pitch, gain, reverb, noise, opus."""

    speed: float = 1.0
    pitch_semitones: float = 0.0
    gain_db: float = 0.0
    rt60: float = 0.0
    noise: str = ""
    snr_db: float = 0.0
    opus_bitrate: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.speed != 1.0:
            d["speed"] = round(self.speed, 4)
        if self.pitch_semitones:
            d["pitch_semitones"] = round(self.pitch_semitones, 3)
        if self.gain_db:
            d["gain_db"] = round(self.gain_db, 2)
        if self.rt60:
            d["reverb_rt60"] = round(self.rt60, 3)
        if self.noise:
            d["noise"] = self.noise
            d["snr_db"] = round(self.snr_db, 2)
        if self.opus_bitrate:
            d["opus_bitrate"] = self.opus_bitrate
        return d


def random_chain(rng: np.random.Generator, prob: float, allow_speed: bool = True) -> Chain:
    """Each augmentation on with its own probability (scaled by ``prob``); most items get 1-3."""
    c = Chain()
    if rng.random() >= prob:
        return c
    if allow_speed and rng.random() < 0.4:
        c.speed = float(rng.uniform(0.9, 1.1))
    if rng.random() < 0.25:
        c.pitch_semitones = float(rng.uniform(-2.5, 2.5))
    if rng.random() < 0.6:
        c.gain_db = float(rng.uniform(-10, 4))
    if rng.random() < 0.3:
        c.rt60 = float(rng.uniform(0.15, 0.6))
    if rng.random() < 0.5:
        c.noise = str(rng.choice(["white", "pink", "babble"]))
        c.snr_db = float(rng.uniform(8, 30))
    if rng.random() < 0.4:
        c.opus_bitrate = int(rng.choice([12000, 16000, 24000, 32000]))
    return c


def apply_chain(audio: np.ndarray, sample_rate: int, chain: Chain, rng: np.random.Generator,
                babble: np.ndarray | None = None, skip_speed: bool = False) -> np.ndarray:
    """Run ``chain`` on ``audio``. ``babble`` is other speech mixed as babble noise when chosen."""
    out = audio
    if chain.speed != 1.0 and not skip_speed:
        out = speed(out, chain.speed)
    if chain.pitch_semitones:
        from training.data.emotion import pitch_shift

        out = pitch_shift(out, sample_rate, chain.pitch_semitones)
    if chain.gain_db:
        out = gain(out, chain.gain_db)
    if chain.rt60:
        out = reverb(out, sample_rate, chain.rt60, rng)
    if chain.noise:
        if chain.noise == "white":
            nz = white_noise(len(out), rng)
        elif chain.noise == "pink":
            nz = pink_noise(len(out), rng)
        else:
            nz = babble if babble is not None and len(babble) else pink_noise(len(out), rng)
        out = add_noise(out, nz, chain.snr_db)
    if chain.opus_bitrate:
        out = opus_roundtrip(out, sample_rate, chain.opus_bitrate)
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 0.99:
        out = out * np.float32(0.99 / peak)
    return out.astype(np.float32)
