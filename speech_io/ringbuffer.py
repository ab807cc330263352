"""A fixed-size audio ring buffer: allocated once, never grows in the real-time path."""

from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """FIFO of audio samples, shape (capacity, channels), float32.

    Writing more than fits drops the OLDEST samples (real-time audio prefers fresh data to a
    growing delay) and counts them in ``dropped``. Reads return at most what is stored. A lock
    makes it safe between a PortAudio callback thread and the event loop; uncontended it costs
    well under a microsecond.
    """

    def __init__(self, capacity: int, channels: int = 1) -> None:
        if capacity <= 0 or channels <= 0:
            raise ValueError(f"ring buffer needs capacity > 0 and channels > 0, got {capacity}, {channels}")
        self._buf = np.zeros((capacity, channels), dtype=np.float32)
        self._start = 0  # index of the oldest sample
        self._size = 0
        self._lock = threading.Lock()
        self.dropped = 0
        """Samples overwritten before they were read (overruns), since creation."""

    @property
    def capacity(self) -> int:
        return self._buf.shape[0]

    @property
    def channels(self) -> int:
        return self._buf.shape[1]

    def __len__(self) -> int:
        return self._size

    def free(self) -> int:
        return self.capacity - self._size

    def clear(self) -> None:
        with self._lock:
            self._start = 0
            self._size = 0

    def write(self, data: np.ndarray) -> int:
        """Append (T,) or (T, C) samples; returns how many old samples were dropped to fit."""
        block = data.reshape(-1, 1) if data.ndim == 1 else data
        if block.shape[1] != self.channels:
            raise ValueError(f"ring buffer has {self.channels} channel(s), got {block.shape[1]}")
        cap = self.capacity
        with self._lock:
            n = block.shape[0]
            if n >= cap:
                # Only the newest `cap` samples can survive.
                dropped = self._size + n - cap
                self._buf[:] = block[n - cap :]
                self._start, self._size = 0, cap
                self.dropped += dropped
                return dropped
            dropped = max(0, self._size + n - cap)
            if dropped:
                self._start = (self._start + dropped) % cap
                self._size -= dropped
                self.dropped += dropped
            end = (self._start + self._size) % cap
            first = min(n, cap - end)
            self._buf[end : end + first] = block[:first]
            if first < n:
                self._buf[: n - first] = block[first:]
            self._size += n
            return dropped

    def read(self, n: int) -> np.ndarray:
        """Remove and return up to ``n`` oldest samples as a new (k, C) array, k <= n."""
        out = self.peek(n)
        with self._lock:
            k = min(out.shape[0], self._size)
            self._start = (self._start + k) % self.capacity
            self._size -= k
        return out

    def read_into(self, out: np.ndarray) -> int:
        """Fill ``out`` (T, C) from the oldest samples, zero the rest; returns samples read.

        For audio callbacks: no allocation, and an underrun plays silence.
        """
        cap = self.capacity
        with self._lock:
            k = min(out.shape[0], self._size)
            first = min(k, cap - self._start)
            out[:first] = self._buf[self._start : self._start + first]
            if first < k:
                out[first:k] = self._buf[: k - first]
            out[k:] = 0.0
            self._start = (self._start + k) % cap
            self._size -= k
        return k

    def peek(self, n: int) -> np.ndarray:
        """Copy of up to ``n`` oldest samples without removing them."""
        cap = self.capacity
        with self._lock:
            k = min(max(n, 0), self._size)
            first = min(k, cap - self._start)
            out = np.empty((k, self.channels), dtype=np.float32)
            out[:first] = self._buf[self._start : self._start + first]
            if first < k:
                out[first:] = self._buf[: k - first]
        return out
