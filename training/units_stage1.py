"""Unit generator, stage 1 (SyncLLM stage 1): turn-based spoken dialogues.

Every dialogue of the corpus (turn-based, timed, overlapping; spoken QA pairs; single agent
utterances) is shown as a sequence of turns without timing: ``[S0]`` + the agent turn's
de-duplicated units with its reply text read word by word, ``[S1]`` + the user turn's units.
The model learns to speak the text it reads (text -> units) and a unit LM of user speech.

    python -m training.units_stage1 [--preset P] [--out DIR] [--steps N]
    torchrun --nproc_per_node 2 -m training.units_stage1 ...
    duplex-agent units train stage1 ...
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

STAGE = 1
KINDS = ("turn", "duplex", "overlap", "qa", "utterance")


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
