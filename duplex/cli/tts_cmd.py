"""``duplex-agent exp emotion-lora``: EELE's study of LoRA positions and ranks, on our synthetic data."""

from __future__ import annotations

import argparse

from duplex.cli.common import add_config_args, config_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exp", help="experiments that write tables and plots")
    esub = p.add_subparsers(dest="experiment", required=True, metavar="NAME")
    e = esub.add_parser("emotion-lora", help="LoRA emotion plugins per position scheme and rank + full fine-tune")
    e.add_argument("--schemes", default="frontend,upsampler,decoder,frontend+upsampler,all",
                   help="comma-separated position schemes")
    e.add_argument("--ranks", default="2,4,8", help="comma-separated LoRA ranks")
    e.add_argument("--emotions", default="happy,sad", help="emotions trained per cell (all four is 2x the time)")
    e.add_argument("--steps", type=int, default=None, help="optimizer steps per plugin (default: tts_train.emotion_steps)")
    e.add_argument("--eval-items", type=int, default=12, help="held-out utterances judged per emotion and cell")
    e.add_argument("--no-full", action="store_true", help="skip the full fine-tune baseline")
    e.add_argument("--weights", default=None, help="neutral decoder weights (default: the tts.card)")
    e.add_argument("--out", default="runs/tts/emotion_lora", help="output directory (table.md, table.json, plot.png)")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_args(e)
    e.set_defaults(func=cmd_emotion_lora)


def cmd_emotion_lora(args: argparse.Namespace) -> int:
    from training.tts_experiment import run_experiment

    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    result = run_experiment(
        config_from_args(args), schemes=split(args.schemes), ranks=[int(r) for r in split(args.ranks)],
        emotions=split(args.emotions), steps=args.steps, eval_items=args.eval_items, full=not args.no_full,
        weights=args.weights, out_dir=args.out, progress=not args.no_progress,
    )
    print_json(result["summary"])
    return 0
