"""A Python WebRTC peer that calls the server the way the page does (tests, soak, benchmarks).

It sends a looped 48 kHz mono signal as its microphone (paced, one 20 ms frame per tick),
opens the ``events`` data channel, and records what comes back: every received frame's media
time, arrival time and energy (optionally the samples), every event, and the send time of every
frame it sent. Times are ``Clock.now()`` (monotonic), comparable across processes.
"""

from __future__ import annotations

import asyncio
import fractions
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from duplex.clock import Clock, RealClock
from speech_io.frames import AudioFrame
from speech_io.webrtc.jitter import install_jitter_buffer, make_jitter_buffer
from speech_io.webrtc.tracks import TICK_S, WEBRTC_RATE, from_av, to_av


def encode_opus_frames(signal: np.ndarray) -> list[bytes]:
    """``signal`` (48 kHz mono float) as Opus packets of 20 ms, encoded once, the way aiortc's
    encoder would (stereo, 96 kbit/s, VoIP mode)."""
    import av

    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = 96000
    codec.format = "s16"
    codec.layout = "stereo"
    codec.options = {"application": "voip"}
    codec.sample_rate = WEBRTC_RATE
    size = int(WEBRTC_RATE * TICK_S)
    n = len(signal) // size
    packets: list[bytes] = []
    for i in range(n):
        mono = signal[i * size : (i + 1) * size].reshape(-1, 1)
        stereo = AudioFrame(np.repeat(mono.astype(np.float32), 2, axis=1), WEBRTC_RATE)
        packets += [bytes(p) for p in codec.encode(to_av(stereo, i * size))]
    packets += [bytes(p) for p in codec.encode(None)]
    return packets[:n]


class SignalTrack(MediaStreamTrack):
    """A microphone that plays ``signal`` (48 kHz mono float) in a loop, in real time.

    ``preencoded=True`` encodes the loop to Opus once and sends the packets (load tests: many
    peers in one process would otherwise spend their CPU encoding the same audio again).
    """

    kind = "audio"

    def __init__(self, signal: np.ndarray, clock: Clock, preencoded: bool = False) -> None:
        super().__init__()
        self._signal = np.asarray(signal, dtype=np.float32)
        self._size = int(WEBRTC_RATE * TICK_S)
        self._clock = clock
        self._t0: float | None = None
        self._tick = 0
        self._packets = encode_opus_frames(self._signal) if preencoded else None
        self.send_times: list[tuple[int, float]] = []

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = self._clock.now()
        await self._clock.sleep_until(self._t0 + self._tick * TICK_S)
        pts = self._tick * self._size
        tick = self._tick
        self._tick += 1
        self.send_times.append((pts, self._clock.now()))
        if self._packets is not None:
            packet = av.Packet(self._packets[tick % len(self._packets)])
            packet.pts = pts
            packet.time_base = fractions.Fraction(1, WEBRTC_RATE)
            return packet
        n = len(self._signal)
        idx = (tick * self._size + np.arange(self._size)) % n
        return to_av(AudioFrame(self._signal[idx].reshape(-1, 1), WEBRTC_RATE, pts / WEBRTC_RATE), pts)


@dataclass
class Received:
    pts: list[int] = field(default_factory=list)
    arrival: list[float] = field(default_factory=list)
    rms: list[float] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)


class LoopbackClient:
    def __init__(
        self,
        base_url: str,
        signal: np.ndarray,
        *,
        clock: Clock | None = None,
        jitter_buffer: str = "bounded",
        jitter_prefetch: int = 0,
        jitter_slack: int = 2,
        keep_samples: bool = False,
        preencoded: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.clock = clock or RealClock()
        self.track = SignalTrack(signal, self.clock, preencoded)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("events")
        self.events: list[tuple[float, dict]] = []
        self.received = Received()
        self.keep_samples = keep_samples
        self.session_id: str | None = None
        self._jitter = (jitter_buffer, jitter_prefetch, jitter_slack)
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()
        self.channel_open = asyncio.Event()

        @self.channel.on("message")
        def _on_message(message: Any) -> None:
            self.events.append((self.clock.now(), json.loads(message)))

        @self.channel.on("open")
        def _on_open() -> None:
            self.channel_open.set()

        @self.pc.on("connectionstatechange")
        def _on_state() -> None:
            if self.pc.connectionState == "connected":
                self.connected.set()

    async def connect(self, http: aiohttp.ClientSession, timeout_s: float = 15.0) -> None:
        self.pc.addTrack(self.track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"type": "offer", "sdp": self.pc.localDescription.sdp}
        async with http.post(f"{self.base_url}/offer", json=offer) as resp:
            body = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"offer refused: {resp.status} {body}")
        self.session_id = body["session_id"]
        for t in self.pc.getTransceivers():
            if t.kind == "audio":
                install_jitter_buffer(t.receiver, make_jitter_buffer(*self._jitter))
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        for t in self.pc.getTransceivers():
            if t.kind == "audio" and t.receiver.track is not None:
                self._tasks.append(asyncio.get_running_loop().create_task(self._receive(t.receiver.track)))
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    async def _receive(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = self.clock.now()
            audio = from_av(frame)  # type: ignore[arg-type]
            self.received.pts.append(int(frame.pts or 0))
            self.received.arrival.append(now)
            self.received.rms.append(audio.rms())
            if self.keep_samples:
                self.received.samples.append(audio.mono().copy())

    def jitter_stats(self) -> dict[str, int]:
        """lost / late / dropped counts of the bounded jitter buffers on this peer's receivers."""
        out = {"lost": 0, "late": 0, "dropped": 0}
        for t in self.pc.getTransceivers():
            buf = getattr(t.receiver, "_RTCRtpReceiver__jitter_buffer", None)
            for key in out:
                out[key] += int(getattr(buf, key, 0))
        return out

    def send(self, message: dict) -> None:
        self.channel.send(json.dumps(message))

    def events_of(self, kind: str) -> list[dict]:
        return [e for _, e in self.events if e.get("type") == kind]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()
