"""``duplex-agent simulate``: the agent against held-out scripted users over a simulated network."""

from __future__ import annotations

import argparse

from duplex.cli.common import add_config_args, config_from_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="latency sweep: scripted users over a simulated network, prediction on/off")
    p.add_argument("--out", required=True, help="output folder (wavs, events, report.{md,json}, plots; resumable)")
    p.add_argument("--data", default=None,
                   help="a `data synth` folder whose test/val dialogues script the user (default: synthesize held-out ones)")
    p.add_argument("--dialogues", type=int, default=None, help="dialogues per point (default: sim.dialogues)")
    p.add_argument("--delays", type=float, nargs="+", default=None,
                   help="one-way delays in ms (default: sim.delays_ms = 0 80 160 240 400)")
    p.add_argument("--jitter-ms", type=float, default=None, help="jitter scale on both directions (sim.network.jitter_ms)")
    p.add_argument("--loss", type=float, default=None, help="packet loss probability (sim.network.loss)")
    p.add_argument("--seed", type=int, default=None, help="seed of channels, dialogues and samplers (sim.seed)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes running calls in parallel (default: sim.workers = 2; each loads the models; "
                        "the report does not change)")
    p.add_argument("--pair", action="store_true",
                   help="two agents talking to each other (opened by a held-out user turn) instead of scripted users")
    p.add_argument("--json", action="store_true", help="print one JSON object {delays: {ms: {on: {...}, off: {...}}}}")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(p)
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    import dataclasses

    from duplex.simulate import run_pair_sweep, run_sweep

    cfg = config_from_args(args)
    net = cfg.sim.network
    for field, value in (("jitter_ms", args.jitter_ms), ("loss", args.loss)):
        if value is not None:
            net = dataclasses.replace(net, **{field: value})
    sim = dataclasses.replace(cfg.sim, network=net)
    if args.seed is not None:
        sim = dataclasses.replace(sim, seed=args.seed)
    cfg = dataclasses.replace(cfg, sim=sim)
    progress = not (args.no_progress or args.json)
    if args.pair:
        report = run_pair_sweep(cfg, args.out, data=args.data, delays=args.delays, n=args.dialogues, progress=progress)
    else:
        report = run_sweep(cfg, args.out, data=args.data, delays=args.delays, n=args.dialogues, progress=progress,
                           workers=max(1, args.workers if args.workers is not None else cfg.sim.workers))
    if args.json:
        slim = {"delays": {d: {k: {m: v for m, v in fig.items() if m != "fto"} for k, fig in point.items()}
                           for d, point in report["delays"].items()}, "timing": report["timing"]}
        print_json(slim)
    else:
        print(f"wrote {args.out}/report.md, report.json, metrics_vs_delay.png, fto_hist.png")
        for d, point in report["delays"].items():
            for k, fig in point.items():
                if args.pair:
                    print(f"{d:>5} ms {k:<3}  median floor-transfer offset {fig['fto_median_s']} s  overlap share "
                          f"{fig['overlap_rate']}  transfers/min {fig['transfers_per_min']}")
                else:
                    print(f"{d:>5} ms {k:<3}  pause TOR {fig['pause_tor']}  turn-taking TOR {fig['turn_taking_tor']}  "
                          f"interruption TOR {fig['interruption_tor']}  latency {fig['turn_taking_latency_s']} s")
        print(f"took {report['timing']['wall_s']} s")
    return 0
