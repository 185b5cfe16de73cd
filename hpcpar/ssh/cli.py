"""The shell side of SSH: ``hpcpar connect``, ``hpcpar start --on`` and ``hpcpar stop --on``."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from typing import Any

from .errors import SSHError
from .target import SSHOptions


def add_ssh_args(p: argparse.ArgumentParser) -> None:
    """SSH connection options shared by connect, start --on and stop --on."""
    p.add_argument("--key", default=None, help="private key file (ssh -i)")
    p.add_argument("--ssh-config", default=None, help="ssh_config file instead of ~/.ssh/config")
    p.add_argument("--paramiko", action="store_true", help="use paramiko instead of the ssh program")
    p.add_argument("--remote-python", default=None,
                   help="python with hpcpar on the remote host (default: [ssh] python, else python3)")


def options_from(args: argparse.Namespace) -> SSHOptions:
    from .client import ssh_options_from_config

    return ssh_options_from_config(
        getattr(args, "profile", None), key=args.key, config=args.ssh_config,
        paramiko=True if args.paramiko else None,
    )


def _remote_hpcpar(args: argparse.Namespace) -> list[str]:
    python = args.remote_python
    if not python:
        try:
            from ..config import load_config

            python = load_config(getattr(args, "profile", None)).section("ssh").get("python") or ""
        except Exception:
            python = ""
    return [python or "python3", "-m", "hpcpar"]


def _profile_flags(args: argparse.Namespace) -> list[str]:
    flags = []
    if getattr(args, "profile_dir", None):
        flags += ["--profile-dir", args.profile_dir]
    elif getattr(args, "profile", None):
        flags += ["--profile", args.profile]
    if getattr(args, "cluster_id", ""):
        flags += ["--cluster-id", args.cluster_id]
    return flags


def _open(args: argparse.Namespace):
    from .session import make_session

    session = make_session(args.on, options_from(args))
    session.open()
    return session


def start_on(args: argparse.Namespace) -> int:
    """Run ``hpcpar start --daemonize`` on the remote host, then wait for the engines
    through one tunnel, over the same SSH connection."""
    from ..cli import CommandError
    from ..client import Client
    from .tunnel import open_client_tunnel

    remote = _remote_hpcpar(args) + ["start", *_profile_flags(args), "--daemonize"]
    for flag, value in (("-n", args.n), ("--engines", args.engines), ("--controller", args.controller),
                        ("--ip", args.ip), ("--scheme", args.scheme), ("--hwm", getattr(args, "hwm", None)),
                        ("--db", getattr(args, "db", None)), ("--queue", getattr(args, "queue", None)),
                        ("--walltime", getattr(args, "walltime", None)),
                        ("--account", getattr(args, "account", None)), ("--mode", getattr(args, "mode", None))):
        if value is not None and not (flag in ("--engines", "--controller") and value == "local"):
            remote += [flag, str(value)]
    for item in getattr(args, "set", None) or []:  # every other setting travels as --set KEY=VALUE
        remote += ["--set", item]
    try:
        session = _open(args)
    except SSHError as e:
        raise CommandError(str(e)) from None
    try:
        print(f"on {args.on}: {shlex.join(remote)}", flush=True)
        r = session.run(shlex.join(remote), timeout=max(60.0, args.timeout))
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        if r.rc != 0:
            session.close()
            return r.rc or 1
        info, source, tunnel = open_client_tunnel(
            args.on, profile=args.profile, profile_dir=args.profile_dir,
            cluster_id=args.cluster_id or None, timeout=30.0, session=session,
        )
    except SSHError as e:
        session.close()
        raise CommandError(str(e)) from None
    try:
        rc = Client(info.__dict__, timeout=30)
    except BaseException:
        tunnel.close()
        raise
    rc._tunnel, rc._source = tunnel, source  # closed with the client
    try:
        n = args.n if args.n is not None else 0
        if n:
            rc.wait_for_engines(n, timeout=args.timeout)
        print(f"cluster ready on {args.on}: {len(rc.ids)} engines. Connect with "
              f"hpcpar.Client({_client_args(args)}sshserver={args.on!r}{_client_ssh_args(args)}); "
              f"stop with '{stop_command(args)}'", flush=True)
    except TimeoutError as e:
        raise CommandError(f"{e}; the cluster keeps starting on {args.on} ('{stop_command(args)}' stops it)") from None
    finally:
        rc.close()
    return 0


def _ssh_flags(args: argparse.Namespace) -> list[str]:
    """The SSH options the user passed, to repeat in commands we print for them to paste."""
    flags = []
    if getattr(args, "ssh_config", None):
        flags += ["--ssh-config", args.ssh_config]
    if getattr(args, "key", None):
        flags += ["--key", args.key]
    if getattr(args, "paramiko", False):
        flags.append("--paramiko")
    if getattr(args, "remote_python", None):
        flags += ["--remote-python", args.remote_python]
    return flags


def stop_command(args: argparse.Namespace) -> str:
    """``hpcpar stop --on HOST ...`` with the profile and SSH options of this start: works pasted."""
    return shlex.join(["hpcpar", "stop", "--on", args.on, *_profile_flags(args), *_ssh_flags(args)])


def _client_ssh_args(args: argparse.Namespace) -> str:
    out = ""
    if getattr(args, "ssh_config", None):
        out += f", ssh_config={args.ssh_config!r}"
    if getattr(args, "key", None):
        out += f", sshkey={args.key!r}"
    if getattr(args, "paramiko", False):
        out += ", paramiko=True"
    return out


def _client_args(args: argparse.Namespace) -> str:
    out = ""
    if getattr(args, "profile_dir", None):
        out += f"profile_dir={args.profile_dir!r}, "
    elif getattr(args, "profile", None):
        out += f"profile={args.profile!r}, "
    if getattr(args, "cluster_id", ""):
        out += f"cluster_id={args.cluster_id!r}, "
    return out


def stop_on(args: argparse.Namespace) -> int:
    """``hpcpar stop`` on the remote host: its engines, batch jobs and controller."""
    from ..cli import CommandError

    remote = _remote_hpcpar(args) + ["stop", *_profile_flags(args)]
    if getattr(args, "all", False):
        remote.append("--all")
    try:
        session = _open(args)
        try:
            r = session.run(shlex.join(remote), timeout=300)
        finally:
            session.close()
    except SSHError as e:
        raise CommandError(str(e)) from None
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r.rc


def connect(args: argparse.Namespace) -> int:
    """Open the tunnel, report the cluster; keep the tunnel (and a local connection
    file that points at it) until Ctrl-C, unless --check."""
    from ..cli import CommandError
    from ..client import Client
    from ..paths import ProfileDir

    kwargs: dict[str, Any] = dict(profile=args.profile, profile_dir=args.remote_profile_dir,
                                  cluster_id=args.cluster_id, sshserver=args.server, sshkey=args.key,
                                  ssh_config=args.ssh_config, timeout=args.timeout)
    if args.paramiko:
        kwargs["paramiko"] = True
    try:
        rc = Client(**kwargs)
    except (SSHError, TimeoutError, ValueError) as e:
        raise CommandError(str(e)) from None
    tunnel = rc._tunnel
    print(f"connected to {rc._source} through {args.server} "
          f"(127.0.0.1:{tunnel.local_port} -> {tunnel.remote[0]}:{tunnel.remote[1]}, one ssh connection): "
          f"{len(rc.ids)} engines", flush=True)
    if args.check:
        rc.close()
        return 0
    local = ProfileDir.for_profile(args.local_profile or args.profile).create()
    path = local.client_file(args.cluster_id or "")
    if path.exists() and local.state_file(args.cluster_id or "").exists():
        rc.close()
        raise CommandError(
            f"profile {local.name!r} has a local cluster ({path}); use --local-profile NAME to write "
            "the tunnelled connection file elsewhere"
        )
    rc._info.write(path)
    print(f"wrote {path}: hpcpar.Client(profile={local.name!r}) here now goes through the tunnel; "
          "Ctrl-C closes it", flush=True)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop["now"]:
            if not tunnel.alive():
                print(f"the SSH connection to {args.server} ended", file=sys.stderr)
                return 1
            time.sleep(0.5)
    finally:
        path.unlink(missing_ok=True)
        rc.close()
    return 0
