"""A controller SIGKILLed in the middle of a load-balanced farm, then `hpcpar start --restore`.

Usage (run on demand, never in tests)::

    python benchmarks/crash_recovery.py [--tasks 2000] [--engines 4] [--kill-at 0.5] [--work 0.005]
                                        [--forwarders N]

Starts a local cluster in a private HPCPAR_DIR, submits ``--tasks`` load-balanced tasks
(each sleeps ``--work`` seconds and appends its index to a file: how often it really ran),
SIGKILLs the controller once ``--kill-at`` of them have returned, restores it, and waits
for every result with the same client. Prints: failed (an error came back), lost (no
result within the wait), wrong (a result that is not the task's), run twice (the file shows
two executions) and run twice *and seen twice* by the user (always 0: one AsyncResult, one
value), then the time from the SIGKILL to the last result. The cluster is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter


def work(i: int, path: str, delay: float) -> int:
    import time

    time.sleep(delay)
    with open(path, "a") as f:
        f.write(f"{i}\n")
    return i * 3


def hpcpar_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hpcpar", *args]


def run(tasks: int, engines: int, kill_at: float, delay: float, wait: float, forwarders: int = 0,
        profile: str = "crashbench") -> dict:
    """The figures of one crash (tests/test_faults_full.py asserts them at full size)."""
    import hpcpar

    runs = os.path.join(os.environ["HPCPAR_DIR"], f"runs-{profile}.txt")
    extra = ["--forwarders", str(forwarders)] if forwarders else []
    out = subprocess.run(hpcpar_cmd("start", "--profile", profile, "-n", str(engines), *extra, "--daemonize", "--wait"),
                         capture_output=True, text=True, timeout=300)
    if out.returncode:
        raise SystemExit(out.stderr)
    try:
        info = json.loads(hpcpar.paths.ProfileDir.for_profile(profile).client_file().read_text())
        rc = hpcpar.Client(profile=profile, timeout=60)
        rc.wait_for_engines(engines, timeout=120, interactive=False)
        view = rc.load_balanced_view()
        ars = [view.apply_async(work, i, runs, delay) for i in range(tasks)]
        while sum(ar.ready() for ar in ars) < kill_at * tasks:
            time.sleep(0.01)
        done_at_kill = sum(ar.ready() for ar in ars)
        killed = time.monotonic()
        os.kill(info["controller_pid"], signal.SIGKILL)
        time.sleep(0.3)
        out = subprocess.run(hpcpar_cmd("start", "--profile", profile, "--restore"),
                             capture_output=True, text=True, timeout=300)
        if out.returncode:
            raise SystemExit(out.stderr)
        failed = lost = wrong = 0
        deadline = time.monotonic() + wait
        for i, ar in enumerate(ars):
            try:
                value = ar.get(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                lost += 1
                continue
            except Exception:
                failed += 1
                continue
            wrong += value != i * 3
        recovered = time.monotonic() - killed
        counts = Counter(int(x) for x in open(runs).read().split())
        rc.close()
        return {"tasks": tasks, "engines": engines, "forwarders": forwarders, "done_at_kill": done_at_kill, "failed": failed,
                "lost": lost, "wrong": wrong, "run_twice": sum(1 for c in counts.values() if c > 1),
                "never_ran": tasks - len(counts), "seen_twice": 0, "kill_to_last_result_s": round(recovered, 2)}
    finally:
        subprocess.run(hpcpar_cmd("stop", "--profile", profile), capture_output=True, timeout=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--engines", type=int, default=4)
    p.add_argument("--kill-at", type=float, default=0.5, help="fraction of results returned before the SIGKILL")
    p.add_argument("--work", type=float, default=0.005, help="seconds each task sleeps")
    p.add_argument("--forwarders", type=int, default=0, help="engines reach the controller through these")
    p.add_argument("--wait", type=float, default=300.0, help="seconds to wait for every result after the restore")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hpcpar-crash-") as d:
        os.environ["HPCPAR_DIR"] = d
        print(json.dumps(run(a.tasks, a.engines, a.kill_at, a.work, a.wait, a.forwarders), indent=1))


if __name__ == "__main__":
    main()
