"""``bench soak``: many concurrent WebRTC echo sessions for a while.

``duplex-agent serve --echo`` runs in a child process; ``sessions`` aiortc client peers in this
process each send a looped tone-burst signal and receive the echo. Measured:

- errors: failed connects, client exceptions, ERROR/Traceback lines in the server's log;
- frame gaps: the longest wait between two frames received by any client and the longest the
  server reports between two frames it received (its 1 s ``stats`` windows), both after a
  ``warmup_s`` (5 s) once every session is connected (ten simultaneous DTLS handshakes are a
  burst of crypto on the event loop; the start-up figure is reported separately), plus frames
  missing by media time on the client side;
- memory: the server's RSS once every session is up vs at the end (growth), and after all hang
  up; the server must report 0 sessions after the clients leave.

Pass bars (the issue's): no errors, no gap > 100 ms, RSS growth < 50 MB.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import aiohttp
import numpy as np

from configs import AgentConfig
from duplex.bench.stats import machine
from duplex.bench.webrtc_harness import ServerProcess, burst_signal, proc_stat

GAP_BAR_MS = 100.0
RSS_BAR_MB = 50.0


def _client_gaps(client, since: float) -> tuple[float, int]:
    """Longest inter-arrival gap (ms) of frames received after ``since`` (monotonic time) and
    frames missing by pts among them."""
    arrival = np.asarray(client.received.arrival)
    pts = np.asarray(client.received.pts)
    if len(arrival) < 2:
        return float("inf"), 0
    keep = arrival >= since
    gaps = np.diff(arrival[keep])
    steps = np.diff(pts[keep]) // 960
    missing = int(np.sum(np.maximum(steps - 1, 0)))
    return (float(gaps.max()) * 1000.0 if len(gaps) else 0.0), missing


async def _soak(cfg: AgentConfig, sessions: int, duration_s: float, sample_s: float, warmup_s: float) -> dict:
    from speech_io.webrtc.client import LoopbackClient

    args = ["--max-sessions", str(sessions), "--echo-delay-ms", "200", "--idle-timeout", "10"]
    errors: list[str] = []
    rss: list[tuple[float, float]] = []
    async with ServerProcess(args) as server:
        await asyncio.sleep(1.0)
        before = proc_stat(server.pid)
        async with aiohttp.ClientSession() as http:
            # Pre-encoded microphones: the clients share this machine with the server under
            # test, so they should not spend CPU re-encoding the same loop ten times over.
            clients = [LoopbackClient(server.url, burst_signal(), preencoded=True) for _ in range(sessions)]
            results = await asyncio.gather(*(c.connect(http) for c in clients), return_exceptions=True)
            errors += [f"connect: {r!r}" for r in results if isinstance(r, BaseException)]
            t0 = time.monotonic()
            steady = t0 + warmup_s
            cpu0 = proc_stat(server.pid).cpu_s
            clients_cpu0 = proc_stat(os.getpid()).cpu_s
            while (elapsed := time.monotonic() - t0) < duration_s:
                rss.append((elapsed, proc_stat(server.pid).rss_mb))
                await asyncio.sleep(min(sample_s, duration_s - elapsed))
            end = proc_stat(server.pid)
            cpu_pct = 100.0 * (end.cpu_s - cpu0) / (time.monotonic() - t0)
            clients_cpu_pct = 100.0 * (proc_stat(os.getpid()).cpu_s - clients_cpu0) / (time.monotonic() - t0)
            rss.append((time.monotonic() - t0, end.rss_mb))
            server_stats = [c.events_of("stats")[-1] if c.events_of("stats") else {} for c in clients]
            # The server's longest wait between two received frames, per 1 s stats window,
            # for windows reported after the warm-up.
            server_gap = max(
                (e["rx_max_interarrival_ms_window"] for c in clients for t, e in c.events if e["type"] == "stats" and t >= steady + 1.0),
                default=float("inf"),
            )
            gaps = [_client_gaps(c, steady) for c in clients]
            startup_gap = max(_client_gaps(c, 0.0)[0] for c in clients)
            jitter = [c.jitter_stats() for c in clients]
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
            # Every session must be released once its peer has hung up.
            for _ in range(50):
                async with http.get(f"{server.url}/health") as resp:
                    health = await resp.json()
                if health["sessions"] == 0:
                    break
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        after = proc_stat(server.pid)
        errors += server.error_lines()
        errors += [f"client event error: {e}" for c in clients for e in c.events_of("error")]
    # Growth from the first sample after the warm-up (every session up) to the end.
    settled = [m for t, m in rss if t >= warmup_s] or [m for _, m in rss]
    client_gap = max((g for g, _ in gaps), default=float("inf"))
    result = {
        "sessions": sessions,
        "duration_s": duration_s,
        "connected": sum(1 for r in results if not isinstance(r, BaseException)),
        "errors": errors[:20],
        "error_count": len(errors),
        "max_frame_gap_ms_client": round(client_gap, 1),
        "max_frame_gap_ms_server": round(float(server_gap), 1),
        "max_frame_gap_ms_client_incl_startup": round(startup_gap, 1),
        "warmup_s": warmup_s,
        "frames_missing_client": sum(m for _, m in gaps),
        "server_rx_gaps_filled": sum(s.get("rx_gaps", 0) for s in server_stats),
        "server_tx_max_late_ms": max((s.get("tx_max_late_ms", 0.0) for s in server_stats), default=0.0),
        "server_tx_schedule_jumps": sum(s.get("tx_schedule_jumps", 0) for s in server_stats),
        "client_jitter": {k: sum(j[k] for j in jitter) for k in ("lost", "late", "dropped")},
        "rss_mb_idle": round(before.rss_mb, 1),
        "rss_mb_settled": round(settled[0], 1),
        "rss_mb_end": round(settled[-1], 1),
        "rss_growth_mb": round(settled[-1] - settled[0], 1),
        "rss_mb_peak": round(max(m for _, m in rss), 1),
        "rss_mb_after_hangup": round(after.rss_mb, 1),
        "sessions_after_hangup": health["sessions"],
        "server_cpu_pct": round(cpu_pct, 1),
        "clients_cpu_pct": round(clients_cpu_pct, 1),
        "rss_samples": [[round(t, 1), round(m, 1)] for t, m in rss],
    }
    result["pass"] = bool(
        result["error_count"] == 0
        and result["connected"] == sessions
        and client_gap <= GAP_BAR_MS
        and server_gap <= GAP_BAR_MS
        and result["rss_growth_mb"] < RSS_BAR_MB
        and result["sessions_after_hangup"] == 0
    )
    return result


def run(cfg: AgentConfig, sessions: int = 10, duration_s: float = 60.0, sample_s: float = 1.0, warmup_s: float = 5.0) -> dict:
    logging.getLogger("aioice").setLevel(logging.WARNING)
    load_before = os.getloadavg()
    result = asyncio.run(_soak(cfg, int(sessions), float(duration_s), float(sample_s), float(warmup_s)))
    return {**result, "machine": machine(), "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())}
