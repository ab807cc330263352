"""Two agents talking to each other over a simulated network path (SyncLLM's latency study).

Sessions A and B of one factory share a virtual clock; each one's 20 ms output frames go through
its own :class:`~duplex.netsim.NetworkChannel` and playout buffer to the other's input. A is
started by an opener (a held-out user turn, mixed into what A hears); after that the two agents
keep each other going, or fall silent. Everything is recorded from A's side: A's own voice and
B's voice as A hears it, on the true timeline, which is what the floor-transfer figures read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duplex.clock import EventClock
from duplex.netsim import PACKET_S, ChannelConfig, PlayoutBuffer
from duplex.sim_run import RATE, _link_stats, channel_pair
from speech_io.frames import AudioFrame
from speech_io.pipeline import InputPipeline, OutputPipeline
from speech_io.vad import SpeechDetector
from speech_io.wav import resample


@dataclass
class PairResult:
    a: np.ndarray
    """(T,) agent A's voice at 16 kHz (as it spoke)."""
    b_heard: np.ndarray
    """(T,) agent B's voice as A hears it, 16 kHz, same timeline."""
    opener: np.ndarray
    """(T,) the opener A heard, 16 kHz."""
    links: dict[str, dict[str, int]] = field(default_factory=dict)
    duration: float = 0.0


async def run_pair(factory: Any, opener: np.ndarray, channel: ChannelConfig, *, seconds: float,
                   buffer_s: float = 0.0, detectors: tuple[SpeechDetector | None, SpeechDetector | None] = (None, None),
                   on_session: Any = None) -> PairResult:
    """Run A and B for ``seconds`` of virtual time; ``opener`` (16 kHz) is played to A first."""
    clock = EventClock()
    sa = await factory.create_session("pair-a", clock)
    sb = await factory.create_session("pair-b", clock)
    if on_session is not None:
        on_session(sa)
        on_session(sb)
    rate = sa.output_rate
    tick = int(round(rate * PACKET_S))
    opener_r = resample(opener, RATE, rate)
    ab, ba = channel_pair(channel)  # A -> B and B -> A
    ab_buf, ba_buf = PlayoutBuffer(buffer_s), PlayoutBuffer(buffer_s)
    ins = (InputPipeline(sa, detectors[0]), InputPipeline(sb, detectors[1]))
    outs = (OutputPipeline(sa, rate, 1), OutputPipeline(sb, rate, 1))
    n_ticks = int(round(seconds / PACKET_S))
    a_track = np.zeros((n_ticks + 2) * tick, np.float32)
    b_heard = np.zeros_like(a_track)
    drains: list[asyncio.Task[None]] = []

    async def drain(session: Any) -> None:
        async for _ in session.events():
            pass

    drains = [asyncio.create_task(drain(sa)), asyncio.create_task(drain(sb))]
    t0 = clock.now()
    try:
        for k in range(n_ticks):
            t = (k + 1) * PACKET_S
            await clock.sleep_until(t0 + t)
            # What each side hears this tick: the other's packets whose slot started by the previous
            # tick (a frame playing from t' is fully captured at t' + 20 ms), + the opener for A.
            for p in ab.deliver(t):
                ab_buf.push(p)
            for p in ba.deliver(t):
                ba_buf.push(p)
            heard_a = dict(ba_buf.pop_due(t - PACKET_S))
            heard_b = dict(ab_buf.pop_due(t - PACKET_S))
            for seq, p in heard_a.items():
                x = np.zeros(tick, np.float32) if p is None else p.payload.copy()
                i = int(round((ba_buf.slot_time(seq) or t) * rate))
                b_heard[i : i + tick] = x[: max(0, len(b_heard) - i)]
            op = np.zeros(tick, np.float32)
            seg = opener_r[k * tick : (k + 1) * tick]
            op[: len(seg)] = seg
            a_in = op + sum((p.payload for p in heard_a.values() if p is not None), np.zeros(tick, np.float32))
            await ins[0].feed(AudioFrame.from_mono(np.clip(a_in, -1, 1), rate, k * PACKET_S))
            for seq, p in heard_b.items():
                x = np.zeros(tick, np.float32) if p is None else p.payload
                await ins[1].feed(AudioFrame.from_mono(x, rate, seq * PACKET_S))
            fa = outs[0].next_frame(clock.now() - t0).samples[:, 0].astype(np.float32, copy=True)
            fb = outs[1].next_frame(clock.now() - t0).samples[:, 0].astype(np.float32, copy=True)
            a_track[(k + 1) * tick : (k + 2) * tick] = fa
            ab.send(k, t, fa)
            ba.send(k, t, fb)
    finally:
        await sa.close()
        await sb.close()
        await asyncio.gather(*drains, return_exceptions=True)
    n = n_ticks * int(round(RATE * PACKET_S))

    def to16(x: np.ndarray) -> np.ndarray:
        y = resample(x, rate, RATE)
        out = np.zeros(n, np.float32)
        out[: min(n, len(y))] = y[:n]
        return out

    op16 = np.zeros(n, np.float32)
    op16[: min(n, len(opener))] = opener[:n]
    return PairResult(a=to16(a_track), b_heard=to16(b_heard), opener=op16,
                      links={"a_to_b": _link_stats(ab, ab_buf), "b_to_a": _link_stats(ba, ba_buf)},
                      duration=n / RATE)
