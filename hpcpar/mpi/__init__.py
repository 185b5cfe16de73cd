"""MPI support shared by the client and the engines.

- ``subset``: which engines share one MPI job, and the warning when code is sent to only
  some of its ranks (a collective there would hang);
- ``segments``: the shared-memory segments an MPI library leaves in /dev/shm.

The launcher that starts MPI engine sets is :mod:`hpcpar.launchers.mpi`.
"""

from .subset import MPISubsetWarning, mpi_worlds, subset_message, warn_if_subset

__all__ = ["MPISubsetWarning", "mpi_worlds", "subset_message", "warn_if_subset"]
