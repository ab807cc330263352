"""Options shared by subcommands (preset + overrides) and small output helpers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from configs import AgentConfig, load_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="default", help="preset name (tiny, default, large) or a YAML file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set llm.dtype=bfloat16 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    return load_config(args.preset, args.overrides)


def write_json(path: str | Path, obj: Any) -> None:
    """A command's figures as a JSON file (parent folders made), the same text `--json` prints."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    sys.stdout.flush()
