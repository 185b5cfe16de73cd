"""`hpcpar profile create|list`: make and list profiles."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, display_path, load_config
from ..config.profile import create_profile
from ..launchers.base import LauncherError, get_launcher_class
from ..paths import ProfileDir, all_profiles
from . import profile_name


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("profile", help="create or list profiles")
    sub = p.add_subparsers(dest="profile_command", required=True)
    create = sub.add_parser("create", help="create ~/.hpcpar/profile_NAME with a documented config.toml")
    create.add_argument("name", type=profile_name)
    create.add_argument("--launcher", help="engine launcher for this profile (slurm, pbs, sge, ...)")
    create.add_argument("--force", action="store_true", help="replace an existing config.toml")
    sub.add_parser("list", help="list the profiles of this user and of the site")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.profile_command == "create":
        if args.launcher:
            try:
                get_launcher_class(args.launcher)
            except LauncherError as e:
                print(f"hpcpar profile create: {e}", file=sys.stderr)
                return 2
        try:
            path = create_profile(args.name, args.launcher, force=args.force)
        except (FileExistsError, ValueError) as e:
            print(f"hpcpar profile create: {e}", file=sys.stderr)
            return 1
        print(f"created {display_path(path)}")
        return _check_created(args.name)
    mine = [pd.name for pd in all_profiles()]
    try:
        site = load_config().site_profiles
    except ConfigError as e:
        print(f"hpcpar profile list: invalid configuration:\n{e}", file=sys.stderr)
        return 1
    for name in sorted(set(mine) | set(site)):
        where = ", ".join(w for w, present in (("user", name in mine), ("site", name in site)) if present)
        print(f"{name}\t{where}")
    return 0


def _check_created(name: str) -> int:
    """Load and render the new profile as `hpcpar start` would: it must start as written."""
    from ..launchers.build import render_cluster

    try:
        config = load_config(name)
        jobs = render_cluster(config, ProfileDir.for_profile(name))
    except (ConfigError, LauncherError, ValueError) as e:
        problems = getattr(e, "problems", [str(e)])
        print("hpcpar profile create: the new profile does not check out:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    what = f"renders {len(jobs)} job script(s)" if jobs else "starts local processes"
    print(f"checked: the configuration is valid and {what}; review the REQUIRED lines, then "
          f"'hpcpar start --profile {name}' (or 'hpcpar render --profile {name}' to see the scripts)")
    return 0
