"""``%connect_info`` and ``%qtconsole`` on an engine, as an ipyparallel engine has them.

ipyparallel's engines are ipykernel kernels, whose shell has these two
magics; its users run ``%px %connect_info`` to find an engine's connection
file and ``%px %qtconsole`` to open a Qt console on each engine's host. Here
both bind the engine's kernel first (``hpcpar.bind_kernel()``; binding again
is free), so they also work without calling it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class


def _bound_file() -> str:
    from .kernel import bind_kernel

    try:
        return bind_kernel()
    except RuntimeError as e:
        raise UsageError(str(e)) from None


@magics_class
class KernelMagics(Magics):
    @line_magic
    def connect_info(self, line: str = "") -> None:
        """Print this engine's kernel connection info and how to attach a console to it."""
        path = _bound_file()
        with open(path) as f:
            info = json.load(f)
        print(json.dumps(info, indent=2))
        print(f"\nConnection file: {path}\n"
              f"On this host:      jupyter console --existing {path}\n"
              "From the client:   rc.kernel_connection_file(ENGINE_ID), or hpcpar console ENGINE_ID "
              "(forwards the ports over the client's SSH connection)")

    @line_magic
    def qtconsole(self, line: str = "") -> None:
        """Open a Qt console on this engine's kernel, on the engine's host (needs a display there)."""
        path = _bound_file()
        jupyter = shutil.which("jupyter-qtconsole", path=os.path.dirname(sys.executable)) \
            or shutil.which("jupyter-qtconsole")
        if jupyter is None:
            raise UsageError("%qtconsole needs qtconsole where the engines run (pip install qtconsole); "
                             f"or attach a terminal console: jupyter console --existing {path}")
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise UsageError("%qtconsole opens a window on the engine's host, which has no display (DISPLAY "
                             f"is not set); attach a terminal console instead: jupyter console --existing {path}")
        subprocess.Popen([jupyter, "--existing", path, *line.split()], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        print(f"Qt console started on {path}")
