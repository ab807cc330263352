"""The receive jitter buffer: aiortc's default behaviour (measured, not assumed) vs ours."""

import asyncio

import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from speech_io.webrtc.jitter import (
    AIORTC_AUDIO_CAPACITY,
    AIORTC_AUDIO_PREFETCH,
    BoundedJitterBuffer,
    install_jitter_buffer,
    make_jitter_buffer,
)


def _packet(seq: int) -> RtpPacket:
    p = RtpPacket(payload_type=111, sequence_number=seq % 65536, timestamp=(960 * seq) % 2**32)
    p._data = bytes([seq % 256])  # what aiortc's receiver attaches after depayloading
    return p


def _feed(buffer: JitterBuffer, seqs: list[int]) -> list[tuple[int, int]]:
    """(arrival index, released frame number) for each released frame."""
    out = []
    for i, s in enumerate(seqs):
        _, frame = buffer.add(_packet(s))
        if frame is not None:
            out.append((i, frame.timestamp // 960))
    return out


def _aiortc_default() -> JitterBuffer:
    return JitterBuffer(capacity=AIORTC_AUDIO_CAPACITY, prefetch=AIORTC_AUDIO_PREFETCH)


def test_aiortc_default_holds_four_frames_and_never_recovers_from_a_loss():
    released = _feed(_aiortc_default(), list(range(30)))
    assert released[0] == (4, 0) and all(i - f == 4 for i, f in released)  # 80 ms one way
    seqs = list(range(5)) + list(range(6, 60))  # packet 5 lost
    released = _feed(_aiortc_default(), seqs)
    # Arrival index i carries packet i + 1 after the loss: the hold is now 14 packets (280 ms),
    # and stays there for the rest of the stream.
    holds = [seqs[i] - f for i, f in released[-10:]]
    assert holds == [14] * 10


def test_bounded_buffer_releases_in_order_packets_at_once():
    released = _feed(BoundedJitterBuffer(prefetch=0, slack=2), list(range(65530, 65546)))  # wraps at 2^16
    assert [i for i, _ in released] == list(range(16))
    assert [f for _, f in released] == [(960 * s % 2**32) // 960 for s in range(65530, 65546)]
    released = _feed(BoundedJitterBuffer(prefetch=1, slack=2), list(range(10)))
    assert all(i - f == 1 for i, f in released)


def test_bounded_buffer_reorders_within_the_window_without_loss():
    buffer = BoundedJitterBuffer(prefetch=0, slack=2)
    released = _feed(buffer, [0, 1, 2, 4, 3, 5, 6, 8, 9, 7, 10])
    assert [f for _, f in released] == list(range(11))[: len(released)]
    assert buffer.lost == 0 and buffer.dropped == 0 and buffer.late == 0
    assert len(released) >= 9  # the delay grew by at most `slack` frames


def test_bounded_buffer_skips_a_loss_and_keeps_the_delay_bounded():
    buffer = BoundedJitterBuffer(prefetch=0, slack=2)
    seqs = list(range(5)) + list(range(6, 60))
    released = _feed(buffer, seqs)
    assert buffer.lost == 1 and buffer.dropped == 0
    assert 5 not in [f for _, f in released]
    holds = [seqs[i] - f for i, f in released[-10:]]
    assert max(holds) <= 2  # at most (prefetch + slack) frames, not aiortc's 14
    # A straggler for the skipped slot is dropped, not played out of order.
    _, frame = buffer.add(_packet(5))
    assert frame is None and buffer.late == 1


def test_bounded_buffer_survives_a_jump_past_its_window():
    buffer = BoundedJitterBuffer(prefetch=0, slack=2)
    released = _feed(buffer, [0, 1, 2, 500, 501, 502])
    assert [f for _, f in released] == [0, 1, 2, 500, 501, 502]


def test_install_replaces_the_receivers_buffer_before_media_flows():
    async def main():
        pc = RTCPeerConnection()
        transceiver = pc.addTransceiver("audio")
        buffer = make_jitter_buffer("bounded", 0, 2)
        install_jitter_buffer(transceiver.receiver, buffer)
        installed = transceiver.receiver._RTCRtpReceiver__jitter_buffer
        install_jitter_buffer(transceiver.receiver, make_jitter_buffer("aiortc", 0, 2))  # None: no change
        kept = transceiver.receiver._RTCRtpReceiver__jitter_buffer
        await pc.close()
        return buffer, installed, kept

    buffer, installed, kept = asyncio.run(main())
    assert installed is buffer and kept is buffer
    with pytest.raises(RuntimeError, match="not supported"):
        install_jitter_buffer(object(), BoundedJitterBuffer())
    with pytest.raises(ValueError):
        BoundedJitterBuffer(prefetch=10, slack=10)
