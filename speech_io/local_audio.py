"""Local microphone and speaker through sounddevice (PortAudio), behind the agent interface.

PortAudio calls one duplex callback on its own thread every 20 ms with the captured block and a
buffer to fill. The callback only copies: captured audio goes to the event loop
(``call_soon_threadsafe``), and playback is read from a :class:`RingBuffer` (silence on
underrun). On the loop, one task feeds captured audio through the shared
:class:`InputPipeline`, and one paced task takes one agent frame per 20 ms tick into the ring.

No device (or no PortAudio library) is one clear line, :data:`NO_DEVICE`, raised as
:class:`NoAudioDevice` before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from duplex.clock import Clock, RealClock
from speech_io.agent_interface import AgentFactory, Event
from speech_io.frames import FRAME_MS, AudioFrame, frame_samples
from speech_io.pipeline import InputPipeline, OutputPipeline
from speech_io.ringbuffer import RingBuffer
from speech_io.vad import SpeechDetector

NO_DEVICE = "no audio device; use the browser or --input file.wav"

DuplexCallback = Callable[[np.ndarray, np.ndarray], None]
"""(captured (T, 1) float32, playback buffer (T, 1) float32 to fill) on the audio thread."""


class NoAudioDevice(RuntimeError):
    """No usable microphone/speaker, or PortAudio is missing."""


class AudioStreams(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


StreamOpener = Callable[[int, int, DuplexCallback], AudioStreams]
"""(sample rate, block size, callback) -> started-on-demand duplex streams."""


def open_sounddevice(rate: int, block: int, callback: DuplexCallback) -> AudioStreams:
    """A duplex PortAudio stream on the default input and output devices."""
    try:
        import sounddevice as sd
    except OSError as exc:  # the Python package is there, the PortAudio library is not
        raise NoAudioDevice(f"{NO_DEVICE} (PortAudio not found: apt-get install libportaudio2)") from exc

    def _cb(indata: np.ndarray, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        callback(indata, outdata)

    try:
        stream = sd.Stream(samplerate=rate, blocksize=block, channels=1, dtype="float32", callback=_cb)
    except (sd.PortAudioError, ValueError) as exc:
        raise NoAudioDevice(NO_DEVICE) from exc
    return stream  # type: ignore[no-any-return]


class LocalAudioTransport:
    """Run one agent session on the local mic and speaker until cancelled or ``duration_s``."""

    def __init__(
        self,
        factory: AgentFactory,
        *,
        rate: int = 48000,
        clock: Clock | None = None,
        detector: SpeechDetector | None = None,
        opener: StreamOpener = open_sounddevice,
        on_event: Callable[[Event], None] | None = None,
        playback_prefill_frames: int = 1,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.on_start = on_start
        self.factory = factory
        self.rate = rate
        self.block = frame_samples(rate)
        self.clock = clock or RealClock()
        self.detector = detector
        self.opener = opener
        self.on_event = on_event
        # One frame of silence up front absorbs the jitter between our tick and the device's.
        self.prefill = playback_prefill_frames
        self.captured_frames = 0
        self.capture_dropped = 0
        self.playback_underruns = 0

    async def run(self, duration_s: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        captured: asyncio.Queue[np.ndarray] = asyncio.Queue(maxsize=50)
        playback = RingBuffer(self.rate // 2, 1)
        playback.write(np.zeros((self.prefill * self.block, 1), dtype=np.float32))

        def enqueue(block: np.ndarray) -> None:
            try:
                captured.put_nowait(block)
            except asyncio.QueueFull:
                self.capture_dropped += 1

        def callback(indata: np.ndarray, outdata: np.ndarray) -> None:  # PortAudio thread
            loop.call_soon_threadsafe(enqueue, indata[:, :1].copy())
            if playback.read_into(outdata[:, :1]) < outdata.shape[0]:
                self.playback_underruns += 1
            if outdata.shape[1] > 1:
                outdata[:, 1:] = outdata[:, :1]

        streams = self.opener(self.rate, self.block, callback)  # raises NoAudioDevice first
        try:
            session = await self.factory.create_session("local", self.clock)
        except BaseException:
            streams.close()
            raise
        publish = self.on_event or (lambda e: None)
        inp = InputPipeline(session, self.detector, publish=publish)
        out = OutputPipeline(session, self.rate, 1)

        async def pump_input() -> None:
            n = 0
            while True:
                block = await captured.get()
                await inp.feed(AudioFrame(block, self.rate, n / self.rate))
                n += block.shape[0]
                self.captured_frames += 1

        async def pump_output() -> None:
            t0 = self.clock.now()
            k = 0
            while True:
                k += 1
                await self.clock.sleep_until(t0 + k * FRAME_MS / 1000)
                playback.write(out.next_frame(k * FRAME_MS / 1000).samples)

        async def pump_events() -> None:
            async for event in session.events():
                publish(event)

        tasks = [
            loop.create_task(pump_input(), name="local-input"),
            loop.create_task(pump_output(), name="local-output"),
            loop.create_task(pump_events(), name="local-events"),
        ]
        streams.start()
        if self.on_start is not None:
            self.on_start()
        try:
            if duration_s is None:
                await asyncio.gather(*tasks)
            else:
                done, _ = await asyncio.wait(tasks, timeout=duration_s, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    t.result()  # surface a crashed pump
        finally:
            streams.close()
            for t in tasks:
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
            await inp.finish()
            await session.close()
