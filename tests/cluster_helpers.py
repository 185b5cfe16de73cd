"""Helpers shared by the test modules (imported by name; conftest.py is not importable)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST_HEARTBEAT = ["--heartbeat-interval", "0.25", "--heartbeat-timeout", "2.0"]


def hpcpar_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpcpar", *args]


def stop_profile(profile: str, check: bool = True) -> None:
    """``hpcpar stop --profile PROFILE``; with ``check``, it must succeed."""
    import subprocess

    stop = subprocess.run(hpcpar_cmd("stop", "--profile", profile), capture_output=True, text=True, timeout=90)
    if check:
        assert stop.returncode == 0, stop.stderr


def start_cluster(n: int, profile: str, controller_args_extra: list[str] | None = None, **kwargs):
    import hpcpar.cluster

    args = [*FAST_HEARTBEAT, *(controller_args_extra or [])]
    kwargs.setdefault("cluster_id", "")  # the profile's default cluster: Client(profile=...) and hpcpar stop find it
    cluster = hpcpar.cluster.Cluster(n=n, profile=profile, controller_args=args, **kwargs)
    cluster.start_cluster_sync()
    rc = cluster.wait_for_engines_sync(timeout=60, interactive=False)
    return cluster, rc


def check_stopped_engine_comes_back(rc, pids: dict[int, int], victim: int) -> None:
    """SIGSTOP ``victim`` while it holds a task: the task fails with EngineError and
    the engine leaves ``rc.ids``; after SIGCONT its next heartbeat re-registers it
    with the same id and it serves again (same pid)."""
    import os
    import signal
    import time

    import pytest

    import hpcpar

    held = rc[victim].apply_async(time.sleep, 1)
    os.kill(pids[victim], signal.SIGSTOP)
    try:
        with pytest.raises(hpcpar.EngineError):
            held.get(timeout=20)
        deadline = time.monotonic() + 10  # the unregistration notice follows the failed reply
        while victim in rc.ids and time.monotonic() < deadline:
            time.sleep(0.02)
        assert victim not in rc.ids
    finally:
        os.kill(pids[victim], signal.SIGCONT)
    deadline = time.monotonic() + 20
    while victim not in rc.ids and time.monotonic() < deadline:
        time.sleep(0.1)
    assert victim in rc.ids
    assert rc[victim].apply_sync(os.getpid) == pids[victim]


def check_batch_job_gone(launcher, pids: list, timeout: float = 30.0) -> None:
    """After a stop: the batch job ended (cancelled or done) and every process in
    ``pids`` (ProcessRefs of engines, forwarders...) exited with it."""
    import time

    assert launcher.wait({"cancelled", "done", "failed"}, timeout=60) in ("cancelled", "done")
    deadline = time.monotonic() + timeout
    while any(p.alive() for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for p in pids if p.alive()] == [], "processes outlived the cancelled job"


@contextmanager
def bound_kernel(profile: str, tmp_path: Path) -> Iterator[tuple]:
    """A one-engine cluster whose engine serves ``hpcpar.bind_kernel()``: (client, a ready
    jupyter_client BlockingKernelClient on that kernel); all stopped afterwards."""
    import jupyter_client

    import hpcpar

    cluster, rc = start_cluster(1, profile, env={"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")})
    try:
        kc = jupyter_client.BlockingKernelClient(connection_file=rc[0].apply_sync(hpcpar.bind_kernel))
        kc.load_connection_file()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=30)
            yield rc, kc
        finally:
            kc.stop_channels()
    finally:
        cluster.stop_cluster_sync()
