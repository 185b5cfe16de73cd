"""A notebook (run by nbclient in a real kernel) using magics and shell escapes
on the engines, as ipyparallel users write them."""

from __future__ import annotations

import os
import re
import socket

import pytest
from cluster_helpers import stop_profile

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")


def _cells(profile: str) -> list[tuple[str, list[str]]]:
    """(source, tags) of each cell."""
    return [
        ("import hpcpar\n"
         f"cluster = hpcpar.Cluster(n=2, profile={profile!r}, controller_args=['--heartbeat-interval', '0.25'])\n"
         "cluster.start_cluster_sync()\n"
         "rc = cluster.wait_for_engines_sync(timeout=60, interactive=False)\n"
         "rc.ids", []),
        ("%px !hostname", []),
        ("%px files = !ls {engine_dir}\n", []),
        ("%px len(files)", []),
        ("%%px\n%time total = sum(range(10 ** 5))\nprint('total', total)", []),
        ("%px %whos", []),
        ("%%px --targets 0\n%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()", []),
        ("x = 'client'\n%px x = 'engine'\n%px y = f'{x}-$x'\n%px y", []),
        ("def from_notebook(d):\n    return d['no such key']\n\nrc[0].apply_sync(from_notebook, {})",
         ["raises-exception"]),
        ("rc[1].execute('6 * 7', silent=False).get()", []),
        ("%px --targets 1 %no_such_magic", ["raises-exception"]),
        ("%%px\n%%timeit -n 1 -r 1\nsum(range(100))", []),
        ("%px %load_ext autoreload\n%px %autoreload 2\n%px 'autoreload' in get_ipython().magics_manager.magics['line']",
         []),
        ("cluster.stop_cluster_sync()", []),
    ]


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
        elif out.get("output_type") == "error":
            parts.append("\n".join(out.get("traceback", [])))
    return re.sub(r"\x1b\[[0-9;]*m", "", "".join(parts))  # no colours


@pytest.mark.slow
def test_magics_and_shell_escapes_in_a_notebook(tmp_path):
    profile = f"nb-magics-{os.getpid()}"
    engine_dir = tmp_path / "on-engines"
    engine_dir.mkdir()
    for name in ("one.dat", "two.dat", "three.dat"):
        (engine_dir / name).write_text("x")
    nb = nbformat.v4.new_notebook()
    # the engines expand {engine_dir} in their own namespace: push it there first
    cells = _cells(profile)
    cells.insert(1, (f"rc[:].push({{'engine_dir': {str(engine_dir)!r}}}, block=True)", []))
    for source, tags in cells:
        nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": tags}))
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        stop_profile(profile, check=False)  # whatever happened in the notebook
    out = [_text(c) for c in nb.cells]
    host = socket.gethostname()
    assert "[0, 1]" in out[0]
    assert sorted(out[2].splitlines()) == [f"[stdout:0] {host}", f"[stdout:1] {host}"]
    assert re.findall(r"Out\[(\d):\d+\]: 3", out[4]) == ["0", "1"]
    assert sorted(line for line in out[5].splitlines() if "total 4" in line) == [
        "[stdout:0] total 4999950000", "[stdout:1] total 4999950000"]
    assert out[5].count("Wall time") == 2
    assert "files" in out[6] and "SList" in out[6]
    pngs = [o for o in nb.cells[7].outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1
    assert re.findall(r"Out\[\d:\d+\]: '(.*)'", out[8]) == ["engine-$x", "engine-$x"]
    tb = out[9]
    assert "KeyError" in tb and "return d['no such key']" in tb  # the notebook cell's line, from the engine
    assert "<dynamic-code>" not in tb and "hpcpar" + os.sep not in tb
    assert re.search(r"Out\[1:\d+\]: 42", out[10])
    assert "UsageError: Line magic function `%no_such_magic` not found." in out[11]
    assert len(re.findall(r"^\[stdout:\d\] .* per loop", out[12], re.M)) == 2
    assert re.findall(r"Out\[(\d):\d+\]: True", out[13]) == ["0", "1"], out[13]
