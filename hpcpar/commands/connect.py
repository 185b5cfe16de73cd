"""``hpcpar connect user@login --profile P``: reach a cluster on another host through one SSH tunnel."""

from __future__ import annotations

import argparse

from . import profile_name, seconds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "connect", help="connect to a cluster on another host through one SSH tunnel",
        description="Fetch the cluster's connection file over SSH, forward one local port to its "
        "controller, and keep that tunnel open (writing a local connection file that points at it) "
        "until Ctrl-C; with --check, report and exit.",
    )
    p.add_argument("server", help="SSH server: host, user@host or user@host:port (ssh config aliases work)")
    p.add_argument("--profile", default=None, type=profile_name, help="profile of the cluster on the remote host")
    p.add_argument("--remote-profile-dir", default=None, help="profile directory on the remote host")
    p.add_argument("--cluster-id", default=None, help="cluster id on the remote host")
    p.add_argument("--local-profile", default=None, type=profile_name,
                   help="local profile that gets the tunnelled connection file (default: --profile)")
    p.add_argument("--key", default=None, help="private key file (ssh -i)")
    p.add_argument("--ssh-config", default=None, help="ssh_config file instead of ~/.ssh/config")
    p.add_argument("--paramiko", action="store_true", help="use paramiko instead of the ssh program")
    p.add_argument("--check", action="store_true", help="connect, print the engine count, and exit")
    p.add_argument("--timeout", type=seconds, default=30.0, help="seconds to wait for the controller")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..ssh.cli import connect

    return connect(args)
