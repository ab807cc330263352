"""The echo agent: says back what it heard, ``delay_s`` later.

It stands in for the duplex runtime behind :mod:`speech_io.agent_interface`, so the transports
can be finished and measured first. It converts the user's 16 kHz audio to its own output rate
(24 kHz by default, so the output path resamples like a real TTS voice would), holds each frame
until ``delay_s`` after its capture time (media time, anchored to the clock by the first frame),
and reports its state (speaking while it replays speech),
the delay it actually added, and a text line per echoed utterance.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

from duplex.clock import Clock
from speech_io.agent_interface import (
    AgentState,
    Event,
    EventStream,
    latency_event,
    state_event,
    text_event,
)
from speech_io.frames import AudioFrame, Framer
from speech_io.resample import AudioConverter


class EchoSession:
    input_rate = 16000

    def __init__(self, session_id: str, clock: Clock, delay_s: float = 0.5, output_rate: int = 24000) -> None:
        self.session_id = session_id
        self.output_rate = output_rate
        self.delay_s = float(delay_s)
        self._clock = clock
        self._t0 = clock.now()
        self._converter = AudioConverter(output_rate, 1)
        self._framer = Framer(output_rate, 1)
        # (release time, frame): at most delay/20 ms + slack frames are ever waiting; the deque
        # bound only matters if the transport stops popping (then old audio is dropped).
        self._pending: deque[tuple[float, AudioFrame]] = deque(maxlen=int(self.delay_s / 0.02) + 50)
        # Clock time of media time 0, fixed by the first frame: releases follow the capture
        # timeline, so jitter in when frames reach the agent does not move the echo.
        self._anchor: float | None = None
        self._events = EventStream()
        self._state: AgentState = "listening"
        self._speech_s = 0.0
        self._closed = False
        self.controls: list[Event] = []
        """Control messages received (kept for inspection; the echo agent answers "text" ones)."""
        self._events.publish(state_event(self._state, 0.0))

    async def push_audio(self, frame: AudioFrame) -> None:
        if self._closed:
            return
        if self._anchor is None:
            self._anchor = self._clock.now() - frame.timestamp
        out = self._converter.convert(frame)
        if out is None:
            return
        for f in self._framer.push(out):
            self._pending.append((self._anchor + frame.timestamp + self.delay_s, f.with_speech(frame.speech)))

    def pop_output_frame(self) -> AudioFrame | None:
        # Release on the tick nearest the due time: the transport's ticks are 20 ms apart and
        # jitter by a fraction of a millisecond under a real clock.
        if not self._pending or self._pending[0][0] > self._clock.now() + 0.5 * self._pending[0][1].duration:
            return None
        release_at, frame = self._pending.popleft()
        now = self._clock.now()
        t = now - self._t0
        state: AgentState = "speaking" if frame.speech else "listening"
        if state != self._state:
            if state == "speaking":
                # Delay actually added after capture time; the tick grid adds up to +-10 ms.
                self._events.publish(latency_event("echo_delay", 1000 * (now - release_at + self.delay_s), t))
            elif self._speech_s > 0:
                self._events.publish(text_event("agent", f"(echoed {self._speech_s:.2f} s of speech)", True, t))
                self._speech_s = 0.0
            self._state = state
            self._events.publish(state_event(state, t))
        if frame.speech:
            self._speech_s += frame.duration
        return frame

    def events(self) -> AsyncIterator[Event]:
        return aiter(self._events)

    async def control(self, message: Event) -> None:
        self.controls.append(message)
        if message.get("type") == "text":
            # Typed text is echoed back as agent text: the round trip of the data channel.
            t = self._clock.now() - self._t0
            self._events.publish(text_event("agent", f"echo: {message.get('text', '')}", True, t))

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pending.clear()
            self._events.close()


class EchoAgentFactory:
    def __init__(self, delay_s: float = 0.5, output_rate: int = 24000) -> None:
        self.delay_s = delay_s
        self.output_rate = output_rate

    async def create_session(self, session_id: str, clock: Clock) -> EchoSession:
        return EchoSession(session_id, clock, self.delay_s, self.output_rate)
