"""``hpcpar doctor``: check, from a login node, what `hpcpar start` relies on, and say how to fix it."""

from __future__ import annotations

import argparse
import sys

from . import add_profile_only, bind_address, profile_dir_from, seconds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the scheduler, a test job on a compute node, the network, MPI, "
                       "SSH and file permissions; exit 1 when something would stop 'hpcpar start'")
    add_profile_only(p)
    p.add_argument("--cluster-id", default="", help="cluster id: its running controller's ports are tested too")
    p.add_argument("--engines", default=None, metavar="SYSTEM",
                   help="batch system to check and submit the test job to (default: [cluster] engines)")
    p.add_argument("--queue", default=None, help="queue / partition for the test job")
    p.add_argument("--ip", default=None, type=bind_address,
                   help="controller listen address to check (default: [controller] ip)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any setting by dotted key, as for 'hpcpar start'")
    p.add_argument("--on", default=None, metavar="USER@HOST",
                   help="also check the SSH host 'hpcpar start --on' would use")
    p.add_argument("--timeout", type=seconds, default=120.0,
                   help="seconds the test job may wait in the queue before it is cancelled (default 120)")
    p.add_argument("--no-job", action="store_true", help="do not submit the test job")
    p.add_argument("--no-mpi", action="store_true", help="do not start the 2-rank MPI test")
    p.add_argument("--json", action="store_true", help="print the checks as JSON (for scripts)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..doctor import DoctorOptions, run_doctor
    from .render import cli_overrides

    args.controller = args.walltime = args.account = None
    overrides = {k: v for k, v in cli_overrides(args).items() if v is not None}
    options = DoctorOptions(profile_dir_from(args), overrides, args.timeout, args.on,
                            job=not args.no_job, mpi=not args.no_mpi, cluster_id=args.cluster_id)
    report = run_doctor(options, _say)
    print(report.to_json() if args.json else report.table(), flush=True)
    return report.exit_code()


def _say(line: str) -> None:
    """Progress goes to stderr: stdout stays the table (or the JSON) alone."""
    print(line, file=sys.stderr, flush=True)
