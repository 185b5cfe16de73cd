"""The README tutorial, verbatim, against a cluster started with the CLI; and examples/tutorial.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from cluster_helpers import ROOT, hpcpar_cmd

from hpcpar.launchers.process import process_start_time


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_tutorial_verbatim(hpcpar_dir):
    blocks = readme_python_blocks()
    assert blocks, "the README lost its tutorial"
    out = subprocess.run(hpcpar_cmd("start", "-n", "4", "--daemonize", "--wait"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "4 engines" in out.stdout
    try:
        listing = subprocess.run(hpcpar_cmd("list"), capture_output=True, text=True, timeout=30).stdout
        assert re.search(r"^default\s+-\s+4\s+\d+\s+true", listing, flags=re.M), listing
        namespace: dict = {"__name__": "__main__"}
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
        rc = namespace["rc"]
        pids = rc[:].apply(os.getpid)
        script = subprocess.run([sys.executable, str(ROOT / "examples" / "tutorial.py")],
                                capture_output=True, text=True, timeout=60)
        assert script.returncode == 0, script.stderr
        assert "gathered back: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]" in script.stdout
        assert "pushed names are globals on the engines: [20, 20, 20, 20]" in script.stdout
        rc.close()
    finally:
        stop = subprocess.run(hpcpar_cmd("stop"), capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert len(set(pids)) == 4
    assert all(process_start_time(pid) is None for pid in pids), "an engine survived hpcpar stop"
    after = subprocess.run(hpcpar_cmd("list"), capture_output=True, text=True, timeout=30).stdout
    assert not re.search(r"^default\s", after, flags=re.M), after
