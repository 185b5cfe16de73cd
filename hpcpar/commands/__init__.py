"""Subcommands of ``hpcpar``; each module defines ``register(subparsers)``.

Options shared by several subcommands are defined once here so that they mean the
same everywhere (``--profile``, ``--profile-dir``, ``--cluster-id``, ``--log-level``),
and their values are checked as argparse reads them.
"""

from __future__ import annotations

import argparse
import math


def profile_name(text: str) -> str:
    """argparse type for --profile: a valid, non-empty profile name."""
    from ..paths import check_profile_name

    if not text.strip():
        raise argparse.ArgumentTypeError(
            "an empty profile name; leave --profile out for the default profile, or name one (--profile pbs)")
    try:
        return check_profile_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def non_empty(what: str):
    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"an empty {what}; leave the option out or give one")
        return text

    return check


def seconds(text: str) -> float:
    """argparse type for timeouts: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def count(least: int, what: str = "a number"):
    """argparse type for counts: an integer of at least ``least``."""

    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{what} must be at least {least}, not {value}")
        return value

    return check


def bind_address(text: str) -> str:
    """argparse type for --ip: '*', an IP address, a host or an interface name."""
    from ..config.validate import bind_address as check

    try:
        check(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def scheme(text: str) -> str:
    """argparse type for --scheme: a load-balancing scheme, with a did-you-mean."""
    import difflib

    from ..controller.scheduler import SCHEMES

    if text in SCHEMES:
        return text
    close = difflib.get_close_matches(text, list(SCHEMES), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise argparse.ArgumentTypeError(f"unknown scheme {text!r}{hint} (choose from {', '.join(SCHEMES)})")


def add_profile_only(p: argparse.ArgumentParser, help: str = "profile name (default: 'default')") -> None:
    p.add_argument("--profile", default=None, type=profile_name, help=help)
    p.add_argument("--profile-dir", default=None, type=non_empty("--profile-dir"),
                   help="profile directory (overrides --profile)")


def add_profile_args(p: argparse.ArgumentParser) -> None:
    add_profile_only(p)
    p.add_argument("--cluster-id", default="", help="cluster id, to run several clusters in one profile")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def profile_dir_from(args: argparse.Namespace):
    from pathlib import Path

    from ..paths import ProfileDir

    if getattr(args, "profile_dir", None):
        return ProfileDir(Path(args.profile_dir).expanduser())
    return ProfileDir.for_profile(getattr(args, "profile", None))
