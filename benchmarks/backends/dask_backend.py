"""dask.distributed adapter: LocalCluster(processes=True, threads_per_worker=1) + Client."""

from __future__ import annotations

import importlib.metadata as md
import statistics
import time
from typing import Any

import numpy as np

from .base import Backend, summary, time_calls


class DaskBackend(Backend):
    """dask.distributed with one single-threaded worker process per engine."""

    name = "dask"

    def __init__(self) -> None:
        super().__init__()
        self.cluster: Any = None
        self.client: Any = None
        self.workers: list[str] = []

    def prepare(self) -> None:
        from multiprocessing import resource_tracker

        import distributed

        # The spawn start method's helper lives as long as this process: start it now so
        # it counts as client-side, not as one of the cluster's processes.
        resource_tracker.ensure_running()
        self.distributed = distributed
        super().prepare()

    def versions(self) -> dict[str, str]:
        return {p: md.version(p) for p in ("dask", "distributed", "tornado", "msgpack", "numpy")}

    def start(self, n: int) -> None:
        self.n = n
        d = self.distributed
        self.cluster = d.LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        self.client = d.Client(self.cluster)
        self.client.wait_for_workers(n, timeout=120)
        self.workers = sorted(self.client.scheduler_info()["workers"])

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def latency(self, n_calls: int, warmup: int) -> dict[str, float]:
        noop, client, w = self.fns["noop"], self.client, [self.workers[0]]
        return summary(
            time_calls(lambda: client.submit(noop, pure=False, workers=w).result(), n_calls, warmup)
        )

    def lb_throughput(self, n_tasks: int) -> dict[str, float]:
        noop, client = self.fns["noop"], self.client
        warm = [client.submit(noop, pure=False) for _ in range(min(200, n_tasks))]
        self.distributed.wait(warm, timeout=60)
        del warm
        t0 = time.perf_counter()
        futs = [client.submit(noop, pure=False) for _ in range(n_tasks)]
        t_submit = time.perf_counter() - t0
        self.distributed.wait(futs, timeout=120)
        dt = time.perf_counter() - t0
        if any(f.status != "finished" for f in futs):
            raise AssertionError("some tasks did not finish")
        return {"seconds": dt, "submit_s": t_submit, "tasks_per_s": n_tasks / dt, "n": n_tasks}

    def map(self, n_items: int, chunksize: int) -> dict[str, float]:
        batch, client = self.fns["ident_batch"], self.client

        def run(n: int) -> list[Any]:
            batches = [range(i, min(i + chunksize, n)) for i in range(0, n, chunksize)]
            futs = client.map(batch, batches, pure=False)
            return [x for part in client.gather(futs) for x in part]

        run(10 * chunksize)  # warm-up
        t0 = time.perf_counter()
        out = run(n_items)
        dt = time.perf_counter() - t0
        if len(out) != n_items or out[-1] != n_items - 1:
            raise AssertionError(f"map returned {len(out)} items")
        return {"seconds": dt, "items_per_s": n_items / dt, "n": n_items}

    def apply_all(self, n_calls: int, warmup: int) -> dict[str, float]:
        noop, client = self.fns["noop"], self.client
        if len(client.run(noop)) != self.n:
            raise AssertionError("client.run did not reach every worker")
        return summary(time_calls(lambda: client.run(noop), n_calls, warmup))

    def push_pull(self, nbytes: int, reps: int) -> dict[str, float]:
        arr = np.random.default_rng(0).random(nbytes // 8)
        client, w = self.client, [self.workers[0]]
        push_t: list[float] = []
        pull_t: list[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fut = client.scatter(arr, workers=w, hash=False)
            push_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = client.gather(fut)
            pull_t.append(time.perf_counter() - t0)
            if back.shape != arr.shape or back[-1] != arr[-1]:
                raise AssertionError("gathered array differs from scattered one")
            del fut, back
            time.sleep(0.2)  # let the worker drop the released key
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
        client = self.client
        sc_t: list[float] = []
        ga_t: list[float] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            parts = np.array_split(arr, len(self.workers))
            futs = client.scatter(parts, hash=False)  # round-robin over the workers
            sc_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            back = np.concatenate(client.gather(futs))
            ga_t.append(time.perf_counter() - t0)
            if back.shape != arr.shape or back[-1] != arr[-1]:
                raise AssertionError("gathered array differs")
            del futs, back
            time.sleep(0.2)
        sc, ga = statistics.median(sc_t), statistics.median(ga_t)
        total = [a + b for a, b in zip(sc_t, ga_t, strict=True)]
        return {"scatter_s": sc, "gather_s": ga, "seconds": statistics.median(total), "reps": reps}
