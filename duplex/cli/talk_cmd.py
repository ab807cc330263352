"""``duplex-agent talk``: the agent on this machine's microphone and speaker."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from duplex.cli.agent_args import add_agent_args, agent_factory_from_args, close_factory, vad_config, warm_up
from duplex.cli.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("talk", help="talk to the agent with the local mic and speaker (or --input file.wav)")
    add_agent_args(p)
    p.add_argument("--input", default=None, help="play this wav as the microphone instead (real time)")
    p.add_argument("--output", default="talk.wav", help="with --input: where the agent's reply goes (user|agent stereo)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    add_config_args(p)
    p.set_defaults(func=cmd_talk)


def _print_event(event: dict, t: float | None = None) -> None:
    if event.get("type") == "stats":
        return
    stamp = f"[{t:7.2f}] " if t is not None else ""
    print(stamp + json.dumps(event), flush=True)


def cmd_talk(args: argparse.Namespace) -> int:
    from speech_io.webrtc.server import make_detector

    cfg = config_from_args(args)
    factory = agent_factory_from_args(args, cfg)
    detector = make_detector(vad_config(args, cfg))
    if args.input:
        result = asyncio.run(_talk_file(args, factory, detector))
        print(f"wrote {result.output} ({result.output_s:.2f} s, left: you, right: agent)")
        return 0
    from speech_io.local_audio import LocalAudioTransport

    transport = LocalAudioTransport(
        factory,
        rate=cfg.transport.device_rate,
        detector=detector,
        on_event=_print_event,
        on_start=lambda: print("talking (Ctrl-C to stop)", file=sys.stderr, flush=True),
    )
    try:
        asyncio.run(_talk_live(transport, factory, args.duration))
    except KeyboardInterrupt:
        pass
    return 0


async def _talk_file(args: argparse.Namespace, factory, detector):
    from duplex.clock import RealClock
    from speech_io.file_transport import run_file

    try:
        await warm_up(factory)
        return await run_file(factory, args.input, args.output, RealClock(), detector=detector,
                              on_event=lambda t, e: _print_event(e, t))
    finally:
        await close_factory(factory)


async def _talk_live(transport, factory, duration: float | None) -> None:
    try:
        await warm_up(factory)
        await transport.run(duration)
    finally:
        await close_factory(factory)
