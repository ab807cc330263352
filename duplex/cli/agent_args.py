"""Options shared by the commands that run an agent behind a transport (serve, talk, run)."""

from __future__ import annotations

import argparse

from configs import AgentConfig, ConfigError
from speech_io.agent_interface import AgentFactory


def add_agent_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--echo", action="store_true", help="use the echo agent (says back what it heard, after --echo-delay-ms)"
    )
    parser.add_argument("--echo-delay-ms", type=float, default=500.0, help="echo agent delay (default 500)")
    parser.add_argument("--vad", choices=("webrtc", "silero"), default=None, help="VAD backend (default: config)")


def agent_factory_from_args(args: argparse.Namespace, cfg: AgentConfig) -> AgentFactory:
    if args.echo:
        from speech_io.echo import EchoAgentFactory

        if args.echo_delay_ms < 0:
            raise ConfigError("--echo-delay-ms must be >= 0")
        return EchoAgentFactory(delay_s=args.echo_delay_ms / 1000.0)
    # The duplex runtime (a later part) becomes the default agent here.
    raise ConfigError("no agent to run yet: the duplex runtime is not built; pass --echo for the echo agent")


def vad_config(args: argparse.Namespace, cfg: AgentConfig):  # -> VadConfig
    import dataclasses

    return dataclasses.replace(cfg.vad, backend=args.vad) if args.vad else cfg.vad
