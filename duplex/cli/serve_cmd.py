"""``duplex-agent serve``: the WebRTC server and talk page."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys

from duplex.cli.agent_args import add_agent_args, agent_factory_from_args, close_factory, vad_config, warm_up
from duplex.cli.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the agent behind a WebRTC server + talk page (open http://127.0.0.1:8080)")
    add_agent_args(p)
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=None, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--max-sessions", type=int, default=None, help="concurrent calls before 503")
    p.add_argument("--idle-timeout", type=float, default=None, help="close a call after this many seconds without media")
    p.add_argument(
        "--ice-server", action="append", default=None, metavar="URL[,USER,CREDENTIAL]",
        help="STUN/TURN server for remote use (repeatable); none by default",
    )
    p.add_argument("--allow-origin", action="append", default=None, help="extra browser origin allowed to POST /offer")
    p.add_argument("--jitter-buffer", choices=("bounded", "aiortc"), default=None, help="receive jitter buffer")
    p.add_argument("--cert", default=None, help="TLS certificate (PEM) to serve https")
    p.add_argument("--key", default=None, help="TLS private key (PEM)")
    add_config_args(p)
    p.set_defaults(func=cmd_serve)


def _transport_config(args: argparse.Namespace, cfg):  # -> TransportConfig
    changes = {
        "host": args.host,
        "port": args.port,
        "max_sessions": args.max_sessions,
        "idle_timeout_s": args.idle_timeout,
        "ice_servers": args.ice_server,
        "allowed_origins": args.allow_origin,
        "jitter_buffer": args.jitter_buffer,
        "tls_cert": args.cert,
        "tls_key": args.key,
    }
    return dataclasses.replace(cfg.transport, **{k: v for k, v in changes.items() if v is not None})


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    factory = agent_factory_from_args(args, cfg)
    transport = _transport_config(args, cfg)
    try:
        asyncio.run(_serve(factory, transport, vad_config(args, cfg), echo=args.echo))
    except OSError as exc:
        print(f"error: cannot serve on {transport.host}:{transport.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


async def _serve(factory, transport, vad, echo: bool) -> None:
    from speech_io.webrtc.server import WebRtcServer

    server = WebRtcServer(factory, transport, vad)
    if not echo:
        print("warming up the models ...", flush=True)
        await warm_up(factory)
    runner, port = await server.start()
    scheme = "https" if transport.tls_cert else "http"
    agent = "echo agent" if echo else "agent"
    print(f"serving the {agent} on {scheme}://{transport.host}:{port}/ (Ctrl-C to stop)", flush=True)
    if not echo:
        print(f"metrics: {scheme}://{transport.host}:{port}/metrics", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()  # closes every session (on_shutdown)
        await close_factory(factory)
        print("stopped", flush=True)
