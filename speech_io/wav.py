"""WAV files in and out (16-bit PCM), float32 in [-1, 1] inside the program.

Uses the standard library ``wave`` module: no native dependency for the most common format.
"""

from __future__ import annotations

import os
import tempfile
import wave
from math import gcd
from pathlib import Path

import numpy as np


class AudioFormatError(ValueError):
    """A file that is not a readable PCM WAV."""


def read_wav(path: str | os.PathLike[str], mono: bool = True) -> tuple[np.ndarray, int]:
    """Return ``(audio, sample_rate)``; audio is (T,) if ``mono`` else (T, C), float32."""
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise AudioFormatError(f"{path}: not a PCM WAV file ({exc})") from exc
    if width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    elif width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise AudioFormatError(f"{path}: unsupported sample width {width} bytes")
    data = data.reshape(-1, channels)
    if mono:
        return data.mean(axis=1).astype(np.float32), rate
    return data, rate


def to_pcm16(audio: np.ndarray) -> bytes:
    clipped = np.clip(np.nan_to_num(audio, nan=0.0), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()


def write_wav(path: str | os.PathLike[str], audio: np.ndarray, sample_rate: int) -> Path:
    """Write float audio (T,) or (T, C) as 16-bit PCM, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = audio if audio.ndim == 2 else audio[:, None]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with wave.open(tmp, "wb") as w:
            w.setnchannels(data.shape[1])
            w.setsampwidth(2)
            w.setframerate(int(sample_rate))
            w.writeframes(to_pcm16(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resample(audio: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Offline polyphase resampling of a whole signal (T,) or (T, C)."""
    if src_rate == dst_rate:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(int(src_rate), int(dst_rate))
    return resample_poly(audio, dst_rate // g, src_rate // g, axis=0).astype(np.float32)
