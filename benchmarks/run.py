"""Benchmark hpcpar against ipyparallel and dask.distributed in one run on one machine.

Usage (inside the venv made by ``benchmarks/setup.sh``)::

    python benchmarks/run.py [--only SCENARIO[,...]] [--engines N] [--quick]
                             [--backends hpcpar,ipyparallel,dask] [--repeat R]
                             [--wait-quiet SECONDS] [--json out.json] [--markdown out.md]

Each backend runs in its own worker process (``worker.py``) with its own temporary
HPCPAR_DIR / IPYTHONDIR / dask temp dir, one after the other. Every command sent to a
worker has a timeout: a hang kills that worker's whole process group, then every
process carrying the run's environment marker, by PID, and the remaining scenarios go
on in a fresh worker. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import queue
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backends import BACKENDS  # noqa: E402
from backends.base import MARKER_ENV, isolated_env, marked_pids, wait_gone  # noqa: E402

PEERS = ("ipyparallel", "dask")
SCENARIOS = (
    "startup",
    "latency",
    "throughput",
    "map",
    "apply_all",
    "push_pull",
    "scatter_gather",
    "stop",
    "stop8",
)


@dataclass
class Plan:
    """Sizes for one run (full or ``--quick``)."""

    engines: int = 2
    big_engines: int = 8
    # 2000 calls: the p99 is then the 20th slowest call, not the 5th, and moves far less between runs.
    latency_calls: int = 2000
    latency_warmup: int = 200
    lb_tasks: int = 5000
    map_items: int = 100_000
    map_chunksize: int = 1000
    apply_all_calls: int = 200
    apply_all_warmup: int = 20
    push_bytes: int = 100_000_000
    push_reps: int = 5
    scatter_items: int = 10_000_000
    scatter_reps: int = 3

    @classmethod
    def quick(cls, engines: int) -> Plan:
        return cls(
            engines=engines,
            latency_calls=100,
            latency_warmup=10,
            lb_tasks=1000,
            map_items=20_000,
            apply_all_calls=50,
            apply_all_warmup=5,
            push_reps=2,
            scatter_reps=1,
        )

    def commands(self) -> dict[str, tuple[str, dict[str, Any], float]]:
        """Scenario -> (worker op, its arguments, timeout in seconds)."""
        return {
            "latency": (
                "latency",
                {"n_calls": self.latency_calls, "warmup": self.latency_warmup},
                120,
            ),
            "throughput": ("lb_throughput", {"n_tasks": self.lb_tasks}, 240),
            "map": ("map", {"n_items": self.map_items, "chunksize": self.map_chunksize}, 240),
            "apply_all": (
                "apply_all",
                {"n_calls": self.apply_all_calls, "warmup": self.apply_all_warmup},
                120,
            ),
            "push_pull": ("push_pull", {"nbytes": self.push_bytes, "reps": self.push_reps}, 240),
            "scatter_gather": (
                "scatter_gather",
                {"n_items": self.scatter_items, "reps": self.scatter_reps},
                240,
            ),
        }


START_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0


class WorkerError(Exception):
    """A worker command failed or timed out."""

    def __init__(self, kind: str, message: str, tb: str = "") -> None:
        super().__init__(f"{kind}: {message}")
        self.kind, self.message, self.tb = kind, message, tb


class Worker:
    """One backend's worker process, driven by JSON lines with a timeout per command."""

    def __init__(self, backend: str, env: dict[str, str], log: Path, cwd: Path) -> None:
        self.backend = backend
        self.marker = env[MARKER_ENV]
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "worker.py"), backend],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.replies.put(line.decode())
        self.replies.put(None)

    def call(self, op: str, args: dict[str, Any] | None = None, timeout: float = 120) -> Any:
        """Send one command and wait at most ``timeout`` seconds for its answer."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"op": op, "args": args or {}}) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError("crash", f"worker exited with {self.proc.poll()}")
        try:
            line = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise WorkerError("timeout", f"{op} took more than {timeout:.0f} s")
        if line is None:
            raise WorkerError("crash", f"worker exited with {self.proc.wait(5)} during {op}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise WorkerError("error", reply["error"], reply.get("tb", ""))
        return reply["result"]

    def close(self, timeout: float = 20) -> None:
        """Ask the worker to exit, then kill its group and every marked process by PID."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op": "exit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> list[int]:
        """Kill the worker's process group and any process carrying its marker; return those."""
        killed: list[int] = []
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
                killed.append(self.proc.pid)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        killed += sweep(self.marker)
        self.log.close()
        return killed


def sweep(marker: str) -> list[int]:
    """Stop every process whose environment carries ``marker``: SIGTERM, then SIGKILL.

    Returns the PIDs that were found (and signalled); any that survive SIGKILL are logged.
    """
    found = marked_pids(marker)
    pids = set(found)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        pids = wait_gone(pids, 3.0)
        if not pids:
            break
    if pids:
        print(f"  could not stop pids {sorted(pids)} (marker {marker})", file=sys.stderr)
    return sorted(found)


@dataclass
class BackendRun:
    """Everything measured for one backend."""

    name: str
    versions: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (before we start anything: others' load)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


BUSY_WARN = 0.15
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Adopt orphaned descendants (daemonized clusters), so their CPU time is counted as ours."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def reap() -> None:
    """Collect exited children and adopted orphans."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def machine_cpu_seconds() -> float:
    """CPU seconds all processes on the machine have used (steal and idle excluded)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = f[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def our_cpu_seconds() -> float:
    """CPU seconds used by this process and every descendant reaped so far."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def run_backend(
    name: str, plan: Plan, only: set[str], workdir: Path, wait_quiet: float = 0.0
) -> BackendRun:
    """Run the selected scenarios on one backend, in its own worker process."""
    out = BackendRun(name)
    busy = cpu_busy()
    deadline = time.monotonic() + wait_quiet
    while busy > BUSY_WARN and time.monotonic() < deadline:
        print(f"[{name}] machine {busy:.0%} busy; waiting for it to quiet down", flush=True)
        time.sleep(4)
        busy = cpu_busy()
    out.results["busy_before"] = busy
    cpu0, ours0, wall0 = machine_cpu_seconds(), our_cpu_seconds(), time.monotonic()
    if busy > BUSY_WARN:
        out.notes.append(
            f"machine was {busy:.0%} busy before this backend started: figures are noisy"
        )
    base = workdir / name
    env = isolated_env(base, f"{uuid.uuid4().hex}-{name}")
    log = base / "worker.log"
    commands = plan.commands()
    wanted = [s for s in commands if s in only]
    worker: Worker | None = None

    def fresh(record: str | None) -> Worker:
        w = Worker(name, env, log, base / "cwd")
        versions = w.call("prepare", timeout=120)["versions"]
        out.versions = out.versions or versions
        started = w.call("start", {"n": plan.engines}, timeout=START_TIMEOUT)
        if record:
            out.results[record] = started
        return w

    def fail(scenario: str, exc: WorkerError) -> None:
        out.errors[scenario] = exc.message
        print(f"  [{name}] {scenario}: {exc.kind.upper()} {exc.message}", flush=True)
        if exc.tb:
            (base / f"{scenario}.traceback.txt").write_text(exc.tb)

    def discard(w: Worker | None, why: str) -> None:
        if w is None:
            return
        killed = w.kill()
        if killed:
            out.notes.append(f"{why}: killed leftover pids {killed}")

    need_cluster = bool(wanted) or only & {"startup", "stop"}
    if need_cluster:
        print(f"[{name}] start {plan.engines} engines", flush=True)
        try:
            worker = fresh("startup")
        except WorkerError as exc:
            fail("startup", exc)
            discard(worker, "after failed start")
            worker = None
        for scenario in wanted:
            if worker is None:
                out.errors.setdefault(scenario, "not run: cluster did not start")
                continue
            op, args, timeout = commands[scenario]
            print(f"[{name}] {scenario}", flush=True)
            try:
                out.results[scenario] = worker.call(op, args, timeout=timeout)
            except WorkerError as exc:
                fail(scenario, exc)
                if exc.kind != "error":
                    discard(worker, f"after {scenario} {exc.kind}")
                    try:
                        worker = fresh(None)
                    except WorkerError as exc2:
                        fail("restart", exc2)
                        worker = None
        if worker is not None:
            print(f"[{name}] stop", flush=True)
            try:
                out.results["stop"] = worker.call("stop", timeout=STOP_TIMEOUT)
            except WorkerError as exc:
                fail("stop", exc)
            worker.close()
            killed = sweep(env[MARKER_ENV])
            if killed:
                out.notes.append(f"after stop: killed leftover pids {killed}")
    if "stop8" in only:
        print(f"[{name}] start {plan.big_engines} engines, then stop", flush=True)
        w8 = Worker(name, env, log, base / "cwd")
        try:
            versions = w8.call("prepare", timeout=120)["versions"]
            out.versions = out.versions or versions
            out.results["startup8"] = w8.call(
                "start", {"n": plan.big_engines}, timeout=START_TIMEOUT
            )
            out.results["stop8"] = w8.call("stop", timeout=STOP_TIMEOUT)
        except WorkerError as exc:
            fail("stop8", exc)
        w8.close()
        killed = sweep(env[MARKER_ENV])
        if killed:
            out.notes.append(f"after stop of {plan.big_engines}: killed leftover pids {killed}")
    for key in ("stop", "stop8"):
        left = out.results.get(key, {}).get("left_pids")
        if left:
            out.notes.append(f"{key}: {len(left)} processes still alive 10 s after stop returned")
    reap()
    wall = time.monotonic() - wall0
    others = (machine_cpu_seconds() - cpu0) - (our_cpu_seconds() - ours0)
    other_load = max(0.0, others) / (wall * (os.cpu_count() or 1))
    out.results["other_load"] = other_load
    if other_load > BUSY_WARN:
        out.notes.append(f"other processes used {other_load:.0%} of the machine during this run")
    return out


# -- the table -------------------------------------------------------------------------


@dataclass
class Metric:
    """One row: how to read the figure, which way is better, and the targets."""

    key: str
    label: str
    unit: str
    get: Callable[[dict[str, Any]], float]
    higher_is_better: bool
    targets: dict[str, float] = field(default_factory=dict)  # peer -> min advantage
    absolute_max: float | None = None  # the figure itself must stay below this


def _metrics(plan: Plan) -> list[Metric]:
    n, n8 = plan.engines, plan.big_engines
    mb = plan.push_bytes / 1e6
    return [
        Metric(
            "startup",
            f"start-up, {n} engines ready",
            "s",
            lambda r: r["startup"]["seconds"],
            False,
            {"ipyparallel": 3},
        ),
        Metric(
            "latency",
            "apply_sync latency, median",
            "ms",
            lambda r: r["latency"]["median_s"] * 1e3,
            False,
            {"ipyparallel": 4},
        ),
        Metric(
            "latency",
            "apply_sync latency, p99",
            "ms",
            lambda r: r["latency"]["p99_s"] * 1e3,
            False,
            {"ipyparallel": 4},
        ),
        Metric(
            "throughput",
            f"LB throughput, {plan.lb_tasks} no-op apply_async",
            "tasks/s",
            lambda r: r["throughput"]["tasks_per_s"],
            True,
            {"ipyparallel": 4, "dask": 1},
        ),
        Metric(
            "map",
            f"LB map_sync {plan.map_items} items, chunksize {plan.map_chunksize}",
            "s",
            lambda r: r["map"]["seconds"],
            False,
        ),
        Metric(
            "apply_all",
            f"rc[:].apply_sync on {n} engines, median",
            "ms",
            lambda r: r["apply_all"]["median_s"] * 1e3,
            False,
        ),
        Metric(
            "push_pull",
            f"push {mb:.0f} MB float64 to one engine",
            "MB/s",
            lambda r: r["push_pull"]["push_MBps"],
            True,
            {"ipyparallel": 1.5, "dask": 1},
        ),
        Metric(
            "push_pull",
            f"pull {mb:.0f} MB float64 from one engine",
            "MB/s",
            lambda r: r["push_pull"]["pull_MBps"],
            True,
            {"ipyparallel": 1.5, "dask": 1},
        ),
        Metric(
            "scatter_gather",
            f"scatter+gather {plan.scatter_items / 1e6:.0f}M float64",
            "s",
            lambda r: r["scatter_gather"]["seconds"],
            False,
        ),
        Metric(
            "stop",
            f"stop, {n} engines, all processes gone",
            "s",
            lambda r: r["stop"]["seconds"],
            False,
        ),
        Metric(
            "stop", f"stop, {n} engines, call returns", "s", lambda r: r["stop"]["call_s"], False
        ),
        Metric(
            "stop8", f"start-up, {n8} engines ready", "s", lambda r: r["startup8"]["seconds"], False
        ),
        Metric(
            "stop8",
            f"stop, {n8} engines, all processes gone",
            "s",
            lambda r: r["stop8"]["seconds"],
            False,
            absolute_max=1.0,
        ),
        Metric(
            "stop8", f"stop, {n8} engines, call returns", "s", lambda r: r["stop8"]["call_s"], False
        ),
    ]


def _value(rounds: list[BackendRun], m: Metric, aggregate: str) -> float | None:
    """Best (default) or median over the rounds that produced this figure.

    Best-of-rounds is the default because load from other processes only ever makes a
    figure worse; it is taken for each system on its own.
    """
    vals = []
    for run in rounds:
        try:
            vals.append(float(m.get(run.results)))
        except (KeyError, TypeError):
            continue
    if not vals:
        return None
    if aggregate == "median":
        return statistics.median(vals)
    return max(vals) if m.higher_is_better else min(vals)


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def build_rows(
    runs: dict[str, list[BackendRun]], plan: Plan, only: set[str], aggregate: str = "best"
) -> list[dict[str, Any]]:
    """One dict per table row: figures, hpcpar's advantage over each peer, target verdict."""
    rows = []
    for m in _metrics(plan):
        if m.key not in only:
            continue
        vals = {b: _value(runs.get(b, []), m, aggregate) for b in BACKENDS}
        hp = vals["hpcpar"]
        adv: dict[str, float | None] = {}
        for peer in PEERS:
            pv = vals[peer]
            if hp is None or pv is None or hp == 0 or pv == 0:
                adv[peer] = None
            else:
                adv[peer] = hp / pv if m.higher_is_better else pv / hp
        checks: list[str] = []
        verdict: str = ""
        ok = True
        for peer, need in m.targets.items():
            checks.append(f"≥{need:g}× {'ipp' if peer == 'ipyparallel' else peer}")
            a = adv[peer]
            ok = ok and a is not None and a >= need
        if m.absolute_max is not None:
            checks.append(f"< {m.absolute_max:g} {m.unit}")
            ok = ok and hp is not None and hp < m.absolute_max
        missing = hp is None or any(adv[peer] is None for peer in m.targets)
        if checks:
            verdict = "n/a" if missing else ("PASS" if ok else "FAIL")
        rows.append(
            {
                "label": m.label,
                "unit": m.unit,
                "higher_is_better": m.higher_is_better,
                "values": vals,
                "advantage": adv,
                "target": ", ".join(checks),
                "verdict": verdict,
            }
        )
    return rows


def render(rows: list[dict[str, Any]], markdown: bool) -> str:
    """The table as aligned text or as Markdown."""
    head = [
        "scenario",
        "unit",
        "hpcpar",
        "ipyparallel",
        "dask",
        "vs ipp",
        "vs dask",
        "target",
        "result",
    ]
    body = []
    for r in rows:
        v, a = r["values"], r["advantage"]
        body.append(
            [
                r["label"],
                r["unit"] + (" ↑" if r["higher_is_better"] else " ↓"),
                _fmt(v["hpcpar"]),
                _fmt(v["ipyparallel"]),
                _fmt(v["dask"]),
                "—" if a["ipyparallel"] is None else f"{a['ipyparallel']:.2f}×",
                "—" if a["dask"] is None else f"{a['dask']:.2f}×",
                r["target"],
                r["verdict"],
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 or i >= 7 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in body]
    return "\n".join(lines)


def markdown_report(
    rows: list[dict[str, Any]],
    runs: dict[str, list[BackendRun]],
    info: dict[str, str],
    plan: Plan,
    args: argparse.Namespace,
) -> str:
    """The table with the machine, the versions and the command, as Markdown."""
    cmd = "python benchmarks/run.py" + "".join(
        f" {flag}"
        for flag, on in (
            ("--quick", args.quick),
            (f"--repeat {args.repeat}", args.repeat > 1),
            ("--aggregate median", args.aggregate == "median"),
            (f"--wait-quiet {args.wait_quiet:g}", args.wait_quiet > 0),
        )
        if on
    )
    if args.engines != 2:
        cmd += f" --engines {args.engines}"
    lines = [
        f"Measured {info['date']}, hpcpar commit {info.get('hpcpar_commit', '?')}, "
        f"{plan.engines} engines/workers, {'quick' if args.quick else 'full'} run"
        + _rounds_note(args)
        + f" (`{cmd}`).",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info.get('ram', '?')} RAM, "
        f"{info['kernel']}, {info.get('os', '?')}",
        f"- Python: {info['python']}",
    ]
    for name, rounds in runs.items():
        versions = next((r.versions for r in rounds if r.versions), {})
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    load = [r.results.get("other_load", 0.0) for rounds in runs.values() for r in rounds]
    if load:
        lines.append(
            f"- Load from other processes during each backend's run: median "
            f"{statistics.median(load):.0%}, at most {max(load):.0%} of the machine's CPU"
        )
    lines += ["", render(rows, markdown=True), ""]
    notes = [f"{r.name}: {n}" for rounds in runs.values() for r in rounds for n in r.notes]
    errors = [
        f"{name} round {i + 1} {scen}: {err.splitlines()[0] if err else err}"
        for name, rounds in runs.items()
        for i, r in enumerate(rounds)
        for scen, err in r.errors.items()
    ]
    if notes or errors:
        lines += ["Notes and errors from this run:", ""]
        lines += [f"- {x}" for x in notes + errors]
        lines.append("")
    return "\n".join(lines)


def machine_info() -> dict[str, str]:
    """CPU model, cores, RAM, kernel, OS, Python and this repo's commit."""
    info = {"cpu": platform.processor() or "?", "cores": str(os.cpu_count())}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ram"] = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    info["kernel"] = f"{platform.system()} {platform.release()} {platform.machine()}"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                info["os"] = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    info["python"] = f"{platform.python_implementation()} {platform.python_version()}"
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "hpcpar"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        info["hpcpar_commit"] = commit + (" (hpcpar/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    info["date"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    p.add_argument("--engines", type=int, default=2, help="engines/workers per cluster (default 2)")
    p.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated, default all")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"before each backend, wait up to this long for other load to drop below {BUSY_WARN * 100:.0f}%%",
    )
    p.add_argument("--repeat", type=int, default=1, help="rounds, in rotating backend order")
    p.add_argument(
        "--aggregate",
        choices=("best", "median"),
        default="best",
        help="how rounds combine: each system's best round (default) or the median",
    )
    p.add_argument("--report", type=Path, help="re-print a saved --json run; runs nothing")
    p.add_argument("--json", type=Path, help="write every raw figure to this file")
    p.add_argument("--markdown", type=Path, help="write the table as Markdown to this file")
    p.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan.quick(args.engines) if args.quick else Plan(engines=args.engines)
    only = set(filter(None, args.only.split(","))) or set(SCENARIOS)
    unknown = only - set(SCENARIOS)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown or not set(backends) <= set(BACKENDS):
        print(f"unknown scenario/backend: {sorted(unknown) or backends}", file=sys.stderr)
        return 2
    if args.report:
        saved = json.loads(args.report.read_text())
        plan = Plan(**saved["plan"])
        args.repeat = int(saved.get("repeat", 1))
        args.quick = plan.lb_tasks != Plan().lb_tasks
        runs = {n: [BackendRun(**r) for r in rounds] for n, rounds in saved["backends"].items()}
        report(runs, plan, only, saved["machine"], args, saved.get("elapsed_s", 0.0))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="hpcpar-bench-"))
    become_subreaper()
    info = machine_info()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    print(f"run dir: {workdir}", flush=True)
    runs: dict[str, list[BackendRun]] = {name: [] for name in backends}
    t0 = time.monotonic()
    try:
        for r in range(args.repeat):
            order = backends[r % len(backends) :] + backends[: r % len(backends)]
            if args.repeat > 1:
                print(f"== round {r + 1}/{args.repeat}: {', '.join(order)}", flush=True)
            for name in order:
                runs[name].append(
                    run_backend(name, plan, only, workdir / f"round{r + 1}", args.wait_quiet)
                )
    finally:
        for rounds in runs.values():
            for run in rounds:
                for note in run.notes:
                    print(f"  [{run.name}] note: {note}")
    report(runs, plan, only, info, args, time.monotonic() - t0)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def report(
    runs: dict[str, list[BackendRun]],
    plan: Plan,
    only: set[str],
    info: dict[str, str],
    args: argparse.Namespace,
    elapsed: float,
) -> None:
    """Print the table; write the Markdown and JSON files asked for."""
    rows = build_rows(runs, plan, only, args.aggregate)
    print()
    print(
        f"hpcpar vs peers, {plan.engines} engines/workers, {'quick' if args.quick else 'full'} run"
        f"{_rounds_note(args)}, {elapsed:.0f} s. Ratios are hpcpar's advantage "
        "(>1 = hpcpar better); ↓ lower is better, ↑ higher is better."
    )
    print(render(rows, markdown=False))
    print()
    for name, rounds in runs.items():
        versions = next((run.versions for run in rounds if run.versions), {})
        print(f"{name}: " + (", ".join(f"{k} {v}" for k, v in versions.items()) or "?"))
        for i, run in enumerate(rounds):
            for scen, err in run.errors.items():
                print(f"  {name} round {i + 1} {scen}: {err}")
    if args.markdown:
        args.markdown.write_text(markdown_report(rows, runs, info, plan, args))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "plan": plan.__dict__,
                    "repeat": args.repeat,
                    "aggregate": args.aggregate,
                    "elapsed_s": elapsed,
                    "backends": {n: [r.__dict__ for r in rounds] for n, rounds in runs.items()},
                    "rows": rows,
                },
                indent=2,
            )
        )


def _rounds_note(args: argparse.Namespace) -> str:
    if args.repeat <= 1:
        return ""
    how = "best" if args.aggregate == "best" else "median"
    return f", {how} of {args.repeat} rounds"


if __name__ == "__main__":
    sys.exit(main())
