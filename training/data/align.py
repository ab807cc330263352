"""Word times for voices that do not report them (espeak-ng, the Piper ONNX graph).

The same text is rendered once more with every word isolated (separated by long exact silences,
so the word boundaries of that rendering are known), and dynamic time warping of log-mel frames
maps those boundaries onto the continuous rendering. Same engine and phonemes on both sides, so
the path is sharp; the result is snapped to speech energy. Boundaries land within a few 10 ms frames
(tests allow 40 ms), far below the 160 ms label chunk; pauses (exact zeros in espeak's output)
fall between words, not inside them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

HOP_S = 0.01
WIN_S = 0.025


@lru_cache(maxsize=8)
def _mel_matrix(sample_rate: int, n_fft: int, n_mels: int = 40) -> np.ndarray:
    def hz2mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel2hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    pts = mel2hz(np.linspace(hz2mel(np.array(60.0)), hz2mel(np.array(min(8000.0, sample_rate / 2))), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)), dtype=np.float32)
    for i in range(n_mels):
        lo, mid, hi = pts[i], pts[i + 1], pts[i + 2]
        up = (freqs - lo) / max(mid - lo, 1e-6)
        down = (hi - freqs) / max(hi - mid, 1e-6)
        fb[i] = np.clip(np.minimum(up, down), 0.0, None)
    return fb


def log_mel(audio: np.ndarray, sample_rate: int, n_mels: int = 40) -> np.ndarray:
    """(F, n_mels) log-mel frames with a 10 ms hop (frame i centred near i*10 ms)."""
    hop = int(round(HOP_S * sample_rate))
    win = int(round(WIN_S * sample_rate))
    n_fft = 1 << (win - 1).bit_length()
    pad = np.pad(audio.astype(np.float32), (win // 2, win))
    n = max(1, (len(pad) - win) // hop)
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    frames = pad[idx] * np.hanning(win).astype(np.float32)
    spec = np.abs(np.fft.rfft(frames, n=n_fft, axis=1)) ** 2
    return np.log(spec @ _mel_matrix(sample_rate, n_fft, n_mels).T + 1e-8)


def frame_energy_db(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    hop = int(round(HOP_S * sample_rate))
    n = max(1, len(audio) // hop)
    a = np.pad(audio, (0, max(0, n * hop - len(audio))))[: n * hop].reshape(n, hop)
    return 10 * np.log10(np.mean(a.astype(np.float64) ** 2, axis=1) + 1e-12)


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standard DTW (steps (1,1), (1,0), (0,1)) over an (N, M) cost; returns the path (i, j)."""
    n, m = cost.shape
    acc = np.full((n, m), np.inf)
    acc[0] = np.cumsum(cost[0])
    for i in range(1, n):
        # acc[i, j] = c[i, j] + min(acc[i-1, j-1], acc[i-1, j], acc[i, j-1]); the in-row term is a
        # running minimum of (diag/up candidate - prefix sum), which numpy does in one pass.
        cand = np.minimum(acc[i - 1], np.concatenate([[np.inf], acc[i - 1, :-1]])) + cost[i]
        pref = np.cumsum(cost[i])
        acc[i] = pref + np.minimum.accumulate(cand - pref)
    i, j = n - 1, m - 1
    path = [(i, j)]
    while i > 0 or j > 0:
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            k = int(np.argmin((acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])))
            i, j = (i - 1, j - 1) if k == 0 else ((i - 1, j) if k == 1 else (i, j - 1))
        path.append((i, j))
    p = np.array(path[::-1])
    return p[:, 0], p[:, 1]


def split_on_silence(audio: np.ndarray, sample_rate: int, n_parts: int, min_gap_s: float = 0.25) -> list[np.ndarray] | None:
    """Cut audio at its ``n_parts - 1`` longest runs of exact zeros (>= min_gap_s), or None."""
    z = np.concatenate([[0], (audio == 0).astype(np.int8), [0]])
    d = np.diff(z)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    runs = [(s, e) for s, e in zip(starts, ends, strict=True) if e - s >= min_gap_s * sample_rate and s > 0 and e < len(audio)]
    if len(runs) < n_parts - 1:
        return None
    runs = sorted(sorted(runs, key=lambda r: r[0] - r[1])[: n_parts - 1])
    parts, pos = [], 0
    for s, e in runs:
        parts.append(audio[pos:s])
        pos = e
    parts.append(audio[pos:])
    return [trim(p, sample_rate)[0] for p in parts]


def trim(audio: np.ndarray, sample_rate: int, threshold_db: float = -45.0) -> tuple[np.ndarray, int]:
    """(audio without leading/trailing silence, samples cut at the start); threshold vs the peak frame."""
    if audio.size == 0:
        return audio, 0
    hop = max(1, int(0.005 * sample_rate))
    n = len(audio) // hop
    if n == 0:
        return audio, 0
    e = 10 * np.log10(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1) + 1e-12)
    on = np.flatnonzero(e > e.max() + threshold_db)
    if on.size == 0:
        return audio[:0], 0
    a, b = on[0] * hop, min(len(audio), (on[-1] + 1) * hop)
    return audio[a:b], int(a)


def align_words(audio: np.ndarray, sample_rate: int, word_audios: list[np.ndarray]) -> list[tuple[float, float]]:
    """(start, end) seconds in ``audio`` of each word, given each word rendered alone."""
    if not word_audios:
        return []
    full = log_mel(audio, sample_rate)
    # Between the isolated words sit a few frames of silence, so a pause in the sentence (at a
    # comma) has somewhere to go instead of stretching the neighbouring words.
    gap = log_mel(np.zeros(int(0.08 * sample_rate), np.float32), sample_rate)[:6]
    pieces, bounds, pos = [], [], 0
    for k, w in enumerate(word_audios):
        if k:
            pieces.append(gap)
            pos += len(gap)
        m = log_mel(w, sample_rate) if len(w) else np.zeros((1, full.shape[1]))
        bounds.append((pos, pos + len(m)))
        pieces.append(m)
        pos += len(m)
    ref = np.concatenate(pieces)
    # Per-utterance mean normalisation of both sides, then Euclidean frame distance.
    a = full - full.mean(axis=0)
    b = ref - ref.mean(axis=0)
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * (a @ b.T)
    cost = np.sqrt(np.maximum(sq, 0.0))
    pi, pj = dtw_path(cost)
    n = len(full)
    spans = []
    for w in range(len(word_audios)):
        sel = pi[(pj >= bounds[w][0]) & (pj < bounds[w][1])]
        lo, hi = (int(sel.min()), int(sel.max()) + 1) if sel.size else (0, 0)
        spans.append((lo, min(hi, n)))
    # Snap to energy: a word does not start or end in silence (pauses at commas stay outside
    # words), and frames the path gave to the silence between isolated words go back to the
    # words on either side when they hold sound.
    energy = frame_energy_db(audio, sample_rate)
    active = energy > energy.max() - 40.0
    snapped = []
    for lo, hi in spans:
        seg = np.flatnonzero(active[lo:hi]) if hi > lo else np.zeros(0, int)
        snapped.append((lo + int(seg[0]), lo + int(seg[-1]) + 1) if seg.size else (lo, hi))
    for i, (lo, hi) in enumerate(snapped):
        prev_end = snapped[i - 1][1] if i else 0
        next_start = snapped[i + 1][0] if i + 1 < len(snapped) else len(active)
        while hi < next_start and hi < len(active) and active[hi]:
            hi += 1
        while lo > prev_end and active[lo - 1]:
            lo -= 1
        snapped[i] = (lo, hi)
    out = [(lo * HOP_S, min(hi * HOP_S, len(audio) / sample_rate)) for lo, hi in snapped]
    # Keep times monotone and inside the audio.
    fixed, prev_end = [], 0.0
    for s, e in out:
        s = max(s, prev_end)
        e = max(e, s)
        fixed.append((s, e))
        prev_end = e
    return fixed
