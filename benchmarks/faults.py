"""Issue #15's fault figures at full size (tests/test_faults.py and tests/test_security.py run
the same paths smaller, to stay fast).

Usage (run on demand, never in tests)::

    python benchmarks/faults.py engines [--tasks 10000] [--engines 14] [--kill 10]
    python benchmarks/faults.py stalled [--mb 200] [--engines 2]
    python benchmarks/faults.py client [--tasks 1000] [--engines 6]
    python benchmarks/security.py flood [--frames 100000] [--big-gb 1.0]   # the flood

``engines``: ``--tasks`` load-balanced tasks with ``retries=1`` while ``--kill`` of the
``--engines`` engines are SIGKILLed once a tenth has returned; prints lost (no result),
wrong (not the task's own), failed, and whether late tasks ran on killed engines.
``stalled``: a raw client submits tasks whose results total ``--mb`` MB and never reads;
prints the controller's RSS growth at its peak and whether every result is retrievable by
id from another client. ``client``: a client SIGKILLed with ``--tasks`` in flight; prints
whether another client was served meanwhile and how many of its results are retrievable by id.
Each starts its own local cluster in a private HPCPAR_DIR and stops it at the end.
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
from pathlib import Path


def square_slowly(x: int, delay: float = 0.01) -> tuple[int, int]:
    import os
    import time

    time.sleep(delay)
    return x * x, os.getpid()


def big_result(n: int) -> bytes:
    return b"r" * n


def rss(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # it is gone
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    return 0


def cluster(n: int):
    from hpcpar.cluster import Cluster

    c = Cluster(n=n, profile=f"faults-{os.getpid()}", cluster_id="")
    c.start_cluster_sync()
    rc = c.connect_client_sync()
    rc.wait_for_engines(n, timeout=300, interactive=False)
    return c, rc


def engines_run(rc, tasks: int, kill: int, delay: float = 0.01) -> dict:
    """``tasks`` load-balanced tasks with retries=1; SIGKILL ``kill`` of ``rc``'s engines once a
    tenth has returned. Returns the figures (tests/test_faults_full.py asserts them)."""
    pids = dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))
    view = rc.load_balanced_view()
    t0 = time.perf_counter()
    with view.temp_flags(retries=1):
        ars = [view.apply_async(square_slowly, i, delay) for i in range(tasks)]
    deadline = time.monotonic() + 600
    while sum(ar.ready() for ar in ars) < tasks // 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    done_at_kill = sum(ar.ready() for ar in ars)
    victims = list(pids.values())[:kill]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    lost = wrong = 0
    failures: dict[str, int] = {}
    late_on_victims = 0
    for i, ar in enumerate(ars):
        try:
            value, pid = ar.get(timeout=max(1.0, deadline - time.monotonic()))
        except TimeoutError:
            lost += 1
            continue
        except Exception as e:  # noqa: BLE001 - counted by kind, the figure is the point
            kind = getattr(e, "ename", None) or type(e).__name__
            failures[kind] = failures.get(kind, 0) + 1
            continue
        wrong += value != i * i
        late_on_victims += i >= tasks - tasks // 10 and pid in victims
    return {"tasks": tasks, "engines": len(pids), "killed": len(victims), "lost": lost, "wrong": wrong,
            "failed": sum(failures.values()), "failures": failures, "late_on_killed": late_on_victims,
            "done_at_kill": done_at_kill, "seconds": round(time.perf_counter() - t0, 1)}


def engines(args: argparse.Namespace) -> None:
    c, rc = cluster(args.engines)
    try:
        f = engines_run(rc, args.tasks, args.kill)
        print(f"engines: {f['tasks']} tasks, retries=1, {f['killed']} of {f['engines']} engines SIGKILLed: "
              f"lost {f['lost']}, wrong {f['wrong']}, failed {f['failed']} {f['failures']}, "
              f"last tenth on killed engines {f['late_on_killed']}; {f['seconds']} s")
    finally:
        rc.close()
        c.stop_cluster_sync()


def stalled(args: argparse.Namespace) -> None:
    import zmq

    import hpcpar
    from hpcpar import security, serialize, wire

    c, rc = cluster(args.engines)
    try:
        info = json.loads(c.profile_dir.client_file().read_text())
        pid = info["controller_pid"]
        rc[:].apply_sync(int)
        rc.close()
        before = rss(pid)
        # A raw client that submits and never reads (its receive queue is one message).
        signer = wire.Signer(info["key"].encode())
        s = zmq.Context.instance().socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IDENTITY, signer.session.encode())
        s.setsockopt(zmq.RCVHWM, 1)
        s.setsockopt(zmq.RCVBUF, 4096)
        security.connect_as(s, info)
        s.connect(info["urls"][0])
        part = 512 << 10
        count = args.mb * (1 << 20) // part
        payload, bufs = serialize.dumps((big_result, (part,), {}))
        msg_ids = []
        for _ in range(count):
            hdr = signer.header("apply_request", route="lb")
            msg_ids.append(hdr["msg_id"])
            s.send_multipart(signer.pack(hdr, {}, payload, bufs))
        peak = before
        with hpcpar.Client(info, timeout=60) as other:
            served = other[:].apply_sync(int, 5) == [5] * args.engines
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                peak = max(peak, rss(pid))
                try:
                    if not other.result_status(msg_ids)["pending"]:
                        break
                except KeyError:  # the hub has not recorded them all yet
                    pass
                time.sleep(0.5)
            peak = max(peak, rss(pid))
            ok = 0
            for i in range(0, count, 50):  # fetched in parts: this client reads
                got = other.get_result(msg_ids[i:i + 50], block=False).get(timeout=300)
                ok += sum(len(r) == part for r in got)
        s.close()
        time.sleep(2)
        print(f"stalled: {count} results of {part >> 10} KB ({args.mb} MB) to a client that never reads: "
              f"controller RSS {before >> 20} MB before, peak +{(peak - before) >> 20} MB, "
              f"{(rss(pid) - before) >> 20} MB above start after it closed; others served meanwhile: {served}; "
              f"retrievable by id {ok}/{count}")
    finally:
        c.stop_cluster_sync()


CLIENT = """
import json, os, sys, hpcpar
sys.path.insert(0, sys.argv[3])
from faults import square_slowly
rc = hpcpar.Client(profile=sys.argv[1], timeout=60)
view = rc.load_balanced_view()
ars = [view.apply_async(square_slowly, i) for i in range(int(sys.argv[4]))]
rc.queue_status()
with open(sys.argv[2], "w") as f:
    json.dump([ar.msg_ids[0] for ar in ars], f)
os.kill(os.getpid(), 9)
"""


def client_run(c, rc, tasks: int) -> dict:
    """A client SIGKILLed with ``tasks`` in flight on cluster ``c``; ``rc``, another client, is
    served meanwhile and fetches the dead client's results by id. Returns the figures."""
    ids_file = Path(tempfile.mkdtemp()) / "ids.json"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CLIENT, c.profile_dir.name, str(ids_file),
                          str(Path(__file__).resolve().parent), str(tasks)],
                         capture_output=True, text=True, timeout=600)
    n = len(rc.ids)
    served = rc[:].apply_sync(pow, 2, 2) == [4] * n
    msg_ids = json.loads(ids_file.read_text()) if ids_file.exists() else []
    got = rc.get_result(msg_ids, block=False).get(timeout=600) if msg_ids else []
    right = sum(r[0] == i * i for i, r in enumerate(got))
    return {"exit": out.returncode, "stderr": out.stderr[-2000:], "in_flight": len(msg_ids), "served": served,
            "retrievable_right": right, "seconds": round(time.perf_counter() - t0, 1)}


def client(args: argparse.Namespace) -> None:
    c, rc = cluster(args.engines)
    try:
        f = client_run(c, rc, args.tasks)
        print(f"client: SIGKILLed (exit {f['exit']}) with {f['in_flight']} tasks in flight; others served: "
              f"{f['served']}; its results retrievable by id and right: {f['retrievable_right']}/{f['in_flight']}; "
              f"{f['seconds']} s")
    finally:
        rc.close()
        c.stop_cluster_sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("engines")
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--engines", type=int, default=14)
    p.add_argument("--kill", type=int, default=10)
    p = sub.add_parser("stalled")
    p.add_argument("--mb", type=int, default=200)
    p.add_argument("--engines", type=int, default=2)
    p = sub.add_parser("client")
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--engines", type=int, default=6)
    args = parser.parse_args()
    os.environ.setdefault("HPCPAR_DIR", tempfile.mkdtemp(prefix="hpcpar-bench-"))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                                             os.environ.get("PYTHONPATH")]))
    {"engines": engines, "stalled": stalled, "client": client}[args.what](args)


if __name__ == "__main__":
    main()
