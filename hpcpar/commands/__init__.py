"""Subcommands of ``hpcpar``; each module defines ``register(subparsers)``."""

from __future__ import annotations

import argparse


def add_profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=None, help="profile name (default: 'default')")
    p.add_argument("--profile-dir", default=None, help="profile directory (overrides --profile)")
    p.add_argument("--cluster-id", default="", help="cluster id, to run several clusters in one profile")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def profile_dir_from(args: argparse.Namespace):
    from pathlib import Path

    from ..paths import ProfileDir

    if args.profile_dir:
        return ProfileDir(Path(args.profile_dir).expanduser())
    return ProfileDir.for_profile(args.profile)
