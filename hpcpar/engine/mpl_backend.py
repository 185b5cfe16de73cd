"""matplotlib backend for engines (``MPLBACKEND=module://hpcpar.engine.mpl_backend``).

Figures render with Agg; ``plt.show()`` (and the end of every executed cell)
sends the open figures to the client as ``image/png`` displays and closes them.
"""

from __future__ import annotations

from typing import Any

from matplotlib.backend_bases import FigureManagerBase
from matplotlib.backends.backend_agg import FigureCanvasAgg

from .display import flush_figures

FigureCanvas = FigureCanvasAgg
FigureManager = FigureManagerBase


def new_figure_manager(num: int, *args: Any, FigureClass: Any = None, **kwargs: Any) -> FigureManagerBase:
    from matplotlib.figure import Figure

    fig = (FigureClass or Figure)(*args, **kwargs)
    return new_figure_manager_given_figure(num, fig)


def new_figure_manager_given_figure(num: int, figure: Any) -> FigureManagerBase:
    canvas = FigureCanvasAgg(figure)
    return FigureManagerBase(canvas, num)


def show(*args: Any, block: bool | None = None, **kwargs: Any) -> None:
    flush_figures()
