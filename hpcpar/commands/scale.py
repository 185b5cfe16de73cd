"""``hpcpar scale N``: resize a running batch cluster's elastic pool from any shell.

The target goes into the pool state file (``<profile>/run/pool[-ID].json``) and the pool's
manager process (started if none runs) submits or cancels whole jobs to reach it. A cluster
started without a pool gets one, its batch engine jobs adopted as the first blocks.
``--min/--max`` make it adaptive instead; ``--wait`` waits until N engines registered.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from . import add_profile_args, profile_dir_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scale", help="resize a running batch cluster's elastic pool (whole jobs)")
    add_profile_args(p)
    p.add_argument("n", type=int, nargs="?", default=None, help="engines to keep (adaptive scaling off)")
    p.add_argument("--min", type=int, default=None, dest="minimum", help="adaptive: fewest engines")
    p.add_argument("--max", type=int, default=None, dest="maximum", help="adaptive: most engines")
    p.add_argument("--wait", action="store_true", help="wait until N engines registered")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait with --wait (default 300)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..pool import control
    from .which import resolve_cluster_id

    pd = profile_dir_from(args)
    cid = resolve_cluster_id(pd, args.cluster_id, "scale")
    if args.n is None and args.minimum is None and args.maximum is None:
        raise CommandError("give N engines (hpcpar scale 8) or --min/--max for an adaptive pool")
    if args.n is not None:
        state = control.scale(pd, cid, args.n)
        print(f"pool of profile {pd.name!r}: target {state.target} engines in jobs of {state.engines_per_job}; "
              f"the pool manager submits or cancels whole jobs ('hpcpar status --profile {pd.name}' shows it)",
              flush=True)
    else:
        state = control.adapt(pd, cid, args.minimum, args.maximum)
        print(f"pool of profile {pd.name!r}: adaptive between {state.minimum} and {state.maximum} engines", flush=True)
    if args.wait and args.n is not None:
        wait_for_engines(pd, cid, args.n, args.timeout, say=lambda line: print(line, flush=True))
    return 0


def wait_for_engines(pd: Any, cid: str, n: int, timeout: float, say: Any) -> None:
    """Until exactly ``n`` engines are registered (more go when the pool shrinks), showing
    the pool's jobs; raises CommandError naming the pool's failure, or on timeout."""
    from ..cli import CommandError
    from ..client import Client
    from ..pool import control

    deadline = time.monotonic() + timeout
    shown = ""
    with Client(pd.client_file(cid), timeout=30) as rc:
        while True:
            have = len(rc.ids)
            pool = control.describe(pd, cid, registered=have) or {}
            if pool.get("stopped"):
                raise CommandError(f"the pool stopped: {pool['stopped']}")
            line = f"engines registered {have}/{n}; pool: {len(pool.get('jobs', []))} job(s), " \
                   f"{pool.get('queued_jobs', 0)} queued"
            if line != shown:
                say(line)
                shown = line
            if have == n:
                return
            if time.monotonic() > deadline:
                raise CommandError(f"{have} of {n} engines after {timeout:g} s ({pool.get('next_change') or 'waiting'}); "
                                   f"'hpcpar status --profile {pd.name}' shows the pool")
            time.sleep(0.5)
