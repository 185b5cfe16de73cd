"""``hpcpar engines -n 16``: add engines to a running cluster.

The new engine set uses the cluster's engine launcher and the settings it was started
with (from its state file), unless flags here say otherwise (``--engines slurm --queue
long``). Batch jobs go into the same job ledger, so ``hpcpar stop`` cancels them too.
"""

from __future__ import annotations

import argparse
import sys

from . import add_profile_args, count, profile_dir_from, seconds


def register(sub: argparse._SubParsersAction) -> None:
    from .render import add_config_args

    p = sub.add_parser("engines", help="add engines to a running cluster")
    add_profile_args(p)
    p.add_argument("-n", "--n", type=count(1, "-n"), required=True, help="number of engines to add")
    add_config_args(p)
    p.add_argument("--no-wait", action="store_true",
                   help="return once the engines are started / their jobs submitted and recorded")
    p.add_argument("--timeout", type=seconds, default=120.0,
                   help="seconds to wait for the new engines (time batch jobs spend queued does not count)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..cluster import Cluster, ClusterError
    from ..config import ConfigError
    from ..launchers import LauncherError
    from .render import cli_overrides
    from .start import config_problem
    from .which import resolve_cluster_id

    pd = profile_dir_from(args)
    cid = resolve_cluster_id(pd, args.cluster_id, "engines")
    path = pd.state_file(cid)
    if not path.exists():
        raise CommandError(
            f"no running cluster in profile {pd.name!r}"
            + (f" with cluster id {cid!r}" if cid else "")
            + "; start one with 'hpcpar start' ('hpcpar list' shows running clusters)"
        )
    try:
        cluster = Cluster.from_file(path)
        if not cluster.is_running():
            raise CommandError(f"the controller of the cluster in {path} is not running; "
                               "'hpcpar start --restore' restarts it, 'hpcpar stop' cleans up")
        overrides = cli_overrides(args)
        overrides.pop("cluster.n", None)
        cluster.overrides.update({k: v for k, v in overrides.items() if v is not None})
        cluster._config = None  # reload with these flags on top of the cluster's own
        if "cluster.engines" in cluster.overrides:
            cluster.engine_launcher = cluster.overrides["cluster.engines"]
        else:
            cluster.engine_launcher = cluster.config["cluster.engines"] if not cluster.engine_sets \
                else cluster.engine_sets[0].name
        from ..launchers.build import check_network

        check_network(_with_engines(cluster))
        cluster.progress = lambda line: print(line, flush=True)
        before = len(cluster.connect_client_sync().ids)
        launcher = cluster.add_engines_sync(args.n)
    except ConfigError as e:
        return config_problem("engines", e)
    except (ClusterError, LauncherError) as e:
        raise CommandError(str(e)) from None
    if args.no_wait:
        ids = getattr(launcher, "job_ids", [])
        print(f"{args.n} engines starting" + (f" (jobs {', '.join(ids)} recorded)" if ids else ""), flush=True)
        cluster._close_client()
        return 0
    try:
        rc = cluster.wait_for_engines_sync(before + args.n, timeout=args.timeout)
        print(f"{args.n} engines added: {len(rc.ids)} engines in the cluster", flush=True)
    except (TimeoutError, ClusterError, LauncherError) as e:
        raise CommandError(f"{e}; the engines keep starting ('hpcpar stop' stops the cluster)") from None
    except KeyboardInterrupt:
        print("interrupted; the new engines keep starting", file=sys.stderr)
        return 130
    finally:
        cluster._close_client()
    return 0


def _with_engines(cluster):
    """The cluster's config with cluster.engines set to the launcher about to be used."""
    config = cluster.config
    if config["cluster.engines"] == cluster.engine_launcher:
        return config
    from dataclasses import replace

    return replace(config, values={**config.values, "cluster.engines": cluster.engine_launcher})
