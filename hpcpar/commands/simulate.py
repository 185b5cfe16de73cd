"""``hpcpar simulate``: many simulated engines in one process, for scale tests."""

from __future__ import annotations

import argparse

from . import add_profile_args, profile_dir_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run N simulated engines (scale testing; they run no code)")
    add_profile_args(p)
    p.add_argument("-n", type=int, required=True, help="number of simulated engines")
    p.add_argument("--file", action="append", default=None,
                   help="engine connection file (default: the profile's); repeat to deal the engines "
                   "over several (e.g. forwarders' files)")
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until killed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..connection import ConnectionFileError, ConnectionInfo
    from ..engine.simulated import SimulatedEngines

    pd = profile_dir_from(args)
    try:
        infos = [ConnectionInfo.load(f) for f in args.file or [pd.engine_file(args.cluster_id)]]
    except ConnectionFileError as e:
        raise CommandError(str(e)) from None
    if args.n < 1:
        raise CommandError("-n must be at least 1")
    if len({i.key for i in infos}) > 1:
        raise CommandError("the --file connection files belong to different clusters (different keys)")
    sims = SimulatedEngines(infos[0], args.n, urls=[i.urls[0] for i in infos])
    sims.register_all()
    try:
        sims.run(args.duration)
    finally:
        sims.close()
    return 0
