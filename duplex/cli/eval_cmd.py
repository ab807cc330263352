"""``duplex-agent eval encoder --data DIR``: held-out figures of the speech input."""

from __future__ import annotations

import argparse
from pathlib import Path

from duplex.cli.common import add_config_args, config_from_args, print_json, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="held-out evaluations")
    esub = p.add_subparsers(dest="eval_name", required=True, metavar="NAME")
    e = esub.add_parser("encoder", help="speech input: transcript CER, state-head F1, spoken-QA agreement")
    e.add_argument("--data", required=True, help="speech corpus directory")
    e.add_argument("--split", default="test", choices=["test", "val"],
                   help="test = held-out figures; val = for calibration (e.g. the take-turn threshold)")
    e.add_argument("--weights", default=None, help="speech weights .safetensors (default: the preset's bundled card)")
    e.add_argument("--limit", type=int, default=None, help="at most this many examples per part")
    e.add_argument("--parts", nargs="+", choices=["cer", "state", "qa"], default=["cer", "state", "qa"])
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--out", default=None, help="also write the JSON to this file")
    add_config_args(e)
    e.set_defaults(func=cmd_eval_encoder)
    f = esub.add_parser("fdb", help="run the agent on a Full-Duplex-Bench v1/v1.5 tree: output.wav + TOR/latency")
    f.add_argument("--data", required=True, help="benchmark root: sample folders with input.wav + pause/turn_taking/"
                   "interrupt/metadata json")
    f.add_argument("--limit", type=int, default=None, help="at most this many samples")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.add_argument("--out", default=None, help="metrics JSON file (default: DATA/fdb_metrics.json)")
    add_config_args(f)
    f.set_defaults(func=cmd_eval_fdb)


def cmd_eval_encoder(args: argparse.Namespace) -> int:
    from training.speech_eval import run_eval

    result = run_eval(config_from_args(args), args.data, weights=args.weights, limit=args.limit, parts=args.parts,
                      progress=not args.json, split=args.split)
    if args.out:
        write_json(args.out, result)
    if args.json:
        print_json(result)
    else:
        for key, value in result.items():
            if not isinstance(value, (list, dict)):
                print(f"{key:<28} {value:.4f}" if isinstance(value, float) else f"{key:<28} {value}")
    return 0


def cmd_eval_fdb(args: argparse.Namespace) -> int:
    from duplex.fdb import run_fdb

    result = run_fdb(config_from_args(args), args.data, limit=args.limit, progress=not args.json)
    out = Path(args.out) if args.out else Path(args.data) / "fdb_metrics.json"
    write_json(out, result)
    if args.json:
        print_json(result)
    else:
        for task, fig in result["tasks"].items():
            print(f"{task:<20} " + "  ".join(f"{k} {v}" for k, v in fig.items()))
        print(f"wrote output.wav/output.json per sample and {out}")
    return 0
