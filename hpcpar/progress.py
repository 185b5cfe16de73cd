"""Progress display while waiting.

An ipywidgets bar in a notebook (when ipywidgets is installed), tqdm on a
terminal, plain ``desc: n/total`` lines otherwise (logs, batch jobs).
"""

from __future__ import annotations

import sys
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (output goes to a notebook or lab)."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _widgets_available() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class Progress:
    """``with Progress(total, desc) as bar: bar.update_to(n)``.

    ``enabled=False`` shows nothing. ``widget`` forces (True) or forbids
    (False) the notebook widget; by default it is used in a notebook when
    ipywidgets is installed. ``mode`` tells which display was chosen:
    ``widget``, ``tqdm``, ``lines`` or ``off``.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", enabled: bool | None = None,
                 widget: bool | None = None) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.enabled = enabled if enabled is not None else True
        self.tty = sys.stderr.isatty()
        self.value = 0
        self._bar: Any = None
        self._widget: Any = None
        self._label: Any = None
        if not self.enabled:
            self.mode = "off"
        elif widget or (widget is None and in_notebook() and _widgets_available()):
            self.mode = "widget"
        elif self.tty:
            self.mode = "tqdm"
        else:
            self.mode = "lines"

    def __enter__(self) -> Progress:
        if self.mode == "widget":
            import ipywidgets
            from IPython.display import display

            self._widget = ipywidgets.IntProgress(value=0, min=0, max=max(self.total, 1),
                                                  description=self.desc)
            self._label = ipywidgets.HTML(value=self._text())
            display(ipywidgets.HBox([self._widget, self._label]))
        elif self.mode == "tqdm":
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, leave=False)
            except ImportError:
                self.mode = "lines"
        return self

    def _text(self) -> str:
        return f"{self.value}/{self.total} {self.unit}s"

    def update_to(self, value: int) -> None:
        if value == self.value:
            return
        if self.mode == "widget" and self._widget is not None:
            self.value = value
            self._widget.value = value
            self._label.value = self._text()
            return
        if self._bar is not None:
            self._bar.update(value - self.value)
        elif self.mode == "lines":
            print(f"{self.desc}: {value}/{self.total}", file=sys.stderr, flush=True)
        self.value = value

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._widget is not None:
            self._widget.bar_style = "success" if self.value >= self.total else "warning"
