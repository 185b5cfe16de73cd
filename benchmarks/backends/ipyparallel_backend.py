"""ipyparallel adapter: ``ipp.Cluster(n).start_and_connect_sync()`` and its client API."""

from __future__ import annotations

import importlib.metadata as md
import logging

from .ippapi import IppApiBackend


class IpyparallelBackend(IppApiBackend):
    """ipyparallel, local cluster launched in-process with the default launchers."""

    name = "ipyparallel"

    def __init__(self) -> None:
        super().__init__()
        self.cluster = None

    def prepare(self) -> None:
        import ipyparallel

        self.ipp = ipyparallel
        super().prepare()

    def versions(self) -> dict[str, str]:
        return {p: md.version(p) for p in ("ipyparallel", "pyzmq", "ipykernel", "numpy")}

    def start(self, n: int) -> None:
        self.n = n
        self.cluster = self.ipp.Cluster(n=n, log_level=logging.WARNING)
        self.rc = self.cluster.start_and_connect_sync()
        self._check_ready()

    def stop(self) -> None:
        if self.rc is not None:
            self.rc.close()
            self.rc = None
        if self.cluster is not None:
            self.cluster.stop_cluster_sync()
            self.cluster = None
