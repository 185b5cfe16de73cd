"""The examples declare what they need and clean up after themselves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cluster_helpers import ROOT

NOTEBOOK = ROOT / "examples" / "interactive.ipynb"


def test_notebook_declares_what_it_needs():
    from hpcpar.config import toml

    nb = json.loads(NOTEBOOK.read_text())
    intro = "".join(nb["cells"][0]["source"])
    assert 'pip install "hpcpar[examples]"' in intro
    extra = toml.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["examples"]
    for needed in ("ipykernel", "ipywidgets", "matplotlib"):
        assert any(req.startswith(needed) for req in extra), extra


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_notebook_stops_its_cluster_when_a_cell_fails(tmp_path: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from hpcpar.paths import ProfileDir

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell("raise RuntimeError('a cell that fails')"))
    run = ProfileDir.for_profile("interactive-example").run  # the notebook's Cluster() has its own cluster id

    def states() -> list:
        return sorted(run.glob("cluster*.json")) if run.is_dir() else []

    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="a cell that fails"):
        client.execute()
    # The kernel was shut down after the failure; its atexit stopped the cluster.
    deadline = time.monotonic() + 60
    while states() and time.monotonic() < deadline:
        time.sleep(0.2)
    if states():
        from hpcpar.cluster import Cluster

        pids = []
        for state in states():
            data = json.loads(state.read_text())
            pids += [p["pid"] for s in data["engine_sets"] for p in s["state"]["processes"]]
            Cluster.from_file(state).stop_cluster_sync()
        pytest.fail(f"the cluster outlived the failed notebook (engine pids {pids})")
    assert "[0, 1]" in json.dumps(nb.cells[1].outputs)  # the cluster had started
