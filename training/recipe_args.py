"""Command-line options shared by the stage recipes (light: importable by the CLI without torch)."""

from __future__ import annotations

import argparse


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", help="preset name or YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set speech.stage1.steps=100 (repeatable)")
    p.add_argument("--data", required=True, help="speech corpus directory (training.speech_data format)")
    p.add_argument("--out", required=True, help="run directory (checkpoints, loss curves); resumed if present")
    p.add_argument("--init", default=None, help="speech weights (.safetensors) to start from (previous stage)")
    p.add_argument("--steps", type=int, default=None, help="override the stage's step count")
    p.add_argument("--eval-limit", type=int, default=None, help="held-out examples to evaluate (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
