"""hpcpar adapter: ``hpcpar start -n N --daemonize --wait``, ``hpcpar.Client()``, ``hpcpar stop``."""

from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys

from .ippapi import IppApiBackend


class HpcparBackend(IppApiBackend):
    """hpcpar, local cluster started through its CLI, driven through its ipyparallel-style API."""

    name = "hpcpar"

    def __init__(self) -> None:
        super().__init__()
        self.exe = "hpcpar"

    def prepare(self) -> None:
        import hpcpar

        self.ipp = hpcpar
        found = shutil.which("hpcpar", path=os.path.dirname(sys.executable))
        self.exe = found or shutil.which("hpcpar") or "hpcpar"
        super().prepare()

    def versions(self) -> dict[str, str]:
        return {p: md.version(p) for p in ("hpcpar", "pyzmq", "cloudpickle", "numpy")}

    def _cli(self, *args: str, timeout: float) -> None:
        proc = subprocess.run(
            [self.exe, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"hpcpar {' '.join(args)} exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )

    def start(self, n: int) -> None:
        self.n = n
        self._cli("start", "-n", str(n), "--daemonize", "--wait", timeout=150)
        self.rc = self.ipp.Client()
        if len(self.rc.ids) < n:
            self.rc.wait_for_engines(n, timeout=60)
        self._check_ready()

    def stop(self) -> None:
        if self.rc is not None:
            self.rc.close()
            self.rc = None
        self._cli("stop", timeout=60)
