"""Where the controller's time goes: py-spy on the controller under a steady load.

Run on demand (py-spy must be on PATH; it needs ptrace rights on the controller)::

    python benchmarks/profile_controller.py --engines 1 --load apply --seconds 10
    python benchmarks/profile_controller.py --engines 1000 --load broadcast --seconds 15

Starts ``hpcpar controller`` (``--db memory``) in a temporary profile and ``hpcpar simulate``
engines (they speak the real protocol but run no code, so only the controller and client do
work), drives ``rc[0].apply_sync(noop)`` (``--load apply``) or ``rc[:].apply_sync(noop)``
(``--load broadcast``) in a loop, records the controller with ``py-spy record --format raw``
and prints the functions that hold the most samples, on their own (leaf frame) and
inclusively. Every process it starts is stopped by PID. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from scale import simulated_cluster


def noop() -> None:
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=int, default=1)
    ap.add_argument("--procs", type=int, default=1, help="simulator processes")
    ap.add_argument("--load", choices=("apply", "broadcast"), default="apply")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    pyspy = shutil.which("py-spy")
    if not pyspy:
        print("py-spy not found on PATH")
        return 1
    with simulated_cluster(args.engines, args.procs) as (ctl, rc, _registration):
        view = rc[:] if args.load == "broadcast" else rc[rc.ids[0]]
        for _ in range(5):
            view.apply_sync(noop)
        stop = threading.Event()
        calls = [0]

        def drive() -> None:
            while not stop.is_set():
                view.apply_sync(noop)
                calls[0] += 1

        th = threading.Thread(target=drive, daemon=True)
        th.start()
        raw = Path(tempfile.mkdtemp(prefix="hpcpar-prof-")) / "controller.raw"
        subprocess.run([pyspy, "record", "--pid", str(ctl.pid), "--duration",
                        str(int(args.seconds)), "--rate", "500", "--format", "raw",
                        "--output", str(raw), "--nonblocking"],
                       check=True, capture_output=True, timeout=args.seconds + 60)
        stop.set()
        th.join(timeout=60)
        leaf: collections.Counter[str] = collections.Counter()
        incl: collections.Counter[str] = collections.Counter()
        total = idle = 0
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            frames = stack.split(";")
            total += n
            # Waiting, not working: the poll of the controller's loop, and the hub's store
            # thread blocked in queue.get (a C-level wait, so its own frame is the leaf).
            if frames[-1].startswith(("Poller.poll ", "Hub._run ")):
                idle += n
                continue
            leaf[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
        print(f"controller samples: {total} over {args.seconds:.0f} s at 500 Hz "
              f"({args.load}, {args.engines} simulated engines, {calls[0]} calls, "
              f"{args.seconds / max(1, calls[0]) * 1e3:.2f} ms per call)")
        busy = max(1, total - idle)
        print(f"{idle} of the samples are waits (the loop's poll, the hub thread's queue.get);"
              f" shares below are of the {busy} others")
        print("\nleaf frames (where the CPU is):")
        for f, n in leaf.most_common(args.top):
            print(f"  {n / busy:6.1%}  {f}")
        print("\ninclusive (the frame or anything it calls):")
        for f, n in incl.most_common(args.top + 5):
            print(f"  {n / busy:6.1%}  {f}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
