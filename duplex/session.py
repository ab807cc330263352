"""A duplex session: the real agent behind :mod:`speech_io.agent_interface`.

Stages of one session, each an asyncio task that only awaits (the models run on the factory's
worker threads, one per model, see :mod:`duplex.workers`)::

    push_audio (20 ms, VAD flag) --> turn policy (frame: fast onsets; pause/resume/cancel)
                                 \\-> 160 ms chunks --> listen:   encoder+adapter+LLM prefill+state head   [llm worker]
                                                               user units -> generator context         [generator worker]
                                                    --> turn policy (chunk: take turn / barge-in / reject)
    user silent --> speculate: copy of the listening context, first tokens      [llm worker, behind listening]
    take_turn --> text:   begin_reply (or adopt the speculation), decode N tokens per job   [llm worker]
                          (once heard: one token per listening step, in its LLM pass)
              --> units:  reply text -> generator steps while playout needs audio    [generator worker]
                          (listening: one step per input chunk keeps its timeline)
              --> speech: UnitsFrame queue -> decoder -> OutputBuffer                [tts worker]
    pop_output_frame (transport's 20 ms clock) <-- OutputBuffer (fade/pause/stop)

Barge-in: the agent's audio stops at once (10 ms fade), queued audio and queued units are
dropped (``FrameQueue.interrupt``), the reply's text task is cancelled, and the three models
drop the reply (cleanup jobs jump their workers' queues). The session keeps listening on its
own LLM context all along, so the user's new turn is already being heard.

All times in events and metrics are on the session's input timeline (seconds of user audio
since the session started), which the transport's clock paces.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.duplex_model import DuplexModel, DuplexState, ListenJob, TextChunk
from duplex.clock import Clock, RealClock
from duplex.frames import FrameQueue, Interrupt, UnitsFrame
from duplex.metrics import MetricsHub, TurnRecord
from duplex.output import OutputBuffer, leading_quiet
from duplex.turn_policy import Action, TurnPolicy
from duplex.watchdog import LoopWatchdog
from duplex.workers import BACKGROUND, LISTEN, REPLY, URGENT, CostModel, ModelWorker
from speech_io.agent_interface import (
    AgentState,
    Event,
    EventStream,
    error_event,
    state_event,
    text_event,
)
from speech_io.frames import AudioFrame

log = logging.getLogger(__name__)


@dataclass
class _Chunk:
    index: int
    t_start: float
    t_end: float
    audio: np.ndarray


@dataclass
class ReplyRun:
    """One reply, from the turn taken to its last sample played (or its cancellation)."""

    id: int
    """Public reply number (events, turn records): consecutive over the replies taken."""
    trigger: str
    decided_at: float
    chunk_end: float
    user_end: float | None
    cancelled: bool = False
    text_task: asyncio.Task[None] | None = None
    pending_text: list[TextChunk] = field(default_factory=list)
    tokens: int = 0
    text: str = ""
    llm_ended: bool = False
    text_ready_at: float | None = None
    tokens_at_ready: int = 0
    chunks: int = 0
    units_started: bool = False
    """The generator was told about this reply (its first text)."""
    units_done: bool = False
    first_units_at: float | None = None
    tts_started: bool = False
    first_audio_at: float | None = None
    played_at: float | None = None
    emotion: str = ""
    paused_at: float | None = None
    """Input time the agent's audio was paused for a candidate barge-in (None = not paused)."""
    key: int = -1
    """The LLM side's name for this reply's text (speculated replies that were dropped have one too)."""
    speculative: bool = False
    """Decoded ahead of the turn (``runtime.speculate_tokens``): not the reply until committed."""
    committed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a speculative reply becomes the reply (its text task decodes on past the lead)."""
    sounded: bool = False
    """The decoder produced the reply's first audible sample (the lead-in quiet before it is trimmed)."""
    riding: bool = False
    """Its next tokens ride on listening steps (``runtime.ride_after_tokens``), one per step."""


class DuplexSession:
    """One conversation with the duplex agent (an ``AgentSession``)."""

    input_rate = 16000

    def __init__(self, factory: DuplexAgentFactory, session_id: str, clock: Clock, state: DuplexState) -> None:
        self.factory = factory
        self.model: DuplexModel = factory.model
        self.session_id = session_id
        self.clock = clock
        self.st = state
        rc = factory.cfg.runtime
        self.rc = rc
        self.output_rate = self.model.sample_rate
        self.policy = TurnPolicy(rc.policy)
        self.output = OutputBuffer(self.output_rate, rc.fade_ms)
        self._events = EventStream(maxsize=512)
        self._created = clock.now()
        self._anchor: float | None = None  # clock time of input time 0
        self._chunk = np.zeros(self.model.chunk_samples, dtype=np.float32)
        self._fill = 0
        self._chunk_start: float | None = None
        self._chunk_index = 0
        self._chunks: asyncio.Queue[_Chunk] = asyncio.Queue()
        self._input_chunks = 0
        """Chunks listened to (the generator may run ``max_ahead_chunks`` past this)."""
        self._tts_queue = FrameQueue()
        self._tts_busy = False
        self._unit_wake = asyncio.Event()
        self._reply: ReplyRun | None = None
        self._spec: ReplyRun | None = None
        """A reply being decoded ahead of the turn while the user is silent (not yet the reply)."""
        self._next_reply = 0
        self._next_key = 0
        self._state: AgentState = "listening"
        self._agent_audible_at: float | None = None
        self._stop_pending: tuple[int, float, float, str] | None = None
        """(reply, user onset, stop decided at, trigger) of a barge-in whose audio is still fading out."""
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.records: list[TurnRecord] = []
        self.dropped_chunks = 0
        self.underruns = 0
        """Ticks in the middle of a reply with no audio ready (the transport played silence)."""
        self.errors = 0
        self.listen_lag_max_s = 0.0
        """Longest wait between a chunk's end and its decision (input time)."""
        self._converter: Any = None  # speech_io.resample.AudioConverter, made on first use
        self._publish(state_event("listening", 0.0))
        self._publish({"type": "emotion", "name": state.emotion, "available": ["auto", *self.model.emotions]})
        for coro, name in ((self._listen_loop(), "listen"), (self._unit_loop(), "units"), (self._speech_loop(), "speech"),
                           (self._stats_loop(), "stats")):
            self._spawn(coro, name)

    # -- plumbing -----------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"duplex-{self.session_id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._closed:
            return
        exc = task.exception()
        if exc is not None:
            self.errors += 1
            self.factory.metrics.inc("session_errors_total")
            log.error("session %s: %s failed: %r", self.session_id, task.get_name(), exc, exc_info=exc)
            self._publish(error_event(f"agent error in {task.get_name()}: {exc}"))

    def _publish(self, event: Event) -> None:
        self._events.publish(event)

    def _now(self) -> float:
        """Current time on the session's input timeline."""
        anchor = self._anchor if self._anchor is not None else self._created
        return self.clock.now() - anchor

    def _set_state(self, state: AgentState) -> None:
        if state != self._state:
            self._state = state
            self._publish(state_event(state, self._now()))

    def _run(self, worker: ModelWorker, stage: str, fn: Any, *args: Any, priority: int = REPLY, units: int = 1,
             merge: bool = False) -> Any:
        return worker.run(stage, fn, *args, clock=self.clock, priority=priority, units=units, merge=merge)

    def _record(self, rec: TurnRecord) -> None:
        self.records.append(rec)
        self.factory.metrics.record(rec)
        self._publish(rec.to_json())

    # -- input --------------------------------------------------------------------------------
    async def push_audio(self, frame: AudioFrame) -> None:
        if self._closed:
            return
        if self._anchor is None:
            # Frames reach the agent when their last sample has been captured.
            self._anchor = self.clock.now() - frame.end
        if frame.rate != self.input_rate or frame.channels != 1:
            converted = self._convert(frame)
            if converted is None:
                return
            frame = converted
        x = frame.mono()
        if not np.all(np.isfinite(x)):
            x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        x = np.clip(x, -1.0, 1.0)
        rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
        self._apply(self.policy.on_frame(frame.timestamp + len(x) / self.input_rate, len(x) / self.input_rate,
                                         frame.speech, rms))
        if self._spec is not None and self.policy.active and self.policy.active_run >= self.rc.policy.onset_s:
            self._drop_spec()  # the user speaks on: the speculated reply answered an unfinished turn
        pos = 0
        while pos < len(x):
            if self._fill == 0:
                self._chunk_start = frame.timestamp + pos / self.input_rate
            take = min(len(x) - pos, len(self._chunk) - self._fill)
            self._chunk[self._fill : self._fill + take] = x[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == len(self._chunk):
                assert self._chunk_start is not None
                dur = len(self._chunk) / self.input_rate
                self._chunks.put_nowait(_Chunk(self._chunk_index, self._chunk_start, self._chunk_start + dur,
                                               self._chunk.copy()))
                self._chunk_index += 1
                self._fill = 0
                while self._chunks.qsize() > self.rc.max_backlog_chunks:
                    # Falling behind real time: drop the oldest audio rather than lag ever more.
                    self._chunks.get_nowait()
                    self.dropped_chunks += 1
                    self.factory.metrics.inc("chunks_dropped_total")

    def _convert(self, frame: AudioFrame) -> AudioFrame | None:
        from speech_io.resample import AudioConverter

        if self._converter is None:
            self._converter = AudioConverter(self.input_rate, 1)
        out = self._converter.convert(frame)
        return None if out is None else out.with_speech(frame.speech)

    async def _listen_loop(self) -> None:
        llm, gen = self.factory.llm_worker, self.factory.gen_worker
        while True:
            batch = [await self._chunks.get()]
            # Chunks that queued up while the worker was busy go in one pass (one LLM read of the
            # weights for all of them): a session that fell behind catches up instead of lagging.
            while len(batch) < self.rc.listen_batch and not self._chunks.empty():
                batch.append(self._chunks.get_nowait())
            audio = np.concatenate([c.audio for c in batch])
            # The state head reads whether the agent holds the floor. A reply paused while the head
            # decides still holds it: flagged silent, a held "mm-hm" reads as the user's own turn
            # (the head's labels: speech over a silent agent is *continue*) and becomes a barge-in.
            held = self._reply is not None and self._reply.paused_at is not None
            speaking = [held or (self._agent_audible_at is not None and self._agent_audible_at >= c.t_start)
                        for c in batch]
            r = self._reply
            ride = r if r is not None and r.riding and not r.cancelled and not r.llm_ended else None
            # With a reply riding, its next token goes through the LLM in this listening step's pass;
            # other sessions' steps queued at the same moment share the pass (``listen_many``).
            job = ListenJob(self.st, audio, speaking, None if ride is None else ride.key)
            listen = self._run(llm, "listen" if ride is None else "listen+decode", self.model.listen_many, job,
                               priority=LISTEN, merge=True)
            heard, _ = await asyncio.gather(
                listen, self._run(gen, "units", self.model.user_units, self.st, audio, len(batch), priority=LISTEN))
            if ride is not None:
                results, text = heard
                if not ride.cancelled and not ride.llm_ended:
                    self._take_text(ride, text)
            else:
                results = heard
            self._input_chunks = batch[-1].index + 1
            now = self._now()
            for ch, res in zip(batch, results, strict=True):
                self.listen_lag_max_s = max(self.listen_lag_max_s, now - ch.t_end)
                self._apply(self.policy.on_chunk(ch.t_end, tuple(res.probs)), chunk_end=ch.t_end)
            self._maybe_speculate()
            self._unit_wake.set()

    # -- policy actions ------------------------------------------------------------------------
    def _apply(self, actions: list[Action], chunk_end: float | None = None) -> None:
        for a in actions:
            if a.kind == "take_turn":
                self._take_turn(a, chunk_end if chunk_end is not None else a.t)
            elif a.kind == "cancel_reply":
                if self._reply is not None:
                    self._cancel(self._reply, "user_resumed")
            elif a.kind == "pause_output":
                r = self._reply
                if r is not None and r.played_at is not None:
                    self.output.pause()
                    r.paused_at = self._now()
                    self._publish({"type": "policy", "action": "pause", "t": round(self._now(), 4)})
            elif a.kind == "resume_output":
                r = self._reply
                if r is not None and r.paused_at is not None:
                    self.output.resume()
                    pause_ms = 1000 * (self._now() - r.paused_at)
                    r.paused_at = None
                    self._record(TurnRecord(self.session_id, r.id, "backchannel", self._now(), ms=pause_ms,
                                            trigger=a.trigger))
                    self._publish({"type": "policy", "action": "resume", "t": round(self._now(), 4)})
            elif a.kind == "barge_in":
                r = self._reply
                if r is not None:
                    onset = float(a.detail.get("user_start", a.t))
                    stopped = r.paused_at if r.paused_at is not None else None
                    self._cancel(r, "barge_in")
                    if stopped is not None:
                        # The audio already stopped when the candidate paused it.
                        self._record(TurnRecord(self.session_id, r.id, "bargein", self._now(),
                                                ms=1000 * (stopped - onset + self.rc.fade_ms / 1000), trigger=a.trigger))
                    else:
                        self._stop_pending = (r.id, onset, self._now(), a.trigger)
                    self._set_state("listening")

    def _take_turn(self, a: Action, chunk_end: float) -> None:
        if self._reply is not None:
            return
        r, self._spec = self._spec, None
        # A reply decoded while the user was silent is the answer to this turn (no activity since).
        adopted = r is not None
        if r is None:
            r = self._new_run()
        r.speculative = False
        r.trigger, r.decided_at, r.chunk_end, r.user_end = a.trigger, self._now(), chunk_end, a.detail.get("user_end")
        self._next_reply += 1
        self._reply = r
        self._set_state("thinking")
        if not adopted:
            r.text_task = self._spawn(self._text_task(r), f"text-{r.id}")
            return
        self._spawn(self._run(self.factory.llm_worker, "commit", self.model.commit_speculation, self.st,
                              priority=URGENT), f"commit-{r.id}")
        if r.text:
            self._publish(text_event("agent", r.text, False, self._now()))
        if r.llm_ended:
            self._publish(text_event("agent", r.text.strip(), True, self._now()))
        r.committed.set()
        self._unit_wake.set()

    def _new_run(self, speculative: bool = False) -> ReplyRun:
        """A reply run with the next LLM key; its public number is the next reply's (given when the
        turn is taken: a dropped speculation leaves no gap)."""
        r = ReplyRun(id=self._next_reply, trigger="speculative" if speculative else "", decided_at=self._now(),
                     chunk_end=self._now(), user_end=self.policy.last_active_end, key=self._next_key,
                     speculative=speculative)
        self._next_key += 1
        return r

    def _maybe_speculate(self) -> None:
        """Start decoding a reply when the user has fallen silent after speaking (not yet the turn)."""
        p = self.policy
        if (self.rc.speculate_tokens <= 0 or self._spec is not None or self._reply is not None or self._closed
                or p.mode != "listening" or not p.user_spoke or p.active
                or p.inactive_run < self.rc.speculate_after_s - 1e-9):
            return
        r = self._spec = self._new_run(speculative=True)
        r.text_task = self._spawn(self._text_task(r), f"spec-{r.key}")

    def _drop_spec(self) -> None:
        r, self._spec = self._spec, None
        if r is None:
            return
        r.cancelled = True
        if r.text_task is not None and not r.text_task.done():
            r.text_task.cancel()
        self._spawn(self._run(self.factory.llm_worker, "cancel", self.model.cancel_text, self.st, r.key,
                              priority=LISTEN), f"drop-{r.key}")

    def _cancel(self, r: ReplyRun, reason: str) -> None:
        r.cancelled = True
        if self._reply is r:
            self._reply = None
        dropped = self._tts_queue.interrupt(r.id, reason)
        self.output.stop()
        if r.text_task is not None and not r.text_task.done():
            r.text_task.cancel()
        self._spawn(self._cleanup(r), f"cleanup-{r.id}")
        if reason != "barge_in":
            self._record(TurnRecord(self.session_id, r.id, "cancelled", self._now(), trigger=reason, text=r.text))
            self._set_state("listening")
        self._publish({"type": "policy", "action": "cancel", "reason": reason, "dropped_units": dropped,
                       "t": round(self._now(), 4)})

    async def _cleanup(self, r: ReplyRun) -> None:
        await asyncio.gather(
            self._run(self.factory.llm_worker, "cancel", self.model.cancel_text, self.st, r.key, priority=LISTEN),
            self._run(self.factory.gen_worker, "cancel", self.model.cancel_units, self.st, priority=LISTEN),
        )

    # -- reply: text ----------------------------------------------------------------------------
    async def _text_task(self, r: ReplyRun) -> None:
        llm = self.factory.llm_worker
        if r.speculative:
            # Behind every listening step: a guess must never delay hearing the user.
            await self._run(llm, "begin_reply", self.model.speculate_reply, self.st, r.key, priority=REPLY)
        else:
            await self._run(llm, "begin_reply", self.model.begin_reply, self.st, r.key, priority=URGENT)
        n = max(1, self.rc.tokens_per_job)
        first = n if r.speculative else max(n, self.rc.first_job_tokens)
        while not r.cancelled and not r.llm_ended:
            if r.speculative and r.tokens >= self.rc.speculate_tokens:
                await r.committed.wait()  # enough guessed: decode on once the turn is taken
                continue
            if self._may_ride(r):
                r.riding = True
                # The listening steps decode now. A reply with no steps to ride on (its session
                # sends no audio) must not stall: if two chunks pass without a token, decode a job.
                seen = r.tokens
                await self.clock.sleep(2 * self.model.chunk_s)
                if r.tokens != seen or r.cancelled or r.llm_ended:
                    continue
            # Until the reply is heard, its first words are the critical path: they go ahead of
            # listening steps (the frame-level VAD still catches a user who resumes meanwhile).
            prio = REPLY if r.speculative or r.played_at is not None else URGENT
            k = first if r.tokens == 0 else n
            chunk: TextChunk = await self._run(llm, "decode", self.model.decode, self.st, k, priority=prio, units=k)
            if r.cancelled:
                return
            self._take_text(r, chunk)

    def _may_ride(self, r: ReplyRun) -> bool:
        after = self.rc.ride_after_tokens
        return after > 0 and not r.speculative and r.played_at is not None and r.tokens >= after

    def _take_text(self, r: ReplyRun, chunk: TextChunk) -> None:
        """Reply text decoded (by a job of its own or riding on a listening step) goes to the generator."""
        r.pending_text.append(chunk)
        r.tokens += len(chunk.tokens)
        r.text += chunk.text
        if chunk.text and not r.speculative:
            self._publish(text_event("agent", chunk.text, False, self._now()))
        self._unit_wake.set()
        if chunk.ended:
            r.llm_ended = True
            if not r.speculative:  # else published when committed
                self._publish(text_event("agent", r.text.strip(), True, self._now()))

    # -- reply: units ---------------------------------------------------------------------------
    def _pending_audio_s(self) -> float:
        inflight = self._tts_queue.data_len() + (1 if self._tts_busy else 0)
        return self.output.queued_seconds + inflight * self.model.chunk_s

    async def _unit_loop(self) -> None:
        gen = self.factory.gen_worker
        ahead = self.rc.max_ahead_chunks
        while True:
            await self._unit_wake.wait()
            self._unit_wake.clear()
            while not self._closed:
                r = self._reply
                if r is not None and r.pending_text:
                    chunks, r.pending_text = r.pending_text, []
                    start, r.units_started = not r.units_started, True
                    ready = await self._run(gen, "text", self.model.push_text, self.st, chunks, start, priority=URGENT)
                    if r.cancelled:
                        continue
                    if ready and r.text_ready_at is None:
                        r.text_ready_at = self._now()
                        r.tokens_at_ready = r.tokens
                    if r.llm_ended and not ready and self.st.generator.reply is None:
                        # An empty reply: nothing to say.
                        r.units_done = True
                        self._tts_queue.put(UnitsFrame(r.id, -1, np.zeros(0, np.int64), False, final=True))
                    continue
                if r is not None and r.text_ready_at is not None and not r.units_done:
                    if (self._pending_audio_s() >= self.rc.lead_s
                            or self.st.generator.next_chunk >= self._input_chunks + ahead):
                        break  # enough audio queued, or too far ahead of the user: wait
                    step = await self._run(gen, "generate", self.model.generate, self.st, None, priority=REPLY)
                    if r.cancelled:
                        continue
                    r.chunks += 1
                    if step.speaking and r.first_units_at is None:
                        r.first_units_at = self._now()
                    done = (r.llm_ended and not self.st.generator.reply_pending and not step.speaking
                            and r.first_units_at is not None) or self.model.over_budget(self.st, r.chunks)
                    r.units_done = done
                    self._tts_queue.put(UnitsFrame(r.id, step.index, step.agent_units, step.speaking, final=done,
                                                   produced_at=self._now()))
                    continue
                if self.st.generator.next_chunk < self._input_chunks:
                    # Listening (or waiting for the reply's first words): the generator's timeline
                    # follows the input, user chunk by user chunk, the agent's chunks silent. With
                    # no reply under way the silence is forced (nothing to sample); while a reply's
                    # first words are awaited the model itself decides when its speech starts.
                    if r is None or r.units_done:
                        await self._run(gen, "follow", self.model.follow, self.st, priority=BACKGROUND)
                    else:
                        await self._run(gen, "generate", self.model.generate, self.st, None, priority=BACKGROUND)
                    continue
                break

    # -- reply: speech --------------------------------------------------------------------------
    async def _speech_loop(self) -> None:
        tts = self.factory.tts_worker
        while True:
            f = await self._tts_queue.get()
            if isinstance(f, Interrupt):
                await self._run(tts, "cancel", self.model.cancel_speech, self.st, priority=LISTEN)
                continue
            if not isinstance(f, UnitsFrame):
                continue
            r = self._reply
            if r is None or r.id != f.reply or r.cancelled:
                continue
            if not r.tts_started and not f.speaking and not f.final:
                continue  # silence before the reply's first sound: nothing to decode yet
            emotion = None
            if not r.tts_started:
                r.tts_started = True
                emotion = r.emotion = self.model.pick_emotion(self.st)
            self._tts_busy = True
            try:
                if len(f.units) or self.st.tts is not None:
                    audio = await self._run(tts, "tts", self.model.synthesize, self.st, f.units, f.final, emotion,
                                            priority=REPLY)
                else:
                    audio = np.zeros(0, np.float32)
            finally:
                self._tts_busy = False
            if r.cancelled or self._reply is not r:
                continue
            if not r.sounded:
                cut = leading_quiet(audio, self.output_rate, self.output.audible_rms) if self.rc.leading_quiet_trim else 0
                r.sounded = cut < len(audio)
                audio = audio[cut:]
            self.output.push(r.id, audio, final=f.final)
            if r.first_audio_at is None and len(audio) and float(np.max(np.abs(audio))) >= self.output.audible_rms:
                r.first_audio_at = self._now()
            self._unit_wake.set()

    # -- output ---------------------------------------------------------------------------------
    def pop_output_frame(self) -> AudioFrame | None:
        now = self._now()
        pf = self.output.pop(now)
        r = self._reply
        if self._stop_pending is not None and (pf is None or not pf.audible):
            reply, onset, decided, trigger = self._stop_pending
            self._stop_pending = None
            # The faded frame (if any) was the previous one: audio stopped fade_ms after the decision.
            self._record(TurnRecord(self.session_id, reply, "bargein", now,
                                    ms=1000 * (decided - onset + self.rc.fade_ms / 1000), trigger=trigger))
        if pf is None:
            if r is not None and r.played_at is not None and r.paused_at is None:
                self.underruns += 1  # mid-reply and nothing to play: the pipeline fell behind
            if r is not None and r.text_ready_at is not None and not r.units_done:
                self._unit_wake.set()
            return None
        if pf.audible:
            self._agent_audible_at = now
            if r is not None and pf.reply == r.id and r.played_at is None:
                r.played_at = now
                self.policy.agent_speaking()
                self._set_state("speaking")
                self._record_response(r)
        if r is not None and pf.ended_reply == r.id:
            self._finish(r)
        elif r is not None and r.text_ready_at is not None and not r.units_done:
            self._unit_wake.set()
        return pf.frame

    def _record_response(self, r: ReplyRun) -> None:
        user_end = r.user_end if r.user_end is not None else r.chunk_end
        played = r.played_at if r.played_at is not None else self._now()
        marks = [user_end, r.chunk_end, r.decided_at, r.text_ready_at, r.first_units_at, r.first_audio_at, played]
        # A mark can be missing (e.g. audio before the "speaking" units flag): take the next one.
        for i in range(len(marks) - 2, -1, -1):
            if marks[i] is None:
                marks[i] = marks[i + 1]
        names = ("endpoint", "listen", "llm", "generator", "decoder", "playout")
        parts = {n: 1000 * (float(marks[i + 1]) - float(marks[i])) for i, n in enumerate(names)}  # type: ignore[arg-type]
        self._record(TurnRecord(self.session_id, r.id, "response", self._now(), ms=1000 * (played - user_end),
                                parts=parts, trigger=r.trigger, tokens=r.tokens_at_ready, emotion=r.emotion,
                                text=r.text))

    def _finish(self, r: ReplyRun) -> None:
        """The reply's last sample has been played."""
        self._reply = None
        if r.text_task is not None and not r.text_task.done():
            r.text_task.cancel()
            self._spawn(self._cleanup(r), f"cleanup-{r.id}")
        self.policy.agent_done()
        self._set_state("listening")
        self._publish({"type": "reply_done", "reply": r.id, "t": round(self._now(), 4), "text": r.text.strip(),
                       "emotion": r.emotion})

    async def _stats_loop(self, every_s: float = 2.0) -> None:
        while True:
            await self.clock.sleep(every_s)
            dog = self.factory.watchdog
            self._publish({"type": "runtime", "t": round(self._now(), 3), **self.stats(),
                           "loop_stalls_over_20ms": dog.stats.over_20ms if dog else None,
                           "loop_stalls_over_50ms": dog.stats.over_50ms if dog else None})

    # -- interface ------------------------------------------------------------------------------
    def events(self) -> AsyncIterator[Event]:
        return aiter(self._events)

    async def control(self, message: Event) -> None:
        kind = message.get("type")
        if kind == "emotion":
            name = str(message.get("name", ""))
            try:
                self.model.check_emotion(name)
            except KeyError as exc:
                self._publish(error_event(str(exc.args[0])))
                return
            self.st.emotion = name
            self._publish({"type": "emotion", "name": name, "available": ["auto", *self.model.emotions]})
        elif kind == "interrupt":
            r = self._reply
            if r is not None:
                self._cancel(r, "client")
        elif kind == "text":
            self._publish(error_event("typed text is not supported by the duplex agent; speak to it"))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for r in (self._reply, self._spec):
            if r is not None:
                r.cancelled = True
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.output.clear()
        self.factory._forget(self)
        self._events.close()

    def stats(self) -> dict[str, Any]:
        return {"chunks": self._input_chunks, "dropped_chunks": self.dropped_chunks, "errors": self.errors,
                "underruns": self.underruns,
                "listen_lag_max_ms": round(1000 * self.listen_lag_max_s, 1), "context_restarts": self.st.restarts}


class DuplexAgentFactory:
    """Owns the model, its three workers and the metrics; makes sessions (an ``AgentFactory``)."""

    def __init__(self, model: DuplexModel, cfg: Any, *, cost: CostModel | None = None,
                 metrics: MetricsHub | None = None, watchdog: bool = True) -> None:
        rc = cfg.runtime
        self.model = model
        self.cfg = cfg
        self.llm_worker = ModelWorker("llm", threads=rc.llm_threads, cost=cost)
        self.gen_worker = ModelWorker("generator", threads=rc.generator_threads, cost=cost)
        self.tts_worker = ModelWorker("tts", threads=rc.tts_threads, cost=cost)
        self.metrics = metrics if metrics is not None else MetricsHub(rc.metrics_jsonl or None)
        self.sessions: dict[str, DuplexSession] = {}
        self._gc_frozen = False
        """``tune_process`` froze the collector's view of the loaded models (undone on close)."""
        self._watchdog_enabled = watchdog
        self.watchdog: LoopWatchdog | None = None

    @classmethod
    def from_config(cls, cfg: Any, **kw: Any) -> DuplexAgentFactory:
        """Load every model (blocking, seconds) and build the factory."""
        from agent.duplex_model import load_duplex_model

        return cls(load_duplex_model(cfg), cfg, **kw)

    def tune_process(self) -> None:
        """Process-wide settings for running the agent (entry points call this once, after loading):
        a short GIL switch interval so model threads hand the interpreter back to the event loop
        quickly, and the loaded models frozen out of the cyclic garbage collector (``gc.freeze``):
        they live as long as the process, and every full collection would otherwise walk all of
        their objects on the event loop's thread."""
        import gc
        import sys

        if self.cfg.runtime.gil_switch_ms > 0:
            sys.setswitchinterval(self.cfg.runtime.gil_switch_ms / 1000.0)
        if self.cfg.runtime.gc_freeze:
            gc.collect()
            gc.freeze()
            self._gc_frozen = True

    def _release_process(self) -> None:
        """Undo ``tune_process``'s freeze (the objects go back to the collector's oldest generation)."""
        import gc

        if self._gc_frozen:
            gc.unfreeze()
            self._gc_frozen = False

    @property
    def workers(self) -> tuple[ModelWorker, ModelWorker, ModelWorker]:
        return self.llm_worker, self.gen_worker, self.tts_worker

    async def create_session(self, session_id: str, clock: Clock) -> DuplexSession:
        emotion = self.cfg.tts.emotion if self.cfg.tts.emotion in ("auto", *self.model.emotions) else "neutral"
        # LISTEN, not BACKGROUND: under load a new call must not starve behind other calls' work.
        state = await self.llm_worker.run("new_state", self.model.new_state, emotion, clock=clock, priority=LISTEN)
        if isinstance(clock, RealClock):
            self.start_watchdog()
        session = DuplexSession(self, session_id, clock, state)
        self.sessions[session_id] = session
        self.metrics.inc("sessions_total")
        self.metrics.set("sessions_active", len(self.sessions))
        return session

    def start_watchdog(self) -> None:
        """Count event-loop stalls from now on (live runs; needs the running loop)."""
        if self._watchdog_enabled and self.watchdog is None:
            self.watchdog = LoopWatchdog(self.cfg.runtime.stall_ms)
            self.watchdog.start()

    def _forget(self, session: DuplexSession) -> None:
        self.sessions.pop(session.session_id, None)
        self.metrics.set("sessions_active", len(self.sessions))

    def metrics_text(self) -> str:
        """Prometheus text for ``GET /metrics`` (stall counts and stage compute refreshed)."""
        if self.watchdog is not None:
            s = self.watchdog.stats
            self.metrics.counters["loop_stalls_over_20ms_total"] = s.over_20ms
            self.metrics.counters["loop_stalls_over_50ms_total"] = s.over_50ms
            self.metrics.set("loop_stall_max_ms", s.max_ms)
        for w in self.workers:
            for stage, st in w.stats.items():
                self.metrics.stage_seconds[f"{w.name}.{stage}"] = st.seconds
        return self.metrics.prometheus()

    async def warmup(self, clock: Clock | None = None) -> None:
        """One pass of every stage on a scratch state (first calls pay for lazy initialisation)."""
        if clock is None:
            clock = RealClock()
            self.start_watchdog()
        m = self.model
        st = await self.llm_worker.run("new_state", m.new_state, clock=clock, priority=BACKGROUND)
        chunk = np.zeros(m.chunk_samples, np.float32)
        await self.llm_worker.run("warmup", m.listen, st, chunk, clock=clock)
        await self.gen_worker.run("warmup", m.user_units, st, chunk, clock=clock)
        await self.llm_worker.run("warmup", m.begin_reply, st, 0, clock=clock)
        await self.llm_worker.run("warmup", m.decode, st, 2, clock=clock)
        await self.gen_worker.run("warmup", m.generate, st, None, clock=clock)
        units = np.zeros(m.units_per_chunk, np.int64)
        await self.tts_worker.run("warmup", m.synthesize, st, units, True, clock=clock)
        for w in self.workers:
            w.stats.clear()

    async def aclose(self) -> None:
        for s in list(self.sessions.values()):
            await s.close()
        if self.watchdog is not None:
            await self.watchdog.stop()
            self.watchdog = None
        for w in self.workers:
            w.close()
        for w in self.workers:
            await asyncio.to_thread(w.join, 10.0)
        self._release_process()

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self._release_process()

