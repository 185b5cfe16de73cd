"""The README tutorial, verbatim, against a cluster started with the CLI."""

from __future__ import annotations

import subprocess

from conftest import hpcpar_cmd

from hpcpar.launchers.process import process_start_time


def mul(a, b):
    return a * b


def test_tutorial_with_cli(hpcpar_dir):
    out = subprocess.run(hpcpar_cmd("start", "-n", "4", "--daemonize", "--wait"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "4 engines" in out.stdout
    try:
        listing = subprocess.run(hpcpar_cmd("list"), capture_output=True, text=True, timeout=30).stdout
        assert "default" in listing and " 4 " in listing

        import hpcpar
        rc = hpcpar.Client()
        rc.block = True
        assert rc.ids == [0, 1, 2, 3]
        assert rc[0].apply(mul, 5, 6) == 30
        assert rc[:].apply(mul, 5, 6) == [30, 30, 30, 30]
        assert rc.load_balanced_view().map(mul, range(1, 10), range(2, 11)) == [2, 6, 12, 20, 30, 42, 56, 72, 90]
        pids = rc[:].apply(__import__("os").getpid)
        rc.close()
    finally:
        stop = subprocess.run(hpcpar_cmd("stop"), capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert len(set(pids)) == 4
    assert all(process_start_time(pid) is None for pid in pids), "an engine survived hpcpar stop"
    after = subprocess.run(hpcpar_cmd("list"), capture_output=True, text=True, timeout=30).stdout
    assert "no clusters" in after
