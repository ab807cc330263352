"""``duplex-agent data ...``: make, inspect, judge and import spoken-dialogue data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from duplex.cli.common import add_config_args, config_from_args, print_json, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="synthetic spoken-dialogue data: synth, stats, judge, emotion classifier, import")
    dsub = p.add_subparsers(dest="data_cmd", required=True, metavar="SUBCOMMAND")

    s = dsub.add_parser("synth", help="generate a dataset (resumable: rerun the same command to finish)")
    s.add_argument("--out", required=True, help="output folder (keep it outside the repo)")
    s.add_argument("--seed", type=int, default=0, help="seed: same seed + config -> identical dataset")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: data.workers)")
    s.add_argument("--max-jobs", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_args(s)
    s.set_defaults(func=cmd_synth)

    st = dsub.add_parser("stats", help="counts, hours, label balance; histograms as PNG")
    st.add_argument("dir", help="dataset folder")
    st.add_argument("--json", action="store_true", help="print one JSON object")
    st.add_argument("--plots", default=None, help="folder for the PNGs (default: DIR/stats)")
    st.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    st.set_defaults(func=cmd_stats)

    j = dsub.add_parser("judge", help="Whisper-judge WER of agent-voice and held-out user-voice utterances")
    j.add_argument("dir", help="dataset folder")
    j.add_argument("--n", type=int, default=100, help="utterances per group (seeded sample)")
    j.add_argument("--json", action="store_true", help="print one JSON object")
    j.add_argument("--out", default=None, help="also write the JSON here")
    j.add_argument("--only", action="append", default=None, metavar="GROUP",
                   help="judge only this group (agent_voice, heldout_user_voices, train_user_voices, agent_<emotion>)")
    add_config_args(j)
    j.set_defaults(func=cmd_judge)

    ec = dsub.add_parser("emotion-classifier", help="train/evaluate the small emotion classifier")
    ec.add_argument("action", choices=("train", "eval"))
    ec.add_argument("dir", help="dataset folder with manifests/emotions.jsonl")
    ec.add_argument("--weights", default=None, help="weights file (default: DIR/emotion_classifier.pt)")
    ec.add_argument("--epochs", type=int, default=300, help="training epochs (full batch)")
    ec.add_argument("--seed", type=int, default=0)
    ec.add_argument("--json", action="store_true", help="print one JSON object")
    ec.set_defaults(func=cmd_emotion_classifier)

    im = dsub.add_parser("import", help="write our manifests for a real corpus (audio stays in place)")
    im.add_argument("format", choices=("librispeech", "esd", "fisher"))
    im.add_argument("src", help="corpus root")
    im.add_argument("--out", required=True, help="dataset folder to write manifests/ into")
    im.add_argument("--json", action="store_true")
    im.set_defaults(func=cmd_import)


def cmd_synth(args: argparse.Namespace) -> int:
    from training.data.synth import PlanMismatchError, synthesize

    cfg = config_from_args(args)
    try:
        r = synthesize(cfg, args.out, seed=args.seed, workers=args.workers, max_jobs=args.max_jobs,
                       progress=not args.no_progress)
    except PlanMismatchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = "complete" if r.manifests else "partial (rerun the same command to continue)"
    print(f"{r.out}: {state}; {r.jobs} jobs, {r.skipped} already done; {r.seconds_written / 3600:.3f} h of audio "
          f"written in {r.wall_s:.1f} s wall, {r.cpu_s:.1f} CPU-s")
    if r.manifests:
        print("manifests: " + ", ".join(f"{k}={v}" for k, v in r.manifests.items()))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from training.data.stats import compute_stats, plot_stats

    stats = compute_stats(args.dir)
    if not args.no_plots:
        stats["plots"] = [str(p) for p in plot_stats(args.dir, stats, args.plots)]
    if args.json:
        print_json(stats)
        return 0
    print(f"{stats['root']}: {stats['items']} items, {stats['hours']:.2f} h ({stats['dialogue_hours']:.2f} h of dialogues)")
    for k, v in stats["items_by_kind"].items():
        print(f"  {k:<11} {v:>7} items {stats['hours_by_kind'][k]:8.2f} h  splits {stats['splits'][k]}")
    print(f"  labels     {stats['label_counts']}  share {stats['label_share']}")
    print(f"  emotions   {stats['emotion_counts']}")
    print(f"  stages     {stats['dialogue_stages']}; barge-ins {stats['bargeins']}, overlaps {stats['overlaps']}")
    for k, v in stats["timing"].items():
        print(f"  {k:<19} {v}")
    for p in stats.get("plots", []):
        print(f"  plot: {p}")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from training.data.intelligibility import judge_dataset

    cfg = config_from_args(args)
    result = judge_dataset(cfg, args.dir, n=args.n, only=args.only)
    if args.out:
        write_json(args.out, result)
    if args.json:
        print_json(result)
    else:
        for group, r in result["groups"].items():
            print(f"{group:<28} WER {r['wer']:.3f} over {r['n']} utterances ({r['words']} words)")
    return 0


def cmd_emotion_classifier(args: argparse.Namespace) -> int:
    from training.data.emotion_classifier import evaluate, train

    weights = args.weights or str(Path(args.dir) / "emotion_classifier.pt")
    if args.action == "train":
        result = train(args.dir, weights, epochs=args.epochs, seed=args.seed)
    else:
        result = evaluate(args.dir, weights)
    if args.json:
        print_json(result)
    else:
        print(f"accuracy on held-out voices (half B): {result['accuracy_heldout_voices']:.3f} "
              f"({result['n_eval']} utterances, speaker-normalised); weights: {weights}")
        if "accuracy_heldout_voices_without_speaker_norm" in result:
            print(f"  (same recipe without speaker normalisation: {result['accuracy_heldout_voices_without_speaker_norm']:.3f})")
        print("confusion (rows = true " + ", ".join(result["emotions"]) + "):")
        for row in result["confusion"]:
            print("  " + " ".join(f"{x:5d}" for x in row))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from training.data import importers

    fn = {"librispeech": importers.import_librispeech, "esd": importers.import_esd, "fisher": importers.import_fisher}[args.format]
    counts = fn(args.src, args.out)
    if args.json:
        print_json(counts)
    else:
        print(f"{args.out}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0
