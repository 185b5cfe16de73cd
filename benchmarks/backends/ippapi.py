"""Scenarios written against ipyparallel's public client API, shared by ipyparallel and hpcpar."""

from __future__ import annotations

import statistics
import time
from types import ModuleType
from typing import Any

import numpy as np

from .base import Backend, summary, time_calls


class IppApiBackend(Backend):
    """A backend driven through ``Client`` / ``DirectView`` / ``LoadBalancedView``."""

    ipp: ModuleType

    def __init__(self) -> None:
        super().__init__()
        self.rc: Any = None

    def _check_ready(self) -> None:
        ids = list(self.rc.ids)
        if len(ids) < self.n:
            raise RuntimeError(f"only {len(ids)} of {self.n} engines registered")

    def latency(self, n_calls: int, warmup: int) -> dict[str, float]:
        noop = self.fns["noop"]
        view = self.rc[self.rc.ids[0]]
        view.block = True
        return summary(time_calls(lambda: view.apply_sync(noop), n_calls, warmup))

    def lb_throughput(self, n_tasks: int) -> dict[str, float]:
        noop = self.fns["noop"]
        lview = self.rc.load_balanced_view()
        warm = [lview.apply_async(noop) for _ in range(min(200, n_tasks))]
        self.rc.wait(warm, timeout=60)
        t0 = time.perf_counter()
        ars = [lview.apply_async(noop) for _ in range(n_tasks)]
        t_submit = time.perf_counter() - t0
        for ar in ars:
            ar.get(timeout=120)
        dt = time.perf_counter() - t0
        return {"seconds": dt, "submit_s": t_submit, "tasks_per_s": n_tasks / dt, "n": n_tasks}

    def map(self, n_items: int, chunksize: int) -> dict[str, float]:
        ident = self.fns["ident"]
        lview = self.rc.load_balanced_view()
        lview.map_sync(ident, range(10 * chunksize), chunksize=chunksize)  # warm-up
        t0 = time.perf_counter()
        out = lview.map_sync(ident, range(n_items), chunksize=chunksize)
        dt = time.perf_counter() - t0
        out = list(out)
        if len(out) != n_items or out[-1] != n_items - 1:
            raise AssertionError(f"map returned {len(out)} items, last {out[-1]!r}")
        return {"seconds": dt, "items_per_s": n_items / dt, "n": n_items}

    def apply_all(self, n_calls: int, warmup: int) -> dict[str, float]:
        noop = self.fns["noop"]
        dview = self.rc[:]
        dview.block = True
        res = dview.apply_sync(noop)
        if len(res) != self.n:
            raise AssertionError(f"apply to all gave {len(res)} results, expected {self.n}")
        return summary(time_calls(lambda: dview.apply_sync(noop), n_calls, warmup))

    def push_pull(self, nbytes: int, reps: int) -> dict[str, float]:
        arr = np.random.default_rng(0).random(nbytes // 8)
        view = self.rc[self.rc.ids[0]]
        view.block = True
        push_t: list[float] = []
        pull_t: list[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            view.push({"bench_a": arr}, block=True)
            push_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = view.pull("bench_a", block=True)
            pull_t.append(time.perf_counter() - t0)
            if back.shape != arr.shape or back.dtype != arr.dtype or back[-1] != arr[-1]:
                raise AssertionError("pulled array differs from pushed one")
            del back
        view.execute("del bench_a", block=True)
        push_s, pull_s = statistics.median(push_t), statistics.median(pull_t)
        return {
            "push_s": push_s,
            "pull_s": pull_s,
            "push_MBps": nbytes / push_s / 1e6,
            "pull_MBps": nbytes / pull_s / 1e6,
            "reps": reps,
        }

    def scatter_gather(self, n_items: int, reps: int) -> dict[str, float]:
        arr = np.random.default_rng(1).random(n_items)
        dview = self.rc[:]
        dview.block = True
        sc_t: list[float] = []
        ga_t: list[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            dview.scatter("bench_x", arr, block=True)
            sc_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = dview.gather("bench_x", block=True)
            ga_t.append(time.perf_counter() - t0)
            back = np.asarray(back)
            if back.shape != arr.shape or back.dtype != arr.dtype or back[-1] != arr[-1]:
                raise AssertionError(f"gathered {back.shape} {back.dtype}, expected {arr.shape}")
            del back
        dview.execute("del bench_x", block=True)
        sc, ga = statistics.median(sc_t), statistics.median(ga_t)
        total = [a + b for a, b in zip(sc_t, ga_t, strict=True)]
        return {"scatter_s": sc, "gather_s": ga, "seconds": statistics.median(total), "reps": reps}
