"""The interface every backend adapter implements, plus timing helpers shared by all."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

MARKER_ENV = "HPCPAR_BENCH_RUN"


def isolated_env(base: Path, marker: str) -> dict[str, str]:
    """The environment of one measured child: its own state directories under ``base``
    for every system, and ``marker`` so every process it starts can be found and stopped."""
    for sub in ("hpcpar", "ipython", "dask", "jupyter", "cwd"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({
        MARKER_ENV: marker,
        "HPCPAR_DIR": str(base / "hpcpar"),
        "IPYTHONDIR": str(base / "ipython"),
        "JUPYTER_RUNTIME_DIR": str(base / "jupyter"),
        "DASK_TEMPORARY_DIRECTORY": str(base / "dask"),
        "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def time_calls(fn: Callable[[], Any], n: int, warmup: int) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``n`` times; return each call's seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    """Median, p99, min, max and count of a list of seconds."""
    return {
        "median_s": statistics.median(samples),
        "p99_s": percentile(samples, 99),
        "min_s": min(samples),
        "max_s": max(samples),
        "n": len(samples),
    }


def marked_pids(marker: str | None = None) -> set[int]:
    """PIDs of live processes whose environment carries this run's marker (never by name)."""
    marker = marker or os.environ.get(MARKER_ENV, "")
    if not marker:
        return set()
    needle = f"{MARKER_ENV}={marker}".encode()
    found: set[int] = set()
    for proc in psutil.process_iter(["pid"]):
        try:
            with open(f"/proc/{proc.pid}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        found.add(proc.pid)
        except (OSError, psutil.Error):
            continue
    return found


def alive(pids: Iterable[int]) -> set[int]:
    """The subset of ``pids`` that still run (zombies count as gone)."""
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.Error:
            continue
    return out


def wait_gone(pids: Iterable[int], timeout: float) -> set[int]:
    """Wait until every pid has exited (reaping our own children); return those still alive."""
    pids = set(pids)
    deadline = time.monotonic() + timeout
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        left = alive(pids)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.005)


class Backend:
    """One system under test. Each method runs in the backend's own worker process.

    ``fns`` holds the user functions (defined in the worker's ``__main__`` so every
    system ships them by value, as it would an interactive user's function).
    """

    name = "base"

    def __init__(self) -> None:
        self.fns: dict[str, Callable[..., Any]] = {}
        self.n = 0
        self.cluster_pids: set[int] = set()
        self._baseline: set[int] = set()

    # -- lifecycle -------------------------------------------------------------
    def prepare(self) -> None:
        """Untimed set-up before start (imports, version checks)."""
        self._baseline = marked_pids() | {os.getpid()}

    def start(self, n: int) -> None:
        """Start a cluster of ``n`` engines and connect a client; return when all are ready."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the cluster started by :meth:`start` (client closed too)."""
        raise NotImplementedError

    def record_pids(self) -> None:
        """Remember the cluster's processes (those carrying the marker, started since prepare)."""
        self.cluster_pids = marked_pids() - self._baseline

    def versions(self) -> dict[str, str]:
        """Versions of the packages this backend uses."""
        return {}

    # -- scenarios -------------------------------------------------------------
    def latency(self, n_calls: int, warmup: int) -> dict[str, float]:
        """Blocking apply on one engine, timed call by call."""
        raise NotImplementedError

    def lb_throughput(self, n_tasks: int) -> dict[str, float]:
        """Load-balanced no-op tasks submitted asynchronously, waited for all."""
        raise NotImplementedError

    def map(self, n_items: int, chunksize: int) -> dict[str, float]:
        """Load-balanced map of a trivial function over ``range(n_items)``."""
        raise NotImplementedError

    def apply_all(self, n_calls: int, warmup: int) -> dict[str, float]:
        """Blocking apply on every engine at once, timed call by call."""
        raise NotImplementedError

    def push_pull(self, nbytes: int, reps: int) -> dict[str, float]:
        """Send a float64 array of ``nbytes`` to one engine and fetch it back."""
        raise NotImplementedError

    def scatter_gather(self, n_items: int, reps: int) -> dict[str, float]:
        """Split a float64 array of ``n_items`` over all engines and gather it back."""
        raise NotImplementedError
