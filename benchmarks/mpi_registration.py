"""How fast the controller takes a registration burst of MPI ranks.

Two measurements (run either or both):

  synthetic  N engine sockets in this one process send register_request at once, each
             asking for its rank as id, in random order, some twice (a retry); measures the
             controller alone: time until every socket has its reply, and that id == rank.
  mpiexec    `hpcpar`'s MPI launcher starts N real engines under mpiexec; measures the time
             from launch to N registered (what a user waits for), the registration window
             (first to last register, from the controller's timestamps), one allreduce over
             all ranks, and the time `stop` takes to end the job.

    python benchmarks/mpi_registration.py --ranks 256 --mode synthetic mpiexec
    python benchmarks/mpi_registration.py --ranks 64 --mode mpiexec --delay 0.5

Prints one JSON object per measurement. Needs mpi4py and an mpiexec for the mpiexec mode
(pip install 'hpcpar[mpi]' mpich). Real ranks are whole Python processes: 256 of them need
about 256 x 45 MB of memory and, on 2 cores, most of the time is their start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import zmq  # noqa: E402

from hpcpar import security, wire  # noqa: E402
from hpcpar.cluster import Cluster  # noqa: E402
from hpcpar.connection import ConnectionInfo  # noqa: E402


def synthetic(cluster: Cluster, ranks: int, timeout: float) -> dict:
    info = ConnectionInfo.load(cluster.profile_dir.engine_file(cluster.cluster_id))
    signer = wire.Signer(info.key_bytes)
    ctx = zmq.Context()
    socks = []
    for rank in range(ranks):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, f"bench-{rank}-{os.getpid()}".encode())
        s.setsockopt(zmq.LINGER, 0)
        security.connect_as(s, info)
        s.connect(info.urls[0])
        socks.append((rank, s))
    time.sleep(0.5)  # connections up: measure the controller, not TCP set-up

    def message(rank: int) -> list:
        return signer.pack(
            signer.header("register_request"),
            {
                "uuid": f"bench-{rank}",
                "requested_id": rank,
                "info": {
                    "hostname": "bench",
                    "pid": 0,
                    "mpi_rank": rank,
                    "mpi_size": ranks,
                    "mpi_world": "bench",
                },
            },
        )

    order = list(range(ranks))
    random.shuffle(order)
    retries = random.sample(order, max(1, ranks // 10))
    poller = zmq.Poller()
    for _, s in socks:
        poller.register(s, zmq.POLLIN)
    t0 = time.perf_counter()
    for rank in order + retries:
        socks[rank][1].send_multipart(message(rank))
    ids: dict[int, int] = {}
    replies = 0
    deadline = time.monotonic() + timeout
    by_sock = {s: r for r, s in socks}
    while replies < ranks + len(retries) and time.monotonic() < deadline:
        for s, _ in poller.poll(100):
            while True:
                try:
                    frames = s.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                msg = signer.unpack(frames)
                if msg.msg_type == "register_reply":
                    replies += 1
                    ids[by_sock[s]] = int(msg.meta["id"])
    elapsed = time.perf_counter() - t0
    # Leave: the controller must not keep 256 fake engines waiting for heartbeats.
    for _, s in socks:
        s.send_multipart(signer.pack(signer.header("unregister_request")))
    time.sleep(0.3)
    for _, s in socks:
        s.close()
    ctx.term()
    return {
        "measure": "synthetic",
        "ranks": ranks,
        "retries": len(retries),
        "registered": len(ids),
        "id_equals_rank": all(ids.get(r) == r for r in range(ranks)),
        "seconds": round(elapsed, 4),
        "per_second": round(ranks / elapsed) if elapsed else None,
    }


def mpiexec(cluster: Cluster, ranks: int, timeout: float, delay: float) -> dict:
    from hpcpar.launchers.mpi import MPILauncher

    rc = cluster.connect_client_sync(timeout=30)
    launcher = MPILauncher(role="engines", n=ranks, registration_delay=delay)
    cluster.engines["bench"] = launcher
    log = cluster.profile_dir.log_file("engine-bench-{index}", cluster.cluster_id)
    t0 = time.time()
    launcher.start(
        [
            sys.executable,
            "-m",
            "hpcpar",
            "engine",
            "--profile-dir",
            str(cluster.profile_dir.path),
            "--cluster-id",
            cluster.cluster_id,
            "--mpi",
            "--connect-timeout",
            str(timeout),
        ],
        {},
        str(log),
    )
    cluster._save()
    try:
        rc.wait_for_engines(ranks, timeout=timeout, interactive=False)
        ready = time.time() - t0
        stamps = sorted(e["registered"] for e in rc._engines.values())
        ok = rc.ids == list(range(ranks)) and all(
            e["mpi_rank"] == e["id"] for e in rc._engines.values()
        )
        t1 = time.perf_counter()
        total = rc[:].apply_sync(lambda: comm.allreduce(mpi_rank))  # noqa: F821 (engine namespace)
        collective = time.perf_counter() - t1
    finally:
        t2 = time.perf_counter()
        launcher.stop()
        stop = time.perf_counter() - t2
        left = len(launcher.processes())
    return {
        "measure": "mpiexec",
        "ranks": ranks,
        "registration_delay": delay,
        "seconds_to_all_registered": round(ready, 2),
        "first_register_after": round(stamps[0] - t0, 2),
        "registration_window": round(stamps[-1] - stamps[0], 2),
        "id_equals_rank": ok,
        "allreduce_ok": set(total) == {ranks * (ranks - 1) // 2},
        "apply_allreduce_seconds": round(collective, 3),
        "stop_seconds": round(stop, 2),
        "processes_left": left,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--ranks", type=int, default=256)
    p.add_argument(
        "--mode", nargs="+", choices=["synthetic", "mpiexec"], default=["synthetic", "mpiexec"]
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all ranks")
    p.add_argument(
        "--delay", type=float, default=0.0, help="[mpi] registration_delay (s per 100 ranks)"
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hpcpar-mpibench-") as tmp:
        os.environ["HPCPAR_DIR"] = tmp
        cluster = Cluster(n=0, profile="mpibench", cluster_id="b")
        cluster.start_controller_sync()
        try:
            for mode in args.mode:
                if mode == "synthetic":
                    result = synthetic(cluster, args.ranks, args.timeout)
                else:
                    result = mpiexec(cluster, args.ranks, args.timeout, args.delay)
                print(json.dumps(result), flush=True)
        finally:
            cluster.stop_cluster_sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
