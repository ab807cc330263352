"""Receive-side audio jitter buffer for aiortc, tuned for a conversational agent.

What aiortc does (1.16, ``RTCRtpReceiver``): audio packets go through
``JitterBuffer(capacity=16, prefetch=4)``. It is a *reorder* buffer, not a playout buffer: a
frame is released only when ``prefetch`` later frames have arrived, and only one frame per
arriving packet. So

- in steady state it adds ``prefetch`` x 20 ms = 80 ms one way, and it does not smooth arrival
  jitter at all (frames leave when later packets arrive, so jitter passes straight through);
- one lost packet stalls the stream until 16 packets are queued (320 ms), after which the
  backlog never drains (still one frame out per packet in): +300 ms for the rest of the call.

``BoundedJitterBuffer`` releases an in-order packet at once (an Opus packet is a whole frame,
so there is nothing to wait for; ``prefetch`` frames of look-ahead are optional, default 0),
waits for a missing packet only while at most ``prefetch + slack`` packets are held (reordering
within that window costs nothing), then declares it lost and moves on. Added delay is 0 in
order and never more than ``(prefetch + slack) x 20 ms`` (40 ms by default), where aiortc's
grows to 300 ms after one loss and stays there; no frame that arrived is dropped unless a burst
overflows that bound. The agent consumes frames by capture timestamp (gaps become silence in
:class:`speech_io.pipeline.InputPipeline`), so it needs ordering, not smoothing.

Installing it replaces a name-mangled private attribute of aiortc's receiver;
:func:`install_jitter_buffer` checks that the attribute exists so an aiortc upgrade that
changes it fails loudly instead of silently keeping the default.
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

AIORTC_AUDIO_CAPACITY = 16
AIORTC_AUDIO_PREFETCH = 4
_RECEIVER_ATTR = "_RTCRtpReceiver__jitter_buffer"


class BoundedJitterBuffer(JitterBuffer):
    """Audio jitter buffer (one RTP packet per Opus frame) with a bounded hold.

    Rules, applied on every arriving packet (aiortc releases at most one frame per packet):
    1. the head packet is there and more than ``prefetch`` packets are held: release it;
    2. the head is missing and at most ``prefetch + slack`` packets are held: wait for it
       (reordering within that window costs nothing);
    3. the head is missing and more are held: it is lost; skip it and release the next.
    The hold never exceeds ``prefetch + slack + 1`` packets (older ones are dropped, which only
    a burst can cause), so the added delay stays within ``(prefetch + slack) x 20 ms``. Packets
    older than the head (duplicates, very late reorders) are dropped and counted.
    """

    def __init__(self, prefetch: int = 0, slack: int = 2, capacity: int = AIORTC_AUDIO_CAPACITY) -> None:
        if prefetch < 0 or slack < 0 or prefetch + slack + 2 > capacity:
            raise ValueError(f"need 0 <= prefetch, slack and prefetch + slack + 2 <= capacity, got {prefetch}, {slack}")
        super().__init__(capacity=capacity, prefetch=prefetch)
        self.slack = slack
        self.lost = 0
        """Packets that never arrived while the hold was full."""
        self.dropped = 0
        """Frames that arrived but were dropped to bring the delay back down."""
        self.late = 0
        """Packets that arrived after their slot was released or skipped."""

    def _held(self) -> list[int]:
        """Offsets from the head of the packets currently held."""
        assert self._origin is not None
        cap = self._capacity
        return [i for i in range(cap) if self._packets[(self._origin + i) % cap] is not None]

    def _advance(self, n: int) -> None:
        self.remove(n)  # clears n slots from the head and moves the head on

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        seq = packet.sequence_number
        if self._origin is None:
            self._origin = seq
        ahead = uint16_add(seq, -self._origin)
        if ahead >= 0x8000:
            self.late += 1
            return False, None
        if ahead >= self._capacity:
            # A jump past the whole window (long outage, sender restart): start over at `seq`.
            held = len(self._held())
            self.dropped += held
            self.lost += ahead - held
            self._packets = [None] * self._capacity
            self._origin = seq
        self._packets[seq % self._capacity] = packet
        return False, self._release()

    def _release(self) -> JitterFrame | None:
        held = self._held()
        limit = self._prefetch + self.slack
        if held[0] > 0:
            if len(held) <= limit:
                return None
            self.lost += held[0]
            self._advance(held[0])
        elif len(held) <= self._prefetch:
            return None
        # Only a burst can hold more than limit + 1; never let the delay grow past the limit.
        for _ in range(max(0, len(held) - (limit + 1))):
            self._drop_head()
        assert self._origin is not None
        head = self._packets[self._origin % self._capacity]
        assert head is not None
        self._advance(1)
        return JitterFrame(data=head._data, timestamp=head.timestamp)  # type: ignore[attr-defined]

    def _drop_head(self) -> None:
        """Drop the oldest held frame and any gap after it."""
        assert self._origin is not None
        self._advance(1)
        self.dropped += 1
        for _ in range(self._capacity):
            if self._packets[self._origin % self._capacity] is not None:
                return
            self._advance(1)
            self.lost += 1


def make_jitter_buffer(kind: str, prefetch: int = 0, slack: int = 2) -> JitterBuffer | None:
    """``"bounded"`` -> :class:`BoundedJitterBuffer`; ``"aiortc"`` -> None (keep aiortc's own)."""
    if kind == "aiortc":
        return None
    if kind == "bounded":
        return BoundedJitterBuffer(prefetch=prefetch, slack=slack)
    raise ValueError(f"unknown jitter buffer {kind!r}; use bounded or aiortc")


def install_jitter_buffer(receiver: Any, buffer: JitterBuffer | None) -> None:
    """Put ``buffer`` into an audio ``RTCRtpReceiver`` before its first packet (None: keep aiortc's)."""
    if buffer is None:
        return
    current = getattr(receiver, _RECEIVER_ATTR, None)
    if not isinstance(current, JitterBuffer):
        raise RuntimeError(
            "aiortc's RTCRtpReceiver has no audio jitter buffer attribute where expected; "
            "this aiortc version is not supported by speech_io.webrtc.jitter"
        )
    setattr(receiver, _RECEIVER_ATTR, buffer)
