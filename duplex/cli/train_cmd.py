"""``duplex-agent train stage1|stage2|stage3``: the speech-input training recipes (one per stage).

Each stage is ``training.stageN_*`` (setup / train / save_checkpoint); for several processes run
the same module under torchrun, e.g. ``torchrun --nproc_per_node 2 -m training.stage1_asr ...``.
"""

from __future__ import annotations

import argparse
import importlib

from training.recipe_args import add_recipe_args

STAGES: dict[str, tuple[str, str]] = {
    "stage1": ("training.stage1_asr", "encoder learns ASR (CTC on characters) under the chunk mask"),
    "stage2": ("training.stage2_align", "encoder + adapter aligned to the frozen LLM (transcripts)"),
    "stage3": ("training.stage3_qa_state", "prompt embeddings + state head (spoken QA + state labels)"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the speech input (three Freeze-Omni stages)")
    tsub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (_, help_text) in STAGES.items():
        s = tsub.add_parser(name, help=help_text)
        add_recipe_args(s)
        s.set_defaults(func=cmd_train)
    # The unit generator's SyncLLM stages (training/units_stageN.py; same as `units train stageN`).
    from training.units_args import add_recipe_args as add_units_recipe_args

    for name, help_text in UNIT_STAGES.items():
        s = tsub.add_parser(name, help=help_text)
        add_units_recipe_args(s)
        s.set_defaults(func=cmd_train_units)


UNIT_STAGES: dict[str, str] = {
    "units-stage1": "unit generator stage 1: turn-based spoken dialogues (SyncLLM)",
    "units-stage2": "unit generator stage 2: full-duplex chunk format without overlap",
    "units-stage3": "unit generator stage 3: overlaps, backchannels, interruptions",
}


def cmd_train_units(args: argparse.Namespace) -> int:
    module = importlib.import_module("training.units_" + args.stage.split("-")[1])
    return int(module.run_from_args(args))


def cmd_train(args: argparse.Namespace) -> int:
    module = importlib.import_module(STAGES[args.stage][0])
    return int(module.run_from_args(args))
