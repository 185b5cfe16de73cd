"""Rich output on engines: ``display()``, IPython display objects and figures.

Engines do not run an IPython kernel, and import IPython only for cells
(``execute``, see ipython_shell.py) or when user code does. So:

* a small ``display`` is installed as a builtin (as IPython does), which
  formats objects itself: ``_repr_mimebundle_`` / ``_repr_html_`` / ... and
  matplotlib figures as ``image/png``;
* if user code imports IPython, an import hook points IPython's own
  ``display`` / ``publish_display_data`` / ``update_display`` at this module,
  and IPython's ``DisplayFormatter`` is used to format objects (the engine
  shell's own, with the formatters registered on it, once there is one);
* matplotlib gets a non-interactive backend (``MPLBACKEND``, unless the user
  chose one) whose figures are shown at the end of each executed cell, as the
  notebook's inline backend does.

Outputs are collected per request (see :func:`begin` / :func:`end`), sent
back in the reply's ``outputs`` list, and streamed live by the engine's I/O
thread as ``display_data`` messages, in order with what the request prints.
Each output is a dict ``{"output_type": "display_data", "data": {mime: str},
"metadata": {...}}``; binary data (PNG, JPEG) is base64 text, as in notebooks.
"""

from __future__ import annotations

import base64
import builtins
import importlib.abc
import importlib.machinery
import json
import os
import sys
import threading
from typing import Any

MPL_BACKEND = "module://hpcpar.engine.mpl_backend"

# Methods an object may define to show itself, and the MIME type each produces.
_REPR_METHODS = (
    ("_repr_html_", "text/html"),
    ("_repr_markdown_", "text/markdown"),
    ("_repr_svg_", "image/svg+xml"),
    ("_repr_png_", "image/png"),
    ("_repr_jpeg_", "image/jpeg"),
    ("_repr_latex_", "text/latex"),
    ("_repr_json_", "application/json"),
    ("_repr_javascript_", "application/javascript"),
    ("_repr_pdf_", "application/pdf"),
)


class Collector:
    """The rich outputs of one request, with where they fall in its printed text."""

    def __init__(self, out: Any = None, err: Any = None) -> None:
        self.out, self.err = out, err
        self.outputs: list[dict[str, Any]] = []
        # (stdout parts, stderr parts) written before each output: lets the I/O
        # thread send text and displays in the order they were produced.
        self.marks: list[tuple[int, int]] = []
        self.streamed = 0  # outputs already sent live by the I/O thread
        self.shown_figures: set[int] = set()
        self._lock = threading.Lock()

    def add(self, output: dict[str, Any]) -> None:
        with self._lock:
            self.marks.append((len(self.out.parts) if self.out is not None else 0,
                               len(self.err.parts) if self.err is not None else 0))
            self.outputs.append(output)


_current: Collector | None = None


def begin(out: Any = None, err: Any = None) -> Collector:
    global _current
    _current = Collector(out, err)
    return _current


def end() -> Collector | None:
    global _current
    collector, _current = _current, None
    return collector


def current() -> Collector | None:
    return _current


# -- formatting --------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return value


def _is_figure(obj: Any) -> bool:
    mod = sys.modules.get("matplotlib.figure")
    return mod is not None and isinstance(obj, mod.Figure)


def figure_png(fig: Any) -> str:
    import io

    buf = io.BytesIO()
    fig.canvas.print_figure(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


_ipython_formatter: Any = None


def _ipython_format(obj: Any, include: Any, exclude: Any) -> tuple[dict, dict] | None:
    """IPython's own formatter, when user code has imported IPython."""
    global _ipython_formatter
    if "IPython" not in sys.modules:
        return None
    try:
        from IPython.core.interactiveshell import InteractiveShell

        if InteractiveShell.initialized():  # the engine's shell: formatters registered on it apply
            formatter = InteractiveShell.instance().display_formatter
        else:
            if _ipython_formatter is None:
                from IPython.core.formatters import DisplayFormatter

                _ipython_formatter = DisplayFormatter()
            formatter = _ipython_formatter
        data, md = formatter.format(obj, include=include, exclude=exclude)
    except Exception:  # a broken formatter must not break display(); fall back
        return None
    return dict(data), dict(md or {})


def _own_format(obj: Any, include: Any, exclude: Any) -> tuple[dict, dict]:
    data: dict[str, Any] = {}
    md: dict[str, Any] = {}
    bundle = getattr(obj, "_repr_mimebundle_", None)
    if callable(bundle):
        try:
            got = bundle(include=include, exclude=exclude)
        except TypeError:
            got = bundle()
        if isinstance(got, tuple):
            got, more = got
            md.update(more or {})
        data.update(got or {})
    for method, mime in _REPR_METHODS:
        if mime in data:
            continue
        fn = getattr(obj, method, None)
        if not callable(fn) or isinstance(obj, type):
            continue
        try:
            value = fn()
        except Exception:
            continue
        if isinstance(value, tuple) and len(value) == 2:
            value, meta = value
            md[mime] = meta
        if value is not None:
            data[mime] = value
    data.setdefault("text/plain", repr(obj))
    return data, md


def format_bundle(obj: Any, include: Any = None, exclude: Any = None) -> tuple[dict, dict]:
    """``(data, metadata)`` for ``obj``: every representation it offers, JSON-safe."""
    if _is_figure(obj):
        data, md = {"text/plain": repr(obj), "image/png": figure_png(obj)}, {}
        if _current is not None:
            _current.shown_figures.add(id(obj))
    else:
        data, md = _ipython_format(obj, include, exclude) or _own_format(obj, include, exclude)
    if include:
        data = {k: v for k, v in data.items() if k in include}
    if exclude:
        data = {k: v for k, v in data.items() if k not in exclude}
    return {k: _jsonable(v) for k, v in data.items()}, md


def is_rich(obj: Any) -> bool:
    """Whether ``obj`` has more than a text representation (worth formatting)."""
    if _is_figure(obj):
        return True
    return any(callable(getattr(obj, m, None)) for m, _ in _REPR_METHODS) or callable(
        getattr(obj, "_repr_mimebundle_", None)
    )


def result_bundle(value: Any) -> dict[str, Any]:
    """The ``execute_result`` data of a cell's value: repr, plus rich forms if any."""
    text = repr(value)
    if isinstance(value, type) or not is_rich(value):
        return {"text/plain": text}
    try:
        data, _ = format_bundle(value)
    except Exception:
        return {"text/plain": text}
    data["text/plain"] = text
    return data


# -- publishing ----------------------------------------------------------------------------

def publish_display_data(data: dict[str, Any], metadata: dict[str, Any] | None = None,
                         source: Any = None, *, transient: Any = None, **kwargs: Any) -> None:
    """Send one display (a MIME bundle) to the client."""
    data = {k: _jsonable(v) for k, v in dict(data).items()}
    output = {"output_type": "display_data", "data": data, "metadata": _json_safe(metadata or {})}
    if transient:
        output["transient"] = _json_safe(transient)
    collector = _current
    if collector is None:
        # Not inside a request (e.g. a background thread after it ended): print it.
        print(data.get("text/plain", ""))
        return
    collector.add(output)


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


def display(*objs: Any, include: Any = None, exclude: Any = None, metadata: dict | None = None,
            transient: Any = None, display_id: Any = None, raw: bool = False, clear: bool = False,
            **kwargs: Any) -> None:
    """Show objects in the client (the notebook or terminal running ``%px``)."""
    for obj in objs:
        if raw:
            data, md = dict(obj), dict(metadata or {})
        else:
            data, md = format_bundle(obj, include, exclude)
            if metadata:
                md = {**md, **metadata}
        if not data:
            continue
        publish_display_data(data, md, transient=transient)


def update_display(obj: Any, *, display_id: Any = None, **kwargs: Any) -> None:
    """Engines do not update earlier outputs in place: the new value is shown again."""
    kwargs.pop("update", None)
    display(obj, **kwargs)


def clear_output(wait: bool = False) -> None:
    """Clearing earlier outputs is not supported on engines; a no-op."""


# -- matplotlib ----------------------------------------------------------------------------

def flush_figures() -> None:
    """Show the open pyplot figures (those not already displayed) and close them."""
    if "matplotlib.pyplot" not in sys.modules:
        return
    import matplotlib
    import matplotlib.pyplot as plt

    if matplotlib.get_backend() != MPL_BACKEND:
        return
    from matplotlib._pylab_helpers import Gcf

    shown = _current.shown_figures if _current is not None else set()
    try:
        for manager in Gcf.get_all_fig_managers():
            fig = manager.canvas.figure
            if id(fig) not in shown:
                display(fig)
    finally:
        plt.close("all")


# -- installing --------------------------------------------------------------------------------

_PATCHED_NAMES = ("display", "publish_display_data", "update_display", "clear_output")
_IPYTHON_MODULES = ("IPython.core.display_functions", "IPython.core.display", "IPython.display")


def _patch_ipython_module(module: Any) -> None:
    this = sys.modules[__name__]
    for name in _PATCHED_NAMES:
        if hasattr(module, name):
            setattr(module, name, getattr(this, name))


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        _patch_ipython_module(module)


class _IPythonDisplayHook(importlib.abc.MetaPathFinder):
    """When user code imports IPython, route its display functions here."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in _IPYTHON_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader)
        return spec


_installed = False


def install() -> None:
    """Make ``display()`` and rich output work on this engine (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    if not hasattr(builtins, "display"):
        builtins.display = display  # type: ignore[attr-defined]
    # Engines started from a notebook inherit its inline backend, useless without a kernel.
    if not os.environ.get("MPLBACKEND") or "matplotlib_inline" in os.environ["MPLBACKEND"]:
        os.environ["MPLBACKEND"] = MPL_BACKEND
    sys.meta_path.insert(0, _IPythonDisplayHook())
    for name in _IPYTHON_MODULES:
        if name in sys.modules:
            _patch_ipython_module(sys.modules[name])
