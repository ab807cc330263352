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
    parser.add_argument("--emotion", default=None,
                        help="emotion of the agent's replies: neutral, auto (from the reply text) or a plugin name")
    parser.add_argument("--metrics-jsonl", default=None,
                        help="per-turn metrics file (JSON lines; default: runtime.metrics_jsonl, '' = off)")


def agent_config(args: argparse.Namespace, cfg: AgentConfig) -> AgentConfig:
    """The config with the agent options of the command line applied."""
    import dataclasses

    if getattr(args, "emotion", None):
        cfg = dataclasses.replace(cfg, tts=dataclasses.replace(cfg.tts, emotion=args.emotion))
    if getattr(args, "metrics_jsonl", None) is not None:
        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, metrics_jsonl=args.metrics_jsonl))
    return cfg


def agent_factory_from_args(args: argparse.Namespace, cfg: AgentConfig, **kw) -> AgentFactory:
    """The echo agent with ``--echo``, else the duplex agent (loads every model: seconds)."""
    if args.echo:
        from speech_io.echo import EchoAgentFactory

        if args.echo_delay_ms < 0:
            raise ConfigError("--echo-delay-ms must be >= 0")
        return EchoAgentFactory(delay_s=args.echo_delay_ms / 1000.0)
    from duplex.session import DuplexAgentFactory

    cfg = agent_config(args, cfg)
    factory = DuplexAgentFactory.from_config(cfg, **kw)
    factory.tune_process()
    if cfg.tts.emotion not in ("auto", *factory.model.emotions):
        factory.close()
        raise ConfigError(f"unknown emotion {cfg.tts.emotion!r}; available: auto, {', '.join(factory.model.emotions)}")
    return factory


def vad_config(args: argparse.Namespace, cfg: AgentConfig):  # -> VadConfig
    import dataclasses

    return dataclasses.replace(cfg.vad, backend=args.vad) if args.vad else cfg.vad


async def close_factory(factory: AgentFactory) -> None:
    """Stop the agent's worker threads (the echo agent has none)."""
    aclose = getattr(factory, "aclose", None)
    if aclose is not None:
        await aclose()


async def warm_up(factory: AgentFactory) -> None:
    """First calls of every model stage pay for lazy initialisation: do them before any user waits."""
    warmup = getattr(factory, "warmup", None)
    if warmup is not None:
        await warmup()
