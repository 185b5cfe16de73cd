"""What busy engines' status reports cost (the ``engine_status`` messages behind
``rc.queue_status(verbose=True)``, ``hpcpar status`` and the dashboard).

N simulated engines (real protocol, real signing, one process) all report a busy status
like a real engine's (engine/status.py) every ``--every`` seconds, after their heartbeats;
the run with ``--every 0`` sends heartbeats only. Printed per run: the controller's CPU
share, the simulator's (the engines' sending side), messages per second and bytes per
message. Also measured: one ``StatusSampler.sample()`` on a real busy main thread (what each
real engine's I/O thread pays per report). Run on demand:

    python benchmarks/engine_status.py --engines 64 256 --every 0 1 5 --hold 20
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

from scale import proc_stats

import hpcpar


def busy_status(eid: int, started: float, now: float) -> dict:
    """A real busy engine's report (the keys and sizes of StatusSampler.sample)."""
    return {"state": "busy", "task": f"{eid:08x}-3c1f-4b7e-9d2a-5e6f7a8b9c0d", "running_for": round(now - started, 1),
            "call": "/home/user/analysis/pipeline.py:212 reduce_chunk", "callee": "comm.Allreduce",
            "rss": 412_000_000 + eid, "cpu": 99.5, "host": "node042", "pid": 40000 + eid, "mpi_rank": eid,
            "job_id": "812345"}


def simulate(engine_file: str, n: int, every: float, duration: float) -> None:
    """The child: n simulated engines; every ``every`` s each sends a busy engine_status."""

    from hpcpar.connection import ConnectionInfo
    from hpcpar.engine.simulated import SimulatedEngines

    sims = SimulatedEngines(ConnectionInfo.load(engine_file), n)
    sims.register_all()
    start = time.monotonic()
    next_status = {id(s): start + random.uniform(0, every or 1) for s in sims.sims}
    sent = 0

    def send_status(now: float) -> None:
        nonlocal sent
        for sim in sims.sims:
            if sim.id is not None and every and now >= next_status[id(sim)]:
                header = sims.signer.header("engine_status")
                sim.sock.send_multipart(sims.signer.pack(header, busy_status(sim.id, start, now)))
                next_status[id(sim)] = now + every
                sent += 1

    try:
        sims.run(duration, on_tick=send_status, poll_ms=20)
    finally:
        sims.close()
    print(json.dumps({"status_sent": sent}), flush=True)


def measure(n: int, every: float, hold: float) -> dict:
    pdir = Path(__import__("tempfile").mkdtemp(prefix=f"hpcpar-status-{n}-"))
    hp = [sys.executable, "-m", "hpcpar"]
    ctl = subprocess.Popen([*hp, "controller", "--profile-dir", str(pdir), "--db", "memory"], stderr=subprocess.DEVNULL)
    sim = None
    try:
        client_file = pdir / "security" / "hpcpar-client.json"
        deadline = time.monotonic() + 30
        while not client_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with hpcpar.Client(client_file, timeout=30) as rc:
            settle = 5.0
            sim = subprocess.Popen([sys.executable, __file__, "--child", str(pdir / "security" / "hpcpar-engine.json"),
                                    str(n), str(every), str(hold + settle + 30)], stdout=subprocess.PIPE, text=True)
            rc.wait_for_engines(n, timeout=120, interactive=False)
            time.sleep(settle)  # every engine into its status rhythm
            c1, s1 = proc_stats(ctl.pid)[0], proc_stats(sim.pid)[0]
            time.sleep(hold)
            c2, s2 = proc_stats(ctl.pid)[0], proc_stats(sim.pid)[0]
            reported = sum(1 for st in rc.queue_status(verbose=True).values()
                           if isinstance(st, dict) and (st.get("status") or {}).get("state") == "busy")
    finally:
        for p in (sim, ctl):
            if p is not None:
                p.terminate()
        for p in (sim, ctl):
            if p is not None:
                p.wait(timeout=20)
    probe = busy_status(0, 0.0, 1.0)
    from hpcpar import wire

    size = sum(len(f) for f in wire.Signer(b"k" * 32).pack(wire.Signer(b"k" * 32).header("engine_status"), probe))
    return {"engines": n, "status_every_s": every, "controller_cpu_share": round((c2 - c1) / hold, 4),
            "simulator_cpu_share": round((s2 - s1) / hold, 4),
            "status_msgs_per_s": round(n / every, 1) if every else 0, "bytes_per_status": size,
            "engines_reporting_busy": reported}


def sampler_cost(samples: int = 2000) -> float:
    """Microseconds per StatusSampler.sample() while the main thread runs user code."""
    from hpcpar.engine.status import StatusSampler

    class Executor:
        running = "task-1"

    sampler = StatusSampler(Executor(), threading.main_thread().ident)
    stop = threading.Event()
    result: list[float] = []

    def sample() -> None:
        t = time.perf_counter()
        for _ in range(samples):
            sampler.sample()
        result.append((time.perf_counter() - t) / samples * 1e6)
        stop.set()

    threading.Thread(target=sample).start()
    x = 0
    while not stop.is_set():  # a busy main thread, as while a task runs
        x += 1
    return round(result[0], 1)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        simulate(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--every", type=float, nargs="+", default=[0.0, 1.0, 5.0],
                    help="seconds between each engine's status reports (0: heartbeats only)")
    ap.add_argument("--hold", type=float, default=20.0)
    args = ap.parse_args()
    print(json.dumps({"sampler_us_per_sample_busy_main_thread": sampler_cost()}), flush=True)
    for n in args.engines:
        for every in args.every:
            print(json.dumps(measure(n, every, args.hold)), flush=True)


if __name__ == "__main__":
    main()
