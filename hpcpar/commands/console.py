"""``hpcpar console ENGINE_ID``: a Jupyter console on one engine's namespace (bind_kernel),
through the client's SSH tunnel when ``--sshserver`` is given."""

from __future__ import annotations

import argparse

from . import add_profile_only, seconds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "console", help="attach a Jupyter console to one engine (its live namespace)",
        description="Bind the engine's Jupyter kernel (hpcpar.bind_kernel), forward its ports over the "
        "client's SSH connection when --sshserver is given, and run 'jupyter console --existing' on it. "
        "The console's 'exit' stops the kernel (the engine goes on); 'quit(keep_kernel=True)' detaches.",
    )
    p.add_argument("engine_id", type=int, help="the engine to attach to (rc.ids)")
    add_profile_only(p, help="the cluster's profile")
    p.add_argument("--cluster-id", default=None, help="the cluster id")
    p.add_argument("--sshserver", default=None, help="reach the cluster through this SSH server (user@login)")
    p.add_argument("--ssh-config", default=None, help="ssh_config file instead of ~/.ssh/config")
    p.add_argument("--key", default=None, help="private key file (ssh -i)")
    p.add_argument("--ip", default="127.0.0.1",
                   help="address the engine's kernel listens on (one the SSH server reaches; default 127.0.0.1)")
    p.add_argument("--allow-clear", action="store_true",
                   help="let the kernel listen beyond loopback in a curve cluster (its traffic is not encrypted)")
    p.add_argument("--timeout", type=seconds, default=30.0, help="seconds to wait for the controller")
    p.add_argument("--console-args", default="",
                   help="arguments for jupyter console, as one string (--console-args='--simple-prompt')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os
    import shlex
    import shutil
    import subprocess
    import sys

    import hpcpar

    from ..cli import CommandError

    jupyter = shutil.which("jupyter", path=os.path.dirname(sys.executable)) or shutil.which("jupyter")
    if jupyter is None:
        print("hpcpar console needs jupyter console here: pip install jupyter-console", file=sys.stderr)
        return 2
    kwargs = {"profile": args.profile, "profile_dir": args.profile_dir, "cluster_id": args.cluster_id,
              "timeout": args.timeout}
    if args.sshserver:
        kwargs.update(sshserver=args.sshserver, sshkey=args.key, ssh_config=args.ssh_config)
    extra = shlex.split(args.console_args)
    from ..connection import ConnectionFileError
    from ..ssh import SSHError

    try:
        rc = hpcpar.Client(**{k: v for k, v in kwargs.items() if v is not None})
    except (ConnectionFileError, SSHError, TimeoutError, OSError) as e:
        raise CommandError(str(e)) from None
    with rc:
        try:
            path = rc.kernel_connection_file(args.engine_id, ip=args.ip, allow_clear=args.allow_clear)
        except (ValueError, RuntimeError) as e:
            raise CommandError(str(e)) from None
        try:
            return subprocess.call([jupyter, "console", "--existing", path, *extra])
        finally:
            if rc._tunnel is not None:  # the local copy points at forwards that close now
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
