"""Monte Carlo estimate of pi on MPI engines: every rank throws its own darts, one
``allreduce`` adds up the hits.

    python examples/mpi_pi.py                    # starts 4 MPI engines, runs, stops them
    python examples/mpi_pi.py --profile mine     # uses a running cluster:
                                                 #   hpcpar start -n 4 --engines mpi --profile mine
"""

from __future__ import annotations

import argparse
import math
import time

import hpcpar


@hpcpar.interactive
def throw(darts: int, seed: int) -> tuple[float, int, int]:
    """Runs on every rank; ``comm``, ``mpi_rank`` and ``mpi_size`` are engine globals."""
    import numpy as np

    rng = np.random.default_rng([seed, mpi_rank])  # noqa: F821 - engine namespace
    x, y = rng.random(darts), rng.random(darts)
    hits = int(np.count_nonzero(x * x + y * y <= 1.0))
    # Every rank must call the collective, or it waits forever.
    total_hits = comm.allreduce(hits)  # noqa: F821
    total_darts = comm.allreduce(darts)  # noqa: F821
    return 4.0 * total_hits / total_darts, total_hits, total_darts


def estimate(rc: hpcpar.Client, darts_per_rank: int, seed: int = 1) -> float:
    view = rc[:]  # all ranks: the allreduce needs every one of them
    results = view.apply_sync(throw, darts_per_rank, seed)
    pis = {round(r[0], 12) for r in results}
    assert len(pis) == 1, f"every rank must see the same reduced value, got {pis}"
    return results[0][0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=4, help="MPI ranks to start (without --profile)")
    p.add_argument("--profile", default=None, help="use the running cluster of this profile")
    p.add_argument("--darts", type=int, default=1_000_000, help="darts per rank")
    args = p.parse_args()

    cluster = None if args.profile else hpcpar.Cluster(n=args.n, engines="mpi", profile="mpi-pi-example")
    rc = None
    try:
        rc = hpcpar.Client(profile=args.profile) if cluster is None else cluster.start_and_connect_sync()
        print(f"{len(rc.ids)} MPI engines, ids = ranks: {rc.ids}")
        t0 = time.perf_counter()
        pi = estimate(rc, args.darts)
        darts = args.darts * len(rc.ids)
        print(f"pi ~ {pi:.6f} from {darts:,} darts in {time.perf_counter() - t0:.2f} s "
              f"(error {abs(pi - math.pi):.2e})")
        assert abs(pi - math.pi) < 10 / math.sqrt(darts), "the estimate is too far off"
    finally:
        if rc is not None:
            rc.close()
        if cluster is not None:
            cluster.stop_cluster_sync()


if __name__ == "__main__":
    main()
