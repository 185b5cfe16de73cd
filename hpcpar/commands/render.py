"""`hpcpar render`: print every script `hpcpar start` would submit; submit nothing."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, load_config
from ..launchers.base import LauncherError
from ..launchers.build import render_cluster
from . import add_profile_only, count, profile_dir_from


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="print the job scripts `start` would submit, submit nothing")
    add_profile_only(p)
    p.add_argument("--cluster-id", default="", help="cluster id, to run several clusters in one profile")
    p.add_argument("-n", "--n", type=count(0, "-n"), default=None, help="number of engines")
    add_config_args(p)
    p.set_defaults(func=run)


def add_config_args(p: argparse.ArgumentParser) -> None:
    """The launcher flags `hpcpar start` and `hpcpar render` share (all default to None,
    meaning "not given": the config layers decide). Read them back with cli_overrides()."""
    p.add_argument("--engines", default=None, help="engine launcher (slurm, pbs, sge, ...)")
    p.add_argument("--controller", default=None, help="controller launcher (local or a batch system)")
    p.add_argument("--queue", default=None)
    p.add_argument("--walltime", default=None, help="HH:MM:SS")
    p.add_argument("--account", default=None)
    p.add_argument("--ip", default=None, help="controller listen address")
    p.add_argument("--mode", default=None, choices=["array", "mpi", "jobs"])
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="any setting by dotted key, e.g. --set batch.memory=4G (value read as TOML, else text)",
    )


def cli_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The flags shared with `hpcpar start`, as dotted config keys."""
    from ..config import toml as tomllib

    overrides: dict[str, object] = {
        "cluster.n": getattr(args, "n", None),
        "cluster.engines": args.engines,
        "cluster.controller": args.controller,
        "batch.queue": args.queue,
        "batch.walltime": args.walltime,
        "batch.account": args.account,
        "controller.ip": args.ip,
        "batch.mode": getattr(args, "mode", None),
    }
    for item in getattr(args, "set", []):
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError([f"--set {item!r}: write it as KEY=VALUE, e.g. --set batch.memory=4G"])
        try:
            overrides[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            overrides[key.strip()] = text
    return overrides


def run(args: argparse.Namespace) -> int:
    try:
        pd = profile_dir_from(args)
        config = load_config(overrides=cli_overrides(args), profile_dir=pd)
        jobs = render_cluster(config, pd, args.cluster_id or config["cluster.cluster_id"])
    except ConfigError as e:
        print("hpcpar render: invalid configuration:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except (LauncherError, ValueError, FileNotFoundError) as e:
        print(f"hpcpar render: {e}", file=sys.stderr)
        return 1
    if not jobs:
        print(
            f"# nothing to submit: controller {config['cluster.controller']!r} and engines "
            f"{config['cluster.engines']!r} are not batch launchers",
        )
        return 0
    for job in jobs:
        copies = f", submitted {job.copies} times" if job.copies > 1 else ""
        for name, text in job.files.items():
            marker = " (submitted)" if name == job.submit_file else ""
            print(f"# ===== {job.role}: {name} [{job.launcher}]{marker}{copies}")
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0
