"""The WebRTC server with Python (aiortc) peers: bad input, limits, a real echo call, hang-up."""

import asyncio
import contextlib
import dataclasses
import json
import threading

import aiohttp
import numpy as np
import pytest
from aiortc import RTCPeerConnection

from configs.schema import TransportConfig, VadConfig
from speech_io.echo import EchoAgentFactory, EchoSession
from speech_io.frames import AudioFrame
from speech_io.wav import resample
from speech_io.webrtc.client import LoopbackClient
from speech_io.webrtc.server import WebRtcServer, audio_sections, ice_servers


@contextlib.asynccontextmanager
async def serving(factory=None, **overrides):
    cfg = dataclasses.replace(TransportConfig(), **overrides)
    server = WebRtcServer(factory or EchoAgentFactory(0.3), cfg, VadConfig())
    runner, port = await server.start("127.0.0.1", 0)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _wait_for(predicate, timeout_s: float) -> bool:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


def _decoder_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "audio-decoder")


async def _post(http, url, **kwargs):
    async with http.post(f"{url}/offer", **kwargs) as resp:
        return resp.status, resp.content_type, await resp.json(content_type=None)


async def _offer_without_audio() -> str:
    pc = RTCPeerConnection()
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.fixture(scope="module")
def speech48(speech_sample):
    audio, rate, truth = speech_sample
    return resample(audio, rate, 48000), truth


def test_bad_input_is_a_json_4xx_and_the_server_then_serves_a_good_call(speech48):
    signal, truth = speech48

    async def main():
        async with serving(max_sdp_bytes=20000) as (server, url), aiohttp.ClientSession() as http:
            no_audio = await _offer_without_audio()
            bad = {
                "wrong content type": await _post(http, url, data="v=0", headers={"Content-Type": "text/plain"}),
                "not json": await _post(http, url, data=b"{nope", headers={"Content-Type": "application/json"}),
                "wrong shape": await _post(http, url, json={"type": "answer", "sdp": 3}),
                "garbage sdp": await _post(http, url, json={"type": "offer", "sdp": "hello"}),
                "malformed sdp": await _post(
                    http, url, json={"type": "offer", "sdp": "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:x\r\n"}
                ),
                "no audio": await _post(http, url, json={"type": "offer", "sdp": no_audio}),
                "oversized": await _post(http, url, json={"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 10000}),
                "foreign origin": await _post(
                    http, url, json={"type": "offer", "sdp": no_audio}, headers={"Origin": "http://evil.example"}
                ),
            }

            async def chunks():
                for _ in range(30):
                    yield b" " * 1000

            bad["oversized, no length"] = await _post(http, url, data=chunks(), headers={"Content-Type": "application/json"})
            async with http.get(f"{url}/nope") as resp:
                bad["unknown path"] = (resp.status, resp.content_type, await resp.json())
            same_origin = await _post(http, url, json={"type": "offer", "sdp": no_audio}, headers={"Origin": url})

            client = LoopbackClient(url, signal)
            await client.connect(http)
            sessions_during = len(server.sessions)
            await asyncio.sleep(sum(b for _, b in truth) / len(truth) + 2.5)
            client.send({"type": "text", "text": "hello"})
            client.send({"type": "ping", "id": 1, "t": 0})
            await asyncio.sleep(0.3)
            await client.close()
            released = await _wait_for(lambda: not server.sessions, 3.0)
            return bad, same_origin, client, sessions_during, released, server.closed_sessions

    bad, same_origin, client, sessions_during, released, closed = asyncio.run(main())
    expected = {
        "wrong content type": 415,
        "not json": 400,
        "wrong shape": 400,
        "garbage sdp": 400,
        "malformed sdp": 400,
        "no audio": 400,
        "oversized": 413,
        "oversized, no length": 413,
        "foreign origin": 403,
        "unknown path": 404,
    }
    for name, status in expected.items():
        got, content_type, body = bad[name]
        assert (name, got) == (name, status), body
        assert content_type == "application/json" and body["status"] == status and body["error"], (name, body)
    assert "no audio" in bad["no audio"][2]["error"] and "malformed SDP" in bad["malformed sdp"][2]["error"]
    assert same_origin[0] == 400 and "no audio" in same_origin[2]["error"]  # passed the Origin check
    # The good call after all that:
    assert sessions_during == 1
    kinds = {e["type"] for _, e in client.events}
    assert {"session", "state", "vad", "stats", "latency", "text", "pong"} <= kinds
    assert any(e["type"] == "text" and e["text"] == "echo: hello" for _, e in client.events)
    assert len(client.events_of("vad")) >= 2
    rms = np.asarray(client.received.rms)
    assert len(rms) > 100 and rms.max() > 0.02 and np.median(rms[:10]) < 1e-3  # speech came back
    assert released and closed[-1][1] == "remote track ended"


def test_session_limit_and_release_on_hang_up():
    signal = np.zeros(48000, np.float32)

    async def main():
        baseline = _decoder_threads()
        async with serving(max_sessions=1) as (server, url), aiohttp.ClientSession() as http:
            first = LoopbackClient(url, signal)
            await first.connect(http)
            second = LoopbackClient(url, signal)
            with pytest.raises(RuntimeError, match="503") as refused:
                await second.connect(http)
            await second.close()
            async with http.get(f"{url}/health") as resp:
                health = await resp.json()
            await first.close()
            released = await _wait_for(lambda: not server.sessions and _decoder_threads() == baseline, 3.0)
            third = LoopbackClient(url, signal)
            await third.connect(http)
            served_again = len(server.sessions) == 1
            await third.close()
            await _wait_for(lambda: not server.sessions, 3.0)
        return str(refused.value), health, released, served_again, _decoder_threads() - baseline

    refused, health, released, served_again, leftover_threads = asyncio.run(main())
    assert "all 1 sessions are busy" in refused
    assert health == {"sessions": 1, "max_sessions": 1}
    assert released and served_again and leftover_threads == 0


def test_a_peer_that_goes_silent_is_closed_after_the_idle_timeout():
    async def main():
        async with serving(idle_timeout_s=1.0) as (server, url), aiohttp.ClientSession() as http:
            client = LoopbackClient(url, np.zeros(48000, np.float32))
            await client.connect(http)
            await asyncio.sleep(0.5)
            client.track.stop()  # stops sending RTP without hanging up, like a frozen browser
            t0 = asyncio.get_running_loop().time()
            released = await _wait_for(lambda: not server.sessions, 4.0)
            waited = asyncio.get_running_loop().time() - t0
            reason = server.closed_sessions[-1][1] if server.closed_sessions else ""
            await client.close()
            return released, waited, reason

    released, waited, reason = asyncio.run(main())
    assert released and 0.8 <= waited <= 2.5 and reason == "no media for 1 s"


def test_page_config_and_health_routes():
    async def main():
        async with serving(ice_servers=["stun:stun.example.org:3478", "turn:turn.example.org:3478,u,p"]) as (
            _,
            url,
        ), aiohttp.ClientSession() as http:
            pages = {}
            for path in ("/", "/app.js", "/config", "/health"):
                async with http.get(url + path) as resp:
                    pages[path] = (resp.status, resp.content_type, await resp.text())
            return pages

    pages = asyncio.run(main())
    assert pages["/"][0] == 200 and 'id="mic"' in pages["/"][2] and "/app.js" in pages["/"][2]
    assert pages["/app.js"][1] == "text/javascript" and "window.duplex" in pages["/app.js"][2]
    assert json.loads(pages["/config"][2]) == {
        "iceServers": [{"urls": "stun:stun.example.org:3478"}, {"urls": "turn:turn.example.org:3478", "username": "u", "credential": "p"}]
    }
    assert json.loads(pages["/health"][2]) == {"sessions": 0, "max_sessions": 4}


def test_ice_server_specs_and_sdp_audio_sections():
    assert ice_servers([]) == []
    with pytest.raises(ValueError, match="must start with"):
        ice_servers(["http://x"])
    with pytest.raises(ValueError, match="URL,username,credential"):
        ice_servers(["turn:x:1,user"])
    sdp = "v=0\r\nm=audio 9 X 111\r\na=recvonly\r\nm=audio 0 X 111\r\nm=audio 9 X 111\r\nm=video 9 X 96\r\n"
    assert audio_sections(sdp) == ["recvonly", "sendrecv"]
    assert TransportConfig().ice_servers == [] and TransportConfig().host == "127.0.0.1"


class _BrokenSession(EchoSession):
    def pop_output_frame(self):
        return AudioFrame.silence(self.output_rate, 7)  # not 20 ms: breaks the interface


class _BrokenFactory:
    async def create_session(self, session_id, clock):
        return _BrokenSession(session_id, clock)


def test_an_agent_breaking_the_interface_ends_its_call_with_an_error_event():
    async def main():
        async with serving(_BrokenFactory()) as (server, url), aiohttp.ClientSession() as http:
            client = LoopbackClient(url, np.zeros(48000, np.float32))
            await client.connect(http)
            released = await _wait_for(lambda: not server.sessions, 3.0)
            await asyncio.sleep(0.1)
            await client.close()
            return released, server.closed_sessions[-1][1], client.events_of("error")

    released, reason, errors = asyncio.run(main())
    assert released and reason.startswith("agent error") and "the interface wants 20 ms" in reason
    assert errors and "agent error" in errors[0]["message"]


def test_preencoded_client_microphone_round_trips():
    """The soak's clients send Opus packets encoded once; the server must decode and echo them."""
    from duplex.bench.webrtc_harness import burst_signal

    async def main():
        async with serving() as (server, url), aiohttp.ClientSession() as http:
            client = LoopbackClient(url, burst_signal(), preencoded=True)
            await client.connect(http)
            await asyncio.sleep(1.5)
            session = next(iter(server.sessions.values()))
            gaps = session.input.stats.gaps
            await client.close()
            return np.asarray(client.received.rms), gaps

    rms, gaps = asyncio.run(main())
    assert rms.max() > 0.05 and gaps == 0  # bursts at 0.3 peak came back; no holes in the input
