"""The %px magics as ipyparallel users rely on them, against the shared cluster."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("IPython")

from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from test_magics import Recorder, run  # noqa: E402

from hpcpar.client import magics  # noqa: E402


@pytest.fixture()
def ip(rc):
    shell = InteractiveShell.instance()
    shell.colors = "nocolor"
    magics._active.clear()
    rc.activate()
    shell.out, shell.err = Recorder(), Recorder()
    yield shell
    magics._active.clear()


def test_px_line_does_not_expand_client_names(ip):
    """'{x}' and '$x' in %px code are the engines' business: f-strings and shell
    variables must reach the engines as written."""
    ip.user_ns["x"] = "client"
    assert run(ip, "%px x = 'engine'").success
    assert run(ip, '%px y = f"{x}"').success
    assert run(ip, "%px y").success
    assert re.findall(r"Out\[\d+:\d+\]: '(\w+)'", ip.out.text) == ["engine"] * 4, ip.out.text
    ip.out.writes.clear()
    assert run(ip, "%px --targets 0 s = '$x'; s").success
    assert "Out[0:" in ip.out.text and "'$x'" in ip.out.text, ip.out.text


def test_px_cell_does_not_expand_client_names(ip):
    ip.user_ns["x"] = "client"
    assert run(ip, "%px --targets 1 x = 'e1'").success
    assert run(ip, '%%px --targets 1\nz = f"{x!r}-{1 + 1}"\nz\n').success
    assert re.search(r"Out\[1:\d+\]: \"'e1'-2\"", ip.out.text), ip.out.text
    assert "client" not in ip.out.text
