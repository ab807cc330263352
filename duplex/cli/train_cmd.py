"""``duplex-agent train NAME``: training recipes (one module per stage, thin CLI).

Each recipe module has ``run_from_args(args) -> int`` (its ``setup / train / save_checkpoint`` do
the work; rerun the same command to resume). Options are declared here so that ``--help`` does
not import torch.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from duplex.cli.common import add_config_args


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


# name -> (recipe module, help, options). Other parts of the agent add their recipes here.
RECIPES: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = {
    "tts": ("training.tts_neutral", "neutral unit decoder: distil the Piper voice (units -> latents -> audio)", _tts_args),
    "emotion": ("training.tts_emotion", "one LoRA emotion plugin of the unit decoder (--emotion happy)", _emotion_args),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="training recipes")
    tsub = p.add_subparsers(dest="recipe", required=True, metavar="RECIPE")
    for name, (_, help_text, add_args) in RECIPES.items():
        s = tsub.add_parser(name, help=help_text)
        add_args(s)
        add_config_args(s)
        s.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    return int(importlib.import_module(RECIPES[args.recipe][0]).run_from_args(args))
