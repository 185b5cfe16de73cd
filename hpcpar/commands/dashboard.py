"""``hpcpar dashboard``: a live web page of a running cluster, served on 127.0.0.1.

It runs where you are (a laptop, a login node) as a client of the cluster: directly
from the profile's connection file, or with ``--sshserver`` through one SSH
tunnel, fetching the connection file over that connection as
``Client(sshserver=...)`` does. Needs the extra: ``pip install 'hpcpar[dashboard]'``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dashboard", help="serve a live web dashboard of a running cluster on 127.0.0.1",
        description="Serve a live page of the cluster's engines, jobs, task stream, queue and "
        "failures on http://127.0.0.1:PORT (printed, with its access token) until Ctrl-C.",
    )
    p.add_argument("--profile", default=None, help="profile name (default: 'default'); with --sshserver, "
                   "the profile on the remote host")
    p.add_argument("--profile-dir", default=None, help="profile directory (overrides --profile); with "
                   "--sshserver, a directory on the remote host")
    p.add_argument("--cluster-id", default=None, help="cluster id, to pick one of several clusters of a profile")
    p.add_argument("--sshserver", default=None, metavar="HOST",
                   help="reach the cluster through one SSH connection to HOST (user@host[:port], or an ssh config alias)")
    p.add_argument("--key", default=None, help="private key file for --sshserver (ssh -i)")
    p.add_argument("--ssh-config", default=None, help="ssh_config file instead of ~/.ssh/config")
    p.add_argument("--paramiko", action="store_true", help="use paramiko instead of the ssh program")
    p.add_argument("--remote-python", default=None,
                   help="python with hpcpar on the SSH host, to read batch job states there "
                   "(default: [ssh] python, else python3)")
    p.add_argument("--port", type=int, default=8787, help="local port (default 8787; 0: any free port)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.add_argument("--interval", type=float, default=0.5,
                   help="seconds between updates (default 0.5; at least 0.2)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the controller")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run)


def _remote_python(args: argparse.Namespace) -> str:
    if args.remote_python:
        return args.remote_python
    try:
        from ..config import load_config

        return load_config(args.profile).section("ssh").get("python") or "python3"
    except Exception:  # noqa: BLE001 - no usable local config: the default
        return "python3"


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError

    try:
        from ..dashboard.server import Dashboard, jobs_for
    except ImportError as e:
        raise CommandError(str(e)) from None
    from ..client import Client

    if args.interval < 0.2:
        raise CommandError(f"--interval {args.interval} polls the controller too often; use 0.2 or more")
    if not 0 <= args.port < 65536:
        raise CommandError(f"--port {args.port} is not a port number (0-65535; 0 picks a free one)")
    kwargs: dict = {"profile": args.profile, "profile_dir": args.profile_dir, "cluster_id": args.cluster_id,
                    "timeout": args.timeout}
    if args.sshserver:
        kwargs.update(sshserver=args.sshserver, sshkey=args.key)
        if args.ssh_config:
            kwargs["ssh_config"] = args.ssh_config
        if args.paramiko:
            kwargs["paramiko"] = True
    elif args.key or args.ssh_config or args.paramiko:
        raise CommandError("--key, --ssh-config and --paramiko go with --sshserver HOST")
    try:
        rc = Client(**kwargs)
    except (OSError, ValueError, TimeoutError) as e:
        raise CommandError(f"cannot reach the cluster: {e}") from None
    info = rc._info
    title = info.profile + (f" ({info.cluster_id})" if info.cluster_id else "")
    if args.sshserver:
        title += f" via {args.sshserver}"
    dash = Dashboard(rc, port=args.port, interval=args.interval, jobs=jobs_for(rc, _remote_python(args)),
                     title=title, own_client=True)

    def ready(url: str) -> None:
        print(f"hpcpar dashboard of {title}: {url}", flush=True)
        print("(serving on 127.0.0.1 only; Ctrl-C stops it)", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(url)

    try:
        dash.run(on_ready=ready)
    except OSError as e:
        raise CommandError(str(e)) from None
    if dash._error is not None:
        raise CommandError(str(dash._error))
    return 0

