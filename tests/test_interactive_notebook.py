"""examples/interactive.ipynb is checked in without outputs and runs top to bottom in a real kernel."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "interactive.ipynb"


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append("\n".join(out.get("traceback", [])))
    return "".join(parts)


def _cell(nb, source_start: str):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source_start))


def test_notebook_is_checked_in_with_outputs_cleared():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:40]


@pytest.mark.slow
def test_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        from hpcpar.cluster import Cluster
        from hpcpar.paths import ProfileDir

        run = ProfileDir.for_profile("interactive-example").run
        for state in run.glob("cluster*.json") if run.is_dir() else []:  # the notebook failed before its last cell
            Cluster.from_file(state).stop_cluster_sync()

    start = _cell(nb, "import sys")
    assert "[0, 1]" in _text(start)
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        pass
    else:  # wait_for_engines showed a widget
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in start.outputs)

    assert re.findall(r"Out\[(\d):\d+\]: True", _text(_cell(nb, "%px import os"))) == ["0", "1"]
    streamed = _text(_cell(nb, "%%px\nimport time"))
    for eid in (0, 1):
        assert [line for line in streamed.splitlines() if line.startswith(f"[stdout:{eid}]")] == [
            f"[stdout:{eid}] step {i}" for i in range(3)
        ]
    assert _text(_cell(nb, "%px --targets 0")).strip() == "[stdout:0] only engine 0"

    html = [o["data"]["text/html"] for o in _cell(nb, "%%px\nimport os").outputs if "text/html" in o.get("data", {})]
    assert len(html) == 2 and all("hello from engine pid" in h for h in html)
    figure = _cell(nb, "%%px --targets 0\nimport matplotlib")
    assert [o for o in figure.outputs if "image/png" in o.get("data", {})]
    assert "Out[" not in _text(figure)  # the trailing semicolon hides the value, as in IPython

    error = _text(_cell(nb, "%px 1 / 0"))
    assert error.count("ZeroDivisionError: division by zero") == 4  # header + last line, per engine
    assert "AlreadyDisplayedError: 2 errors on engines [0, 1]" in error

    assert sorted(_text(_cell(nb, "x = 10")).splitlines()) == ["[stdout:0] 20", "[stdout:1] 20"]  # streamed: arrival order
    assert "[0, 1, 4, 9, 16, 25, 36, 49]" in _text(_cell(nb, "def slow_square"))
    ticks = _text(_cell(nb, "ar = rc[:].execute"))
    assert sorted(ticks.splitlines()) == ["[stdout:0] tick 0", "[stdout:0] tick 1", "[stdout:1] tick 0",
                                          "[stdout:1] tick 1"]
    status = _text(_cell(nb, "!{sys.executable}"))
    assert "ENGINES: 2" in status and "TASKS: submitted" in status
