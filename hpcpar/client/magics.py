"""IPython magics that run code on engines: %px, %%px, %autopx, %pxresult, %pxconfig.

``Client()`` inside IPython registers them (``rc.activate()`` /
``view.activate(suffix)`` choose the engines; ``%load_ext hpcpar`` registers
them before any client exists). With a suffix, several sets live side by
side: ``rc[::2].activate("_even")`` gives ``%px_even``.

A blocking ``%px`` streams output as it arrives, each line prefixed
``[stdout:N]`` / ``[stderr:N]``; rich outputs (``display()``, figures) show
as ``[output:N]`` followed by the object; cell values as ``Out[N:k]``. A
failure shows each engine's traceback once. Ctrl-C while it waits sends
``--signal-on-interrupt`` (SIGINT by default) to the engines still running
the cell, then waits for them to answer; a second Ctrl-C stops waiting.

This module imports IPython; ``import hpcpar`` does not import it.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
import signal
import sys
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import no_var_expand

from ..error import AlreadyDisplayedError, CompositeError
from ..progress import Progress
from .output import OutputPrinter, OutputStreamer, display_outputs

GROUPS = ("type", "engine", "order")
_MAGIC_NAMES = ("px", "autopx", "pxconfig", "pxresult")

# Options that take a value (the rest are flags), for splitting '%px [options] code'.
_VALUE_OPTIONS = {"-t", "--targets", "-o", "--out", "--progress-after", "--signal-on-interrupt",
                  "--group-outputs"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # raise instead of sys.exit inside IPython
        raise UsageError(f"{self.prog}: {message}")


def _parser(prog: str, for_cell: bool = False, config: bool = False, result: bool = False) -> _Parser:
    p = _Parser(prog=prog, add_help=False)
    g = p.add_argument_group()
    if not result:
        g.add_argument("-t", "--targets", default=None,
                       help="engines to run on: an id, a list, a slice such as ::2, or all")
        b = g.add_mutually_exclusive_group()
        b.add_argument("-b", "--block", dest="block", action="store_true", default=None)
        b.add_argument("-a", "--noblock", dest="block", action="store_false")
        s = g.add_mutually_exclusive_group()
        s.add_argument("--stream", dest="stream", action="store_true", default=None)
        s.add_argument("--no-stream", dest="stream", action="store_false")
        g.add_argument("--progress-after", type=float, default=None,
                       help="seconds before a progress bar appears (-1: never)")
        g.add_argument("--signal-on-interrupt", default=None,
                       help="signal sent to the engines on Ctrl-C (name or number; 'none' to send none)")
        v = g.add_mutually_exclusive_group()
        v.add_argument("--verbose", dest="verbose", action="store_true", default=None)
        v.add_argument("--no-verbose", dest="verbose", action="store_false")
    grp = g.add_mutually_exclusive_group()
    grp.add_argument("--group-outputs", choices=GROUPS, default=None)
    grp.add_argument("-r", dest="group_outputs", action="store_const", const="order")
    grp.add_argument("-e", dest="group_outputs", action="store_const", const="engine")
    if not config and not result:
        g.add_argument("-o", "--out", default=None, help="store the AsyncResult in this variable")
    if for_cell:
        g.add_argument("--local", action="store_true", help="also run the cell here")
    return p


def split_options(line: str) -> tuple[list[str], str]:
    """'%px -t 0 --block x = 1' -> (['-t', '0', '--block'], 'x = 1')."""
    rest = line.lstrip()
    tokens: list[str] = []
    expect_value = False
    while rest:
        if expect_value:
            m = re.match(r"""("[^"]*"|'[^']*'|\S+)\s*""", rest)
        else:
            m = re.match(r"(-[A-Za-z]|--[A-Za-z][-\w]*)(=\S+)?(\s+|$)", rest)
        if m is None:
            break
        token = m.group(0).strip()
        if expect_value:
            tokens.append(shlex.split(token)[0] if token[0] in "'\"" else token)
            expect_value = False
        else:
            name = m.group(1)
            tokens.append(token)
            expect_value = name in _VALUE_OPTIONS and m.group(2) is None
        rest = rest[m.end():]
    return tokens, rest


def parse_signal(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.lower() in ("", "none", "0"):
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    sig = getattr(signal, name, None)
    if not isinstance(sig, int):
        raise UsageError(f"unknown signal {value!r}; give a name such as SIGINT or a number")
    return int(sig)


class _AutopxTransformer:
    """Turns each cell into '%%px<suffix>' while %autopx is on. Marked as having
    side effects so IPython's completeness check (terminal) skips it."""

    has_side_effects = True

    def __init__(self, magics: ParallelMagics) -> None:
        self.magics = magics

    def __call__(self, lines: list[str]) -> list[str]:
        if not lines:
            return lines
        first = lines[0].lstrip()
        # The parallel magics themselves (and switching %autopx off) run here.
        if re.match(r"%{1,2}(px|autopx|pxconfig|pxresult)\w*\b", first) or not "".join(lines).strip():
            return lines
        return [f"%%px{self.magics.suffix}\n", *lines]


class ParallelMagics:
    """One set of magics (one suffix) bound to one view."""

    def __init__(self, shell: Any, view: Any = None, suffix: str = "") -> None:
        self.shell = shell
        self.view = view
        self.suffix = suffix
        self.block: bool | None = None  # None: the view's own flag
        self.stream = True
        self.group_outputs = "type"
        self.progress_after = 2.0
        self.signal_on_interrupt: int | None = int(signal.SIGINT)
        self.verbose = False
        self.last_result: Any = None
        self._autopx = False
        self._transformer = _AutopxTransformer(self)

    # -- registration ------------------------------------------------------------------------

    def register(self) -> None:
        s = self.suffix
        self.shell.register_magic_function(self.px, "line_cell", "px" + s)
        self.shell.register_magic_function(self.autopx, "line", "autopx" + s)
        self.shell.register_magic_function(self.pxconfig, "line", "pxconfig" + s)
        self.shell.register_magic_function(self.pxresult, "line", "pxresult" + s)

    def _need_view(self) -> Any:
        if self.view is None:
            raise UsageError(
                "no engines to run on yet: create a client (rc = hpcpar.Client()), "
                f"or choose engines with rc.activate() / rc[...].activate({self.suffix!r})"
            )
        return self.view

    # -- options -------------------------------------------------------------------------------

    def _targets(self, expr: str | None) -> Any:
        if expr is None:
            return None
        expr = expr.strip()
        if expr == "all":
            return "all"
        try:
            value = ast.literal_eval(expr)
        except (ValueError, SyntaxError):
            ids = self._need_view().client.ids
            try:
                value = eval(f"__ids[{expr}]", {"__builtins__": {}}, {"__ids": ids})
            except Exception as e:
                raise UsageError(f"--targets {expr!r}: not an engine id, list, slice or 'all' ({e})") from None
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, (int, list)):
            raise UsageError(f"--targets {expr!r}: not an engine id, list, slice or 'all'")
        return value

    def _apply_config(self, args: argparse.Namespace) -> None:
        if getattr(args, "targets", None) is not None:
            self._need_view().targets = self._targets(args.targets)
        if getattr(args, "block", None) is not None:
            self.block = args.block
        if getattr(args, "stream", None) is not None:
            self.stream = args.stream
        if getattr(args, "group_outputs", None) is not None:
            self.group_outputs = args.group_outputs
        if getattr(args, "progress_after", None) is not None:
            self.progress_after = args.progress_after
        if getattr(args, "signal_on_interrupt", None) is not None:
            self.signal_on_interrupt = parse_signal(args.signal_on_interrupt)
        if getattr(args, "verbose", None) is not None:
            self.verbose = args.verbose

    # -- the magics ---------------------------------------------------------------------------

    @no_var_expand  # '{x}' and '$x' belong to the engines' code, not to the client's namespace
    def px(self, line: str, cell: str | None = None) -> Any:
        """%px [options] code  /  %%px [options] (cell): run code on the engines.

        Options: -t/--targets T, -b/--block, -a/--noblock, --stream/--no-stream,
        --group-outputs type|engine|order (-r: order, -e: engine), -o/--out NAME,
        --progress-after S, --signal-on-interrupt SIG, --verbose; %%px only: --local.
        """
        if cell is None:
            tokens, code = split_options(line)
            args = _parser("%px" + self.suffix).parse_args(tokens)
        else:
            args = _parser("%%px" + self.suffix, for_cell=True).parse_args(shlex.split(line))
            code = cell
        if not code.strip():
            raise UsageError(f"%px{self.suffix}: no code to run")
        view = self._need_view()
        targets = self._targets(args.targets)
        block = args.block if args.block is not None else (self.block if self.block is not None else view.block)
        stream = self.stream if args.stream is None else args.stream
        verbose = self.verbose if args.verbose is None else args.verbose
        if verbose:
            where = targets if targets is not None else view.targets
            print(f"[{'blocking' if block else 'non-blocking'}] running on engines {where}")
        ar = view.execute(code, silent=False, targets=targets, block=False)
        self.last_result = ar
        if args.out:
            self.shell.user_ns[args.out] = ar
        if cell is not None and args.local:
            self.shell.run_cell(cell)
        if not block:
            return ar
        self._wait_and_show(
            ar,
            stream=stream,
            groupby=args.group_outputs or self.group_outputs,
            progress_after=self.progress_after if args.progress_after is None else args.progress_after,
            sig=self.signal_on_interrupt if args.signal_on_interrupt is None
            else parse_signal(args.signal_on_interrupt),
        )
        return None

    def autopx(self, line: str = "") -> None:
        """%autopx: toggle sending every following cell to the engines (as %%px)."""
        cleanup = self.shell.input_transformers_cleanup
        if self._autopx:
            while self._transformer in cleanup:
                cleanup.remove(self._transformer)
            self._autopx = False
            print(f"%autopx{self.suffix} disabled")
        else:
            self._need_view()
            cleanup.append(self._transformer)
            self._autopx = True
            print(f"%autopx{self.suffix} enabled: cells run on the engines; %autopx{self.suffix} to stop")

    def pxconfig(self, line: str = "") -> None:
        """%pxconfig [options]: defaults for %px (same options, without code)."""
        args = _parser("%pxconfig" + self.suffix, config=True).parse_args(shlex.split(line))
        self._apply_config(args)

    def pxresult(self, line: str = "") -> None:
        """%pxresult [--group-outputs G]: show the outputs and result of the last %px."""
        args = _parser("%pxresult" + self.suffix, result=True).parse_args(shlex.split(line))
        if self.last_result is None:
            raise UsageError("no %px result yet")
        self._wait_and_show(self.last_result, stream=False, groupby=args.group_outputs or self.group_outputs,
                            progress_after=self.progress_after, sig=self.signal_on_interrupt)

    # -- waiting and showing -----------------------------------------------------------------

    def _wait_and_show(self, ar: Any, *, stream: bool, groupby: str, progress_after: float,
                       sig: int | None) -> None:
        client = ar._client
        printer = OutputPrinter()
        streamer = OutputStreamer(client, ar.msg_ids, printer).start() if stream else None
        started = time.monotonic()
        bar: Progress | None = None
        interrupted = False
        try:
            while not ar.ready():
                try:
                    if streamer is not None:
                        streamer.drain(timeout=0.05)
                        for mid in ar.msg_ids:
                            if mid not in client.outstanding:
                                streamer.finish(mid)
                    else:
                        ar.wait(0.05)
                    if bar is None and 0 <= progress_after <= time.monotonic() - started and not ar.ready():
                        printer.end_line()
                        bar = Progress(len(ar.msg_ids), desc="px", unit="engine").__enter__()
                    if bar is not None:
                        bar.update_to(ar.progress)
                except KeyboardInterrupt:
                    if interrupted or sig is None:
                        raise
                    interrupted = True
                    self._interrupt(ar, sig, printer)
        finally:
            if bar is not None:
                bar.update_to(ar.progress)
                bar.__exit__(None, None, None)
            if streamer is not None:
                streamer.stop()
        if streamer is not None:
            streamer.finish_all()
            errors = self._errors(ar)
            for err in errors:
                printer.error(err)
            display_outputs(client, ar.msg_ids, result_only=True, printer=printer)
            if errors:
                raise AlreadyDisplayedError(f"{len(errors)} errors", errors)
            return
        display_outputs(client, ar.msg_ids, groupby=groupby, printer=printer)
        errors = self._errors(ar)
        if len(errors) == 1 and len(ar.msg_ids) == 1:
            raise errors[0]
        if errors:
            raise CompositeError(f"one or more exceptions raised in: %px{self.suffix}", errors)

    @staticmethod
    def _errors(ar: Any) -> list[BaseException]:
        out = []
        for mid in ar.msg_ids:
            value = ar._client._result(mid)
            if isinstance(value, BaseException):
                out.append(value)
        return out

    @staticmethod
    def _interrupt(ar: Any, sig: int, printer: OutputPrinter) -> None:
        client = ar._client
        running = sorted({client.metadata[m]["engine_id"] for m in ar.msg_ids
                          if m in client.outstanding and client.metadata[m]["engine_id"] is not None})
        printer.end_line()
        if not running:
            return
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        client.send_signal(sig, targets=running, block=False)
        print(f"sent {name} to engine{'s' if len(running) != 1 else ''} {running}; waiting for "
              "them to stop (Ctrl-C again to stop waiting)", file=sys.stderr, flush=True)


# -- activation ---------------------------------------------------------------------------------

_active: dict[str, ParallelMagics] = {}


def _shell(shell: Any = None) -> Any:
    if shell is not None:
        return shell
    from IPython import get_ipython

    ip = get_ipython()
    if ip is None:
        raise RuntimeError("the %px magics need IPython: call activate() inside IPython or Jupyter")
    return ip


def _magics_for(shell: Any, suffix: str) -> ParallelMagics:
    magics = _active.get(suffix)
    if magics is None or magics.shell is not shell:
        magics = ParallelMagics(shell, None, suffix)
        _active[suffix] = magics
        magics.register()
    return magics


def activate(view: Any, suffix: str = "", shell: Any = None) -> ParallelMagics:
    """Point the magics named with ``suffix`` at ``view`` (registering them if needed)."""
    magics = _magics_for(_shell(shell), suffix)
    magics.view = view
    return magics


def auto_activate(client: Any) -> None:
    """Called by every Client made in IPython: take over the default magics
    unless they already run on another open client."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        return
    current = _active.get("")
    if current is not None and current.shell is shell and current.view is not None \
            and not getattr(current.view.client, "_closed", False):
        return
    view = client.direct_view("all")
    view.block = True
    activate(view, "", shell)


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext hpcpar``: register the magics; they run on the next Client's engines."""
    _magics_for(shell, "")


def unload_ipython_extension(shell: Any) -> None:
    for suffix, magics in list(_active.items()):
        if magics.shell is shell:
            if magics._autopx:
                magics.autopx()
            _active.pop(suffix, None)
