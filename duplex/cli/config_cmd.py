"""``duplex-agent config show``: print the resolved config of a preset plus overrides."""

from __future__ import annotations

import argparse

import yaml

from duplex.cli.common import add_config_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show resolved configs and presets")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = csub.add_parser("show", help="print the resolved config as YAML")
    add_config_args(show)
    show.set_defaults(func=cmd_show)
    presets = csub.add_parser("presets", help="list preset names")
    presets.set_defaults(func=cmd_presets)


def cmd_show(args: argparse.Namespace) -> int:
    from configs import to_dict

    print(yaml.safe_dump(to_dict(config_from_args(args)), sort_keys=False), end="")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from configs import list_presets

    print("\n".join(list_presets()))
    return 0
