"""`hpcpar config show|defaults`: the merged configuration and where each value came from."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import ConfigError, defaults_text, load_config
from ..config.loader import DEFAULT_SOURCE
from . import add_profile_only, profile_dir_from


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("config", help="show the merged configuration")
    sub = p.add_subparsers(dest="config_command", required=True)
    show = sub.add_parser("show", help="print every setting with the layer it came from")
    add_profile_only(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument(
        "--changed", action="store_true", help="only settings that differ from the built-in defaults"
    )
    sub.add_parser("defaults", help="print the documented defaults file (a starting point for site config)")
    p.set_defaults(func=run)


def toml_literal(value: object) -> str:
    """A value written as TOML would read it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_literal(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def run(args: argparse.Namespace) -> int:
    if args.config_command == "defaults":
        sys.stdout.write(defaults_text())
        return 0
    try:
        config = load_config(profile_dir=profile_dir_from(args))
    except ConfigError as e:
        print("hpcpar config show: invalid configuration:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    rows = [r for r in config.explain() if not args.changed or r[2] != DEFAULT_SOURCE]
    if args.json:
        print(json.dumps({k: {"value": v, "source": s} for k, v, s in rows}, indent=1))
        return 0
    print(f"# profile {config.profile!r}")
    section = None
    for dotted, value, source in rows:
        sec, _, name = dotted.rpartition(".")
        if sec != section:
            print(f"\n[{sec}]")
            section = sec
        print(f"{name + ' = ' + toml_literal(value):<44} # {source}")
    return 0
