"""MPI on this host: the mpiexec hpcpar would use is there, and two ranks started by
it see each other through mpi4py (an allgather of their ranks)."""

from __future__ import annotations

import subprocess
import sys

from ..config import Config
from ..launchers.mpi import default_mpiexec
from .probe import MPI_PAIR as PAIR
from .probe import MPI_PAIR_OK
from .report import FAIL, OK, SKIP, WARN, Check

MISMATCH_FIX = ("ranks that do not see each other (each says size 1) mean mpi4py was built for another MPI "
                "than this mpiexec: reinstall mpi4py against it, or set [mpi] command")


def mpi_needed(config: Config) -> bool:
    """True when `hpcpar start` with this config would start MPI engines."""
    return config["cluster.engines"] == "mpi" or config["batch.mode"] == "mpi"


def mpi_checks(config: Config, timeout: float = 60.0) -> list[Check]:
    needed = mpi_needed(config)
    bad = FAIL if needed else SKIP
    command = list(config["mpi.command"]) or ([found] if (found := default_mpiexec()) else [])
    if not command:
        return [Check("mpi", bad, "no mpiexec next to this Python or on PATH",
                      "MPI engines need MPI: pip install 'hpcpar[mpi]' mpich (or load the site's MPI module), "
                      "or set [mpi] command" if needed else "")]
    try:
        import mpi4py  # noqa: F401  (the package only: MPI_Init happens in the ranks below)
    except ImportError:
        return [Check("mpi", bad, f"{command[0]} found; mpi4py is not installed in {sys.executable}",
                      "MPI engines need mpi4py: pip install 'hpcpar[mpi]'" if needed else "")]
    argv = [*command, config.get("mpi.n_flag") or "-n", "2", *(config.get("mpi.args") or []), sys.executable,
            "-c", PAIR]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return [Check("mpi", FAIL if needed else WARN, f"`{' '.join(argv[:3])} ...` did not finish in {timeout:g} s",
                      "two ranks hang in MPI_Init or allgather: check the MPI installation (mpiexec and mpi4py "
                      "must be built against the same MPI)")]
    except OSError as e:
        return [Check("mpi", bad, f"{command[0]} cannot run: {e}", "set [mpi] command to a working mpiexec")]
    seen = [line for line in done.stdout.splitlines() if line.startswith("HPCPAR-MPI")]
    if done.returncode == 0 and seen == [MPI_PAIR_OK]:
        return [Check("mpi", OK, f"{command[0]}: 2 ranks saw each other (mpi4py {mpi4py.__version__})")]
    tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
    return [Check("mpi", FAIL if needed else WARN,
                  f"`{' '.join(argv[:3])} ...` exited {done.returncode}; ranks said {seen or 'nothing'}: "
                  + " | ".join(tail),
                  MISMATCH_FIX)]


def compute_mpi_check(mpi: dict, host: str, needed: bool) -> Check:
    """The test job's MPI findings on the compute node (probe.mpi_facts)."""
    if not mpi.get("ran"):
        fix = ""
        if not mpi.get("mpi4py"):
            fix = "MPI engines (mode = \"mpi\") need mpi4py in the compute nodes' Python: pip install 'hpcpar[mpi]'"
        elif not mpi.get("mpiexec"):
            fix = "MPI engines need mpiexec on the compute nodes: load the site's MPI module in [batch] prologue, " \
                  "or set [mpi] command"
        return Check("compute-mpi", FAIL if needed and fix else SKIP,
                     f"on {host}: mpiexec {mpi.get('mpiexec') or 'not found'}, mpi4py "
                     f"{'installed' if mpi.get('mpi4py') else 'not installed'}; 2-rank test not run", fix)
    if mpi.get("returncode") == 0 and mpi.get("seen") == [MPI_PAIR_OK]:
        return Check("compute-mpi", OK, f"on {host}: {mpi.get('mpiexec')}: 2 ranks saw each other")
    return Check("compute-mpi", FAIL if needed else WARN,
                 f"on {host}: `{mpi.get('argv')} ...` exited {mpi.get('returncode')}; ranks said "
                 f"{mpi.get('seen') or 'nothing'}: {mpi.get('tail', '')}", MISMATCH_FIX)
