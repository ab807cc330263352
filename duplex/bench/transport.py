"""``bench transport``: one-way latency the WebRTC server path adds, and CPU per session.

Latency (server in this process, one aiortc client peer, echo agent): every 20 ms frame the
client hands to its Opus encoder is matched by media time (pts) to the moment the server's
input pipeline receives it decoded (``inbound``: encode, SRTP, UDP loopback, the server's
jitter buffer, decode), and every frame the server's track takes from the agent (and encodes)
to the moment the client gets it decoded (``outbound``, client jitter buffer set the same way). Both sides
run first with aiortc's own audio jitter buffer (prefetch 4), then with the shipped setting.
The headline ``one_way_ms_p50/p90`` is inbound with the shipped setting: user audio reaching
the agent. A content check (tone-burst onsets through the echo agent) gives the audio round
trip minus the echo delay, an end-to-end cross-check of both directions.

CPU: ``duplex-agent serve --echo`` in a child process, ``sessions`` client peers for
``duration_s``; ``cpu_pct_per_session`` = (busy - idle CPU%) / sessions, from /proc.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time

import aiohttp
import numpy as np

from configs import AgentConfig
from duplex.bench.stats import machine, median
from duplex.bench.webrtc_harness import (
    ServerProcess,
    burst_signal,
    match_latency_ms,
    proc_stat,
    summarize_ms,
)

ECHO_DELAY_S = 0.2
BURST_PERIOD_S = 0.5


def _burst_round_trips(client, signal_period_s: float, delay_s: float) -> list[float]:
    """Echo round trip minus the echo delay, per tone burst, from received energy onsets."""
    sent = client.track.send_times
    rms = np.asarray(client.received.rms)
    arrival = np.asarray(client.received.arrival)
    if len(rms) == 0:
        return []
    loud = rms > 0.02
    onsets = arrival[1:][loud[1:] & ~loud[:-1]]
    frames_per_burst = int(round(signal_period_s / 0.02))
    out = []
    for pts_index in range(0, len(sent), frames_per_burst):
        t_send = sent[pts_index][1]
        later = onsets[onsets > t_send + delay_s - 0.05]
        if len(later) and later[0] - t_send < delay_s + 0.5:
            out.append(1000.0 * (later[0] - t_send - delay_s))
    return out[1:]  # the first burst overlaps connection start-up


async def _latency_run(cfg: AgentConfig, jitter: str, duration_s: float) -> dict:
    from speech_io.echo import EchoAgentFactory
    from speech_io.webrtc.client import LoopbackClient
    from speech_io.webrtc.server import WebRtcServer

    transport = dataclasses.replace(cfg.transport, jitter_buffer=jitter)
    server = WebRtcServer(EchoAgentFactory(ECHO_DELAY_S), transport, cfg.vad)
    runner, port = await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            client = LoopbackClient(
                f"http://127.0.0.1:{port}",
                burst_signal(BURST_PERIOD_S),
                jitter_buffer=jitter,
                jitter_prefetch=transport.jitter_prefetch,
                jitter_slack=transport.jitter_slack,
            )
            await client.connect(http)
            assert client.session_id is not None
            session = server.sessions[client.session_id]
            session.rx_times = []
            session.track.send_times = []
            client.track.send_times.clear()
            client.received.pts.clear()
            client.received.arrival.clear()
            client.received.rms.clear()
            await asyncio.sleep(duration_s)
            await client.close()
        rx = list(session.rx_times)
        tx = list(session.track.send_times)
        received = list(zip(client.received.pts, client.received.arrival, strict=True))
        return {
            "inbound": match_latency_ms(client.track.send_times, rx),
            "outbound": match_latency_ms(tx, received),
            "echo_round_trip_extra": _burst_round_trips(client, BURST_PERIOD_S, ECHO_DELAY_S),
        }
    finally:
        await server.close_all()
        await runner.cleanup()


async def _cpu_run(cfg: AgentConfig, sessions: int, duration_s: float) -> dict:
    from speech_io.webrtc.client import LoopbackClient

    args = ["--max-sessions", str(sessions + 2), "--echo-delay-ms", str(1000 * ECHO_DELAY_S)]
    async with ServerProcess(args) as server:
        await asyncio.sleep(0.5)
        a, t_a = proc_stat(server.pid), time.monotonic()
        await asyncio.sleep(2.0)
        b, t_b = proc_stat(server.pid), time.monotonic()
        idle_pct = 100.0 * (b.cpu_s - a.cpu_s) / (t_b - t_a)
        async with aiohttp.ClientSession() as http:
            clients = [LoopbackClient(server.url, burst_signal(BURST_PERIOD_S)) for _ in range(sessions)]
            await asyncio.gather(*(c.connect(http) for c in clients))
            await asyncio.sleep(0.5)
            a, t_a = proc_stat(server.pid), time.monotonic()
            await asyncio.sleep(duration_s)
            b, t_b = proc_stat(server.pid), time.monotonic()
            await asyncio.gather(*(c.close() for c in clients))
        busy_pct = 100.0 * (b.cpu_s - a.cpu_s) / (t_b - t_a)
        return {
            "sessions": sessions,
            "cpu_pct_idle": round(idle_pct, 2),
            "cpu_pct_busy": round(busy_pct, 2),
            "cpu_pct_per_session": round((busy_pct - idle_pct) / sessions, 2),
            "server_rss_mb": round(b.rss_mb, 1),
            "server_errors": len(server.error_lines()),
        }


async def _run(cfg: AgentConfig, repeats: int, duration_s: float, sessions: int) -> dict:
    settings = {
        "aiortc_default": "aiortc",
        "tuned": "bounded",
    }
    results: dict[str, dict] = {}
    for name, jitter in settings.items():
        pooled: dict[str, list[float]] = {"inbound": [], "outbound": [], "echo_round_trip_extra": []}
        run_medians: list[float] = []
        for _ in range(repeats):
            r = await _latency_run(cfg, jitter, duration_s)
            for key in pooled:
                pooled[key].extend(r[key])
            if r["inbound"]:
                run_medians.append(median(r["inbound"]))
        results[name] = {
            "jitter_buffer": jitter,
            "inbound_ms": summarize_ms(pooled["inbound"]),
            "outbound_ms": summarize_ms(pooled["outbound"]),
            "echo_round_trip_minus_delay_ms": summarize_ms(pooled["echo_round_trip_extra"]),
            "inbound_p50_per_run": [round(m, 2) for m in run_medians],
        }
    cpu = await _cpu_run(cfg, sessions, duration_s)
    tuned, default = results["tuned"], results["aiortc_default"]
    return {
        # Headline: user audio -> agent, shipped setting.
        "one_way_ms_p50": tuned["inbound_ms"].get("p50"),
        "one_way_ms_p90": tuned["inbound_ms"].get("p90"),
        "one_way_ms_p50_aiortc_default": default["inbound_ms"].get("p50"),
        "one_way_ms_p90_aiortc_default": default["inbound_ms"].get("p90"),
        "cpu_pct_per_session": cpu["cpu_pct_per_session"],
        "shipped": {
            "jitter_buffer": cfg.transport.jitter_buffer,
            "jitter_prefetch": cfg.transport.jitter_prefetch,
            "jitter_slack": cfg.transport.jitter_slack,
        },
        "latency": results,
        "cpu": cpu,
        "echo_delay_ms": 1000 * ECHO_DELAY_S,
        "duration_s": duration_s,
        "repeats": repeats,
    }


def run(cfg: AgentConfig, repeats: int = 3, duration_s: float = 10.0, sessions: int = 4) -> dict:
    logging.getLogger("aioice").setLevel(logging.WARNING)
    load_before = os.getloadavg()
    result = asyncio.run(_run(cfg, int(repeats), float(duration_s), int(sessions)))
    # Other work on the machine skews CPU and latency figures: record the load around the run.
    return {**result, "machine": machine(), "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())}

