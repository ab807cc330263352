"""Command-line options of the unit-generator recipes (argparse only: cheap to import for the CLI)."""

from __future__ import annotations

import argparse


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="default", help="preset name or YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set units_train.stage1_steps=100 (repeatable)")
    p.add_argument("--data", default=None, help="prepared unit cache(s), comma-separated (default: units_train.cache_dir)")
    p.add_argument("--out", default=None, help="run directory (default: units_train.out_dir/stageN); resumed if present")
    p.add_argument("--init", default=None, help="generator .safetensors to start from (default: the previous stage's final)")
    p.add_argument("--steps", type=int, default=None, help="override the stage's step count")
    p.add_argument("--stop-at", type=int, default=None,
                   help="checkpoint and exit after this step (a run split into sessions; rerun to resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--eval-dialogues", type=int, default=40,
                   help="stage 3: held-out dialogues for the user-prediction score at the end")
