"""Unit generator, stage 3 (SyncLLM stage 3): overlaps, backchannels and interruptions.

Dialogues with overlapping speech, user backchannels during agent turns, barge-ins that cut the
agent off (its reply text then stops being read) and side talk/noise on the user channel, in the
same chunk format as stage 2, mixed with half as many stage-2 dialogues so the model keeps
speaking cleanly. The model learns turn-taking cues and to predict the user's next chunk; the
final held-out evaluation scores those predictions (speech/silence accuracy). Starts from stage 2.

    python -m training.units_stage3 [--preset P] [--out DIR] [--init stage2/final.safetensors]
    torchrun --nproc_per_node 2 -m training.units_stage3 ...
    duplex-agent units train stage3 ...
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

STAGE = 3
KINDS = ("overlap",)
MIX_KINDS = ("turn", "duplex", "qa")
MIX_SHARE = 0.5


def setup(args: argparse.Namespace) -> StageRun:
    return setup_run(STAGE, args, KINDS, MIX_KINDS, MIX_SHARE)


def train(run: StageRun, eval_dialogues: int = 40) -> dict[str, float]:
    metrics = train_loop(run)
    if run.dist.is_main and eval_dialogues and run.finished:
        from training.units_eval import user_prediction_accuracy

        idx = run.val_corpus.select(KINDS)[:eval_dialogues]
        if idx:
            metrics.update(user_prediction_accuracy(run.model, run.val_corpus, idx, run.conds))
    return metrics


def save_checkpoint(run: StageRun, metrics: dict[str, float]) -> Path | None:
    """Export the stage's final weights and figures (only once all steps are done)."""
    return save_stage_checkpoint(run, metrics)


def run_from_args(args: argparse.Namespace) -> int:
    return run_stage(setup(args), lambda r: train(r, args.eval_dialogues), save_checkpoint)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_args(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
