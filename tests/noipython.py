"""Engines in a real Python environment where IPython is not installed.

A venv without system packages, given only what an engine imports (pyzmq,
cloudpickle, and this checkout of hpcpar): what users get on a cluster
where nobody ran ``pip install ipython``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def python_without_ipython(where: Path) -> str:
    venv = where / "noipython-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site = Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                        text=True, timeout=60).strip())
    import cloudpickle
    import zmq

    for mod in (zmq, cloudpickle):
        src = Path(mod.__file__).parent
        (site / src.name).symlink_to(src)
    libs = Path(zmq.__file__).parents[1] / "pyzmq.libs"
    if libs.exists():
        (site / libs.name).symlink_to(libs)
    (site / "hpcpar-checkout.pth").write_text(f"{ROOT}\n")
    check = subprocess.run([python, "-c", "import hpcpar.engine.app\ntry:\n    import IPython\nexcept ImportError:\n"
                            "    print('no ipython')"], capture_output=True, text=True, timeout=60,
                           env=_env())
    assert check.stdout.strip() == "no ipython", check.stderr
    return python


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # nothing from the test venv may leak in
    return env


def start_engine(python: str, cluster, log: Path) -> subprocess.Popen:
    """One more engine for ``cluster``, run by ``python``; stop it with :func:`stop_engine`."""
    cmd = [python, "-m", "hpcpar", "engine", "--profile-dir", str(cluster.profile_dir.path),
           "--cluster-id", cluster.cluster_id]
    out = open(log, "ab")  # noqa: SIM115 - the engine writes to it until it stops
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    finally:
        out.close()


def stop_engine(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(20)


def wait_for_new_engine(rc, known: list[int], timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = sorted(set(rc.ids) - set(known))
        if new:
            return new[0]
        time.sleep(0.1)
    raise AssertionError(f"no engine without IPython registered within {timeout} s")
