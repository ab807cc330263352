"""One simulated call: a scripted user and a duplex session joined by a simulated network path.

The user side and the agent side share one virtual timeline (``EventClock``; tick = 20 ms).
At tick k (true time T = (k+1) x 20 ms, when the user's k-th 20 ms has been captured):

1. the user's packet k goes into the uplink :class:`~duplex.netsim.NetworkChannel`;
2. the agent side takes the packets that have arrived, puts them in its playout buffer and feeds
   every slot that is due to the session (a lost or late packet plays as silence), stamped with
   the sender's capture time (as RTP timestamps are), through the transports' input pipeline (VAD);
3. the session's next 20 ms output frame goes into the downlink channel;
4. the user side plays what has arrived of the agent's audio: that is the track the metrics read.

So a one-way delay D reaches the agent's ears D late and its voice another D later: what the user
hears is the conversation as a real user on that network would. Both directions use the same
channel settings and independent seeded generators.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from duplex.clock import EventClock
from duplex.netsim import PACKET_S, ChannelConfig, NetworkChannel, PlayoutBuffer
from speech_io.agent_interface import Event
from speech_io.frames import AudioFrame
from speech_io.pipeline import InputPipeline, OutputPipeline
from speech_io.vad import SpeechDetector
from speech_io.wav import resample

RATE = 16000
TICK = int(round(RATE * PACKET_S))


@dataclass
class CallResult:
    user: np.ndarray
    """(T,) what the user said, at 16 kHz, on the true timeline."""
    heard: np.ndarray
    """(T,) the agent as the user hears it (after the downlink), at 16 kHz, same timeline."""
    sent: np.ndarray
    """(T,) the agent as it spoke (before the downlink), at 16 kHz, same timeline."""
    events: list[tuple[float, Event]]
    """(true time, event) of the session and the input pipeline."""
    head: list[tuple[int, list[float]]] = field(default_factory=list)
    """(chunk index, the state head's own probabilities) for every chunk the agent listened to."""
    uplink: dict[str, int] = field(default_factory=dict)
    downlink: dict[str, int] = field(default_factory=dict)
    duration: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


def channel_pair(cfg: ChannelConfig) -> tuple[NetworkChannel, NetworkChannel]:
    """Uplink and downlink with the same settings and independent seeded randomness."""
    up = NetworkChannel(cfg)
    down = NetworkChannel(dataclasses.replace(cfg, seed=cfg.seed + 7919))
    return up, down


def _link_stats(ch: NetworkChannel, buf: PlayoutBuffer) -> dict[str, int]:
    return {"sent": ch.sent, "lost": ch.lost, "played": buf.played, "gaps": buf.gaps, "late": buf.late}


async def run_call(
    factory: Any,
    user_audio: np.ndarray,
    channel: ChannelConfig,
    *,
    buffer_s: float = 0.0,
    detector: SpeechDetector | None = None,
    session_id: str = "sim",
    tail_s: float = 2.0,
    max_extra_s: float = 10.0,
    on_session: Callable[[Any], None] | None = None,
) -> CallResult:
    """Play ``user_audio`` (16 kHz) through ``channel`` to a new session of ``factory``.

    Runs until the script has ended and the user has heard ``tail_s`` of agent silence (at most
    ``max_extra_s`` past the script). Needs an :class:`EventClock` run (the caller's loop).
    """
    clock = EventClock()
    session = await factory.create_session(session_id, clock)
    if on_session is not None:
        on_session(session)
    events: list[tuple[float, Event]] = []
    t0 = clock.now()

    def record(event: Event) -> None:
        events.append((clock.now() - t0, event))

    async def collect() -> None:
        async for event in session.events():
            record(event)

    collector = asyncio.create_task(collect())
    inp = InputPipeline(session, detector, publish=record)
    out_rate = session.output_rate
    out = OutputPipeline(session, out_rate, 1)
    up, down = channel_pair(channel)
    up_buf, down_buf = PlayoutBuffer(buffer_s), PlayoutBuffer(buffer_s)
    out_tick = int(round(out_rate * PACKET_S))
    n_user = -(-len(user_audio) // TICK)
    user_pieces: list[np.ndarray] = []
    heard: list[tuple[float, np.ndarray]] = []  # (play time, 20 ms of agent audio) at the user's side
    sent: list[np.ndarray] = []
    silent = 0
    k = 0
    try:
        while True:
            t = (k + 1) * PACKET_S
            piece = np.zeros(TICK, np.float32)
            if k < n_user:
                seg = user_audio[k * TICK : (k + 1) * TICK]
                piece[: len(seg)] = seg
            user_pieces.append(piece)
            await clock.sleep_until(t0 + t)
            up.send(k, t, piece)
            for p in up.deliver(t):
                up_buf.push(p)
            for seq, p in up_buf.pop_due(t):
                audio = p.payload if p is not None else np.zeros(TICK, np.float32)
                await inp.feed(AudioFrame.from_mono(audio, RATE, seq * PACKET_S))
            frame = out.next_frame(clock.now() - t0)
            agent = frame.samples[:, 0].astype(np.float32, copy=True)
            sent.append(agent)
            down.send(k, t, agent)
            for p in down.deliver(t):
                down_buf.push(p)
            loud = False
            for seq, p in down_buf.pop_due(t):
                if p is None:
                    continue  # lost or late: the user hears silence in that slot
                heard.append((float(down_buf.slot_time(seq) or t), p.payload))
                loud = loud or float(np.sqrt(np.mean(p.payload.astype(np.float64) ** 2))) >= 10 ** (-45 / 20)
            silent = 0 if loud else silent + 1
            k += 1
            if k >= n_user and silent * PACKET_S >= tail_s and (k - n_user) * PACKET_S >= tail_s:
                break
            if (k - n_user) * PACKET_S >= max_extra_s:
                break
        await inp.finish()
    finally:
        await session.close()
        await collector
    user_track = np.concatenate(user_pieces)
    n = len(user_track)
    n_out = int(round(n / RATE * out_rate)) + out_tick
    # Frame k of the agent plays from the end of tick k (the one-frame capture delay), at the
    # agent's side; the user hears each slot at its playout time.
    sent_track = np.concatenate([np.zeros(out_tick, np.float32), *sent])
    heard_track = np.zeros(n_out, np.float32)
    for at, audio in heard:
        i = int(round(at * out_rate))
        if i < n_out:
            heard_track[i : i + len(audio)] = audio[: n_out - i]
    heard16 = resample(heard_track, out_rate, RATE)
    sent16 = resample(sent_track, out_rate, RATE)
    return CallResult(
        user=user_track, heard=_fit(heard16, n), sent=_fit(sent16, n), events=events,
        uplink=_link_stats(up, up_buf), downlink=_link_stats(down, down_buf), duration=n / RATE,
        stats=dict(session.stats()) if hasattr(session, "stats") else {},
    )


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    out[: min(n, len(x))] = x[:n]
    return out
