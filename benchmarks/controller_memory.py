"""Controller RSS over a long task farm (issue: bounded memory).

    python benchmarks/controller_memory.py --tasks 100000 --batch 10000

Starts a local 2-engine cluster in a temporary HPCPAR_DIR, runs ``--tasks``
no-op load-balanced tasks in batches (client results purged after each), and
prints the controller's RSS after each batch.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--engines", type=int, default=2)
    args = ap.parse_args()
    os.environ["HPCPAR_DIR"] = tempfile.mkdtemp(prefix="hpcpar-memory-")
    import hpcpar

    with hpcpar.Cluster(n=args.engines) as rc:
        client_file = os.path.join(os.environ["HPCPAR_DIR"], "profile_default", "security", "hpcpar-client.json")
        pid = json.load(open(client_file))["controller_pid"]
        lb = rc.load_balanced_view()
        samples = []
        start = time.time()
        for done in range(args.batch, args.tasks + 1, args.batch):
            ars = [lb.apply_async(abs, -i) for i in range(args.batch)]
            for ar in ars:
                ar.get(timeout=300)
            rc.purge_local_results("all")
            samples.append((done, round(rss_mb(pid), 1)))
        rate = args.tasks / (time.time() - start)
    print(f"{args.tasks} tasks at {rate:.0f} tasks/s; controller RSS MB after each batch:")
    for done, mb in samples:
        print(f"  {done:>8} tasks: {mb} MB")


if __name__ == "__main__":
    main()
