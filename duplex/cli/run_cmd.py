"""``duplex-agent run``: a wav plays the user; the reply is written time-aligned next to it."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from duplex.cli.agent_args import add_agent_args, agent_factory_from_args, close_factory, vad_config, warm_up
from duplex.cli.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="file transport: --input user.wav -> --output out.wav (user left, agent right)")
    add_agent_args(p)
    p.add_argument("--input", required=True, help="the user's side (wav, any rate)")
    p.add_argument("--output", required=True, help="stereo wav: left = user, right = agent, one time axis")
    p.add_argument("--realtime", action="store_true",
                   help="pace in real time (default: virtual time, as fast as the models compute)")
    p.add_argument("--compute-scale", type=float, default=1.0,
                   help="virtual time: charge measured compute x this (e.g. 2 = a machine half as fast)")
    p.add_argument("--tail", type=float, default=1.0, help="after the input, stop once the agent is silent this long")
    p.add_argument("--events", default=None, help="also write the events as JSON lines here")
    add_config_args(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    factory = agent_factory_from_args(args, cfg)
    result = asyncio.run(_run(args, cfg, factory))
    if args.events:
        lines = [json.dumps({"at": round(t, 4), **e}) for t, e in result.events]
        Path(args.events).write_text("\n".join(lines) + "\n")
    segs = ", ".join(f"{s.start:.2f}-{s.end:.2f}" for s in result.segments) or "none"
    print(f"wrote {result.output} ({result.output_s:.2f} s at {result.rate} Hz, left: user, right: agent)")
    print(f"speech segments (s): {segs}; {len(result.events)} events; run took {result.wall_s:.2f} s of clock time")
    for _, e in result.events:
        if e.get("type") == "turn":
            parts = ", ".join(f"{k} {v:.0f}" for k, v in e.get("parts", {}).items())
            ms = f"{e['ms']:.0f} ms" if e.get("ms") is not None else "-"
            print(f"turn {e['turn']} {e['kind']}: {ms}" + (f" ({parts})" if parts else ""))
        elif e.get("type") == "text" and e.get("final") and e.get("role") == "agent":
            print(f"agent said: {e['text']}")
    return 0


async def _run(args: argparse.Namespace, cfg, factory):
    from duplex.clock import EventClock, RealClock
    from duplex.workers import CostModel
    from speech_io.file_transport import run_file
    from speech_io.webrtc.server import make_detector

    if args.compute_scale != 1.0:
        for w in getattr(factory, "workers", ()):
            w.cost_model = CostModel.measured(args.compute_scale)
    clock = RealClock() if args.realtime else EventClock()
    try:
        await warm_up(factory)
        return await run_file(factory, args.input, args.output, clock,
                              detector=make_detector(vad_config(args, cfg)), tail_s=args.tail)
    finally:
        await close_factory(factory)
