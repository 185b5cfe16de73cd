"""Where one blocking apply spends its time: hop split and thread wake-ups.

Usage (run on demand, never in tests)::

    python benchmarks/latency_probe.py [--calls 1000] [--rounds 2] [--engines 2] [--sync]

Starts a local cluster (``hpcpar start -n N --daemonize --wait``, 127.0.0.1,
a private HPCPAR_DIR), then for each round times one blocking call on engine 0
(``apply_async(noop)`` + ``get()``; with ``--sync``, ``apply_sync(noop)``, the
latency benchmark's call) and prints the median and p99, the median split by the reply's own
timestamps (call to submitted, submitted to started, started to completed,
completed to received, received to return), and, per thread of the client,
the controller and engine 0, the CPU time, run-queue wait and number of
times it was scheduled in, per call (``/proc/<pid>/task/<tid>/schedstat``,
Linux only). The cluster is stopped at the end, whatever happens.
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
import time
from typing import Any


def noop() -> None:
    return None


def thread_stats(pids: dict[str, int]) -> dict[tuple[str, int], tuple[str, int, int, int]]:
    """(process, tid) -> (thread name, ns on CPU, ns waiting to run, times scheduled in)."""
    out = {}
    for role, pid in pids.items():
        for task in glob.glob(f"/proc/{pid}/task/*"):
            try:
                run, wait, slices = map(int, open(f"{task}/schedstat").read().split())
                name = open(f"{task}/comm").read().strip()
            except OSError:
                continue  # the thread ended, or no schedstat on this kernel
            tid = int(task.rsplit("/", 1)[1])
            out[(role, tid)] = ("main" if tid == pid else name, run, wait, slices)
    return out


def one_round(view: Any, calls: int, pids: dict[str, int], sync: bool = False) -> None:
    for _ in range(50):
        view.apply_sync(noop)
    before = thread_stats(pids)
    times, hops = [], []
    for _ in range(calls):
        t0 = time.time()
        if sync:  # what the latency benchmark times; the metadata is then found by msg_id
            view.apply_sync(noop)
            t1 = time.time()
            md = view.client.metadata[view.history[-1]]
        else:
            ar = view.apply_async(noop)
            ar.get()
            t1 = time.time()
            md = ar.metadata
        sub, start, done, recv = (md[k].timestamp() for k in ("submitted", "started", "completed", "received"))
        times.append(t1 - t0)
        hops.append((sub - t0, start - sub, done - start, recv - done, t1 - recv))
    after = thread_stats(pids)
    times.sort()
    split = " / ".join(f"{statistics.median(h[i] for h in hops) * 1e6:.0f}" for i in range(5))
    print(f"median {statistics.median(times) * 1e3:.3f} ms, p99 {times[int(len(times) * 0.99) - 1] * 1e3:.2f} ms; "
          f"hops (us) {split}")
    total = [0.0, 0.0, 0.0]
    for key in sorted(after):
        if key not in before:
            continue
        name, run, wait, slices = after[key]
        per = [(run - before[key][1]) / calls / 1e3, (wait - before[key][2]) / calls / 1e3,
               (slices - before[key][3]) / calls]
        total = [a + b for a, b in zip(total, per)]
        if per[0] > 1 or per[2] > 0.05:
            print(f"  {key[0]:10s} {name:14s} cpu {per[0]:6.1f} us  run-queue wait {per[1]:6.1f} us  "
                  f"scheduled in {per[2]:5.2f}x")
    print(f"  all threads: cpu {total[0]:.0f} us, run-queue wait {total[1]:.0f} us, scheduled in {total[2]:.1f}x per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--sync", action="store_true",
                        help="time apply_sync (the latency benchmark's call) instead of apply_async + get")
    args = parser.parse_args()
    os.environ["HPCPAR_DIR"] = tempfile.mkdtemp(prefix="hpcpar-latency-")
    cli = [sys.executable, "-m", "hpcpar"]
    subprocess.run([*cli, "start", "-n", str(args.engines), "--daemonize", "--wait"], check=True,
                   capture_output=True, timeout=150)
    try:
        import hpcpar

        rc = hpcpar.Client(timeout=30)
        try:
            rc.wait_for_engines(args.engines, timeout=60, interactive=False)
            info = json.loads(open(rc._source).read())
            pids = {"client": os.getpid(), "controller": info["controller_pid"], "engine": rc._engines[0]["pid"]}
            for r in range(args.rounds):
                print(f"round {r + 1}: ", end="")
                one_round(rc[0], args.calls, pids, args.sync)
        finally:
            rc.close()
    finally:
        subprocess.run([*cli, "stop"], capture_output=True, timeout=60)


if __name__ == "__main__":
    main()
