"""SSH launcher: engines on a list of hosts, started over SSH.

Configured by the profile's ``[ssh]`` section (hosts with engine counts, remote
python, remote profile directory, environment, prologue). The engine connection
info travels inside the shell script sent on ssh's stdin, so it needs no shared
filesystem and never appears on a command line. Each host's engine PIDs (with
their kernel start times) are recorded, so ``hpcpar stop`` from any process kills
exactly those processes, and ``hpcpar logs`` reads their output.
"""

from __future__ import annotations

import shlex
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..connection import CONNECTION_ENV
from ..paths import DEFAULT_PROFILE, ProfileDir
from ..ssh.errors import SSHError
from ..ssh.remote import remote_profile_expr
from ..ssh.session import make_session
from ..ssh.target import SSHOptions, SSHTarget
from .base import DONE, RUNNING, UNKNOWN, Launcher, LauncherError

MARK = "HPCPAR-"

_DEFAULTS: dict[str, Any] = {
    "hosts": {}, "python": "", "profile_dir": "", "env": [], "prologue": [],
    "config": "", "key": "", "client": "auto", "options": [],
}

# Alive = /proc entry that is not a zombie, with the recorded start time; kill -0 elsewhere.
_SH_FUNCS = r"""
hp_st() { [ -r /proc/$1/stat ] && sed 's/^.*) //' /proc/$1/stat | cut -d' ' -f20; }
hp_alive() {
  case $1 in ''|*[!0-9]*|0|1) return 1;; esac
  if [ -r /proc/$1/stat ]; then
    hp_stat=$(sed 's/^.*) //' /proc/$1/stat); set -- "$1" "$2" $hp_stat
    [ "$3" != Z ] || return 1
    [ -z "$2" ] || [ "$2" = "${22}" ]
  else kill -0 "$1" 2>/dev/null; fi
}
"""


def _is_this_machine(name: str) -> bool:
    """True when every address ``name`` resolves to is loopback or one of this host's own."""
    import socket

    from ..netutil import interface_addresses, is_loopback

    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(name, None, socket.AF_INET)}
    except OSError:
        return False  # unknown here: certainly not this machine
    own = set(interface_addresses())
    return bool(addrs) and all(is_loopback(a) or a in own for a in addrs)


@dataclass
class RemoteProcess:
    host: str
    pid: int
    start_time: str
    log: str
    index: int = 0


def _plan(hosts: dict[str, int], n: int | None) -> list[tuple[str, int]]:
    """(host, count) pairs: every slot, or the first n slots in config order."""
    total = sum(hosts.values())
    if not hosts:
        raise LauncherError(
            "the ssh launcher has no hosts: set them in the profile's config.toml, e.g.\n"
            '  [ssh]\n  hosts = {"node1" = 4, "user@node2:2222" = 2}'
        )
    want = total if not n else n
    if want > total:
        raise LauncherError(
            f"-n {n} engines asked, but [ssh] hosts give {total} "
            f"({', '.join(f'{h}={c}' for h, c in hosts.items())}): add hosts or raise their counts"
        )
    plan, left = [], want
    for host, count in hosts.items():
        take = min(count, left)
        if take:
            plan.append((host, take))
        left -= take
    return plan


class SSHLauncher(Launcher):
    name = "ssh"

    def __init__(
        self,
        *,
        role: str,
        n: int = 1,
        profile_dir: str | ProfileDir | None = None,
        cluster_id: str = "",
        options: dict[str, Any] | None = None,
        processes: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> None:
        if role != "engines":
            raise LauncherError(
                "the ssh launcher starts engines only; run the controller on this host "
                "(--controller local, with --ip an address the hosts reach)"
            )
        merged = {**_DEFAULTS, **(options or {}), **{k: v for k, v in extra.items() if k in _DEFAULTS}}
        super().__init__(role=role, n=n, **merged)
        if isinstance(profile_dir, ProfileDir):
            profile_dir = str(profile_dir.path)
        self.profile_dir: str | None = str(profile_dir) if profile_dir is not None else None
        self.cluster_id = cluster_id or ""
        self.processes = [RemoteProcess(**p) for p in (processes or [])]
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, role: str, n: int, config: Any, **kw: Any) -> SSHLauncher:
        """Built by ``Cluster`` from the [ssh] section of the merged config."""
        return cls(role=role, n=n, options=config.section("ssh"), **kw)

    def hosts_elsewhere(self) -> list[str]:
        """The configured hosts that are not this machine (as ssh would resolve their names)."""
        return [h for h in (self.options.get("hosts") or {}) if not _is_this_machine(self._real_host(h))]

    def _real_host(self, host: str) -> str:
        """The HostName ssh connects to for ``host`` (aliases in ssh_config resolved)."""
        import subprocess

        from ..ssh.session import OpenSSHSession, ssh_binary

        target = SSHTarget.parse(host)
        if ssh_binary():
            argv = [*OpenSSHSession(target, self.ssh_options()).base_argv(), "-G", target.host]
            try:
                out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
            except (OSError, subprocess.TimeoutExpired):
                out = ""
            for line in out.splitlines():
                key, _, value = line.partition(" ")
                if key.lower() == "hostname" and value.strip():
                    return value.strip()
        return target.host

    # -- ssh plumbing --------------------------------------------------------------------

    def ssh_options(self) -> SSHOptions:
        o = self.options
        return SSHOptions(key=o.get("key") or None, config=o.get("config") or None,
                          client=o.get("client") or "auto", extra=list(o.get("options") or []))

    def _session(self, host: str):
        return make_session(SSHTarget.parse(host), self.ssh_options())

    def _run(self, host: str, script: str, timeout: float = 60.0):
        session = self._session(host)
        try:
            return session.run("sh -s", stdin=script, timeout=timeout)
        finally:
            session.close()

    def _remote_dir(self) -> str:
        name = Path(self.profile_dir).name if self.profile_dir else f"profile_{DEFAULT_PROFILE}"
        profile = name[len("profile_"):] if name.startswith("profile_") else DEFAULT_PROFILE
        return remote_profile_expr(profile, self.options.get("profile_dir") or None)

    # -- starting ------------------------------------------------------------------------

    def _remote_command(self, command: list[str]) -> list[str]:
        """The engine command for a remote host: its python, and no local profile path."""
        argv, out, skip = list(command), [], False
        for i, a in enumerate(argv):
            if skip:
                skip = False
                continue
            if a == "--profile-dir":
                if self.profile_dir is None and i + 1 < len(argv):
                    self.profile_dir = argv[i + 1]
                skip = True
                continue
            if a == "--cluster-id" and i + 1 < len(argv) and not self.cluster_id:
                self.cluster_id = argv[i + 1]
            out.append(a)
        if out and out[0] == sys.executable:
            out[0] = self.options.get("python") or sys.executable
        return out

    def _engine_json(self, env: dict[str, str]) -> str:
        if env.get(CONNECTION_ENV):
            return env[CONNECTION_ENV]
        if not self.profile_dir:
            raise LauncherError("the ssh launcher needs the engine connection info (no profile directory)")
        path = ProfileDir(Path(self.profile_dir)).engine_file(self.cluster_id)
        try:
            return path.read_text()
        except OSError as e:
            raise LauncherError(f"cannot read the engine connection file {path} ({e}); is the controller up?") from None

    def start_script(self, host: str, count: int, first: int, command: list[str], engine_json: str) -> str:
        """The script sent to ``sh -s`` on ``host`` (stdin: the key is in no argv)."""
        safe = SSHTarget.parse(host).safe_name
        cid = f"{self.cluster_id}-" if self.cluster_id else ""
        lines = ["umask 077", f"d={self._remote_dir()}", 'mkdir -p "$d/log" || exit 3', _SH_FUNCS]
        for i, line in enumerate(self.options.get("prologue") or []):
            # A failing prologue line (module load of a missing module ...) stops the start
            # here, with the line named, instead of engines failing later without it.
            lines.append(str(line))
            lines.append(f'hp_rc=$?; if [ "$hp_rc" -ne 0 ]; then echo "{MARK}PROLOGUE {i} $hp_rc"; exit 4; fi')
        for item in self.options.get("env") or []:
            name, _, value = item.partition("=")
            lines.append(f"{name}={shlex.quote(value)}; export {name}")
        lines.append(f"{CONNECTION_ENV}={shlex.quote(engine_json.strip())}; export {CONNECTION_ENV}")
        cmd = shlex.join(command)
        for i in range(count):
            log = f'"$d/log/engine-{cid}{safe}-{first + i}.log"'
            lines.append(f"nohup {cmd} >{log} 2>&1 </dev/null &")
            lines.append(f'echo "{MARK}PID {first + i} $! $(hp_st $!) "{log}')
        return "\n".join(lines) + "\n"

    def start(self, command: list[str], env: dict[str, str], log_path: str) -> None:
        remote = self._remote_command(command)
        engine_json = self._engine_json(env)
        plan, first, jobs = _plan(dict(self.options.get("hosts") or {}), self.n), 0, []
        for host, count in plan:
            jobs.append((host, count, first))
            first += count
        self.n = first

        def one(job: tuple[str, int, int]) -> list[RemoteProcess]:
            host, count, start = job
            script = self.start_script(host, count, start, remote, engine_json)
            try:
                r = self._run(host, script)
            except SSHError as e:
                raise LauncherError(f"could not start engines on {host}: {e}") from None
            found = []
            for line in r.stdout.splitlines():
                if line.startswith(f"{MARK}PID "):
                    parts = line.split(" ", 4)
                    if len(parts) == 5:
                        _, idx, pid, st, log = parts
                    else:  # no start time (no /proc)
                        _, idx, pid, log = line.split(" ", 3)
                        st = ""
                    found.append(RemoteProcess(host, int(pid), st, log.strip(), int(idx)))
            failed = [line.split() for line in r.stdout.splitlines() if line.startswith(f"{MARK}PROLOGUE ")]
            if failed:
                i, rc = int(failed[0][1]), failed[0][2]
                line = (self.options.get("prologue") or [])[i]
                raise LauncherError(
                    f"the [ssh] prologue line {line!r} failed on {host} (exit {rc}): "
                    f"{(r.stderr.strip() or 'no output')[-800:]}; fix it in [ssh] prologue of the profile's "
                    "config.toml (no engine was started there)"
                )
            if r.rc != 0 or len(found) != count:
                with self._lock:
                    self.processes.extend(found)
                raise LauncherError(
                    f"starting engines on {host} failed (exit {r.rc}): "
                    f"{(r.stderr.strip() or r.stdout.strip() or 'no output')[-800:]}"
                )
            return found

        errors = []
        with ThreadPoolExecutor(max_workers=min(16, len(jobs)) or 1) as pool:
            for fut in [pool.submit(one, j) for j in jobs]:
                try:
                    got = fut.result()
                    with self._lock:
                        self.processes.extend(got)
                except LauncherError as e:
                    errors.append(str(e))
        self.processes.sort(key=lambda p: p.index)
        if errors:
            self.stop()
            raise LauncherError("; ".join(errors))

    # -- stopping and status -------------------------------------------------------------

    def _by_host(self) -> dict[str, list[RemoteProcess]]:
        hosts: dict[str, list[RemoteProcess]] = {}
        for p in self.processes:
            hosts.setdefault(p.host, []).append(p)
        return hosts

    @staticmethod
    def stop_script(procs: list[RemoteProcess], timeout: float) -> str:
        specs = " ".join(f"{int(p.pid)}:{p.start_time if str(p.start_time).isdigit() else ''}" for p in procs)
        rounds = max(1, int(timeout * 5))
        return _SH_FUNCS + f"""
hp_left=""
for hp_s in {specs}; do hp_p=${{hp_s%%:*}}; hp_t=${{hp_s#*:}}
  if hp_alive "$hp_p" "$hp_t"; then kill -TERM "$hp_p" 2>/dev/null; hp_left="$hp_left $hp_s"
  else echo "{MARK}GONE $hp_p"; fi
done
hp_i=0
while [ -n "$hp_left" ] && [ $hp_i -lt {rounds} ]; do
  sleep 0.2 2>/dev/null || sleep 1; hp_i=$((hp_i+1)); hp_still=""
  for hp_s in $hp_left; do hp_p=${{hp_s%%:*}}; hp_t=${{hp_s#*:}}
    if hp_alive "$hp_p" "$hp_t"; then hp_still="$hp_still $hp_s"; else echo "{MARK}STOPPED $hp_p"; fi
  done
  hp_left=$hp_still
done
for hp_s in $hp_left; do hp_p=${{hp_s%%:*}}; hp_t=${{hp_s#*:}}
  hp_alive "$hp_p" "$hp_t" && kill -KILL "$hp_p" 2>/dev/null && echo "{MARK}KILLED $hp_p"
done
true
"""

    def stop(self, timeout: float = 5.0) -> None:
        problems = []

        def one(item: tuple[str, list[RemoteProcess]]) -> None:
            host, procs = item
            try:
                r = self._run(host, self.stop_script(procs, timeout), timeout=timeout + 60)
            except SSHError as e:
                problems.append(f"could not stop engines on {host} (pids "
                                f"{', '.join(str(p.pid) for p in procs)}): {e}")
                return
            if r.rc != 0:
                problems.append(f"stopping engines on {host} failed: {r.stderr.strip()[-400:]}")

        hosts = self._by_host()
        if hosts:
            with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
                list(pool.map(one, hosts.items()))
        if problems:
            raise LauncherError("; ".join(problems))

    def alive_by_host(self) -> dict[str, list[int]]:
        """Live engine PIDs per host (one ssh per host)."""
        out: dict[str, list[int]] = {}
        for host, procs in self._by_host().items():
            checks = " ".join(f"{int(p.pid)}:{p.start_time if str(p.start_time).isdigit() else ''}" for p in procs)
            script = _SH_FUNCS + (
                f'for hp_s in {checks}; do hp_p=${{hp_s%%:*}}; hp_t=${{hp_s#*:}}; '
                f'hp_alive "$hp_p" "$hp_t" && echo "{MARK}ALIVE $hp_p"; done; true\n'
            )
            r = self._run(host, script, timeout=30)
            out[host] = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith(f"{MARK}ALIVE ")]
        return out

    def status(self) -> str:
        if not self.processes:
            return UNKNOWN
        try:
            alive = self.alive_by_host()
        except SSHError:
            return UNKNOWN
        return RUNNING if any(alive.values()) else DONE

    def describe(self) -> str:
        parts = [f"{h}: pids {', '.join(str(p.pid) for p in ps)}" for h, ps in self._by_host().items()]
        return f"ssh engines ({'; '.join(parts) or 'none started'})"

    def read_log(self, index: int, tail: int | None = None) -> str:
        """An engine's output, fetched from its host."""
        match = [p for p in self.processes if p.index == index]
        if not match:
            raise LauncherError(
                f"no engine process {index} in this engine set (have {', '.join(str(p.index) for p in self.processes)})"
            )
        p = match[0]
        cmd = f"tail -n {int(tail)} {shlex.quote(p.log)}" if tail else f"cat {shlex.quote(p.log)}"
        r = self._run(p.host, cmd + "\n", timeout=60)
        if r.rc != 0:
            raise LauncherError(f"cannot read {p.log} on {p.host}: {r.stderr.strip()}")
        return r.stdout

    # -- persistence ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "n": self.n,
            "profile_dir": self.profile_dir,
            "cluster_id": self.cluster_id,
            "options": self.options,
            "processes": [asdict(p) for p in self.processes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SSHLauncher:
        return cls(
            role=data.get("role", "engines"),
            n=int(data.get("n", 0)),
            profile_dir=data.get("profile_dir"),
            cluster_id=data.get("cluster_id", ""),
            options=data.get("options") or {},
            processes=data.get("processes") or [],
        )
