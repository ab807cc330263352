"""Unit generator, stage 2 (SyncLLM stage 2): the full-duplex chunk format, without overlap.

Turn-based and timed dialogues (and spoken QA pairs / single agent utterances, with silence on
the other channel) in SyncLLM's interleaved format: per chunk ``[S0]`` agent units ``[S1]`` user
units, de-duplicated inside chunks. While one side speaks the other is silent, so the model
learns timing inside turns and the format, not yet turn-taking cues. Starts from stage 1.

    python -m training.units_stage2 [--preset P] [--out DIR] [--init stage1/final.safetensors]
    torchrun --nproc_per_node 2 -m training.units_stage2 ...
    duplex-agent units train stage2 ...
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from training.units_common import (
    StageRun,
    add_recipe_args,
    run_stage,
    save_stage_checkpoint,
    setup_run,
    train_loop,
)

STAGE = 2
KINDS = ("turn", "duplex", "qa", "utterance")


def setup(args: argparse.Namespace) -> StageRun:
    return setup_run(STAGE, args, KINDS)


def train(run: StageRun) -> dict[str, float]:
    return train_loop(run)


def save_checkpoint(run: StageRun, metrics: dict[str, float]) -> Path | None:
    """Export the stage's final weights and figures (only once all steps are done)."""
    return save_stage_checkpoint(run, metrics)


def run_from_args(args: argparse.Namespace) -> int:
    return run_stage(setup(args), train, save_checkpoint)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_args(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
