"""A scripted user that reacts to the agent: plays utterances at fixed times or relative to the
agent's speech, through the same input/output audio paths as every transport.

Used by ``bench duplex`` and the runtime's tests: "ask a question; 0.8 s after the agent starts
answering, say mm-hm" cannot be a fixed wav, because when the agent starts depends on the agent.
The driver is the file transport's paced loop (one 20 ms tick on an injected clock: input frame
in, output frame out), so on an :class:`duplex.clock.EventClock` a scripted conversation runs as
fast as the models compute, on an exact timeline.

Recorded: the user's track (16 kHz) and the agent's (its own rate) on one time axis, every event,
and when each utterance actually started (t=0 is the start of the session's input).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from duplex.clock import Clock
from speech_io.agent_interface import AgentFactory, Event
from speech_io.frames import FRAME_MS, AudioFrame
from speech_io.pipeline import InputPipeline, OutputPipeline
from speech_io.vad import SpeechDetector
from speech_io.wav import resample

TICK_S = FRAME_MS / 1000.0
RATE = 16000


@dataclass
class Say:
    """One user utterance (mono float32 at 16 kHz)."""

    audio: np.ndarray
    at: float | None = None
    """Absolute start time (s); used when ``after_agent`` is None."""
    after_agent: float | None = None
    """Start this long after the agent's first audible audio following the previous utterance."""
    name: str = ""
    words_end: float | None = None
    """End of the last word inside ``audio`` (s), when known (else the energy end is used)."""
    words_start: float | None = None
    """Start of the first word inside ``audio`` (s)."""


@dataclass
class Played:
    name: str
    start: float
    end: float
    speech_start: float
    """True speech onset (s, session time)."""
    speech_end: float
    """True end of speech (s, session time)."""


@dataclass
class ScriptResult:
    events: list[tuple[float, Event]]
    played: list[Played]
    skipped: list[str]
    """Utterances that never played (the agent never spoke before them)."""
    user: np.ndarray
    """(T,) the user's track at 16 kHz."""
    agent: np.ndarray
    """(T,) the agent's track at ``agent_rate``."""
    agent_rate: int
    duration: float
    session: object = None
    records: list = field(default_factory=list)

    def agent_activity(self, hop_s: float = 0.01, dbfs: float = -40.0) -> np.ndarray:
        """(n,) bool: the agent is audible in each ``hop_s`` window."""
        return activity(self.agent, self.agent_rate, hop_s, dbfs)


def activity(x: np.ndarray, rate: int, hop_s: float = 0.01, dbfs: float = -40.0) -> np.ndarray:
    hop = max(1, int(round(rate * hop_s)))
    n = len(x) // hop
    if n == 0:
        return np.zeros(0, dtype=bool)
    frames = x[: n * hop].reshape(n, hop).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return rms >= 10 ** (dbfs / 20.0)


def speech_span(audio: np.ndarray, rate: int = RATE, rel_db: float = 40.0) -> tuple[float, float]:
    """(start, end) seconds of the energy above peak - ``rel_db`` (10 ms windows)."""
    hop = rate // 100
    n = len(audio) // hop
    if n == 0:
        return 0.0, 0.0
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1))
    on = np.flatnonzero(20 * np.log10(rms + 1e-9) > 20 * np.log10(rms.max() + 1e-9) - rel_db)
    if len(on) == 0:
        return 0.0, 0.0
    return on[0] * hop / rate, (on[-1] + 1) * hop / rate


async def run_script(
    factory: AgentFactory,
    script: list[Say],
    clock: Clock,
    *,
    detector: SpeechDetector | None = None,
    session_id: str = "scripted",
    tail_s: float = 1.0,
    max_s: float = 60.0,
    in_rate: int = RATE,
    channels: int = 1,
    close: bool = True,
    played: list[Played] | None = None,
) -> ScriptResult:
    """Play ``script`` to a new session; stop ``tail_s`` after the last utterance once the agent
    has been silent that long (or at ``max_s``). ``in_rate``/``channels`` set the format of the
    captured frames (the transport's input pipeline converts them)."""
    session = await factory.create_session(session_id, clock)
    events: list[tuple[float, Event]] = []
    t0 = clock.now()

    async def collect() -> None:
        async for event in session.events():
            events.append((clock.now() - t0, event))

    collector = asyncio.create_task(collect())
    inp = InputPipeline(session, detector, publish=lambda e: events.append((clock.now() - t0, e)))
    out = OutputPipeline(session, session.output_rate, 1)
    tick = int(round(RATE * TICK_S))
    tick_in = int(round(in_rate * TICK_S))
    converted = {id(s): (s.audio if in_rate == RATE else resample(s.audio, RATE, in_rate)) for s in script}
    user: list[np.ndarray] = []
    agent: list[np.ndarray] = []
    played = [] if played is None else played  # callers (a TimelineHead) may watch it fill
    skipped: list[str] = []
    queue = list(script)
    current: tuple[Say, int] | None = None  # (utterance, ticks played)
    last_end = 0.0
    agent_since: float | None = None  # first audible agent audio after the previous utterance ended
    silent_run = 0
    k = 0
    try:
        while True:
            t = k * TICK_S
            if current is None and queue:
                nxt = queue[0]
                start = nxt.at if nxt.after_agent is None else (
                    None if agent_since is None else agent_since + nxt.after_agent)
                if start is not None and t >= start - 1e-9:
                    current = (queue.pop(0), 0)
                    s0, s1 = speech_span(current[0].audio)
                    ws = current[0].words_start if current[0].words_start is not None else s0
                    we = current[0].words_end if current[0].words_end is not None else s1
                    played.append(Played(current[0].name, t, t + len(current[0].audio) / RATE, t + ws, t + we))
            piece = np.zeros(tick, np.float32)
            piece_in = np.zeros(tick_in, np.float32)
            if current is not None:
                say, j = current
                a16, ain = say.audio[j * tick : (j + 1) * tick], converted[id(say)][j * tick_in : (j + 1) * tick_in]
                piece[: len(a16)] = a16
                piece_in[: len(ain)] = ain
                if (j + 1) * tick >= len(say.audio):
                    current = None
                    last_end = t + TICK_S
                    agent_since = None
                else:
                    current = (say, j + 1)
            user.append(piece)
            await clock.sleep_until(t0 + (k + 1) * TICK_S)
            await inp.feed(_frame(piece_in, in_rate, channels, t))
            had = out.stats.agent_frames
            frame = out.next_frame(t + TICK_S)
            agent.append(frame.samples[:, 0].copy())
            spoke = out.stats.agent_frames > had and frame.rms() >= 10 ** (-45 / 20)
            if spoke and agent_since is None and current is None and (t + TICK_S) > last_end:
                agent_since = t + TICK_S
            silent_run = 0 if spoke else silent_run + 1
            k += 1
            done_playing = not queue and current is None
            if done_playing and t - last_end >= tail_s and silent_run * TICK_S >= tail_s:
                break
            if t >= max_s:
                break
        skipped += [s.name for s in queue]
        await inp.finish()
    finally:
        if close:
            await session.close()
            await collector
        else:
            collector.cancel()
    user_track = np.concatenate(user) if user else np.zeros(0, np.float32)
    # The agent's frame k plays from the end of tick k.
    agent_track = np.concatenate([np.zeros(out.size, np.float32), *agent]) if agent else np.zeros(0, np.float32)
    return ScriptResult(events=events, played=played, skipped=skipped, user=user_track, agent=agent_track,
                        agent_rate=session.output_rate, duration=k * TICK_S, session=session,
                        records=list(getattr(session, "records", [])))


def _frame(x: np.ndarray, rate: int, channels: int, t: float) -> AudioFrame:
    if channels > 1:
        x = np.repeat(x.reshape(-1, 1), channels, axis=1)
    return AudioFrame(np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32), rate, t)


CONTINUE, INTERRUPT, REJECT = 0, 1, 2


class TimelineHead:
    """A state head that knows the script: the label rules of ``training/data/labels.py`` applied
    to what the scripted user has actually said so far. For tests and as the ``oracle`` diagnostic
    of ``bench duplex`` (what the runtime would do with a perfect head); never the agent itself.

    Install as ``DuplexModel.head_override``; ``played`` is the list ``run_script`` fills.
    ``kinds`` maps utterance names to ``turn`` (default) or a reject kind (``backchannel``...).
    """

    def __init__(self, kinds: dict[str, str] | None = None, chunk_s: float = 0.16, margin: float = 0.08,
                 confidence: float = 0.9) -> None:
        self.played: list[Played] = []
        self.kinds = kinds or {}
        self.chunk_s, self.margin = chunk_s, margin
        self.p = confidence
        self._replied: set[int] = set()

    def _probs(self, label: int) -> np.ndarray:
        out = np.full(3, (1 - self.p) / 2, dtype=np.float32)
        out[label] = self.p
        return out

    def __call__(self, state: object, k: int, speaking: bool) -> np.ndarray:
        t = (k + 1) * self.chunk_s
        start = t - self.chunk_s
        turns = [(i, p) for i, p in enumerate(self.played) if self.kinds.get(p.name, "turn") == "turn"]
        for _, p in turns:
            if p.speech_start < t < p.speech_end + self.margin:
                return self._probs(CONTINUE)
        for p in self.played:
            if self.kinds.get(p.name, "turn") != "turn" and start < p.speech_end and t > p.speech_start:
                return self._probs(REJECT)
        ended = [i for i, p in turns if p.speech_end + self.margin <= t]
        if ended and ended[-1] not in self._replied:
            if speaking:
                self._replied.add(ended[-1])
            else:
                return self._probs(INTERRUPT)
        return self._probs(REJECT if speaking else CONTINUE)
