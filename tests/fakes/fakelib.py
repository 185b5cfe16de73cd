"""Shared machinery of the LSF and WinHPC test doubles: a job store on disk and a runner
that executes each task locally in its own session, recording pid and exit code.

State lives in $HPCPAR_FAKE_STATE/<system>/<job id>/; nothing is kept in memory, so
every command (bsub, bjobs, bkill, job ...) is a separate process, as on a real system.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

PYTHON = os.environ.get("HPCPAR_FAKE_PYTHON", sys.executable)


def store(system: str) -> Path:
    root = Path(os.environ.get("HPCPAR_FAKE_STATE", "/tmp/hpcpar-fake-state")) / system
    root.mkdir(parents=True, exist_ok=True)
    return root


def next_id(system: str) -> int:
    counter = store(system) / "next_id"
    with open(store(system) / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        value = int(counter.read_text()) if counter.exists() else 100
        counter.write_text(str(value + 1))
    return value


def job_dir(system: str, job_id: str) -> Path | None:
    path = store(system) / str(job_id)
    return path if (path / "job.json").exists() else None


def save_job(path: Path, info: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "job.json").write_text(json.dumps(info, indent=1))


def load_job(path: Path) -> dict:
    return json.loads((path / "job.json").read_text())


def spawn_task(path: Path, index: int, argv: list[str], env: dict[str, str], output: str, cwd: str) -> None:
    """Start the runner for one task, detached in its own session."""
    spec = {"argv": argv, "env": env, "output": output, "cwd": cwd}
    (path / f"{index}.spec").write_text(json.dumps(spec))
    (path / f"{index}.started").touch()
    subprocess.Popen(
        [PYTHON, str(Path(__file__).resolve()), str(path), str(index)],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )


def run_task(path: Path, index: int) -> int:
    """The runner: write our pid, run the task, write its exit code."""
    spec = json.loads((path / f"{index}.spec").read_text())
    (path / f"{index}.pid").write_text(str(os.getpid()))
    env = {**os.environ, **spec["env"]}
    Path(spec["output"]).parent.mkdir(parents=True, exist_ok=True)
    with open(spec["output"], "ab") as out:
        rc = subprocess.call(spec["argv"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=spec["cwd"])
    (path / f"{index}.rc").write_text(str(rc))
    return rc


def task_state(path: Path, index: int) -> str:
    """pending, running, done, failed or killed, from the files the runner leaves."""
    if (path / f"{index}.killed").exists():
        return "killed"
    rc_file = path / f"{index}.rc"
    if rc_file.exists():
        return "done" if rc_file.read_text().strip() == "0" else "failed"
    pid_file = path / f"{index}.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "killed" if not rc_file.exists() else task_state(path, index)
        return "running"
    return "pending"


def kill_task(path: Path, index: int) -> bool:
    """SIGTERM the task's session; True if it was still active."""
    state = task_state(path, index)
    if state not in ("pending", "running"):
        return False
    (path / f"{index}.killed").touch()
    pid_file = path / f"{index}.pid"
    if pid_file.exists():
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    return True


if __name__ == "__main__":
    sys.exit(run_task(Path(sys.argv[1]), int(sys.argv[2])))
