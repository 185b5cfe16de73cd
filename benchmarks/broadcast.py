"""Do-on-all operations, registration, memory and LB flags as engines grow (issues #3 and #8).

Usage (inside the venv made by ``benchmarks/setup.sh``; run on demand, never in tests)::

    python benchmarks/broadcast.py [--engines 8 32 128] [--backends hpcpar,ipyparallel,dask]
                                   [--lb-tasks 5000] [--long-tasks 100000]
                                   [--json out.json] [--markdown out.md]
                                   [--plot docs/performance-broadcast.png]
                                   [--no-extras] [--ipp-no-nanny-from 256] [--min-free-mb 3072]

For each N and each system, one child process (this file with ``--child``) starts a local
cluster of N engines with its own HPCPAR_DIR / IPYTHONDIR / dask temp dir and the run's
environment marker, and measures, in this order:

- registration: from the start call until all N engines are registered and a client sees them
  (hpcpar: ``hpcpar start -n N --daemonize --wait`` + ``Client()``; ipyparallel:
  ``Cluster(n=N).start_and_connect_sync()``; dask: ``LocalCluster`` + ``wait_for_workers``);
- idle RSS of each engine process (dask: worker + nanny per worker) and of the controller;
- broadcast apply, ``view.apply_sync(noop)`` after warm-up, median: hpcpar ``rc[:]`` (its
  broadcast path), ``broadcast_view()`` and ``broadcast_view(is_coalescing=True)``; ipyparallel
  DirectView ``rc[:]``, BroadcastView and coalescing BroadcastView; dask ``client.run(noop)``;
- push of a 10 MB float64 array to every engine, median of reps, checked on the engines:
  ``view.push({...}, block=True)``; dask ``client.scatter(arr, broadcast=True)``;
- at the smallest N only: load-balanced throughput of ``--lb-tasks`` no-op ``apply_async`` plain,
  with ``retries=1`` and with ``after=<a finished AsyncResult>`` (dask: plain and ``retries=1``);
  the hop-by-hop split of one blocking apply from its own timestamps; and (hpcpar only) a
  ``--long-tasks`` run through ``imap`` with the controller's RSS sampled every 0.5 s.

The controller's CPU time and RSS are taken around each phase (hpcpar: ``controller_pid`` from
``<profile>/security/hpcpar-client.json``; ipyparallel: the controller launcher's pid; dask: the
scheduler runs inside the client process of a ``LocalCluster``, so its figures include the
client). Each child has a timeout; on timeout or exit every process carrying its marker is
stopped by PID (SIGTERM, then SIGKILL). Results are written after every phase, so a child that
times out still reports what it finished. Everything listens on 127.0.0.1.

Memory: from ``--ipp-no-nanny-from`` engines on, ipyparallel engines run without their nanny
(``IPEngine.enable_nanny=False``): one process per engine instead of two, about 54 MB instead of
96 MB, so 256 of them fit in 23 GB; the output says so. While a child runs, the parent watches
MemAvailable and, below ``--min-free-mb``, kills that child's processes by PID and records the N
as out of memory, with the phase it was in.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from backends.base import isolated_env, marked_pids, time_calls  # noqa: E402

SYSTEMS = ("hpcpar", "ipyparallel", "dask")
PUSH_BYTES = 10_000_000
RSS_TARGET_MB = 40.0


def noop() -> None:
    """The no-op task."""
    return None


def ident(x: Any) -> Any:
    """The per-item function of the long run."""
    return x


# --------------------------------------------------------------------------- child side
class Child:
    """One system, one N: start, measure, write results after every phase."""

    def __init__(self, system: str, n: int, opts: dict[str, Any], out: Path) -> None:
        self.system, self.n, self.opts, self.out = system, n, opts, out
        self.res: dict[str, Any] = {"system": system, "engines": n, "errors": {}}
        self.rc: Any = None
        self.client: Any = None
        self.cluster: Any = None
        self.ctl_pid: int | None = None
        self.ctl_pids: list[int] = []
        self.engine_pids: list[int] = []

    def save(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.res, indent=1))
        tmp.replace(self.out)

    # -- process figures -----------------------------------------------------------------
    def ctl(self) -> tuple[float, float]:
        """(CPU seconds, RSS MB) of the controller and its child processes (ipyparallel runs
        its schedulers as children); dask: this process alone (its workers are children)."""
        import psutil

        cpu = rss = 0.0
        for pid in self.ctl_pids:
            try:
                p = psutil.Process(pid)
                t = p.cpu_times()
                cpu += t.user + t.system
                rss += p.memory_info().rss / 2**20
            except psutil.Error:
                pass
        return (cpu, rss) if self.ctl_pids else (float("nan"), float("nan"))

    def phase(self, name: str, fn: Any) -> Any:
        self.res["running"] = name
        self.save()
        cpu0, _ = self.ctl()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - record and go on with the next phase
            self.res["errors"][name] = f"{type(exc).__name__}: {exc}"[:500]
            self.save()
            return None
        cpu1, rss1 = self.ctl()
        self.res.setdefault("controller", {})[name] = {
            "cpu_s": round(cpu1 - cpu0, 3),
            "rss_mb": round(rss1, 1),
        }
        self.save()
        return value

    # -- start ---------------------------------------------------------------------------
    def start(self) -> None:
        import psutil

        self.res["running"] = "start"
        self.save()
        base = marked_pids() | {os.getpid()}
        t0 = time.perf_counter()
        if self.system == "hpcpar":
            import hpcpar

            exe = os.path.join(os.path.dirname(sys.executable), "hpcpar")
            subprocess.run([exe, "start", "-n", str(self.n), "--daemonize", "--wait"],
                           check=True, capture_output=True, timeout=self.opts["start_timeout"])
            self.rc = hpcpar.Client()
            self.rc.wait_for_engines(self.n, timeout=self.opts["start_timeout"],
                                     interactive=False)
            dt = time.perf_counter() - t0
            files = glob.glob(os.path.join(os.environ["HPCPAR_DIR"], "**", "hpcpar-client.json"),
                              recursive=True)
            self.ctl_pid = int(json.loads(Path(files[0]).read_text())["controller_pid"])
        elif self.system == "ipyparallel":
            import logging

            import ipyparallel
            from traitlets.config import Config

            config = Config()
            if self.opts.get("ipp_no_nanny"):
                # One process per engine instead of two (nanny + kernel): about half the memory,
                # without remote signalling of single engines (ipyparallel issue #693).
                config.EngineLauncher.engine_args = ["--IPEngine.enable_nanny=False"]
            self.res["ipp_nanny"] = not self.opts.get("ipp_no_nanny")
            self.cluster = ipyparallel.Cluster(n=self.n, log_level=logging.WARNING,
                                               config=config)
            self.rc = self.cluster.start_and_connect_sync()
            self.rc.wait_for_engines(self.n, timeout=self.opts["start_timeout"])
            dt = time.perf_counter() - t0
            self.ctl_pid = int(self.cluster.controller.pid)
        else:
            from multiprocessing import resource_tracker

            import distributed

            resource_tracker.ensure_running()
            base = marked_pids() | {os.getpid()}
            t0 = time.perf_counter()
            self.cluster = distributed.LocalCluster(
                n_workers=self.n, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None)
            self.client = distributed.Client(self.cluster)
            self.client.wait_for_workers(self.n, timeout=self.opts["start_timeout"])
            dt = time.perf_counter() - t0
            self.ctl_pid = os.getpid()
        self.res["registration_s"] = round(dt, 3)
        self.ctl_pids = [self.ctl_pid]
        if self.system != "dask":
            self.ctl_pids += [c.pid for c in psutil.Process(self.ctl_pid).children(True)]
        self.res["controller_processes"] = len(self.ctl_pids)
        time.sleep(2.0)  # idle: let start-up work settle
        self.engine_pids = sorted(marked_pids() - base - set(self.ctl_pids))
        rss = []
        for pid in self.engine_pids:
            try:
                rss.append(psutil.Process(pid).memory_info().rss / 2**20)
            except psutil.Error:
                pass
        cpu, ctl_rss = self.ctl()
        self.res["engine_processes"] = len(rss)
        if rss:
            self.res["idle_engine_rss_mb_median"] = round(statistics.median(rss), 1)
            self.res["idle_engine_rss_mb_per_engine"] = round(sum(rss) / self.n, 1)
        self.res["controller"] = {"registration": {"cpu_s": round(cpu, 3),
                                                   "rss_mb": round(ctl_rss, 1)}}
        self.save()

    # -- scenarios -----------------------------------------------------------------------
    def timed(self, fn: Any, reps: int, warmup: int) -> dict[str, float]:
        ts = time_calls(fn, reps, warmup)
        return {"median_ms": round(statistics.median(ts) * 1e3, 3),
                "min_ms": round(min(ts) * 1e3, 3), "max_ms": round(max(ts) * 1e3, 3),
                "reps": reps}

    def views(self) -> dict[str, Any]:
        if self.system == "dask":
            return {}
        return {
            "direct": self.rc[:],
            "broadcast": self.rc.broadcast_view(),
            "broadcast_coalescing": self.rc.broadcast_view(is_coalescing=True),
        }

    def apply_all(self) -> None:
        reps = self.opts["reps"] if self.n <= 32 else max(5, self.opts["reps"] // 2)
        out = self.res.setdefault("apply_all", {})
        if self.system == "dask":
            def run() -> None:
                r = self.client.run(noop)
                assert len(r) == self.n, len(r)

            out["run"] = self.phase("apply_all_run", lambda: self.timed(run, reps, 3))
            return
        for kind, view in self.views().items():
            def call(view: Any = view) -> None:
                r = view.apply_sync(noop)
                assert len(r) == self.n, len(r)

            out[kind] = self.phase(f"apply_all_{kind}", lambda call=call: self.timed(call, reps, 3))

    def push(self) -> None:
        import numpy as np

        arr = np.random.default_rng(0).random(PUSH_BYTES // 8)
        reps = self.opts["push_reps"]
        out = self.res.setdefault("push_10MB", {})
        if self.system == "dask":
            def scatter() -> None:
                fut = self.client.scatter(arr, broadcast=True, hash=False)
                who = self.client.who_has(fut)
                assert len(next(iter(who.values()))) == self.n, who

            out["scatter_broadcast"] = self.phase("push_scatter",
                                                  lambda: self.timed(scatter, reps, 1))
            return
        check = f"assert bench_b.shape == ({arr.size},) and bench_b[-1] == {float(arr[-1])!r}"
        for kind, view in self.views().items():
            if kind == "broadcast_coalescing":
                continue

            def push(view: Any = view) -> None:
                view.push({"bench_b": arr}, block=True)

            def measure(push: Any = push, view: Any = view) -> dict[str, float]:
                r = self.timed(push, reps, 1)
                view.execute(check, block=True)
                view.execute("del bench_b", block=True)
                return r

            out[kind] = self.phase(f"push_{kind}", measure)
        self.res["engines_registered_after_push"] = len(self.rc.ids)
        self.save()

    def lb_flags(self) -> None:
        k = self.opts["lb_tasks"]
        out = self.res.setdefault("lb", {})
        if self.system == "dask":
            from distributed import wait

            def dask_run(**kw: Any) -> dict[str, float]:
                wait([self.client.submit(noop, pure=False, **kw) for _ in range(200)])
                t = time.perf_counter()
                wait([self.client.submit(noop, pure=False, **kw) for _ in range(k)], timeout=600)
                dt = time.perf_counter() - t
                return {"tasks_per_s": round(k / dt, 1), "seconds": round(dt, 3), "n": k}

            out["plain"] = self.phase("lb_plain", dask_run)
            out["retries1"] = self.phase("lb_retries1", lambda: dask_run(retries=1))
            return
        lview = self.rc.load_balanced_view()
        first = lview.apply_async(noop)
        first.get(timeout=60)

        def run(**flags: Any) -> dict[str, float]:
            with lview.temp_flags(**flags):
                warm = [lview.apply_async(noop) for _ in range(200)]
                for ar in warm:
                    ar.get(timeout=120)
                t = time.perf_counter()
                ars = [lview.apply_async(noop) for _ in range(k)]
                for ar in ars:
                    ar.get(timeout=600)
                dt = time.perf_counter() - t
            return {"tasks_per_s": round(k / dt, 1), "seconds": round(dt, 3), "n": k}

        out["plain"] = self.phase("lb_plain", run)
        out["retries1"] = self.phase("lb_retries1", lambda: run(retries=1))
        out["after"] = self.phase("lb_after", lambda: run(after=first))

    def hops(self) -> None:
        """Split one blocking apply to one engine by its own timestamps (same host clock)."""
        if self.system == "dask":
            return
        view = self.rc[self.rc.ids[0]]
        calls = self.opts["hop_calls"]
        rows: list[list[float]] = []

        def one() -> None:
            t0 = time.time()
            ar = view.apply_async(noop)
            ar.get(timeout=30)
            t1 = time.time()
            md = ar.metadata
            if isinstance(md, list):
                md = md[0]
            ts = [md["submitted"], md["started"], md["completed"], md["received"]]
            ts = [x.timestamp() for x in ts]
            rows.append([ts[0] - t0, ts[1] - ts[0], ts[2] - ts[1], ts[3] - ts[2], t1 - ts[3],
                         t1 - t0])

        def measure() -> dict[str, float]:
            for _ in range(50):
                one()
            rows.clear()
            for _ in range(calls):
                one()
            names = ["call_to_submitted", "submitted_to_started", "started_to_completed",
                     "completed_to_received", "received_to_return", "total"]
            return {name + "_us": round(statistics.median(col) * 1e6, 1)
                    for name, col in zip(names, zip(*rows, strict=True), strict=True)}

        self.res["hops"] = self.phase("hops", measure)

    def long_run(self) -> None:
        if self.system != "hpcpar" or not self.opts["long_tasks"]:
            return
        k = self.opts["long_tasks"]
        lview = self.rc.load_balanced_view()
        samples: list[tuple[float, float, int]] = []
        done = [0]
        stop = threading.Event()

        def sampler() -> None:
            t0 = time.monotonic()
            while not stop.is_set():
                samples.append((round(time.monotonic() - t0, 2), round(self.ctl()[1], 1), done[0]))
                stop.wait(0.5)

        def run() -> dict[str, Any]:
            th = threading.Thread(target=sampler, daemon=True)
            th.start()
            t = time.perf_counter()
            for _ in lview.imap(ident, range(k), ordered=False, max_outstanding=1000):
                done[0] += 1
            dt = time.perf_counter() - t
            stop.set()
            th.join()
            rss = [s[1] for s in samples]
            tenth = max(1, len(rss) // 10)
            return {"tasks": k, "seconds": round(dt, 2), "tasks_per_s": round(k / dt, 1),
                    "rss_mb_first_tenth": round(statistics.median(rss[:tenth]), 1),
                    "rss_mb_last_tenth": round(statistics.median(rss[-tenth:]), 1),
                    "rss_mb_max": max(rss), "samples": samples[:: max(1, len(samples) // 60)]}

        self.res["long_run"] = self.phase("long_run", run)

    def stop(self) -> None:
        try:
            if self.system == "hpcpar":
                self.rc.close()
                exe = os.path.join(os.path.dirname(sys.executable), "hpcpar")
                subprocess.run([exe, "stop"], capture_output=True, timeout=60, check=False)
            elif self.system == "ipyparallel":
                self.rc.close()
                self.cluster.stop_cluster_sync()
            else:
                self.client.close()
                self.cluster.close()
        except Exception as exc:  # noqa: BLE001 - the parent sweeps by marker anyway
            self.res["errors"]["stop"] = f"{type(exc).__name__}: {exc}"[:500]
            self.save()

    def run(self) -> None:
        self.save()
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001
            self.res["errors"]["start"] = f"{type(exc).__name__}: {exc}"[:500]
            self.save()
            return
        self.apply_all()
        self.push()
        self.res.pop("running", None)
        self.save()
        if self.opts["extras"]:
            for name, step in (("hops", self.hops), ("lb", self.lb_flags),
                               ("long_run", self.long_run)):
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - e.g. every engine lost
                    self.res["errors"][name] = f"{type(exc).__name__}: {exc}"[:500]
                    self.save()
        self.stop()
        self.res["done"] = True
        self.save()


# --------------------------------------------------------------------------- parent side
def sweep(marker: str) -> list[int]:
    """Stop every process carrying ``marker``, by PID (SIGTERM, then SIGKILL)."""
    from run import sweep as _sweep

    return _sweep(marker)


def mem_available_mb() -> float:
    """MemAvailable from /proc/meminfo, MB (what the kernel can hand out without swapping)."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo (Linux 3.14 or later is needed)")


def wait_watched(proc: subprocess.Popen[bytes], marker: str, timeout: float,
                 min_free_mb: float) -> str | None:
    """Wait for the child; stop it and every process of its run on timeout or when the
    machine runs short of memory (other users share it). Returns why it was stopped, if so."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        free = mem_available_mb()
        why = None
        if free < min_free_mb:
            why = f"out of memory: MemAvailable {free:.0f} MB < {min_free_mb:.0f} MB"
        elif time.monotonic() > deadline:
            why = f"timeout after {timeout:.0f} s"
        if why:
            # SIGKILL at once: under memory pressure a graceful stop only makes it worse.
            for pid in marked_pids(marker) | {proc.pid}:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            proc.wait()
            return why
        time.sleep(0.25)
    return None


def run_child(system: str, n: int, opts: dict[str, Any], workdir: Path) -> dict[str, Any]:
    base = workdir / f"{system}-{n}"
    marker = f"{uuid.uuid4().hex}-{system}-{n}"
    env = isolated_env(base, marker)
    out = base / "result.json"
    timeout = opts["start_timeout"] + 300 + (opts["long_tasks"] / 200 if opts["extras"] else 0)
    if opts["extras"]:
        timeout += opts["lb_tasks"] * 3 / 100
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", system, str(n),
           json.dumps(opts), str(out)]
    t0 = time.monotonic()
    with open(base / "child.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=base / "cwd", stdout=log, stderr=log,
                                start_new_session=True)
        stopped = wait_watched(proc, marker, timeout, opts["min_free_mb"])
    killed = sweep(marker)
    try:
        res = json.loads(out.read_text())
    except (OSError, ValueError):
        res = {"system": system, "engines": n, "errors": {}}
    where = res.pop("running", None) or "the child's start-up"
    if stopped:
        res["errors"]["stopped"] = f"{stopped} during {where}"
        if stopped.startswith("out of memory"):
            res["out_of_memory"] = where
    if proc.returncode != 0:
        res["errors"]["child"] = f"exit {proc.returncode} after {time.monotonic() - t0:.0f} s " \
                                 f"(log {base / 'child.log'})"
    if killed:
        res["swept_pids"] = killed
    return res


def get(res: dict[str, Any], *path: str) -> float | None:
    cur: Any = res
    for p in path:
        if not isinstance(cur, dict) or p not in cur or cur[p] is None:
            return None
        cur = cur[p]
    return cur


def verdicts(rows: list[dict[str, Any]], ns: list[int]) -> list[tuple[str, str, str]]:
    by = {(r["system"], r["engines"]): r for r in rows}
    out: list[tuple[str, str, str]] = []

    def ratio(target: str, a: float | None, b: float | None, limit: float, unit: str) -> None:
        if a is None or b is None:
            out.append((target, "not measured", "n/a"))
            return
        r = a / b
        out.append((target, f"{a:.4g} {unit} against {b:.4g} {unit}: {r:.2f} of it "
                            f"({b / a:.1f}x faster)", "PASS" if r <= limit else "FAIL"))

    n32 = 32 if 32 in ns else max(ns)
    hp, ip = by.get(("hpcpar", n32), {}), by.get(("ipyparallel", n32), {})
    ratio(f"broadcast apply, {n32} engines, <= 1/3 of ipyparallel DirectView",
          get(hp, "apply_all", "direct", "median_ms"),
          get(ip, "apply_all", "direct", "median_ms"), 1 / 3, "ms")
    ratio(f"broadcast apply, {n32} engines, <= 1/2 of ipyparallel BroadcastView",
          get(hp, "apply_all", "direct", "median_ms"),
          get(ip, "apply_all", "broadcast", "median_ms"), 1 / 2, "ms")
    ratio(f"push 10 MB to {n32} engines <= 1/3 of ipyparallel's",
          get(hp, "push_10MB", "direct", "median_ms"),
          get(ip, "push_10MB", "direct", "median_ms"), 1 / 3, "ms")
    both = [n for n in ns if get(by.get(("hpcpar", n), {}), "registration_s") is not None
            and get(by.get(("ipyparallel", n), {}), "registration_s") is not None]
    if both:
        nb = max(both)
        ratio(f"{nb} engines registered in <= 1/3 of ipyparallel's time",
              get(by[("hpcpar", nb)], "registration_s"),
              get(by[("ipyparallel", nb)], "registration_s"), 1 / 3, "s")
    rss = [get(by.get(("hpcpar", n), {}), "idle_engine_rss_mb_per_engine") for n in ns]
    rss = [x for x in rss if x is not None]
    if rss:
        worst = max(rss)
        out.append((f"idle engine RSS <= {RSS_TARGET_MB:.0f} MB",
                    f"{worst:.1f} MB per engine (all its processes; worst N)",
                    "PASS" if worst <= RSS_TARGET_MB else "FAIL"))
    small = by.get(("hpcpar", min(ns)), {})
    plain = get(small, "lb", "plain", "tasks_per_s")
    for flag in ("retries1", "after"):
        v = get(small, "lb", flag, "tasks_per_s")
        if plain and v:
            out.append((f"LB with {flag} >= 1/2 of plain (issue #3)",
                        f"{v:.0f} against {plain:.0f} tasks/s ({v / plain:.2f})",
                        "PASS" if v >= plain / 2 else "FAIL"))
    return out


def rss_slope(samples: list[list[float]]) -> str:
    """Least-squares growth of RSS per 10k finished tasks, after the first tenth of the run."""
    pts = [(s[2], s[1]) for s in samples[len(samples) // 10:]]
    if len(pts) < 3 or pts[-1][0] == pts[0][0]:
        return "too few samples for a slope"
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return (f"after the first tenth RSS grows {slope * 1e4:.2f} MB per 10k tasks "
            f"({pts[0][1]} MB at {pts[0][0]} tasks, {pts[-1][1]} MB at {pts[-1][0]})")


def markdown(rows: list[dict[str, Any]], ns: list[int]) -> str:
    by = {(r["system"], r["engines"]): r for r in rows}
    lines = []

    def fmt(v: Any) -> str:
        return "–" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

    series = [
        ("registration, s", "registration_s", None),
        ("broadcast apply `rc[:]` / `client.run`, ms", "apply_all", "direct"),
        ("broadcast apply, BroadcastView, ms", "apply_all", "broadcast"),
        ("broadcast apply, coalescing BroadcastView, ms", "apply_all", "broadcast_coalescing"),
        ("push 10 MB to all `rc[:]` / scatter broadcast, ms", "push_10MB", "direct"),
        ("push 10 MB to all, BroadcastView, ms", "push_10MB", "broadcast"),
        ("idle engine RSS, per engine (all its processes), MB", "idle_engine_rss_mb_per_engine",
         None),
        ("idle engine RSS, median per process, MB", "idle_engine_rss_mb_median", None),
        ("controller processes", "controller_processes", None),
        ("controller RSS after registration, MB", "controller", "registration"),
        ("controller RSS after the pushes, MB", "controller", "push_direct"),
    ]
    head = "| measure | system | " + " | ".join(f"N={n}" for n in ns) + " |"
    lines += [head, "|---|---|" + "---|" * len(ns)]
    for label, key, sub in series:
        for system in SYSTEMS:
            vals = []
            for n in ns:
                r = by.get((system, n), {})
                if key == "apply_all" and system == "dask":
                    v = get(r, key, "run", "median_ms") if sub == "direct" else None
                elif key == "push_10MB" and system == "dask":
                    v = get(r, key, "scatter_broadcast", "median_ms") if sub == "direct" else None
                elif key == "controller":
                    d = "push_scatter" if system == "dask" and sub == "push_direct" else sub
                    v = get(r, key, d, "rss_mb")
                elif sub is None:
                    v = get(r, key)
                else:
                    v = get(r, key, sub, "median_ms")
                vals.append(v)
            if any(v is not None for v in vals):
                lines.append(f"| {label} | {system} | " + " | ".join(fmt(v) for v in vals) + " |")
    lines.append("")
    lines.append("| controller CPU, s | system | " + " | ".join(f"N={n}" for n in ns) + " |")
    lines.append("|---|---|" + "---|" * len(ns))
    for phase in ("registration", "apply_all_direct", "apply_all_broadcast", "push_direct"):
        for system in SYSTEMS:
            d = {"apply_all_direct": "apply_all_run", "push_direct": "push_scatter"}.get(phase) \
                if system == "dask" else phase
            if d is None:
                continue
            vals = [get(by.get((system, n), {}), "controller", d, "cpu_s") for n in ns]
            if any(v is not None for v in vals):
                lines.append(f"| {phase} | {system} | " + " | ".join(fmt(v) for v in vals) + " |")
    small = min(ns)
    lb_rows = []
    for system in SYSTEMS:
        r = by.get((system, small), {})
        vals = [get(r, "lb", k, "tasks_per_s") for k in ("plain", "retries1", "after")]
        if any(v is not None for v in vals):
            lb_rows.append(f"| {system} | " + " | ".join(fmt(v) for v in vals) + " |")
    if lb_rows:
        lines += ["", f"Load-balanced no-op tasks at N={small} (tasks/s):", "",
                  "| system | plain | retries=1 | after=<finished> |", "|---|---|---|---|"]
        lines += lb_rows
    hop_rows = [(s, get(by.get((s, small), {}), "hops")) for s in ("hpcpar", "ipyparallel")]
    if any(h for _, h in hop_rows):
        keys = ["call_to_submitted_us", "submitted_to_started_us", "started_to_completed_us",
                "completed_to_received_us", "received_to_return_us", "total_us"]
        lines += ["", f"One blocking apply to one engine at N={small}, medians in us:", "",
                  "| system | " + " | ".join(k[:-3].replace("_", " ") for k in keys) + " |",
                  "|---|" + "---|" * len(keys)]
        for s, h in hop_rows:
            if h:
                lines.append(f"| {s} | " + " | ".join(fmt(h.get(k)) for k in keys) + " |")
    lr = get(by.get(("hpcpar", small), {}), "long_run")
    if lr:
        lines += ["", f"hpcpar long run: {lr['tasks']} tasks through imap in {lr['seconds']} s "
                      f"({lr['tasks_per_s']} tasks/s); controller RSS median "
                      f"{lr['rss_mb_first_tenth']} MB in the first tenth of the run, "
                      f"{lr['rss_mb_last_tenth']} MB in the last, max {lr['rss_mb_max']} MB; "
                      f"{rss_slope(lr['samples'])}."]
    lines += ["", "| target | this run | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {p} |" for t, v, p in verdicts(rows, ns)]
    notes = []
    for r in rows:
        if r.get("ipp_nanny") is False:
            notes.append(f"- ipyparallel N={r['engines']}: engines started without their nanny "
                         "(`IPEngine.enable_nanny=False`, one process per engine instead of two) "
                         "so that they fit in memory; its per-engine RSS is the kernel alone.")
        after = r.get("engines_registered_after_push")
        if after is not None and after != r["engines"]:
            notes.append(f"- {r['system']} N={r['engines']}: {after} of {r['engines']} engines "
                         "still registered after the pushes.")
        if r.get("out_of_memory"):
            notes.append(f"- {r['system']} N={r['engines']}: out of memory during "
                         f"{r['out_of_memory']} (stopped by the watchdog).")
    if notes:
        lines += ["", "Notes:", ""] + notes
    errs = [(r["system"], r["engines"], k, v) for r in rows for k, v in r["errors"].items()]
    if errs:
        lines += ["", "Errors:", ""] + [f"- {s} N={n} {k}: {v}" for s, n, k, v in errs]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], ns: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["system"], r["engines"]): r for r in rows}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    curves = [
        ("hpcpar rc[:]", "hpcpar", ("apply_all", "direct"), ("push_10MB", "direct")),
        ("hpcpar BroadcastView", "hpcpar", ("apply_all", "broadcast"), ("push_10MB", "broadcast")),
        ("ipyparallel DirectView", "ipyparallel", ("apply_all", "direct"),
         ("push_10MB", "direct")),
        ("ipyparallel BroadcastView", "ipyparallel", ("apply_all", "broadcast"),
         ("push_10MB", "broadcast")),
        ("ipyparallel BroadcastView coalescing", "ipyparallel",
         ("apply_all", "broadcast_coalescing"), None),
        ("dask run / scatter(broadcast)", "dask", ("apply_all", "run"),
         ("push_10MB", "scatter_broadcast")),
    ]
    no_nanny = sorted(r["engines"] for r in rows if r.get("ipp_nanny") is False)
    nanny_note = f" (N>={no_nanny[0]}: no nanny)" if no_nanny else ""
    for label, system, app, push in curves:
        if system == "ipyparallel":
            label += nanny_note
        for ax, key in ((axes[0], app), (axes[1], push)):
            if key is None:
                continue
            pts = [(n, get(by.get((system, n), {}), *key, "median_ms")) for n in ns]
            pts = [(n, v) for n, v in pts if v is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=label)
    for system in SYSTEMS:
        pts = [(n, get(by.get((system, n), {}), "registration_s")) for n in ns]
        pts = [(n, v) for n, v in pts if v is not None]
        if pts:
            label = system + (nanny_note if system == "ipyparallel" else "")
            axes[2].plot(*zip(*pts, strict=True), marker="o", label=label)
    for ax, t, unit in ((axes[0], "broadcast apply (median)", "ms"),
                        (axes[1], "push 10 MB to all engines (median)", "ms"),
                        (axes[2], "start to all engines registered", "s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ns)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("engines")
        ax.set_ylabel(unit)
        ax.set_title(t)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        system, n, opts, out = argv[1], int(argv[2]), json.loads(argv[3]), Path(argv[4])
        os.dup2(2, 1)
        Child(system, n, opts, out).run()
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--backends", default=",".join(SYSTEMS))
    ap.add_argument("--reps", type=int, default=20, help="broadcast applies timed (half >32)")
    ap.add_argument("--push-reps", type=int, default=3)
    ap.add_argument("--lb-tasks", type=int, default=5000)
    ap.add_argument("--long-tasks", type=int, default=100_000, help="0 to skip")
    ap.add_argument("--hop-calls", type=int, default=300)
    ap.add_argument("--no-extras", action="store_true",
                    help="skip the LB, hop and long runs (otherwise done at the smallest N)")
    ap.add_argument("--ipp-no-nanny-from", type=int, default=256, metavar="N",
                    help="start ipyparallel engines without their nanny process "
                         "(IPEngine.enable_nanny=False) from this N on, which halves their "
                         "memory (one process per engine instead of two); 0: never")
    ap.add_argument("--min-free-mb", type=float, default=3072,
                    help="stop a child and record its N as out of memory when MemAvailable "
                         "falls below this (the machine is shared)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--plot", default=str(HERE.parent / "docs" / "performance-broadcast.png"))
    ap.add_argument("--from-json", default=None, help="re-render a saved run")
    args = ap.parse_args(argv)
    from run import become_subreaper, machine_info

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        rows, ns, info = saved["rows"], saved["engines"], saved["machine"]
    else:
        become_subreaper()
        info = machine_info()
        ns = sorted(args.engines)
        systems = [s for s in args.backends.split(",") if s]
        rows = []
        workdir = Path(tempfile.mkdtemp(prefix="hpcpar-bcast-"))
        for n in ns:
            for system in systems:
                opts = {"reps": args.reps, "push_reps": args.push_reps,
                        "lb_tasks": args.lb_tasks, "long_tasks": args.long_tasks,
                        "hop_calls": args.hop_calls,
                        "extras": n == ns[0] and not args.no_extras,
                        "start_timeout": 120 + 3 * n, "min_free_mb": args.min_free_mb,
                        "ipp_no_nanny": system == "ipyparallel"
                        and 0 < args.ipp_no_nanny_from <= n}
                if opts["ipp_no_nanny"]:
                    print(f"[{system}] N={n}: engines without their nanny "
                          "(IPEngine.enable_nanny=False): one process per engine, for memory",
                          flush=True)
                print(f"[{system}] N={n} ...", flush=True)
                t = time.monotonic()
                res = run_child(system, n, opts, workdir)
                print(f"[{system}] N={n} done in {time.monotonic() - t:.0f} s; "
                      f"errors: {res['errors'] or 'none'}", flush=True)
                rows.append(res)
                if args.json:
                    Path(args.json).write_text(json.dumps(
                        {"machine": info, "engines": ns, "rows": rows,
                         "command": " ".join(sys.argv)}, indent=1))
    md = markdown(rows, ns)
    print(md)
    if args.markdown:
        Path(args.markdown).write_text(md + "\n")
    if args.plot:
        title = (f"hpcpar {info.get('hpcpar_commit', '?')}, {info.get('date', '')}, "
                 f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores; "
                 "benchmarks/broadcast.py")
        try:
            plot(rows, ns, Path(args.plot), title)
            print(f"plot written to {args.plot}")
        except ImportError:
            print("matplotlib missing: pip install matplotlib into the bench venv for the plot")
    return 0


if __name__ == "__main__":
    sys.exit(main())
