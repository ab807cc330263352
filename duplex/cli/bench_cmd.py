"""``duplex-agent bench NAME``: run a benchmark, print figures (``--json`` for one JSON object)."""

from __future__ import annotations

import argparse
import importlib
import inspect

import yaml

from configs import ConfigError
from duplex.cli.common import add_config_args, config_from_args, print_json, write_json

# name -> (module with `run(cfg, **kw) -> dict`, help). Later parts of the agent add theirs here.
BENCHES: dict[str, tuple[str, str]] = {
    "llm": ("duplex.bench.llm", "frozen LLM prefill/decode tokens/s (fp32, bf16, bf16 + int8 / fp32 + fp16 weights), peak RSS"),
    "llm-weights": ("duplex.bench.llm_weights", "accuracy price of the runtime's LLM weights: answer perplexity, "
                    "greedy-answer drift (fp32, bf16, runtime)"),
    "voice": ("duplex.bench.voice", "reference voice real-time factor and time to first audio"),
    "transport": ("duplex.bench.transport", "WebRTC one-way latency (aiortc default vs tuned jitter buffer), CPU/session"),
    "soak": ("duplex.bench.soak", "N concurrent WebRTC echo sessions for a while: errors, frame gaps, RSS growth"),
    "tts": ("duplex.bench.tts", "streaming unit decoder: first packet, RTF, emotion switch time"),
    "encoder": ("duplex.bench.encoder", "one 160 ms chunk: streaming encoder + adapter + LLM prefill + state head"),
    "generator": ("duplex.bench.generator", "unit generator: one chunk step (user + agent) time and RTF"),
    "duplex": ("duplex.bench.duplex", "the whole agent on held-out spoken questions: latency, barge-in, backchannels, "
               "pauses, RTF, stalls, concurrent real-time sessions"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that print figures (and JSON)")
    bsub = p.add_subparsers(dest="bench_name", required=True, metavar="NAME")
    for name, (_, help_text) in BENCHES.items():
        b = bsub.add_parser(name, help=help_text)
        b.add_argument("--json", action="store_true", help="print one JSON object")
        b.add_argument("--out", default=None, help="also write the JSON to this file")
        b.add_argument("--repeats", type=int, default=None, help="repeats (medians are reported)")
        b.add_argument(
            "--param", action="append", default=[], metavar="KEY=VALUE",
            help="extra keyword for the benchmark's run(), e.g. --param sessions=10 (repeatable)",
        )
        add_config_args(b)
        b.set_defaults(func=cmd_bench)


def _print_table(result: dict, indent: str = "") -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_table(value, indent + "  ")
        elif isinstance(value, float):
            print(f"{indent}{key:<24} {value:.3f}")
        else:
            print(f"{indent}{key:<24} {value}")


def cmd_bench(args: argparse.Namespace) -> int:
    module_name, _ = BENCHES[args.bench_name]
    module = importlib.import_module(module_name)
    kwargs = {} if args.repeats is None else {"repeats": args.repeats}
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--param {item!r} must look like key=value")
        kwargs[key] = yaml.safe_load(raw)
    known = [p for p in inspect.signature(module.run).parameters if p != "cfg"]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigError(f"bench {args.bench_name} has no parameter {', '.join(unknown)}; it takes {', '.join(known)}")
    result = module.run(config_from_args(args), **kwargs)
    result = {"bench": args.bench_name, **result}
    if args.out:
        write_json(args.out, result)
    if args.json:
        print_json(result)
    else:
        _print_table(result)
    return 0
