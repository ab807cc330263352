"""Signalling server and web page: ``POST /offer`` (SDP in, answer out), ``GET /`` (the page).

Routes
  GET  /          the talk page (mic button, input level, agent state/text, latency)
  GET  /app.js    its script
  GET  /config    ICE servers for the page (same list the server uses)
  GET  /health    {"sessions": n, "max_sessions": m}
  GET  /metrics   Prometheus text, when the agent factory keeps metrics (``metrics_text()``)
  POST /offer     {"type": "offer", "sdp": "..."} -> {"type": "answer", "sdp": "...", "session_id": "..."}

Every error is a JSON body ``{"error": "...", "status": code}``: 400 malformed JSON/SDP or an
offer without audio to send, 403 a foreign Origin, 413 a body over ``max_sdp_bytes``, 415 not
``application/json``, 503 all ``max_sessions`` busy. A failed offer releases what it built.

Limits are per server; resources are per session (see :class:`WebRtcSession`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from configs.schema import TransportConfig, VadConfig
from duplex.clock import Clock, RealClock
from speech_io.agent_interface import AgentFactory
from speech_io.vad import SpeechDetector, make_backend
from speech_io.webrtc.jitter import install_jitter_buffer, make_jitter_buffer
from speech_io.webrtc.session import WebRtcSession

log = logging.getLogger(__name__)


class RequestError(Exception):
    """A client error with its HTTP status; rendered as a JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def ice_servers(specs: list[str]) -> list[RTCIceServer]:
    """``"stun:host:port"`` or ``"turn:host:port,username,credential"`` -> RTCIceServer."""
    out = []
    for spec in specs:
        url, *auth = spec.split(",")
        if not re.match(r"^(stun|stuns|turn|turns):", url):
            raise ValueError(f"ICE server {url!r} must start with stun:, stuns:, turn: or turns:")
        if auth and len(auth) != 2:
            raise ValueError(f"ICE server {spec!r}: give URL or URL,username,credential")
        out.append(RTCIceServer(urls=url, username=auth[0] if auth else None, credential=auth[1] if auth else None))
    return out


def make_detector(cfg: VadConfig) -> SpeechDetector:
    return SpeechDetector(
        make_backend(cfg.backend, cfg.aggressiveness, cfg.frame_ms),
        threshold=cfg.threshold,
        start_ms=cfg.start_ms,
        end_ms=cfg.end_ms,
    )


def audio_sections(sdp: str) -> list[str]:
    """Directions of the offer's audio m-sections that would carry audio to us."""
    out = []
    sections = re.split(r"\r?\n(?=m=)", sdp)
    for section in sections[1:]:
        lines = section.splitlines()
        m = lines[0].split()
        if len(m) < 4 or m[0] != "m=audio" or m[1] == "0":
            continue
        direction = next((ln[2:] for ln in lines if ln[2:] in ("sendrecv", "sendonly", "recvonly", "inactive")), "sendrecv")
        out.append(direction)
    return out


@dataclass
class _Static:
    name: str
    content_type: str


_PAGES = {"/": _Static("index.html", "text/html"), "/app.js": _Static("app.js", "text/javascript")}


class WebRtcServer:
    def __init__(
        self,
        factory: AgentFactory,
        cfg: TransportConfig,
        vad: VadConfig | None,
        clock: Clock | None = None,
    ) -> None:
        self.factory = factory
        self.cfg = cfg
        self.vad = vad
        self.clock = clock or RealClock()
        self.ice_servers = ice_servers(list(cfg.ice_servers))
        self.sessions: dict[str, WebRtcSession] = {}
        self._negotiating = 0  # offers in flight count against max_sessions too
        self.closed_sessions: list[tuple[str, str]] = []
        """(session id, close reason) of finished sessions, newest last (bounded)."""

    # -- app -----------------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        # client_max_size: aiohttp refuses bigger bodies itself (413) even without Content-Length.
        app = web.Application(client_max_size=self.cfg.max_sdp_bytes, middlewares=[self._json_errors])
        app.router.add_get("/", self._page)
        app.router.add_get("/app.js", self._page)
        app.router.add_get("/config", self._config)
        app.router.add_get("/health", self._health)
        app.router.add_get("/favicon.ico", self._no_content)
        app.router.add_post("/offer", self._offer)
        if callable(getattr(self.factory, "metrics_text", None)):
            app.router.add_get("/metrics", self._metrics)
        app.on_shutdown.append(self._on_shutdown)
        return app

    @web.middleware
    async def _json_errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as exc:
            return web.json_response({"error": str(exc), "status": exc.status}, status=exc.status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return web.json_response({"error": exc.reason, "status": exc.status}, status=exc.status)

    async def _page(self, request: web.Request) -> web.Response:
        page = _PAGES[request.path]
        text = resources.files("speech_io.webrtc").joinpath("static", page.name).read_text()
        return web.Response(text=text, content_type=page.content_type, headers={"Cache-Control": "no-store"})

    async def _config(self, request: web.Request) -> web.Response:
        servers = [
            {k: v for k, v in {"urls": s.urls, "username": s.username, "credential": s.credential}.items() if v}
            for s in self.ice_servers
        ]
        return web.json_response({"iceServers": servers})

    async def _metrics(self, request: web.Request) -> web.Response:
        # Agents that keep metrics expose them in the Prometheus text format.
        text = self.factory.metrics_text()  # type: ignore[attr-defined]
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def _no_content(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"sessions": len(self.sessions), "max_sessions": self.cfg.max_sessions})

    # -- offer ---------------------------------------------------------------------------------

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            return  # not a browser page (aiortc clients, curl): nothing to protect against
        allowed = set(self.cfg.allowed_origins) or {f"{request.scheme}://{request.host}"}
        if origin not in allowed and "*" not in allowed:
            raise RequestError(403, f"origin {origin} is not allowed")

    async def _read_offer(self, request: web.Request) -> str:
        self._check_origin(request)
        if request.content_type != "application/json":
            raise RequestError(415, f"POST /offer needs Content-Type application/json, got {request.content_type}")
        if request.content_length is not None and request.content_length > self.cfg.max_sdp_bytes:
            raise RequestError(413, f"offer larger than {self.cfg.max_sdp_bytes} bytes")
        try:
            body = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge as exc:
            raise RequestError(413, f"offer larger than {self.cfg.max_sdp_bytes} bytes") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"body is not JSON: {exc}") from exc
        if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
            raise RequestError(400, 'body must be {"type": "offer", "sdp": "<SDP text>"}')
        sdp: str = body["sdp"]
        if not sdp.startswith("v=0"):
            raise RequestError(400, "malformed SDP: must start with v=0")
        directions = audio_sections(sdp)
        if not any(d in ("sendrecv", "sendonly") for d in directions):
            raise RequestError(400, "offer has no audio to send (add a microphone track)")
        return sdp

    async def _offer(self, request: web.Request) -> web.Response:
        sdp = await self._read_offer(request)
        if len(self.sessions) + self._negotiating >= self.cfg.max_sessions:
            raise RequestError(503, f"all {self.cfg.max_sessions} sessions are busy; try again later")
        self._negotiating += 1
        try:
            answer, session_id = await self._negotiate(sdp)
        finally:
            self._negotiating -= 1
        return web.json_response({"type": "answer", "sdp": answer, "session_id": session_id})

    async def _negotiate(self, sdp: str) -> tuple[str, str]:
        session_id = uuid.uuid4().hex[:12]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:  # aiortc raises ValueError/KeyError/IndexError/... on bad SDP
                raise RequestError(400, f"malformed SDP: {type(exc).__name__}: {exc}") from exc
            receivers = [t.receiver for t in pc.getTransceivers() if t.kind == "audio"]
            if not receivers:
                raise RequestError(400, "offer has no audio to send (add a microphone track)")
            for receiver in receivers:
                install_jitter_buffer(
                    receiver, make_jitter_buffer(self.cfg.jitter_buffer, self.cfg.jitter_prefetch, self.cfg.jitter_slack)
                )
            agent = await self.factory.create_session(session_id, self.clock)
        except BaseException:
            await pc.close()
            raise
        session = WebRtcSession(
            session_id,
            pc,
            agent,
            self.clock,
            detector=make_detector(self.vad) if self.vad is not None else None,
            idle_timeout_s=self.cfg.idle_timeout_s,
            on_closed=self._forget,
        )
        self.sessions[session_id] = session
        try:
            session.start()
            pc.addTrack(session.track)
            for receiver in receivers:
                if receiver.track is not None:
                    session.receive(receiver.track)
            await pc.setLocalDescription(await pc.createAnswer())
        except BaseException:
            await session.close("negotiation failed")
            raise
        session.send_event(
            {
                "type": "session",
                "id": session_id,
                "agent_input_rate": agent.input_rate,
                "agent_output_rate": agent.output_rate,
                "vad": self.vad.backend if self.vad is not None else None,
                "jitter_buffer": self.cfg.jitter_buffer,
                "jitter_prefetch": self.cfg.jitter_prefetch,
                "idle_timeout_s": self.cfg.idle_timeout_s,
            }
        )
        log.info("session %s started (%d active)", session_id, len(self.sessions))
        return pc.localDescription.sdp, session_id

    def _forget(self, session: WebRtcSession) -> None:
        self.sessions.pop(session.id, None)
        self.closed_sessions.append((session.id, session.close_reason))
        del self.closed_sessions[:-100]

    # -- lifecycle -----------------------------------------------------------------------------

    async def close_all(self) -> None:
        await asyncio.gather(*(s.close("server shutting down") for s in list(self.sessions.values())))

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close_all()

    async def start(self, host: str | None = None, port: int | None = None) -> tuple[web.AppRunner, int]:
        """Start listening; returns the runner (``await runner.cleanup()`` to stop) and the port.

        ``port=0`` picks a free port.
        """
        runner = web.AppRunner(self.build_app(), access_log=None)
        await runner.setup()
        ssl_context = None
        if self.cfg.tls_cert:
            import ssl

            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key or None)
        site = web.TCPSite(
            runner,
            host if host is not None else self.cfg.host,
            self.cfg.port if port is None else port,
            ssl_context=ssl_context,
        )
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else (self.cfg.port if port is None else port)
        return runner, int(bound)
