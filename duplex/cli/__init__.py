"""``duplex-agent``: one console script, thin subcommands.

Each command module exposes ``register(subparsers)``; handlers import models lazily, so
``duplex-agent --help`` is instant and importing this package loads nothing heavy. Expected
failures (missing asset, bad config, unreadable audio) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from duplex.cli import (
    assets_cmd,
    bench_cmd,
    config_cmd,
    data_cmd,
    eval_cmd,
    llm_cmd,
    run_cmd,
    serve_cmd,
    simulate_cmd,
    talk_cmd,
    train_cmd,
    tts_cmd,
    units_cmd,
    voice_cmd,
)

COMMAND_MODULES = (
    assets_cmd, config_cmd, voice_cmd, llm_cmd, serve_cmd, talk_cmd, run_cmd, bench_cmd,
    data_cmd, train_cmd, eval_cmd, units_cmd, tts_cmd, simulate_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duplex-agent",
        description="Full-duplex spoken dialogue agent: serve/talk/run, assets, voice, LLM, benchmarks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    from agent.assets import AssetError
    from agent.phonemize import PhonemizerError
    from configs import ConfigError
    from speech_io.local_audio import NoAudioDevice
    from speech_io.wav import AudioFormatError
    from training.speech_data import DataError

    return (AssetError, ConfigError, PhonemizerError, AudioFormatError, FileNotFoundError, NoAudioDevice, DataError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except _expected_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
