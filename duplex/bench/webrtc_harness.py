"""Shared pieces of the transport benchmarks: a test signal, a server in a child process, its
CPU and memory from /proc, and per-frame latency matching.

The signal is synthetic (tone bursts), so every number is reproducible without assets.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from duplex.bench.stats import percentile

SIGNAL_RATE = 48000


def burst_signal(period_s: float = 0.5, burst_s: float = 0.1, bursts: int = 4, rate: int = SIGNAL_RATE) -> np.ndarray:
    """``bursts`` tone bursts (300, 400, ... Hz, 0.3 peak) every ``period_s``; loops seamlessly."""
    n = int(rate * period_s)
    x = np.zeros(n * bursts, dtype=np.float32)
    t = np.arange(int(rate * burst_s)) / rate
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)  # 5 ms ramps: no clicks
    for i in range(bursts):
        x[i * n : i * n + len(t)] = 0.3 * ramp * np.sin(2 * np.pi * (300 + 100 * i) * t)
    return x


def match_latency_ms(sent: Sequence[tuple[int, float]], received: Sequence[tuple[int, float]], skip_s: float = 0.5) -> list[float]:
    """Per-frame latency: receive time minus send time of the frame with the same media time
    (pts), skipping the first ``skip_s`` of the call (connection warm-up)."""
    send = dict(sent)
    if not received:
        return []
    t_start = received[0][1] + skip_s
    return [1000.0 * (t - send[p]) for p, t in received if p in send and t >= t_start]


def summarize_ms(values: Sequence[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "p50": round(percentile(values, 50), 2),
        "p90": round(percentile(values, 90), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2),
        "n": len(values),
    }


@dataclass
class ProcStat:
    cpu_s: float
    rss_mb: float


def proc_stat(pid: int) -> ProcStat:
    """CPU seconds (user + system, all threads) and resident memory of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
    return ProcStat(cpu, rss)


class ServerProcess:
    """``duplex-agent serve --echo`` in a child process on a free port (so its CPU and memory
    are its own). Use as ``async with ServerProcess([...]) as server: server.url``."""

    def __init__(self, extra_args: Sequence[str] = ()) -> None:
        self.args = list(extra_args)
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.stderr_lines: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ServerProcess:
        cmd = ["-c", "import sys; from duplex.cli import main; sys.exit(main())", "serve", "--echo", "--port", "0"]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *cmd, *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        self._drain = asyncio.get_running_loop().create_task(self._read_stderr())
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), timeout=60)).decode()
        m = re.search(r"(https?://[^/\s]+)/", line)
        if not m:
            await self.__aexit__(None, None, None)
            raise RuntimeError(f"server did not start: {line!r}; log: {self.log()[-2000:]}")
        self.url = m.group(1)
        return self

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr_lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return "\n".join(self.stderr_lines)

    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr_lines if "Traceback" in ln or " ERROR " in ln or ln.startswith("ERROR")]

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout=15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            await asyncio.wait_for(self._drain, timeout=5)
