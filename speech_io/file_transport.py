"""File transport: a wav plays the user, the agent's reply is written next to it.

One paced loop, tick = 20 ms on an injected :class:`duplex.clock.Clock`: a ``RealClock`` paces
in real time, a ``VirtualClock`` runs as fast as the agent allows with the same timeline. At
tick k (time (k+1) x 20 ms, when the k-th 20 ms of input has been "captured") the loop feeds
input chunk k and takes one output frame, which plays from that moment on. The output wav is
stereo at the agent's output rate: left = the user (input resampled), right = the agent, on one
time axis, so an echo with delay D shows up at D + 20 ms (one frame of capture) on the right.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from duplex.clock import Clock
from speech_io.agent_interface import AgentFactory, Event
from speech_io.frames import FRAME_MS, AudioFrame
from speech_io.pipeline import InputPipeline, InputStats, OutputPipeline, OutputStats
from speech_io.vad import SpeechDetector, SpeechSegment
from speech_io.wav import read_wav, resample, write_wav

TICK_S = FRAME_MS / 1000.0


@dataclass
class FileRunResult:
    output: Path
    rate: int
    input_s: float
    output_s: float
    wall_s: float
    """Clock time the run took (virtual under a VirtualClock)."""
    events: list[tuple[float, Event]] = field(default_factory=list)
    """(session time, event) in order."""
    segments: list[SpeechSegment] = field(default_factory=list)
    input_stats: InputStats | None = None
    output_stats: OutputStats | None = None


async def run_file(
    factory: AgentFactory,
    input_path: str | Path,
    output_path: str | Path,
    clock: Clock,
    *,
    detector: SpeechDetector | None = None,
    tail_s: float = 1.0,
    max_tail_s: float = 30.0,
    on_event: Callable[[float, Event], None] | None = None,
) -> FileRunResult:
    """Play ``input_path`` to a new session; write user|agent stereo to ``output_path``.

    After the input ends, runs until the agent has been silent for ``tail_s`` (at most
    ``max_tail_s``).
    """
    audio, in_rate = read_wav(input_path, mono=True)
    session = await factory.create_session(Path(input_path).stem, clock)
    events: list[tuple[float, Event]] = []

    def record(event: Event) -> None:
        events.append((clock.now() - t0, event))
        if on_event is not None:
            on_event(clock.now() - t0, event)

    async def collect() -> None:
        async for event in session.events():
            record(event)

    t0 = clock.now()
    collector = asyncio.create_task(collect())
    out_rate = session.output_rate
    inp = InputPipeline(session, detector, publish=record)
    out = OutputPipeline(session, out_rate, 1)
    chunk = max(1, int(round(in_rate * TICK_S)))
    n_in_ticks = -(-len(audio) // chunk)
    agent: list[np.ndarray] = []
    silent_run = 0
    try:
        k = 0
        while True:
            await clock.sleep_until(t0 + (k + 1) * TICK_S)
            if k < n_in_ticks:
                piece = audio[k * chunk : (k + 1) * chunk]
                await inp.feed(AudioFrame.from_mono(piece, in_rate, k * chunk / in_rate))
            elif k == n_in_ticks:
                await inp.finish()
            had = out.stats.agent_frames
            agent.append(out.next_frame(clock.now() - t0).samples[:, 0])
            silent_run = 0 if out.stats.agent_frames > had else silent_run + 1
            k += 1
            if k > n_in_ticks:
                tail = (k - n_in_ticks) * TICK_S
                if silent_run * TICK_S >= tail_s or tail >= max_tail_s:
                    break
    finally:
        await session.close()
        await collector
    wall = clock.now() - t0
    # The agent's first frame plays from the end of the first tick.
    right = np.concatenate([np.zeros(out.size, dtype=np.float32), *agent])
    left = resample(audio, in_rate, out_rate)
    n = max(len(left), len(right))
    stereo = np.zeros((n, 2), dtype=np.float32)
    stereo[: len(left), 0] = left
    stereo[: len(right), 1] = right
    path = write_wav(output_path, stereo, out_rate)
    return FileRunResult(
        output=path,
        rate=out_rate,
        input_s=len(audio) / in_rate,
        output_s=n / out_rate,
        wall_s=wall,
        events=events,
        segments=list(inp.stats.segments),
        input_stats=inp.stats,
        output_stats=out.stats,
    )
