"""One controller facing thousands of simulated engines (issue: scale past one machine).

Simulated engines (``hpcpar simulate``) speak the real protocol, many per
process, but run no code. For each N this measures: registration of all N,
whether heartbeats hold (no engine dropped) over a quiet period and under a
broadcast load, broadcast apply round trips, and the controller's CPU time
and RSS. Run on demand:

    python benchmarks/scale.py --engines 1000 5000 --procs 2 --hold 20
    python benchmarks/scale.py --engines 1000 5000 --forwarders 8   # engines behind 8 forwarders
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import hpcpar


def proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def noop():
    return None


@contextlib.contextmanager
def simulated_cluster(n: int, procs: int, forwarders: int = 0, fwd_procs: list | None = None,
                      sim_procs: list | None = None) -> Iterator[tuple[subprocess.Popen, hpcpar.Client, float]]:
    """A controller (memory task database) facing ``n`` simulated engines in ``procs``
    processes; yields (controller process, connected client, seconds to register all).
    With ``forwarders``, that many ``hpcpar forwarder`` processes stand between them (each
    simulator process deals its engines over all of them), appended to ``fwd_procs``.
    The simulator processes are appended to ``sim_procs``. Everything is stopped by PID on exit."""
    pdir = Path(tempfile.mkdtemp(prefix=f"hpcpar-scale-{n}-"))
    hp = [sys.executable, "-m", "hpcpar"]
    ctl = subprocess.Popen([*hp, "controller", "--profile-dir", str(pdir), "--db", "memory"],
                           stderr=subprocess.DEVNULL)
    sims: list[subprocess.Popen] = [] if sim_procs is None else sim_procs
    fwds: list[subprocess.Popen] = [] if fwd_procs is None else fwd_procs
    try:
        client_file = pdir / "security" / "hpcpar-client.json"
        deadline = time.monotonic() + 30
        while not client_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        rc = hpcpar.Client(client_file, timeout=30)
        files: list[list[str]] = [[]]
        if forwarders:
            fwds += [subprocess.Popen([*hp, "forwarder", "--profile-dir", str(pdir), "--name", f"f{i}"],
                                      stderr=subprocess.DEVNULL) for i in range(forwarders)]
            paths = [pdir / "security" / f"hpcpar-forwarder-f{i}.json" for i in range(forwarders)]
            for path in paths:
                while not path.exists() and time.monotonic() < deadline + 30:
                    time.sleep(0.05)
            # Each simulator deals its engines over every forwarder: as many simulator
            # processes as without forwarders, so both runs load the machine alike.
            files = [[arg for path in paths for arg in ("--file", str(path))]]
        start = time.monotonic()
        per = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        sims += [subprocess.Popen([*hp, "simulate", "--profile-dir", str(pdir), "-n", str(k),
                                  *files[i % len(files)]], stderr=subprocess.DEVNULL)
                for i, k in enumerate(per) if k]
        rc.wait_for_engines(n, timeout=300, interactive=False)
        try:
            yield ctl, rc, time.monotonic() - start
        finally:
            rc.close()
    finally:
        for p in [*sims, *fwds, ctl]:
            p.terminate()
        for p in [*sims, *fwds, ctl]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(pdir, ignore_errors=True)


def measure(n: int, procs: int, hold: float, rounds: int, forwarders: int = 0) -> dict:
    fwds: list[subprocess.Popen] = []
    sims: list[subprocess.Popen] = []
    with simulated_cluster(n, procs, forwarders, fwds, sims) as (ctl, rc, registration):
        cpu1, rss1 = proc_stats(ctl.pid)
        fcpu1 = sum(proc_stats(f.pid)[0] for f in fwds)
        # Quiet period: heartbeats only.
        lowest = n
        end = time.monotonic() + hold
        while time.monotonic() < end:
            lowest = min(lowest, len(rc.ids))
            time.sleep(0.2)
        cpu2, _ = proc_stats(ctl.pid)
        fcpu2 = sum(proc_stats(f.pid)[0] for f in fwds)
        quiet = {
            "engines": n,
            "forwarders": forwarders,
            "registration_s": round(registration, 2),
            "registrations_per_s": round(n / registration),
            "engines_lowest_during_hold": lowest,
            "heartbeat_cpu_share": round((cpu2 - cpu1) / hold, 3),
            "forwarders_heartbeat_cpu_share": round((fcpu2 - fcpu1) / hold, 3),
            "controller_rss_mb_after_registration": round(rss1, 1),
        }
        # Broadcast load. The header every engine parses (it must not grow with N):
        header_bytes = len(rc._submit("apply_request", route="direct", targets=rc.ids, obj=(noop, (), {}))[1][1])
        scpu2 = sum(proc_stats(s.pid)[0] for s in sims)
        view = rc[:]
        times = []
        try:
            for _ in range(rounds):
                t = time.perf_counter()
                view.apply_sync(noop)
                times.append(time.perf_counter() - t)
                lowest = min(lowest, len(rc.ids))
        except Exception as exc:  # noqa: BLE001 - keep what the quiet period measured
            return {**quiet, "error": f"{type(exc).__name__}: {exc}"[:300]}
        cpu3, rss3 = proc_stats(ctl.pid)
        fcpu3 = sum(proc_stats(f.pid)[0] for f in fwds)
        scpu3 = sum(proc_stats(s.pid)[0] for s in sims)
        return {
            **quiet,
            "engines_lowest_during_run": lowest,
            "broadcast_apply_median_ms": round(statistics.median(times) * 1000, 1),
            "broadcast_apply_max_ms": round(max(times) * 1000, 1),
            "controller_cpu_s_broadcasts": round(cpu3 - cpu2, 2),
            "controller_cpu_ms_per_broadcast": round((cpu3 - cpu2) / rounds * 1000, 1),
            "forwarders_cpu_ms_per_broadcast": round((fcpu3 - fcpu2) / rounds * 1000, 1),
            "simulators_cpu_ms_per_broadcast": round((scpu3 - scpu2) / rounds * 1000, 1),
            "request_header_bytes": header_bytes,
            "controller_rss_mb": round(rss3, 1),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--procs", type=int, default=2, help="simulator processes")
    ap.add_argument("--hold", type=float, default=20.0, help="seconds of heartbeats only")
    ap.add_argument("--rounds", type=int, default=10, help="broadcast applies")
    ap.add_argument("--forwarders", type=int, nargs="+", default=[0],
                    help="forwarders between the engines and the controller (0: direct); each value is a run")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for n in args.engines:
        for k in args.forwarders:
            try:
                rows.append(measure(n, args.procs, args.hold, args.rounds, k))
            except Exception as exc:  # noqa: BLE001 - e.g. engines lost under load: record, go on
                rows.append({"engines": n, "forwarders": k, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(json.dumps(rows[-1]), flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
