"""Controller RSS over a long task farm (issue #3: bounded memory).

    python benchmarks/controller_memory.py --tasks 100000 --batch 10000

Starts a local 2-engine cluster in a temporary HPCPAR_DIR (SQLite task
database, the default) and runs ``--tasks`` no-op load-balanced tasks in
batches: each batch is submitted at once (so up to ``--batch`` tasks queue in
the controller), its results are awaited, and the client's results purged.
After each batch it records the controller's RSS once the controller has
been idle ``--settle`` seconds ("settled"), and the highest RSS seen while
the batch ran ("peak", sampled every 0.1 s).

Verdict (see flatness()): the settled RSS is FLAT if, after the first 20% of
the run (warm-up: allocator arenas and SQLite's page cache reach their
working size), every sample lies within a band of max(10 MB, 10% of their
median) and the least-squares growth over that stretch is under 5 MB. A leak
of 200 bytes per task (the old dependency memory) grows 16 MB over 80k tasks
and fails; run-to-run jitter of a few MB does not.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from statistics import median


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def flatness(samples: list[tuple[int, float]], warmup: float = 0.2, band_mb: float = 10.0,
             band_frac: float = 0.10, max_growth_mb: float = 5.0) -> tuple[bool, str]:
    """(flat?, why) for (tasks done, RSS MB) samples; the rule is in the module docstring."""
    tail = samples[int(len(samples) * warmup):]
    if len(tail) < 3:
        return False, f"too few samples after warm-up ({len(tail)}); run more batches"
    xs = [float(n) for n, _ in tail]
    ys = [mb for _, mb in tail]
    band = max(band_mb, band_frac * median(ys))
    spread = max(ys) - min(ys)
    growth = slope(xs, ys) * (xs[-1] - xs[0])
    flat = spread <= band and growth < max_growth_mb
    why = (f"after {int(xs[0])} tasks: spread {spread:.1f} MB (band {band:.1f} MB), "
           f"fitted growth {growth:+.1f} MB over {int(xs[-1] - xs[0])} tasks (limit {max_growth_mb} MB)")
    return flat, why


class PeakSampler(threading.Thread):
    """The highest RSS of ``pid`` since the last take()."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0.0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.peak = max(self.peak, rss_mb(self.pid))

    def take(self) -> float:
        peak, self.peak = self.peak, 0.0
        return peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--settle", type=float, default=1.0, help="idle seconds before each settled sample")
    args = ap.parse_args()
    os.environ["HPCPAR_DIR"] = tempfile.mkdtemp(prefix="hpcpar-memory-")
    import hpcpar

    with hpcpar.Cluster(n=args.engines) as rc:
        client_file = os.path.join(os.environ["HPCPAR_DIR"], "profile_default", "security", "hpcpar-client.json")
        with open(client_file) as f:
            pid = json.load(f)["controller_pid"]
        lb = rc.load_balanced_view()
        settled: list[tuple[int, float]] = []
        peaks: list[float] = []
        sampler = PeakSampler(pid)
        sampler.start()
        start = time.time()
        busy = 0.0
        for done in range(args.batch, args.tasks + 1, args.batch):
            t0 = time.time()
            ars = [lb.apply_async(abs, -i) for i in range(args.batch)]
            for ar in ars:
                ar.get(timeout=300)
            busy += time.time() - t0
            rc.purge_local_results("all")
            peaks.append(sampler.take())
            time.sleep(args.settle)
            settled.append((done, round(rss_mb(pid), 1)))
        sampler.stopped.set()
        print(f"{args.tasks} tasks in {time.time() - start:.0f} s ({args.tasks / busy:.0f} tasks/s while busy), "
              f"{args.engines} engines, batches of {args.batch}; controller RSS:")
        for (done, mb), peak in zip(settled, peaks):
            print(f"  {done:>8} tasks: settled {mb:6.1f} MB   peak during batch {peak:6.1f} MB")
    flat, why = flatness(settled)
    print(f"verdict: {'FLAT' if flat else 'NOT FLAT'} ({why})")


if __name__ == "__main__":
    main()
