"""Streaming (stateful) polyphase resampling and channel conversion.

``StreamingResampler`` applies the same linear-phase FIR filter as ``scipy.signal.resample_poly``
(Kaiser window, beta 5, 10 zero crossings per side) one chunk at a time, keeping the filter's
input history between chunks. Its output is trimmed by the filter's group delay, so the
concatenation of every chunk's output plus :meth:`StreamingResampler.flush` equals
``resample_poly`` on the whole signal (tested to float precision), and sample ``n`` of the output
is at the same time as input time ``n / dst_rate``. The price is a latency of that group delay:
under 1 ms for every rate pair used here (48 kHz, 24 kHz, 22.05 kHz, 16 kHz).

No torchaudio: it is not installable next to the pinned CPU torch.
"""

from __future__ import annotations

from math import gcd

import numpy as np

from speech_io.frames import AudioFrame

_STRIDED_MAX_UP = 8
"""Up to this upsampling factor, compute per filter phase with strided matmuls (faster);
above it (e.g. 22.05 kHz <-> 48 kHz, up = 320 or 147), gather all taps at once."""


def _kaiser_lowpass(numtaps: int, cutoff: float, beta: float = 5.0) -> np.ndarray:
    """``scipy.signal.firwin(numtaps, cutoff, window=("kaiser", beta))`` in plain numpy
    (windowed sinc, unit DC gain): importing scipy.signal costs over a second at start-up."""
    m = np.arange(numtaps) - (numtaps - 1) / 2
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, beta)
    return h / h.sum()


def _design(up: int, down: int) -> tuple[np.ndarray, int]:
    """Causal polyphase filter bank (up, Q) and the group delay in output samples.

    Mirrors resample_poly: design, scale by ``up``, and pre-pad with zeros so that the group
    delay is a whole number of output samples.
    """
    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = _kaiser_lowpass(2 * half_len + 1, 1.0 / max_rate) * up
    n_pre_pad = down - half_len % down
    delay = (half_len + n_pre_pad) // down
    h = np.concatenate([np.zeros(n_pre_pad), h])
    taps = -(-h.shape[0] // up)
    h = np.concatenate([h, np.zeros(taps * up - h.shape[0])])
    # bank[phase, q] = h[phase + q * up]
    return h.reshape(taps, up).T.copy(), delay


class StreamingResampler:
    """Resample a stream of (T, C) float chunks from ``src_rate`` to ``dst_rate``.

    State: the last Q-1 input samples (Q = taps per output sample), the count of inputs seen,
    the next output index, and how many outputs were returned.

    ``trim_delay=True`` (offline use) drops the filter's warm-up so output sample n is at input
    time n / dst_rate and the stream equals ``resample_poly``. ``trim_delay=False`` (live use)
    keeps the warm-up: output sample n is at input time (n - delay_samples) / dst_rate, and a
    chunk of a whole number of output samples yields exactly that many, so no frame ever waits
    a full frame for the last fraction of a millisecond held in the filter.
    """

    def __init__(self, src_rate: int, dst_rate: int, channels: int = 1, trim_delay: bool = True) -> None:
        self.trim_delay = trim_delay
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        self.src_rate, self.dst_rate, self.channels = int(src_rate), int(dst_rate), int(channels)
        g = gcd(self.src_rate, self.dst_rate)
        self.up, self.down = self.dst_rate // g, self.src_rate // g
        self.passthrough = self.up == self.down
        if self.passthrough:
            self._bank, self._delay = np.ones((1, 1)), 0
        else:
            self._bank, self._delay = _design(self.up, self.down)
        self._taps = self._bank.shape[1]
        self._q = np.arange(self._taps)
        self._rbank = np.ascontiguousarray(self._bank[:, ::-1])
        self.reset()

    @property
    def delay_samples(self) -> int:
        """Latency the filter adds (its group delay), in output samples."""
        return self._delay

    @property
    def delay_s(self) -> float:
        return self._delay / self.dst_rate

    def reset(self) -> None:
        self._hist = np.zeros((self._taps - 1, self.channels), dtype=np.float64)
        self._n_in = 0  # input samples consumed
        self._m = 0  # next output index on the untrimmed (causal) output
        self._emitted = 0  # trimmed outputs returned so far

    def process(self, x: np.ndarray) -> np.ndarray:
        """Feed (T,) or (T, C) input; returns the (N, C) float32 outputs now complete."""
        block = x.reshape(-1, 1) if x.ndim == 1 else x
        if block.shape[1] != self.channels:
            raise ValueError(f"resampler has {self.channels} channel(s), got {block.shape[1]}")
        if self.passthrough:
            self._n_in += block.shape[0]
            self._emitted += block.shape[0]
            return block.astype(np.float32, copy=True)
        buf = np.concatenate([self._hist, block.astype(np.float64, copy=False)])
        base = self._n_in - (self._taps - 1)  # input index of buf[0]
        last = self._n_in + block.shape[0] - 1  # newest input index available
        m_end = ((last + 1) * self.up - 1) // self.down + 1
        if self.up <= _STRIDED_MAX_UP:
            y = self._outputs_strided(buf, base, m_end)
        else:
            m = np.arange(self._m, m_end, dtype=np.int64)
            j = m * self.down
            kmax = j // self.up - base
            gathered = buf[kmax[:, None] - self._q[None, :]]  # (N, Q, C)
            y = np.einsum("nq,nqc->nc", self._bank[j % self.up], gathered)
        self._hist = buf[buf.shape[0] - (self._taps - 1) :]
        self._n_in += block.shape[0]
        self._m = m_end
        if self.trim_delay:
            # Drop the filter's warm-up so output sample n is at input time n / dst_rate.
            skip = max(0, min(y.shape[0], self._delay - (m_end - y.shape[0])))
            y = y[skip:]
        self._emitted += y.shape[0]
        return y.astype(np.float32)

    def _outputs_strided(self, buf: np.ndarray, base: int, m_end: int) -> np.ndarray:
        """Outputs ``self._m .. m_end`` for small ``up``: outputs ``up`` apart share a filter
        phase and read inputs ``down`` apart, so each phase is one strided matmul (no gather)."""
        n = m_end - self._m
        y = np.empty((n, self.channels), dtype=np.float64)
        # windows[i] = buf[i : i + Q] as a (C, Q) view; output m reads buf[kmax - Q + 1 : kmax + 1]
        # reversed. as_strided directly: sliding_window_view's checks cost more than the matmuls.
        rows_n, chans = buf.shape[0] - self._taps + 1, buf.shape[1]
        s0, s1 = buf.strides
        windows = np.lib.stride_tricks.as_strided(buf, (rows_n, chans, self._taps), (s0, s1, s0), writeable=False)
        for r in range(min(self.up, n)):
            m0 = self._m + r
            j0 = m0 * self.down
            row0 = j0 // self.up - base - (self._taps - 1)
            count = len(range(r, n, self.up))
            rows = windows[row0 : row0 + self.down * (count - 1) + 1 : self.down]
            y[r :: self.up] = rows @ self._rbank[j0 % self.up]
        return y

    def flush(self) -> np.ndarray:
        """Outputs still held in the filter, so the total length is ceil(n_in * up / down)
        (plus ``delay_samples`` when the warm-up is kept)."""
        total = -(-self._n_in * self.up // self.down) + (0 if self.trim_delay else self._delay)
        missing = total - self._emitted
        if missing <= 0 or self.passthrough:
            return np.zeros((0, self.channels), dtype=np.float32)
        n_zeros = -(-(missing + self._delay + 1) * self.down // self.up) + self._taps
        n_in = self._n_in
        y = self.process(np.zeros((n_zeros, self.channels), dtype=np.float32))[:missing]
        self._n_in = n_in
        self._emitted = total
        return y


def convert_channels(samples: np.ndarray, channels: int) -> np.ndarray:
    """(T, C) -> (T, channels): mean to mono, repeat from mono, pass equal counts through."""
    have = samples.shape[1]
    if have == channels:
        return samples
    if channels == 1:
        return samples.mean(axis=1, keepdims=True, dtype=np.float32)
    if have == 1:
        return np.repeat(samples, channels, axis=1)
    raise ValueError(f"cannot map {have} channels to {channels}")


class AudioConverter:
    """Frames of any rate and channel count in, contiguous frames at one rate/layout out.

    For live paths: downmixes before resampling (less work), upmixes after, and keeps the
    filter's warm-up (``trim_delay=False``), so a 20 ms frame in gives exactly 20 ms out with
    timestamps moved back by the filter delay (< 1 ms). Output timestamps continue the first
    input frame's timeline; the caller keeps the input contiguous.
    """

    def __init__(self, dst_rate: int, dst_channels: int = 1) -> None:
        self.dst_rate, self.dst_channels = dst_rate, dst_channels
        self._resampler: StreamingResampler | None = None
        self._t0: float | None = None
        self._produced = 0

    @property
    def delay_s(self) -> float:
        return self._resampler.delay_s if self._resampler is not None else 0.0

    def _setup(self, frame: AudioFrame) -> StreamingResampler:
        rs = self._resampler
        work_channels = min(frame.channels, self.dst_channels)
        if rs is None or rs.src_rate != frame.rate or rs.channels != work_channels:
            if rs is not None:
                # A format change mid-stream (a browser renegotiating): start a fresh filter.
                self._t0, self._produced = None, 0
            rs = self._resampler = StreamingResampler(frame.rate, self.dst_rate, work_channels, trim_delay=False)
        if self._t0 is None:
            self._t0 = frame.timestamp
        return rs

    def convert(self, frame: AudioFrame) -> AudioFrame | None:
        rs = self._setup(frame)
        samples = frame.samples
        if frame.channels > self.dst_channels:
            samples = convert_channels(samples, self.dst_channels)
        out = rs.process(samples)
        if out.shape[0] == 0:
            return None
        out = convert_channels(out, self.dst_channels)
        assert self._t0 is not None
        ts = self._t0 + (self._produced - rs.delay_samples) / self.dst_rate
        self._produced += out.shape[0]
        return AudioFrame(out, self.dst_rate, ts, frame.speech)
