"""The ``hpcpar`` command. Each subcommand lives in ``hpcpar/commands/<name>.py``
and plugs in by defining ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from . import __version__, commands


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All subcommands, or just ``only``: engines and controllers start faster
    when they do not import every other command's dependencies."""
    parser = argparse.ArgumentParser(prog="hpcpar", description="Interactive parallel Python on HPC clusters.")
    parser.add_argument("--version", action="version", version=f"hpcpar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = sorted(m.name for m in pkgutil.iter_modules(commands.__path__))
    for name in [only] if only in names else names:
        module = importlib.import_module(f"{commands.__name__}.{name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=first)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO") or "INFO",
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CommandError as e:
        print(f"hpcpar {args.command}: error: {e}", file=sys.stderr)
        return 1


class CommandError(Exception):
    """A user-facing failure: printed as one clear line, exit status 1."""


if __name__ == "__main__":
    sys.exit(main())
