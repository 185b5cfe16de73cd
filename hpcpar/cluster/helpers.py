"""Small helpers of the cluster package: its error, job states, log tails."""

from __future__ import annotations

import json
import random
import string
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..paths import ProfileDir

FINAL_STATES = ("done", "failed", "cancelled")


class ClusterError(RuntimeError):
    pass


def new_cluster_id() -> str:
    """``"<epoch seconds>-<4 random letters/digits>"``: unique enough for clusters sharing a profile."""
    suffix = "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(4))
    return f"{int(time.time())}-{suffix}"


def python_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpcpar", *args]


def is_batch_launcher(launcher: Any) -> bool:
    from ..launchers.batch import BatchLauncher

    return isinstance(launcher, BatchLauncher)


def jsonable(values: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(values)
        return dict(values)
    except (TypeError, ValueError):
        return {k: v for k, v in values.items() if isinstance(v, (str, int, float, bool, list))}


def is_batch_name(name: str) -> bool:
    from ..launchers.build import is_batch

    return is_batch(name)


def layout(launcher: Any) -> str:
    mode = getattr(launcher, "mode", "")
    n = launcher.n
    jobs, per_job = getattr(launcher, "job_count", n), getattr(launcher, "engines_per_job", 1)
    each = f", {per_job} engines each" if per_job > 1 else ""
    return {"array": f"array of {jobs} tasks{each}", "mpi": f"one job of {n} MPI ranks",
            "jobs": f"{jobs} jobs{each}", "single": f"one job of {n} engines" if per_job > 1 else "one engine",
            }.get(mode, f"{n} engines")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def job_output(profile_dir: ProfileDir, cluster_id: str, role: str) -> str:
    """The tail of the newest log or batch job output of ``role`` (controller or engine)."""
    outs = sorted((p for p in profile_dir.log.glob(f"{role}*") if cluster_id in p.name
                   and p.suffix in (".out", ".log")), key=lambda p: p.stat().st_mtime)
    if not outs:
        return ""
    return f"\n--- {outs[-1]}:\n{tail(outs[-1])}"
