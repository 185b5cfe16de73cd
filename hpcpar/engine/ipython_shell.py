"""Cells as IPython runs them: an IPython shell living inside the engine.

ipyparallel's engines are IPython kernels, so its users write magics and
shell escapes in ``%px`` cells (``%time``, ``!hostname``, ``files = !ls``,
``%matplotlib inline``, ``%load_ext autoreload``, ``%run script.py``...).
When IPython is importable on the engine, ``execute`` requests run as cells
of one :class:`EngineShell` over the engine's namespace, so all of that
works and ``get_ipython()`` answers. What the shell would print or display
goes where the engine sends everything: printed text into the request's
captured stdout/stderr, displays and cell values through
:mod:`hpcpar.engine.display`, errors into the reply.

This module imports IPython; the engine imports it only at the first
``execute`` (``apply`` never does), so engines that only apply functions
never pay for IPython.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from . import display
from .namespace import Namespace


class _ResultHook(DisplayHook):
    """Keeps the cell's value (its MIME bundle) for the reply instead of printing ``Out[n]``."""

    def start_displayhook(self) -> None:
        self._is_active = True

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict, md_dict: dict | None = None) -> None:
        self.shell.cell_result = (
            {k: display._jsonable(v) for k, v in format_dict.items()},
            display._json_safe(md_dict or {}),
        )

    def finish_displayhook(self) -> None:
        self._is_active = False


class _Publisher(DisplayPublisher):
    """``display()`` through the shell: to the client, like every other display on the engine."""

    def publish(self, data: dict, metadata: dict | None = None, source: Any = None, *, transient: Any = None,
                update: bool = False, **kwargs: Any) -> None:
        display.publish_display_data(data, metadata, transient=transient)

    def clear_output(self, wait: bool = False) -> None:
        display.clear_output(wait)


def _pager(shell: Any, data: Any, start: int = 0, screen_lines: int = 0, pager_cmd: Any = None) -> None:
    """``obj?``, ``%pinfo``, ``%magic``...: no terminal pager on an engine; print the text."""
    text = data.get("text/plain", "") if isinstance(data, dict) else str(data)
    print(text)


class EngineShell(InteractiveShell):
    """An InteractiveShell that reports instead of printing.

    Tracebacks are not printed (the reply carries the error, formatted by the
    executor); the value of a cell goes into the reply; no history file, no
    colours, no terminal.
    """

    displayhook_class = _ResultHook
    display_pub_class = _Publisher

    def __init__(self, **kwargs: Any) -> None:
        self.cell_result: tuple[dict, dict] | None = None
        super().__init__(**kwargs)
        self.set_hook("show_in_pager", _pager)
        from .kernel_magics import KernelMagics

        self.register_magics(KernelMagics)  # %connect_info, %qtconsole (bind_kernel)

    def showtraceback(self, exc_tuple: Any = None, filename: str | None = None, tb_offset: int | None = None,
                      exception_only: bool = False, running_compiled_code: bool = False) -> None:
        try:
            self._get_exc_info(exc_tuple)  # records sys.last_* for %tb and %debug
        except ValueError:
            pass

    def showsyntaxerror(self, filename: str | None = None, running_compiled_code: bool = False) -> None:
        self.showtraceback()

    def system_piped(self, cmd: str) -> None:
        """``!cmd``: its output, as it comes, into the request's stdout (IPython's own
        runs it on a terminal, whose line ends would be ``\\r\\n``)."""
        if cmd.rstrip().endswith("&"):
            raise OSError("background processes are not supported in '!' commands on an engine")
        code = _run_command(self.var_expand(cmd, depth=1))
        self.user_ns["_exit_code"] = code
        if getattr(self, "system_raise_on_error", False) and code != 0:
            raise subprocess.CalledProcessError(code, cmd)

    system = system_piped

    def init_virtualenv(self) -> None:
        pass  # the engine already runs in the Python it was started with

    def enable_gui(self, gui: Any = None) -> None:
        if gui not in (None, "inline"):
            raise UsageError(f"an engine has no GUI event loop for {gui!r}: use %matplotlib inline "
                             "(figures are sent to the client)")

    def enable_matplotlib(self, gui: Any = None) -> Any:
        if gui not in (None, "inline", "agg", "auto"):
            raise UsageError(f"an engine has no screen for %matplotlib {gui}: use %matplotlib inline "
                             "(figures are sent to the client)")
        return super().enable_matplotlib(gui)


def _run_command(cmd: str) -> int:
    """Run a shell command, its stdout and stderr (merged, as on a terminal) to sys.stdout."""
    shell = os.environ.get("SHELL") or "/bin/sh"
    with subprocess.Popen(cmd, shell=True, executable=shell, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            sys.stdout.write(line.decode(errors="replace"))
    return proc.returncode


def _config() -> Config:
    c = Config()
    c.HistoryManager.enabled = False  # no sqlite file per engine
    c.HistoryManager.hist_file = ":memory:"
    c.InteractiveShell.colors = "nocolor"
    c.InteractiveShell.xmode = "Plain"
    return c


class ShellRunner:
    """Runs ``execute`` requests as IPython cells over the engine's namespace."""

    def __init__(self, namespace: Namespace) -> None:
        self.ns = namespace
        if EngineShell.initialized():
            self.shell = EngineShell.instance()
        else:
            try:
                self.shell = EngineShell.instance(config=_config(), user_module=namespace.module)
            except Exception:  # older IPython: spelled NoColor
                EngineShell.clear_instance()
                cfg = _config()
                cfg.InteractiveShell.colors = "NoColor"
                self.shell = EngineShell.instance(config=cfg, user_module=namespace.module)
        namespace.after_reset.append(self._after_reset)

    def _after_reset(self) -> None:
        """``rc.clear()`` emptied the namespace: put back In, Out, get_ipython..."""
        shell = self.shell
        shell.user_ns_hidden.clear()
        shell.history_manager.output_hist.clear()  # Out: it holds the old values
        shell.displayhook._, shell.displayhook.__, shell.displayhook.___ = "", "", ""
        shell.init_user_ns()

    def run(self, code: str, silent: bool) -> tuple[dict | None, dict | None, int]:
        """Run one cell; ``(value bundle, its metadata, execution count)`` or raise its error."""
        shell = self.shell
        shell.cell_result = None
        count = shell.execution_count
        result = shell.run_cell(code, store_history=True, silent=False)
        error = result.error_before_exec or result.error_in_exec
        if error is not None:
            raise error
        if silent or shell.cell_result is None:
            return None, None, count
        data, md = shell.cell_result
        return data, md, count

