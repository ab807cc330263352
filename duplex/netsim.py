"""A simulated one-way network path for 20 ms audio packets, on a virtual clock.

Each packet sent at time t arrives at ``t + delay + jitter`` unless it is lost. Jitter is drawn
from a configurable distribution (never negative: a packet cannot beat the base delay); loss is
independent (Bernoulli) or bursty (a two-state Gilbert-Elliott chain); reordering happens
naturally when jitter exceeds the packet spacing, and can be forced with an extra hold-back.
Everything is drawn from one seeded generator, so a run is reproducible packet for packet.

The receiving side is a playout (jitter) buffer: it starts playing ``buffer_s`` after the first
packet arrived, and at every 20 ms tick plays the next sequence number if it has arrived,
otherwise a gap (the caller conceals it, e.g. with silence). A packet later than its slot is
dropped.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from configs.schema import JITTER_DISTS, ChannelConfig

PACKET_S = 0.020
__all__ = ["JITTER_DISTS", "PACKET_S", "ChannelConfig", "NetworkChannel", "Packet", "PlayoutBuffer"]


@dataclass(order=True)
class Packet:
    arrival: float
    seq: int
    sent: float = field(compare=False)
    payload: Any = field(compare=False, default=None)


class NetworkChannel:
    """One direction of a network path. ``send`` packets, then ``deliver`` those due by time t."""

    def __init__(self, cfg: ChannelConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed)
        self._in_flight: list[Packet] = []
        self._bad = False  # Gilbert-Elliott state
        self.sent = 0
        self.lost = 0

    def _jitter_s(self) -> float:
        c, scale = self.cfg, self.cfg.jitter_ms / 1000.0
        if c.jitter_dist == "none" or scale == 0:
            return 0.0
        if c.jitter_dist == "normal":
            return float(abs(self.rng.normal(0.0, scale)))
        if c.jitter_dist == "uniform":
            return float(self.rng.uniform(0.0, scale))
        if c.jitter_dist == "exponential":
            return float(self.rng.exponential(scale))
        # Pareto with shape 3 (heavy tail, finite variance), rescaled to the requested mean.
        shape = 3.0
        return float(self.rng.pareto(shape) * scale * (shape - 1))

    def _is_lost(self) -> bool:
        c = self.cfg
        if c.loss == 0:
            return False
        if c.loss_burst <= 1.0:
            return bool(self.rng.random() < c.loss)
        # Gilbert-Elliott: bad state loses everything; mean burst = 1/p_bg, stationary loss = p_gb/(p_gb+p_bg).
        p_bg = 1.0 / c.loss_burst
        p_gb = c.loss * p_bg / (1.0 - c.loss)
        self._bad = bool(self.rng.random() < (1.0 - p_bg if self._bad else p_gb))
        return self._bad

    def send(self, seq: int, t: float, payload: Any = None) -> None:
        self.sent += 1
        # Draw every random number for every packet so a packet's fate does not depend on others'.
        lost = self._is_lost()
        jitter = self._jitter_s()
        held = self.rng.random() < self.cfg.reorder
        if lost:
            self.lost += 1
            return
        arrival = t + self.cfg.delay_ms / 1000.0 + jitter + (self.cfg.reorder_ms / 1000.0 if held else 0.0)
        heapq.heappush(self._in_flight, Packet(arrival=arrival, seq=seq, sent=t, payload=payload))

    def deliver(self, t: float) -> list[Packet]:
        """Packets that have arrived by time ``t``, in arrival order."""
        out = []
        while self._in_flight and self._in_flight[0].arrival <= t + 1e-12:
            out.append(heapq.heappop(self._in_flight))
        return out

    def next_arrival(self) -> float | None:
        return self._in_flight[0].arrival if self._in_flight else None


class PlayoutBuffer:
    """Receiver side: plays packets in sequence order on a fixed schedule; late packets are dropped.

    Like a real jitter buffer it knows arrival times and sequence numbers, not the sender's clock:
    the schedule is anchored on the first packet's arrival plus ``buffer_s`` of slack, and slot k
    plays ``k * packet_s`` later. A larger buffer absorbs more jitter and adds as much delay.
    """

    def __init__(self, buffer_s: float, packet_s: float = PACKET_S) -> None:
        self.buffer_s = buffer_s
        self.packet_s = packet_s
        self._held: dict[int, Packet] = {}
        self._next_seq = 0
        self._origin: float | None = None
        self.played = 0
        self.gaps = 0
        self.late = 0

    def push(self, packet: Packet) -> None:
        if self._origin is None:
            self._origin = packet.arrival - packet.seq * self.packet_s + self.buffer_s
            self._next_seq = packet.seq
        if packet.seq < self._next_seq:
            self.late += 1
            return
        self._held[packet.seq] = packet

    def slot_time(self, seq: int) -> float | None:
        return None if self._origin is None else self._origin + seq * self.packet_s

    def pop_due(self, t: float) -> list[tuple[int, Packet | None]]:
        """Play every slot due by ``t``: (seq, packet or None for a gap)."""
        out: list[tuple[int, Packet | None]] = []
        while self._origin is not None:
            due = self._origin + self._next_seq * self.packet_s
            if due > t + 1e-12:
                break
            packet = self._held.pop(self._next_seq, None)
            if packet is None:
                self.gaps += 1
            else:
                self.played += 1
            out.append((self._next_seq, packet))
            self._next_seq += 1
        return out
