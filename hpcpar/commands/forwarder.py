"""``hpcpar forwarder``: relay engines to the controller, one broadcast copy per forwarder."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import add_profile_args, profile_dir_from


def forwarder_file(profile_dir, cluster_id: str, name: str) -> Path:
    """Where forwarder ``name`` writes the engine connection file its engines use."""
    suffix = f"-{cluster_id}" if cluster_id else ""
    return profile_dir.security / f"hpcpar{suffix}-forwarder-{name}.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forwarder", help="relay engines to the controller (one per node; see docs/site-admin.md)")
    add_profile_args(p)
    p.add_argument("--name", default=None, help="forwarder name (default: the host name); names its connection file")
    p.add_argument("--file", default=None,
                   help="upstream engine connection file: the controller's (default) or another forwarder's")
    p.add_argument("--from-env", action="store_true",
                   help="take the upstream engine connection info from $HPCPAR_CONNECTION_INFO (batch job scripts)")
    p.add_argument("--upstream", default=None, metavar="NAME",
                   help="sit below the forwarder with this name (its file in the profile), making a tree")
    p.add_argument("--write", default=None,
                   help="where to write the engine connection file for engines below this forwarder "
                   "(default: <profile>/security/hpcpar[-ID]-forwarder-NAME.json)")
    p.add_argument("--ip", default="127.0.0.1", help="address engines connect to ('*' for all interfaces)")
    p.add_argument("--port", type=int, default=0, help="port engines connect to (default: any free port)")
    p.add_argument("--wait-for-file", type=float, default=30.0, help="seconds to wait for the upstream file")
    p.add_argument("--controller-timeout", type=float, default=60.0,
                   help="exit when the controller has been silent this many seconds")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import socket
    import time

    from ..cli import CommandError
    from ..connection import CONNECTION_ENV, ConnectionFileError, ConnectionInfo
    from ..forwarding.forwarder import run_forwarder

    if sum(map(bool, (args.file, args.upstream, args.from_env))) > 1:
        raise CommandError("give one of --file, --upstream and --from-env")
    if args.controller_timeout < 10:
        raise CommandError("--controller-timeout must be at least 10 s: the controller answers every few seconds")
    pd = profile_dir_from(args)
    name = args.name or socket.gethostname()
    if "/" in name or not name:
        raise CommandError(f"--name {name!r} must be a non-empty name without '/'")
    if args.upstream:
        source = forwarder_file(pd, args.cluster_id, args.upstream)
    else:
        source = Path(args.file) if args.file else pd.engine_file(args.cluster_id)
    deadline = time.monotonic() + args.wait_for_file
    while not args.from_env and not source.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        env_info = ConnectionInfo.from_env() if args.from_env else None
        if args.from_env and env_info is None:
            raise CommandError(f"--from-env: ${CONNECTION_ENV} is not set; give --file or the profile instead")
        upstream = env_info or ConnectionInfo.load(source)
    except ConnectionFileError as e:
        raise CommandError(str(e)) from None
    if upstream.role != "engine":
        raise CommandError(f"{source} is a {upstream.role} connection file; a forwarder needs the engine file "
                           f"({pd.engine_file(args.cluster_id)})")
    target = Path(args.write) if args.write else forwarder_file(pd, args.cluster_id, name)
    if not args.from_env and target.resolve() == source.resolve():
        raise CommandError(f"--write {target} would overwrite the upstream connection file")
    target.parent.mkdir(parents=True, exist_ok=True)
    return run_forwarder(upstream, target, args.ip, args.port, args.controller_timeout, name)
