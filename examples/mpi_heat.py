"""Steering an MPI program from Python: the 2-D heat equation, distributed by rows.

Each MPI rank (= engine) owns a band of rows of the temperature field plus one ghost row
above and below. A step exchanges the ghost rows with the neighbouring ranks (a halo
exchange with Sendrecv) and applies the explicit five-point update

    u <- u + r * (u[i-1,j] + u[i+1,j] + u[i,j-1] + u[i,j+1] - 4 u[i,j])

with the top edge held at ``hot`` and the other edges at 0. From the client (a script
here, IPython or a notebook in real use) you:

  1. push the parameters (r, hot) to every rank,
  2. advance N steps, all ranks together,
  3. gather the field and look at it (a PNG with matplotlib when it is installed),
  4. change a parameter while the field lives on,
  5. continue from where it was.

The same numbers are computed serially on the client and compared, to show that the
distributed run (halo exchange included) is exact.

    python examples/mpi_heat.py                  # starts 4 MPI engines, runs, stops them
    python examples/mpi_heat.py --profile mine   # a running `hpcpar start --engines mpi`
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import hpcpar


# ----- what runs on the engines (globals: comm, mpi_rank, mpi_size, and what we push) -----
@hpcpar.interactive
def setup(ny: int, nx: int) -> tuple[int, int]:
    """Allocate this rank's rows (plus two ghost rows) of an ny x nx field at 0."""
    global u, row0
    rows = [len(part) for part in np.array_split(np.arange(ny), mpi_size)]  # noqa: F821
    row0 = sum(rows[:mpi_rank])  # noqa: F821 - first global row of this rank
    u = np.zeros((rows[mpi_rank] + 2, nx))  # noqa: F821
    return row0, rows[mpi_rank]  # noqa: F821


@hpcpar.interactive
def advance(steps: int) -> float:
    """``steps`` explicit steps with halo exchange; returns the mean temperature (allreduce)."""
    from mpi4py import MPI

    up = mpi_rank - 1 if mpi_rank > 0 else MPI.PROC_NULL  # noqa: F821
    down = mpi_rank + 1 if mpi_rank < mpi_size - 1 else MPI.PROC_NULL  # noqa: F821
    for _ in range(steps):
        # Halo exchange: my first real row goes up, my last real row goes down.
        comm.Sendrecv(u[1], dest=up, recvbuf=u[-1], source=down)  # noqa: F821
        comm.Sendrecv(u[-2], dest=down, recvbuf=u[0], source=up)  # noqa: F821
        if mpi_rank == 0:  # noqa: F821
            u[0] = hot  # noqa: F821 - the top boundary (pushed parameter)
        if mpi_rank == mpi_size - 1:  # noqa: F821
            u[-1] = 0.0  # noqa: F821
        inner = u[1:-1, 1:-1]  # noqa: F821
        lap = u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4.0 * inner  # noqa: F821
        inner += r * lap  # noqa: F821 - pushed parameter
    local = u[1:-1]  # noqa: F821
    return comm.allreduce(float(local.sum())) / comm.allreduce(local.size)  # noqa: F821


@hpcpar.interactive
def interior() -> np.ndarray:
    return u[1:-1].copy()  # noqa: F821


# ----- the same computation on one array, to check the distributed one -----
def serial_steps(field: np.ndarray, steps: int, r: float, hot: float) -> np.ndarray:
    padded = np.zeros((field.shape[0] + 2, field.shape[1]))
    padded[1:-1] = field
    for _ in range(steps):
        padded[0], padded[-1] = hot, 0.0
        inner = padded[1:-1, 1:-1]
        lap = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4.0 * inner
        inner += r * lap
    return padded[1:-1]


def gather_field(view: hpcpar.DirectView) -> np.ndarray:
    """Rows of every rank, in rank order (the view's targets are ordered by rank)."""
    return np.vstack(view.apply_sync(interior))


def plot(field: np.ndarray, title: str, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        # Without matplotlib: a coarse text picture of the field.
        rows = field[:: max(1, field.shape[0] // 8), :: max(1, field.shape[1] // 32)]
        shades = " .:-=+*#%@"
        top = max(float(field.max()), 1e-12)
        art = "\n".join("".join(shades[min(9, int(9 * v / top))] for v in row) for row in rows)
        return f"{title} (matplotlib not installed)\n{art}"
    fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(field, cmap="inferno", origin="upper")
    fig.colorbar(im, ax=ax, label="temperature")
    ax.set_title(title)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return f"{title}: wrote {path}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=4, help="MPI ranks to start (without --profile)")
    p.add_argument("--profile", default=None, help="use the running cluster of this profile")
    p.add_argument("--ny", type=int, default=64)
    p.add_argument("--nx", type=int, default=48)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default=".", help="directory for the PNG pictures")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    cluster = None if args.profile else hpcpar.Cluster(n=args.n, engines="mpi", profile="mpi-heat-example")
    rc = None
    try:
        rc = hpcpar.Client(profile=args.profile) if cluster is None else cluster.start_and_connect_sync()
        view = rc[:]  # every rank: the halo exchange and the allreduce need them all
        view.block = True
        print(f"{len(rc.ids)} MPI engines (ids = ranks {rc.ids}); field {args.ny} x {args.nx}")
        bands = view.apply(setup, args.ny, args.nx)
        print("rows per rank:", {rank: f"{start}..{start + n - 1}" for rank, (start, n) in zip(rc.ids, bands)})

        # 1. push the parameters, 2. advance
        params = {"r": 0.2, "hot": 100.0}
        view.push(params)
        t0 = time.perf_counter()
        means = view.apply(advance, args.steps)
        print(f"{args.steps} steps with r={params['r']}, hot={params['hot']}: "
              f"mean temperature {means[0]:.4f} ({time.perf_counter() - t0:.2f} s)")

        # 3. look at it
        field = gather_field(view)
        reference = serial_steps(np.zeros((args.ny, args.nx)), args.steps, **params)
        err = float(np.abs(field - reference).max())
        print(f"distributed vs serial: max difference {err:.2e}")
        assert err < 1e-9, "the distributed field differs from the serial computation"
        print(plot(field, f"after {args.steps} steps, hot={params['hot']}", out / "heat-1.png"))

        # 4. change a parameter while the field stays on the engines, 5. continue
        params = {"r": 0.1, "hot": 40.0}
        view.push(params)
        means = view.apply(advance, args.steps)
        print(f"{args.steps} more steps with r={params['r']}, hot={params['hot']}: mean {means[0]:.4f}")
        field2 = gather_field(view)
        reference = serial_steps(reference, args.steps, **params)
        err = float(np.abs(field2 - reference).max())
        print(f"distributed vs serial: max difference {err:.2e}")
        assert err < 1e-9, "the distributed field differs from the serial computation"
        assert len({round(m, 12) for m in means}) == 1, "every rank sees the same allreduced mean"
        print(plot(field2, f"then {args.steps} steps, hot={params['hot']}", out / "heat-2.png"))
    finally:
        if rc is not None:
            rc.close()
        if cluster is not None:
            cluster.stop_cluster_sync()


if __name__ == "__main__":
    main()
