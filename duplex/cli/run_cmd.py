"""``duplex-agent run``: a wav plays the user; the reply is written time-aligned next to it."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from duplex.cli.agent_args import add_agent_args, agent_factory_from_args, vad_config
from duplex.cli.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="file transport: --input user.wav -> --output out.wav (user left, agent right)")
    add_agent_args(p)
    p.add_argument("--input", required=True, help="the user's side (wav, any rate)")
    p.add_argument("--output", required=True, help="stereo wav: left = user, right = agent, one time axis")
    p.add_argument("--realtime", action="store_true", help="pace in real time (default: as fast as possible)")
    p.add_argument("--tail", type=float, default=1.0, help="after the input, stop once the agent is silent this long")
    p.add_argument("--events", default=None, help="also write the events as JSON lines here")
    add_config_args(p)
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from duplex.clock import RealClock, VirtualClock
    from speech_io.file_transport import run_file
    from speech_io.webrtc.server import make_detector

    cfg = config_from_args(args)
    factory = agent_factory_from_args(args, cfg)
    clock = RealClock() if args.realtime else VirtualClock()
    result = asyncio.run(
        run_file(factory, args.input, args.output, clock, detector=make_detector(vad_config(args, cfg)), tail_s=args.tail)
    )
    if args.events:
        lines = [json.dumps({"at": round(t, 4), **e}) for t, e in result.events]
        Path(args.events).write_text("\n".join(lines) + "\n")
    segs = ", ".join(f"{s.start:.2f}-{s.end:.2f}" for s in result.segments) or "none"
    print(f"wrote {result.output} ({result.output_s:.2f} s at {result.rate} Hz, left: user, right: agent)")
    print(f"speech segments (s): {segs}; {len(result.events)} events; run took {result.wall_s:.2f} s of clock time")
    return 0
