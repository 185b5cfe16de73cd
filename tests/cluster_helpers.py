"""Helpers shared by the test modules (imported by name; conftest.py is not importable)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAST_HEARTBEAT = ["--heartbeat-interval", "0.25", "--heartbeat-timeout", "2.0"]


def hpcpar_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpcpar", *args]


def start_cluster(n: int, profile: str, controller_args_extra: list[str] | None = None, **kwargs):
    import hpcpar.cluster

    args = [*FAST_HEARTBEAT, *(controller_args_extra or [])]
    cluster = hpcpar.cluster.Cluster(n=n, profile=profile, controller_args=args, **kwargs)
    cluster.start_cluster()
    rc = cluster.wait_for_engines(timeout=60, interactive=False)
    return cluster, rc
