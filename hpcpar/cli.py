"""The ``hpcpar`` command. Each subcommand lives in ``hpcpar/commands/<name>.py``
and plugs in by defining ``register(subparsers)``.

Errors: a user's mistake (bad input, a configuration problem, a batch system or SSH
host that refuses) is printed as clear lines naming the problem and the fix; only
hpcpar's own bugs get a traceback, and that says where to report it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback

from . import __version__, commands

ISSUES_URL = "https://github.com/hpcpar/hpcpar/issues"


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
    except BrokenPipeError:  # `hpcpar status | head`: the reader left; nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except CommandError as e:
        print(f"hpcpar {args.command}: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - sorted below into user errors and hpcpar bugs
        return report_exception(args.command, e)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that describe a problem of the input or the environment, in words
    meant for the user: never a traceback for these."""
    from .config import ConfigError
    from .error import HpcparError
    from .launchers.base import LauncherError

    types: list[type[BaseException]] = [ConfigError, LauncherError, HpcparError]
    try:
        from .cluster import ClusterError
    except ImportError:  # pragma: no cover - while the cluster package moves
        pass
    else:
        types.append(ClusterError)
    return tuple(types)


def report_exception(command: str, e: BaseException) -> int:
    """A user error as its message; anything else as a bug of hpcpar, with where to report it."""
    from .config import ConfigError

    if isinstance(e, ConfigError):
        print(f"hpcpar {command}: invalid configuration, nothing was started:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if isinstance(e, user_error_types()):
        print(f"hpcpar {command}: error: {e}", file=sys.stderr)
        return 1
    traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    print(
        f"\nhpcpar {command}: internal error ({type(e).__name__}): this is a bug in hpcpar {__version__}, "
        f"not in what you typed. Please report it at {ISSUES_URL} with the command you ran and "
        "the traceback above.",
        file=sys.stderr,
    )
    return 70  # EX_SOFTWARE


class CommandError(Exception):
    """A user-facing failure: printed as one clear line, exit status 1."""


if __name__ == "__main__":
    sys.exit(main())
