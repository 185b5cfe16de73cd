"""Open an engine's bound kernel in JupyterLab: a kernelspec whose kernel relays to it.

A Jupyter server (JupyterLab, Notebook, VS Code's Jupyter) only talks to kernels
it starts itself: it picks the ports, writes a connection file and runs a
kernelspec's command. ``python -m hpcpar.engine.kernel_proxy install FILE``
installs a kernelspec whose command is this relay; when the server starts it,
the relay binds the server's ports and passes every message to and from the
engine's kernel (``FILE``, what ``bind_kernel()`` returned), signed with the
key of the side it goes to. A notebook on that kernel is the engine's
namespace, and JupyterLab's debugger panel works on it.

- Interrupt goes as a message (the kernelspec says so), so it reaches the
  engine rather than this relay.
- Shutdown from the notebook unbinds the engine's kernel and ends the relay;
  restart only restarts the relay (an engine cannot be restarted from here),
  which attaches again to the still-bound kernel.
- The relay ends when the engine's kernel stops answering heartbeats, so the
  server shows the kernel as dead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any

import zmq

REQUESTS = ("shell", "control", "stdin")  # the frontend asks on these, the kernel answers
HB_EVERY, HB_DEAD = 3.0, 15.0  # seconds: ping the engine's kernel; give up after this silence


def _url(info: dict, channel: str) -> str:
    if info.get("transport", "tcp") != "tcp":
        raise ValueError(f"only tcp kernels can be relayed, not {info.get('transport')!r}")
    return f"tcp://{info['ip']}:{info[channel + '_port']}"


def _session(info: dict) -> Any:
    from jupyter_client.session import Session

    return Session(key=info["key"].encode(), signature_scheme=info.get("signature_scheme", "hmac-sha256"),
                   username="hpcpar-relay")


class Relay:
    """Frontend-side sockets bound on the server's ports, kernel-side ones connected to the engine."""

    def __init__(self, existing: dict, mine: dict) -> None:
        self.ctx = zmq.Context()
        self.front_session, self.back_session = _session(mine), _session(existing)
        self.existing = existing
        self.front: dict[str, zmq.Socket] = {}
        self.back: dict[str, zmq.Socket] = {}
        identity = uuid.uuid4().hex.encode()  # shell and stdin share it, as the protocol requires
        for channel in REQUESTS:
            self.front[channel] = self._socket(zmq.ROUTER, bind=_url(mine, channel))
            self.back[channel] = self._socket(zmq.DEALER, identity=identity, connect=_url(existing, channel))
        self.front["iopub"] = self._socket(zmq.PUB, bind=_url(mine, "iopub"))
        self.back["iopub"] = self._socket(zmq.SUB, connect=_url(existing, "iopub"))
        self.back["iopub"].setsockopt(zmq.SUBSCRIBE, b"")
        self.front["hb"] = self._socket(zmq.REP, bind=_url(mine, "hb"))
        self.hb: zmq.Socket | None = None
        self.routes: dict[str, list[bytes]] = {}  # request msg_id -> the frontend's routing identities
        self.done = False

    def _socket(self, kind: int, bind: str = "", connect: str = "", identity: bytes = b"") -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 1000)
        if identity:
            sock.setsockopt(zmq.IDENTITY, identity)
        if bind:
            sock.bind(bind)
        else:
            sock.connect(connect)
        return sock

    def _ping(self) -> None:
        if self.hb is not None:
            self.hb.close(linger=0)
        self.hb = self._socket(zmq.REQ, connect=_url(self.existing, "hb"))
        self.hb.send(b"ping")

    def run(self) -> int:
        poller = zmq.Poller()
        for sock in (*self.front.values(), *self.back.values()):
            poller.register(sock, zmq.POLLIN)
        self._ping()
        heard, pinged = time.monotonic(), time.monotonic()
        while not self.done:
            now = time.monotonic()
            if now - heard > HB_DEAD:
                print(f"hpcpar kernel relay: the engine's kernel has not answered for {HB_DEAD:.0f} s; leaving",
                      file=sys.stderr)
                return 1
            if now - pinged > HB_EVERY:
                poller.unregister(self.hb)
                self._ping()
                poller.register(self.hb, zmq.POLLIN)
                pinged = now
            for sock, _ in poller.poll(500):
                if sock is self.hb:
                    sock.recv()
                    heard = time.monotonic()
                elif sock is self.front["hb"]:
                    sock.send(sock.recv())
                else:
                    self._relay(sock)
        return 0

    def _relay(self, sock: zmq.Socket) -> None:
        channel = next(name for name, s in self.front.items() if s is sock) if sock in self.front.values() else None
        if channel is not None:
            idents, msg = self._recv(self.front_session, sock)
            if msg is None:
                return
            if channel != "stdin":
                self.routes[msg["header"]["msg_id"]] = idents
            if msg["header"]["msg_type"] == "shutdown_request" and self._restart(msg):
                self.front_session.send(sock, "shutdown_reply", {"status": "ok", "restart": True}, parent=msg,
                                        ident=idents)
                self.done = True  # the server starts the relay again; the engine stays bound
                return
            self.back_session.send(self.back[channel], msg)
            return
        channel = next(name for name, s in self.back.items() if s is sock)
        idents, msg = self._recv(self.back_session, sock)
        if msg is None:
            return
        if channel == "iopub":
            self.front_session.send(self.front["iopub"], msg, ident=idents)
            return
        parent = msg["parent_header"].get("msg_id", "")
        route = self.routes.get(parent) if channel == "stdin" else self.routes.pop(parent, None)
        if route is None:
            return  # an answer to nobody (a request from before a restart)
        self.front_session.send(self.front[channel], msg, ident=route)
        if msg["header"]["msg_type"] == "shutdown_reply":
            self.done = True  # the engine unbound its kernel; the server sees this "kernel" exit

    @staticmethod
    def _restart(msg: dict) -> bool:
        try:
            return bool(json.loads(msg["content"]).get("restart"))
        except (TypeError, ValueError, AttributeError):
            return False

    @staticmethod
    def _recv(session: Any, sock: zmq.Socket) -> tuple[list[bytes], dict | None]:
        frames = sock.recv_multipart()
        try:
            idents, parts = session.feed_identities(frames)
            return idents, session.deserialize(parts, content=False)
        except (ValueError, TypeError, IndexError) as e:
            print(f"hpcpar kernel relay: dropped a message that does not verify: {e}", file=sys.stderr)
            return [], None

    def close(self) -> None:
        time.sleep(0.2)  # the last reply leaves before the sockets close (they linger a second)
        self.ctx.destroy(linger=1000)


def run(existing_file: str, connection_file: str) -> int:
    """The kernelspec's command: relay between the server's ports and the engine's kernel."""
    with open(existing_file) as f:
        existing = json.load(f)
    with open(connection_file) as f:
        mine = json.load(f)
    relay = Relay(existing, mine)
    try:
        return relay.run()
    finally:
        relay.close()


def install(existing_file: str, name: str | None = None, display_name: str | None = None,
            prefix: str | None = None, user: bool = True) -> str:
    """Install a kernelspec that opens ``existing_file``'s kernel; returns the kernelspec's directory.

    ``existing_file`` is a connection file from ``bind_kernel()`` (or
    ``rc.kernel_connection_file(N)``); it must stay where it is while used.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    path = os.path.abspath(existing_file)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no kernel connection file {path}: bind the engine's kernel first, "
                                "rc[N].apply_sync(hpcpar.bind_kernel), and pass the file it returns")
    stem = os.path.basename(path).removesuffix(".json").removeprefix("kernel-")
    name = name or stem
    spec = {
        "argv": [sys.executable, "-m", "hpcpar.engine.kernel_proxy", "run", path, "{connection_file}"],
        "display_name": display_name or stem.replace("-", " "),  # hpcpar engine 3 51234
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {"debugger": True},
    }
    tmp = tempfile.mkdtemp()
    try:
        with open(os.path.join(tmp, "kernel.json"), "w") as f:
            json.dump(spec, f, indent=1)
        return KernelSpecManager().install_kernel_spec(tmp, name, user=user and prefix is None, prefix=prefix)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpcpar.engine.kernel_proxy",
                                     description="Open an engine's bound kernel (bind_kernel) in JupyterLab.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("install", help="install a kernelspec for a bound engine kernel")
    p.add_argument("connection_file", help="what bind_kernel() returned (or rc.kernel_connection_file(N))")
    p.add_argument("--name", help="kernelspec name (default: from the file, e.g. hpcpar-engine-3-51234)")
    p.add_argument("--display-name", help="the name JupyterLab shows")
    p.add_argument("--prefix", help="install under this prefix (e.g. sys.prefix) instead of the user's directory")
    p = sub.add_parser("run", help="(the kernelspec's command) relay to a bound engine kernel")
    p.add_argument("connection_file")
    p.add_argument("server_connection_file")
    args = parser.parse_args(argv)
    if args.command == "run":
        return run(args.connection_file, args.server_connection_file)
    try:
        where = install(args.connection_file, args.name, args.display_name, args.prefix)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"installed kernelspec {os.path.basename(where)} in {where}\n"
          "In JupyterLab: open a notebook, pick that kernel, then turn on the debugger (the bug icon).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
