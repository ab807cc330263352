"""``duplex-agent train NAME``: the training recipes (one module per stage, thin CLI).

Speech input: ``training.stageN_*`` (setup / train / save_checkpoint); for several processes run
the same module under torchrun, e.g. ``torchrun --nproc_per_node 2 -m training.stage1_asr ...``.
Unit generator: ``training.units_stageN``. Unit decoder (TTS) and its emotion plugins:
``training.tts_neutral`` / ``training.tts_emotion`` (rerun the same command to resume).
Options are declared without importing torch, so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from duplex.cli.common import add_config_args
from training.recipe_args import add_recipe_args

STAGES: dict[str, tuple[str, str]] = {
    "stage1": ("training.stage1_asr", "encoder learns ASR (CTC on characters) under the chunk mask"),
    "stage2": ("training.stage2_align", "encoder + adapter aligned to the frozen LLM (transcripts)"),
    "stage3": ("training.stage3_qa_state", "prompt embeddings + state head (spoken QA + state labels)"),
}

UNIT_STAGES: dict[str, str] = {
    "units-stage1": "unit generator stage 1: turn-based spoken dialogues (SyncLLM)",
    "units-stage2": "unit generator stage 2: full-duplex chunk format without overlap",
    "units-stage3": "unit generator stage 3: overlaps, backchannels, interruptions",
}


def _tts_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stages", default="data,train,eval",
                   help="comma-separated: data (render + units), train, eval (default: all)")
    p.add_argument("--export", default=None, metavar="PATH",
                   help="write the trained weights (safetensors), e.g. agent/weights/tts_decoder.safetensors")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _emotion_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--emotion", required=True, help="happy, sad, angry or surprised")
    p.add_argument("--scheme", default=None, help="LoRA positions: '+'-joined frontend, upsampler, decoder, or 'all' "
                   "(default: tts_train.emotion_scheme)")
    p.add_argument("--rank", type=int, default=None, help="LoRA rank (default: tts_train.emotion_rank)")
    p.add_argument("--weights", default=None, help="neutral decoder weights (default: the tts.card)")
    p.add_argument("--export", default=None, metavar="PATH", help="write the plugin (safetensors) here")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


# name -> (recipe module with run_from_args, help, options)
TTS_RECIPES: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = {
    "tts": ("training.tts_neutral", "neutral unit decoder: distil the Piper voice (units -> latents -> audio)", _tts_args),
    "emotion": ("training.tts_emotion", "one LoRA emotion plugin of the unit decoder (--emotion happy)", _emotion_args),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="training recipes: speech input, unit generator, unit decoder (TTS)")
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
    for name, (_, help_text, add_args) in TTS_RECIPES.items():
        s = tsub.add_parser(name, help=help_text)
        add_args(s)
        add_config_args(s)
        s.set_defaults(func=cmd_train_tts)


def cmd_train_units(args: argparse.Namespace) -> int:
    module = importlib.import_module("training.units_" + args.stage.split("-")[1])
    return int(module.run_from_args(args))


def cmd_train_tts(args: argparse.Namespace) -> int:
    return int(importlib.import_module(TTS_RECIPES[args.stage][0]).run_from_args(args))


def cmd_train(args: argparse.Namespace) -> int:
    module = importlib.import_module(STAGES[args.stage][0])
    return int(module.run_from_args(args))
