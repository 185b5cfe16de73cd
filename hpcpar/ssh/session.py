"""One SSH connection to one server: run commands, and forward local ports through it.

``OpenSSHSession`` drives the ``ssh`` binary, so ``~/.ssh/config`` (ProxyJump,
ControlMaster, IdentityFile ...) applies as it does in a terminal. A persistent
session (:meth:`open`) is a private ControlMaster: every later command and port
forward is multiplexed over that one connection. When the user already has a
live ControlMaster for the host, it is reused and no connection is opened.

``ParamikoSession`` does the same in-process, for machines without ``ssh``.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from .errors import SSHAuthError, SSHError, UnknownHostKey, classify
from .target import SSHOptions, SSHTarget

log = logging.getLogger("hpcpar.ssh")


@dataclass
class RunResult:
    rc: int
    stdout: str
    stderr: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Session(ABC):
    def __init__(self, target: SSHTarget, options: SSHOptions | None = None) -> None:
        self.target = target
        self.options = options or SSHOptions()
        self.forwards: dict[int, tuple[str, int]] = {}

    @abstractmethod
    def open(self, timeout: float | None = None) -> None:
        """Connect and authenticate; raise a classified SSHError."""

    @abstractmethod
    def run(self, command: str, stdin: str | None = None, timeout: float = 60.0) -> RunResult:
        """Run a shell command on the server (over the open connection, if any)."""

    @abstractmethod
    def forward(self, remote_host: str, remote_port: int) -> int:
        """Forward a new 127.0.0.1 port to remote_host:remote_port as seen by the server."""

    @abstractmethod
    def cancel(self, local_port: int) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def alive(self) -> bool: ...

    @property
    def description(self) -> str:
        return str(self.target)


def ssh_binary() -> str | None:
    return shutil.which("ssh")


def make_session(server: str | SSHTarget, options: SSHOptions | None = None) -> Session:
    target = server if isinstance(server, SSHTarget) else SSHTarget.parse(server)
    options = options or SSHOptions()
    choice = (options.client or "auto").lower()
    if choice not in ("auto", "openssh", "paramiko"):
        raise ValueError(f"ssh client must be 'auto', 'openssh' or 'paramiko', not {options.client!r}")
    if choice == "auto":
        # Windows' OpenSSH has no ControlMaster, which the single connection needs.
        use_paramiko = ssh_binary() is None or os.name == "nt" or bool(options.password)
        choice = "paramiko" if use_paramiko else "openssh"
    if choice == "openssh":
        if ssh_binary() is None:
            raise SSHError("no 'ssh' program on PATH; install OpenSSH or use paramiko=True")
        return OpenSSHSession(target, options)
    return ParamikoSession(target, options)


# ---------------------------------------------------------------------------------------
# OpenSSH


class OpenSSHSession(Session):
    def __init__(self, target: SSHTarget, options: SSHOptions | None = None) -> None:
        super().__init__(target, options)
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None
        self._control: str | None = None
        self.reused_master = False

    # The command line: our options, then the user's config does the rest.
    def base_argv(self) -> list[str]:
        o = self.options
        argv = [ssh_binary() or "ssh", "-o", "BatchMode=yes"]
        argv += ["-o", f"ConnectTimeout={max(1, int(o.connect_timeout))}"]
        if o.config:
            argv += ["-F", os.path.expanduser(o.config)]
        if o.key:
            argv += ["-i", os.path.expanduser(o.key), "-o", "IdentitiesOnly=yes"]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        if self.target.user:
            argv += ["-l", self.target.user]
        for opt in o.extra:
            argv += ["-o", opt]
        return argv

    def _mux_argv(self) -> list[str]:
        """Options that reach the master: ours, or the user's (never start a new master)."""
        if self._control:
            return self.base_argv() + ["-o", "ControlMaster=no", "-o", f"ControlPath={self._control}"]
        return self.base_argv() + ["-o", "ControlMaster=no"]

    def _user_master_alive(self) -> bool:
        try:
            r = subprocess.run(
                self._mux_argv() + ["-O", "check", self.target.host],
                stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return r.returncode == 0

    def open(self, timeout: float | None = None) -> None:
        if self._proc is not None or self.reused_master:
            return
        timeout = self.options.connect_timeout if timeout is None else timeout
        if self._user_master_alive():
            self.reused_master = True
            log.info("reusing the live ControlMaster connection to %s", self.target)
            return
        self._dir = tempfile.mkdtemp(prefix="hpcpar-ssh-")
        self._control = os.path.join(self._dir, "cm")
        errfile = open(os.path.join(self._dir, "stderr"), "wb")  # noqa: SIM115
        argv = self.base_argv() + [
            "-o", "ControlMaster=yes", "-o", f"ControlPath={self._control}",
            "-o", "ControlPersist=no", "-o", "ExitOnForwardFailure=yes",
            "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=4",
            "-T", self.target.host,
            # The session reads our pipe: if this process dies, ssh sees EOF and exits.
            "exec cat >/dev/null",
        ]
        log.debug("ssh master: %s", argv)
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errfile,
            start_new_session=True, close_fds=True,
        )
        errfile.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._stderr()
                self.close()
                raise classify(str(self.target), err, key=self.options.key)
            if os.path.exists(self._control):
                return
            time.sleep(0.02)
        err = self._stderr()
        self.close()
        raise SSHError(f"ssh to {self.target} did not connect within {timeout:.0f} s"
                       + (f" (ssh said: {err.strip()})" if err.strip() else ""))

    def _stderr(self) -> str:
        if not self._dir:
            return ""
        try:
            with open(os.path.join(self._dir, "stderr"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def run(self, command: str, stdin: str | None = None, timeout: float = 60.0) -> RunResult:
        argv = self._mux_argv() + ["-T", self.target.host, command]
        try:
            r = subprocess.run(
                argv, input=stdin if stdin is not None else "", capture_output=True, text=True,
                timeout=timeout, start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise SSHError(f"command on {self.target} did not finish within {timeout:.0f} s") from None
        if r.returncode == 255:
            raise classify(str(self.target), r.stderr, key=self.options.key, what="run a command")
        return RunResult(r.returncode, r.stdout, r.stderr)

    def _forward_op(self, op: str, spec: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self._mux_argv() + ["-O", op, "-L", spec, self.target.host],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        )

    def forward(self, remote_host: str, remote_port: int) -> int:
        last = ""
        for _ in range(5):
            port = free_port()
            r = self._forward_op("forward", f"127.0.0.1:{port}:{remote_host}:{remote_port}")
            if r.returncode == 0:
                self.forwards[port] = (remote_host, remote_port)
                return port
            last = r.stderr.strip()
        raise SSHError(f"could not forward a local port through {self.target}: {last}")

    def cancel(self, local_port: int) -> None:
        dest = self.forwards.pop(local_port, None)
        if dest is None:
            return
        try:
            self._forward_op("cancel", f"127.0.0.1:{local_port}:{dest[0]}:{dest[1]}")
        except (OSError, subprocess.TimeoutExpired):
            pass

    def alive(self) -> bool:
        if self.reused_master:
            return self._user_master_alive()
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        if self.reused_master:
            for port in list(self.forwards):
                self.cancel(port)
            self.reused_master = False
            return
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None and self._control and os.path.exists(self._control):
                try:
                    subprocess.run(self._mux_argv() + ["-O", "exit", self.target.host],
                                   stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            try:
                if proc.stdin:
                    proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=3)
        self.forwards.clear()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = self._control = None


# ---------------------------------------------------------------------------------------
# paramiko


class _QuietRefusals(logging.Filter):
    """paramiko logs every refused forward at ERROR; we report it ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED" not in record.getMessage()


class ParamikoSession(Session):
    def __init__(self, target: SSHTarget, options: SSHOptions | None = None) -> None:
        super().__init__(target, options)
        self._clients: list = []  # jump hosts first, the target last
        self._listeners: dict[int, socket.socket] = {}
        self._stop = threading.Event()
        quiet = logging.getLogger("paramiko.transport")
        if not any(isinstance(f, _QuietRefusals) for f in quiet.filters):
            quiet.addFilter(_QuietRefusals())

    def _lookup(self, host: str) -> dict:
        import paramiko

        path = os.path.expanduser(self.options.config or "~/.ssh/config")
        if os.path.exists(path):
            return paramiko.SSHConfig.from_text(_inline_includes(path)).lookup(host)
        return {"hostname": host}

    def _connect(self, host: str, port: int | None, user: str | None, sock=None, depth: int = 0):
        import paramiko

        if depth > 5:
            raise SSHError(f"ProxyJump chain for {self.target} is too long")
        cfg = self._lookup(host)
        hostname = cfg.get("hostname", host)
        port = port or int(cfg.get("port", 22))
        user = user or cfg.get("user") or None
        if sock is None and cfg.get("proxyjump") and cfg["proxyjump"].lower() != "none":
            jump = SSHTarget.parse(cfg["proxyjump"].split(",")[0])
            jclient = self._connect(jump.host, jump.port, jump.user, depth=depth + 1)
            sock = jclient.get_transport().open_channel("direct-tcpip", (hostname, port), ("127.0.0.1", 0))
        client = paramiko.SSHClient()
        try:
            client.load_system_host_keys()
        except OSError:
            pass
        for known in (cfg.get("userknownhostsfile") or "").split():
            known = os.path.expanduser(known)
            if os.path.isfile(known):
                try:
                    client.load_host_keys(known)
                except OSError:
                    pass
        strict = str(cfg.get("stricthostkeychecking", "yes")).lower()
        if strict in ("no", "off", "accept-new"):
            client.set_missing_host_key_policy(paramiko.WarningPolicy() if strict != "no" else _AcceptPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        keys = [os.path.expanduser(self.options.key)] if self.options.key else [
            os.path.expanduser(k) for k in cfg.get("identityfile", []) if os.path.exists(os.path.expanduser(k))
        ]
        name = f"{user + '@' if user else ''}{hostname}:{port}"
        try:
            client.connect(
                hostname, port=port, username=user, key_filename=keys or None,
                password=self.options.password, timeout=self.options.connect_timeout,
                banner_timeout=self.options.connect_timeout, auth_timeout=self.options.connect_timeout,
                look_for_keys=not keys, allow_agent=not self.options.key, sock=sock,
            )
        except paramiko.BadHostKeyException as e:
            raise classify(name, f"REMOTE HOST IDENTIFICATION HAS CHANGED: {e}") from None
        except paramiko.AuthenticationException as e:
            raise classify(name, f"Permission denied ({e})", key=self.options.key) from None
        except paramiko.SSHException as e:
            if "known_hosts" in str(e):
                raise classify(name, f"Host key verification failed: {e}") from None
            raise SSHError(f"ssh to {name} failed: {e}") from None
        except OSError as e:
            raise classify(name, f"{e.strerror or e}") from None
        self._clients.append(client)
        return client

    @property
    def _client(self):
        return self._clients[-1] if self._clients else None

    def open(self, timeout: float | None = None) -> None:
        if self._client is None:
            self._connect(self.target.host, self.target.port, self.target.user)

    def run(self, command: str, stdin: str | None = None, timeout: float = 60.0) -> RunResult:
        self.open()
        chan = self._client.get_transport().open_session()
        chan.settimeout(timeout)
        chan.exec_command(command)
        if stdin:
            chan.sendall(stdin.encode())
        chan.shutdown_write()
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                elif time.monotonic() > deadline:
                    raise SSHError(f"command on {self.target} did not finish within {timeout:.0f} s")
                else:
                    time.sleep(0.01)
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        return RunResult(rc, out.decode(errors="replace"), err.decode(errors="replace"))

    def forward(self, remote_host: str, remote_port: int) -> int:
        self.open()
        lsock = socket.socket()
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16)
        port = lsock.getsockname()[1]
        self._listeners[port] = lsock
        self.forwards[port] = (remote_host, remote_port)
        threading.Thread(target=self._accept_loop, args=(lsock, remote_host, remote_port),
                         name=f"hpcpar-ssh-forward-{port}", daemon=True).start()
        return port

    def _accept_loop(self, lsock: socket.socket, host: str, port: int) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = lsock.accept()
            except OSError:
                return
            try:
                chan = self._client.get_transport().open_channel("direct-tcpip", (host, port), peer)
            except Exception as e:  # refused, unreachable: close, as OpenSSH does
                log.debug("forward to %s:%s failed: %s", host, port, e)
                conn.close()
                continue
            threading.Thread(target=_relay, args=(conn, chan, self._stop), daemon=True,
                             name="hpcpar-ssh-relay").start()

    def cancel(self, local_port: int) -> None:
        self.forwards.pop(local_port, None)
        lsock = self._listeners.pop(local_port, None)
        if lsock is not None:
            lsock.close()

    def alive(self) -> bool:
        return self._client is not None and self._client.get_transport() is not None \
            and self._client.get_transport().is_active()

    def close(self) -> None:
        self._stop.set()
        for port in list(self._listeners):
            self.cancel(port)
        for client in reversed(self._clients):
            try:
                client.close()
            except Exception:
                pass
        self._clients.clear()


def _inline_includes(path: str, depth: int = 0) -> str:
    """ssh_config text with ``Include`` lines replaced by the files they name
    (paramiko's parser does not follow them)."""
    import glob
    import shlex as _shlex

    out = []
    with open(path, errors="replace") as f:
        for line in f:
            words = line.strip().split(None, 1)
            if depth < 8 and len(words) == 2 and words[0].lower() == "include":
                for pattern in _shlex.split(words[1]):
                    pattern = os.path.expanduser(pattern)
                    if not os.path.isabs(pattern):
                        pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
                    for inc in sorted(glob.glob(pattern)):
                        out.append(_inline_includes(inc, depth + 1))
                continue
            out.append(line)
    return "".join(out) + "\n"


def _relay(conn: socket.socket, chan, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            r, _, _ = select.select([conn, chan], [], [], 0.5)
            if conn in r:
                data = conn.recv(65536)
                if not data:
                    break
                chan.sendall(data)
            if chan in r:
                data = chan.recv(65536)
                if not data:
                    break
                conn.sendall(data)
    except (OSError, EOFError):  # paramiko raises EOFError when the transport closes under a relay
        pass
    finally:
        for end in (chan, conn):
            try:
                end.close()  # paramiko's close sends a message: EOFError if the transport went first
            except (OSError, EOFError):
                pass


class _AcceptPolicy:
    """StrictHostKeyChecking no: accept without saving (as OpenSSH with /dev/null known_hosts)."""

    def missing_host_key(self, client, hostname, key) -> None:
        return None


__all__ = ["Session", "OpenSSHSession", "ParamikoSession", "make_session", "RunResult",
           "SSHError", "SSHAuthError", "UnknownHostKey"]
