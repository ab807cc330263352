"""One WebRTC call: a peer connection bound to one agent session.

The session owns every task it starts (input pump, event pump, control pump, watchdog) and
cancels them on close; aiortc callbacks only record facts or enqueue work, so nothing runs
unowned. Close happens once, for one of: the peer hung up or failed (connection state), no
media for ``idle_timeout_s`` (a killed browser sends nothing, and ICE consent would take 30 s
to notice), the server shutting down.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from duplex.clock import Clock
from speech_io.agent_interface import AgentSession, Event, error_event
from speech_io.pipeline import InputPipeline, OutputPipeline
from speech_io.vad import SpeechDetector
from speech_io.webrtc.tracks import WEBRTC_RATE, AgentAudioTrack, from_av

log = logging.getLogger(__name__)

MAX_CONTROL_BYTES = 16384
"""Data-channel messages from the page larger than this are refused."""


class WebRtcSession:
    def __init__(
        self,
        session_id: str,
        pc: RTCPeerConnection,
        agent: AgentSession,
        clock: Clock,
        *,
        detector: SpeechDetector | None,
        idle_timeout_s: float,
        stats_interval_s: float = 1.0,
        on_closed: Callable[[WebRtcSession], None] | None = None,
    ) -> None:
        self.id = session_id
        self.pc = pc
        self.agent = agent
        self.clock = clock
        self.idle_timeout_s = idle_timeout_s
        self.stats_interval_s = stats_interval_s
        self._on_closed = on_closed
        self.created = clock.now()
        self.last_rx = self.created
        self.input = InputPipeline(agent, detector, publish=self.send_event)
        self.output = OutputPipeline(agent, WEBRTC_RATE, 1)
        self.track = AgentAudioTrack(self.output, clock, on_error=self._agent_failed)
        self._channel: Any = None
        self._pending_events: deque[str] = deque(maxlen=256)
        self._controls: asyncio.Queue[Event] = asyncio.Queue(maxsize=64)
        self._tasks: set[asyncio.Task[None]] = set()
        self._close_requested = asyncio.Event()
        self._closing = False
        self.closed = asyncio.Event()
        self.close_reason = ""
        self.rx_frames = 0
        self.rx_max_interarrival_s = 0.0
        """Longest wait between two received frames after the first (network + buffers)."""
        self.rx_times: list[tuple[int, float]] | None = None
        """When set to a list, (pts, clock time) of each received frame (benchmarks)."""
        self._last_arrival: float | None = None
        self._window_max_interarrival_s = 0.0

    # -- wiring (called by the server while negotiating) -------------------------------------

    def start(self) -> None:
        self._spawn(self._pump_events(), "events")
        self._spawn(self._pump_controls(), "controls")
        self._spawn(self._watchdog(), "watchdog")

        @self.pc.on("connectionstatechange")
        def _on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self.request_close(f"connection {self.pc.connectionState}")

        @self.pc.on("datachannel")
        def _on_channel(channel: Any) -> None:
            self.attach_channel(channel)

    def receive(self, track: MediaStreamTrack) -> None:
        self._spawn(self._pump_input(track), "input")

    def attach_channel(self, channel: Any) -> None:
        self._channel = channel

        @channel.on("open")
        def _on_open() -> None:
            self._flush_events()

        @channel.on("message")
        def _on_message(message: Any) -> None:
            self._on_control(message)

        if channel.readyState == "open":
            self._flush_events()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"session-{self.id}-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _agent_failed(self, exc: Exception) -> None:
        log.error("session %s: agent output failed: %r", self.id, exc)
        self.send_event(error_event(f"agent error: {exc}"))
        self.request_close(f"agent error: {exc}")

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not self._closing:
            log.error("session %s: task %s failed: %r", self.id, task.get_name(), task.exception())
            self.send_event(error_event(f"internal error in {task.get_name()}: {task.exception()}"))
            self.request_close(f"internal error in {task.get_name()}")

    # -- events to the page ------------------------------------------------------------------

    def send_event(self, event: Event) -> None:
        text = json.dumps(event)
        ch = self._channel
        if ch is not None and ch.readyState == "open":
            ch.send(text)
        else:
            self._pending_events.append(text)

    def _flush_events(self) -> None:
        while self._pending_events and self._channel is not None and self._channel.readyState == "open":
            self._channel.send(self._pending_events.popleft())

    def _on_control(self, message: Any) -> None:
        if isinstance(message, bytes) or len(message) > MAX_CONTROL_BYTES:
            self.send_event(error_event("control messages must be JSON text under 16 KiB"))
            return
        try:
            parsed = json.loads(message)
        except ValueError:
            self.send_event(error_event("control message is not JSON"))
            return
        if not isinstance(parsed, dict) or not isinstance(parsed.get("type"), str):
            self.send_event(error_event('control message must be an object with a "type"'))
            return
        if parsed["type"] == "ping":
            # Answered here, not by the agent: the page's round trip over the data channel.
            self.send_event({"type": "pong", "id": parsed.get("id"), "t": parsed.get("t")})
            return
        try:
            self._controls.put_nowait(parsed)
        except asyncio.QueueFull:
            self.send_event(error_event("too many control messages"))

    # -- tasks -------------------------------------------------------------------------------

    async def _pump_input(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                self.request_close("remote track ended")
                return
            now = self.clock.now()
            if self._last_arrival is not None:
                wait = now - self._last_arrival
                self.rx_max_interarrival_s = max(self.rx_max_interarrival_s, wait)
                self._window_max_interarrival_s = max(self._window_max_interarrival_s, wait)
            self._last_arrival = now
            self.last_rx = now
            self.rx_frames += 1
            audio = from_av(frame)  # type: ignore[arg-type]
            if self.rx_times is not None:
                self.rx_times.append((int(frame.pts or 0), now))
            await self.input.feed(audio)

    async def _pump_events(self) -> None:
        async for event in self.agent.events():
            self.send_event(event)

    async def _pump_controls(self) -> None:
        while True:
            message = await self._controls.get()
            await self.agent.control(message)

    async def _watchdog(self) -> None:
        next_stats = self.clock.now() + self.stats_interval_s
        while not self._close_requested.is_set():
            try:
                await asyncio.wait_for(self._close_requested.wait(), timeout=0.25)
                break
            except TimeoutError:
                pass
            now = self.clock.now()
            if now - self.last_rx > self.idle_timeout_s:
                self.close_reason = f"no media for {self.idle_timeout_s:g} s"
                break
            if now >= next_stats:
                next_stats += self.stats_interval_s
                self.send_event(self.stats())
                self._window_max_interarrival_s = 0.0
        await self.close(self.close_reason or "closed")

    def stats(self) -> Event:
        s = self.input.stats
        return {
            "type": "stats",
            "t": round(self.clock.now() - self.created, 3),
            "rx_frames": self.rx_frames,
            "rx_max_interarrival_ms": round(1000 * self.rx_max_interarrival_s, 1),
            "rx_max_interarrival_ms_window": round(1000 * self._window_max_interarrival_s, 1),
            "rx_gaps": s.gaps,
            "rx_max_gap_ms": round(1000 * s.max_gap_s, 1),
            "tx_frames": self.track.frames_sent,
            "tx_max_late_ms": round(1000 * self.track.max_late_s, 1),
            "tx_schedule_jumps": self.track.schedule_jumps,
            "vad_segments": len(s.segments),
        }

    # -- shutdown ----------------------------------------------------------------------------

    def request_close(self, reason: str) -> None:
        if not self._close_requested.is_set():
            self.close_reason = reason
            self._close_requested.set()

    async def close(self, reason: str = "closed") -> None:
        """Release everything: tasks, the peer connection (ICE, DTLS, decoder threads), the agent."""
        if self._closing:
            if asyncio.current_task() in self._tasks:
                # One of this session's own tasks (e.g. the watchdog whose cancellation was lost in
                # a wait_for race): the closer is gathering it, so waiting here would deadlock.
                return
            await self.closed.wait()
            return
        self._closing = True
        self.close_reason = self.close_reason or reason
        self._close_requested.set()
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        self.track.stop()
        try:
            await self.pc.close()
        finally:
            await self.agent.close()
            self.closed.set()
            log.info("session %s closed: %s", self.id, self.close_reason)
            if self._on_closed is not None:
                self._on_closed(self)
