"""What transport security costs, and the big-number flood (issue #15).

Usage (run on demand, never in tests)::

    python benchmarks/security.py cost [--calls 2000] [--mb 256]
    python benchmarks/security.py raw [--calls 5000] [--mb 512]
    python benchmarks/security.py flood [--frames 100000] [--big-gb 1.0] [--login]
    python benchmarks/security.py bigframe [--gb 1.0] [--heartbeat-timeout 2]
    python benchmarks/security.py sign [--mb 200]

``cost`` starts one local cluster per mode (``--transport hmac`` and ``curve``, 1 engine,
loopback, a private HPCPAR_DIR) and prints, per mode, the median and p99 of ``apply_sync``
of a no-op and the rate of a ``push`` of an ``--mb`` MB bytes object to the engine, with
shared memory off (the bytes cross the sockets, as they do between hosts). Run it on an idle
machine: the figures are per call.

``bigframe`` (hmac) sends one ``--gb`` GB frame from a peer holding the PLAIN login token to a
cluster with a ``--heartbeat-timeout`` s heartbeat and says whether an engine was declared lost
while the controller verified it, and the controller's RSS.

``sign`` times ``Signer.pack`` + ``unpack`` alone, per mode: a small request (the hot path)
and one with an ``--mb`` MB buffer frame (hmac hashes buffer frames, curve does not).

``raw`` times libzmq alone (a DEALER/ROUTER round trip, a 1 MB-message stream), plain and
CurveZMQ: the floor of what encryption costs.

``flood`` sends ``--frames`` malformed or unauthenticated messages (random bytes, bad
signatures, truncated multipart, replays of a signed request) and one ``--big-gb`` GB frame
to both ports of a cluster in each mode (curve: from a peer with the server's public key and
keys of its own; hmac: from a peer without the login token, or with
``--login`` from one that read it off the wire, so the frames reach signature checks), then prints the controller's RSS before, at its peak
and once back within 20 MB (at most 60 s later), whether anything ran, and the no-op latency before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

import zmq


def noop() -> None:
    return None


def touch(path: str) -> None:
    with open(path, "a") as f:
        f.write("x\n")


def rss(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # it is gone (stopped, or crashed: the caller says which)
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    return 0


def latency(rc, calls: int) -> tuple[float, float]:
    view = rc[0]
    for _ in range(50):
        view.apply_sync(noop)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        view.apply_sync(noop)
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1e3, times[int(len(times) * 0.99) - 1] * 1e3


def cluster(mode: str, n: int = 1):
    """A local cluster with the default heartbeats (1 s, declared dead after 6 s)."""
    import hpcpar.cluster

    c = hpcpar.cluster.Cluster(n=n, profile=f"bench-{mode}-{os.getpid()}", cluster_id="",
                               controller_args=["--transport", mode])
    c.start_cluster_sync()
    c.wait_for_engines_sync(timeout=60, interactive=False).close()
    return c


def cost(args: argparse.Namespace) -> None:
    import numpy

    import hpcpar

    data = numpy.frombuffer(os.urandom(args.mb << 20), dtype="u1")  # out-of-band: the bulk path
    for mode in ("hmac", "curve"):
        c = cluster(mode)
        try:
            info = json.loads(c.profile_dir.client_file().read_text())
            with hpcpar.Client(info, shared_memory=False, timeout=60) as rc:
                med, p99 = latency(rc, args.calls)
                rc[0].push({"blob": b"warm"}, block=True)
                rates = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    rc[0].push({"blob": data}, block=True)
                    rates.append(data.nbytes / (time.perf_counter() - t0) / 1e9)
                print(f"{mode:5s}: apply_sync median {med:.3f} ms, p99 {p99:.2f} ms; "
                      f"push {args.mb} MB: {max(rates):.2f} GB/s (best of 3)")
        finally:
            c.stop_cluster_sync()


def raw(args: argparse.Namespace) -> None:
    """libzmq alone: a DEALER/ROUTER round trip and a one-way bulk stream, plain and CurveZMQ."""
    for curve in (False, True):
        ctx = zmq.Context()
        server, client = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
        if curve:
            spub, ssec = zmq.curve_keypair()
            cpub, csec = zmq.curve_keypair()
            server.curve_server, server.curve_secretkey = True, ssec
            client.curve_serverkey, client.curve_publickey, client.curve_secretkey = spub, cpub, csec
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
        for _ in range(100):
            client.send(b"x")
            server.send_multipart(server.recv_multipart())
            client.recv()
        times = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            client.send(b"x")
            server.send_multipart(server.recv_multipart())
            client.recv()
            times.append(time.perf_counter() - t0)
        block = b"b" * (1 << 20)
        t0 = time.perf_counter()
        for _ in range(args.mb):
            client.send(block, copy=False)
        for _ in range(args.mb):
            server.recv_multipart(copy=False)
        rate = args.mb * len(block) / (time.perf_counter() - t0) / 1e9
        print(f"raw {'curve' if curve else 'plain':5s}: round trip median {statistics.median(times) * 1e6:.0f} us; "
              f"{args.mb} x 1 MB one way: {rate:.2f} GB/s")
        client.close(0)
        server.close(0)
        ctx.term()


def _send_all(url: str, messages, curve: dict | None, login: dict | None = None,
              flush_s: float = 180.0) -> tuple[int, int, bool]:
    """Send ``messages`` to ``url`` from a context of its own; returns (handed to libzmq,
    handshakes completed, everything flushed). Where a handshake completed it waits (up to
    ``flush_s``) until libzmq has written all of it, the big frame too: the controller reads
    at its receive high-water mark, so once this returns it has taken in all but that."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SNDHWM, 0)
    monitor = s.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    if login:  # hmac: the PLAIN token, as one who read it off the wire
        from hpcpar import security

        security.connect_as(s, login)
    if curve:
        s.curve_serverkey = curve["curve_server_key"].encode()
        s.curve_publickey = curve["curve_public_key"].encode()
        s.curve_secretkey = curve["curve_secret_key"].encode()
    s.connect(url)
    sent = refused = 0
    for frames in messages:
        try:
            s.send_multipart(frames, zmq.NOBLOCK)
            sent += 1
            refused = 0
        except zmq.Again:  # no connection took it (curve: the handshake never completes)
            refused += 1
            if refused > 2000:
                break
            time.sleep(0.001)
    handshakes = 0
    while monitor.poll(1000):  # a late handshake counts too
        monitor.recv_multipart()
        handshakes += 1
    s.disable_monitor()
    monitor.close(linger=0)
    linger = int(flush_s * 1000) if handshakes else 0  # no handshake: nothing can leave
    t0 = time.monotonic()
    s.close(linger=linger)
    ctx.term()  # blocks until what was queued is written, or the linger runs out
    flushed = not handshakes or time.monotonic() - t0 < flush_s - 1
    return sent, handshakes, flushed


def flood(args: argparse.Namespace) -> None:
    for mode in ("hmac", "curve"):
        f = flood_run(mode, args.frames, args.big_gb, login=args.login, latency_calls=500)
        print(f"{mode:5s}: {f['sent']} messages handed to libzmq in {f['seconds']:.1f} s "
              f"({f['handshakes']} handshakes completed); controller RSS "
              f"{f['rss_before'] >> 20} MB before, peak {f['rss_peak'] >> 20} MB, {f['rss_after'] >> 20} MB "
              f"{f['settled_s']:.0f} s after; executions {f['executions']} (1 legitimate); engines declared lost "
              f"{f['engines_lost']}; serving after: {f['served']}; "
              f"no-op latency {f['latency_before_ms']:.3f} -> {f['latency_after_ms']:.3f} ms")


def flood_run(mode: str, frames: int, big_gb: float, login: bool = False, latency_calls: int = 0,
              settle_s: float = 60.0) -> dict:
    """Flood both ports of a fresh 1-engine cluster in ``mode``; returns the figures
    (tests/test_faults_full.py asserts them at full size)."""
    import hpcpar
    from hpcpar import serialize, wire

    c = cluster(mode)
    marker = Path(tempfile.mkdtemp()) / "ran"
    try:
        info = json.loads(c.profile_dir.client_file().read_text())
        engine_url = json.loads(c.profile_dir.engine_file().read_text())["urls"][0]
        pid = info["controller_pid"]
        with hpcpar.Client(info, timeout=60) as rc:
            before_lat = latency(rc, latency_calls)[0] if latency_calls else 0.0
            signer = wire.Signer(info["key"].encode())
            payload, bufs = serialize.dumps((touch, (str(marker),), {}))
            signed = signer.pack(signer.header("apply_request", route="direct", targets=[0]), {}, payload, bufs)
            rc._send(signed)  # legitimately once: every copy after it is a replay
            time.sleep(1.0)
            before = rss(pid)
            peak = [before]
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    peak[0] = max(peak[0], rss(pid))
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()

            def messages(n: int):
                for i in range(n):
                    k = i % 5
                    if k == 0:
                        yield [os.urandom(64)]
                    elif k == 1:
                        yield [os.urandom(32), signed[1], signed[2], signed[3]]  # bad signature
                    elif k == 2:
                        yield signed[:2]  # truncated
                    elif k == 3:
                        yield signed  # a replay
                    else:
                        yield [os.urandom(32)] * 7
                yield [os.urandom(32), b"{}", b"{}", b"z" * int(big_gb * 1e9)]

            t0 = time.perf_counter()
            sent = handshakes = 0
            stranger = None
            if mode == "curve":  # a peer that knows the server's public key, with keys of its own
                pub, sec = zmq.curve_keypair()
                stranger = {"curve_server_key": info["curve_server_key"], "curve_public_key": pub.decode(),
                            "curve_secret_key": sec.decode()}
            flushed = True
            for url in (info["urls"][0], engine_url):
                # hmac: anyone can connect; curve: even a peer with the HMAC key cannot.
                n, h, done = _send_all(url, messages(frames), stranger, info if login and mode == "hmac" else None)
                sent += n
                handshakes += h
                flushed = flushed and done
            took = time.perf_counter() - t0
            settle = time.monotonic()
            while rss(pid) > before + (20 << 20) and time.monotonic() - settle < settle_s:
                time.sleep(0.5)
            settled = time.monotonic() - settle
            stop.set()
            watcher.join()
            after = rss(pid)
            served = rc[:].apply_sync(pow, 2, 5) == [32] * len(rc.ids)
            after_lat = latency(rc, latency_calls)[0] if latency_calls else 0.0
        runs = len(marker.read_text().splitlines()) if marker.exists() else 0
        lost = sum(p.read_text().count(" is lost") for p in c.profile_dir.log.glob("controller*.log"))
        return {"mode": mode, "login": login, "sent": sent, "handshakes": handshakes, "flushed": flushed, "seconds": took,
                "rss_before": before, "rss_peak": peak[0], "rss_after": after, "settled_s": settled,
                "executions": runs, "engines_lost": lost, "served": served,
                "latency_before_ms": before_lat, "latency_after_ms": after_lat}
    finally:
        c.stop_cluster_sync()


def bigframe(args: argparse.Namespace) -> None:
    """hmac: one ``--gb`` GB frame from a peer holding the PLAIN token, with short heartbeats."""
    import hpcpar
    import hpcpar.cluster
    from hpcpar import security

    c = hpcpar.cluster.Cluster(n=2, profile=f"bench-bigframe-{os.getpid()}", cluster_id="",
                               controller_args=["--transport", "hmac", "--heartbeat-interval", "0.5",
                                                "--heartbeat-timeout", str(args.heartbeat_timeout)])
    c.start_cluster_sync()
    try:
        c.wait_for_engines_sync(timeout=60, interactive=False).close()
        info = json.loads(c.profile_dir.client_file().read_text())
        pid = info["controller_pid"]
        with hpcpar.Client(info, timeout=60) as rc:
            ids = sorted(rc.ids)
            before = peak = rss(pid)
            s = zmq.Context.instance().socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 60_000)
            security.connect_as(s, info)
            s.connect(info["urls"][0])
            s.send_multipart([os.urandom(32), b'{"msg_type":"apply_request"}', b"{}", b"z" * int(args.gb * 1e9)],
                             copy=False)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 15:
                peak = max(peak, rss(pid))
                time.sleep(0.05)
            s.close()
            served = rc[:].apply_sync(pow, 2, 3) == [8] * len(ids)
            logs = "".join(p.read_text() for p in c.profile_dir.log.glob("controller*.log"))
            lost = logs.count(" is lost")
            busy = max([float(m) for m in re.findall(r"controller was busy for ([0-9.]+) s", logs)] or [0.0])
            print(f"bigframe: {args.gb} GB frame from a logged-in peer, heartbeat timeout {args.heartbeat_timeout} s: "
                  f"controller RSS {before >> 20} MB, peak {peak >> 20} MB, {rss(pid) >> 20} MB after; "
                  f"loop busy at most {busy:.1f} s; "
                  f"engines declared lost {lost}; engines {ids} -> {sorted(rc.ids)}; serving: {served}")
    finally:
        c.stop_cluster_sync()


def sign(args: argparse.Namespace) -> None:
    import numpy

    from hpcpar import wire

    big = numpy.frombuffer(os.urandom(args.mb << 20), dtype="u1")
    for mode in ("hmac", "curve"):
        s = wire.Signer(os.urandom(32), mode)
        payload = os.urandom(200)
        rounds = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(20_000):
                s.unpack(s.pack(s.header("apply_request", route="lb"), {"a": 1}, payload))
            rounds.append((time.perf_counter() - t0) / 20_000 * 1e6)
        packs, unpacks = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            frames = s.pack(s.header("apply_request"), {"a": 1}, payload, [big.data])
            t1 = time.perf_counter()
            s.unpack(frames)
            packs.append(t1 - t0)
            unpacks.append(time.perf_counter() - t1)
        print(f"{mode:5s}: small request pack+unpack {min(rounds):.1f} us (best of 5 x 20,000); "
              f"{args.mb} MB buffer: pack {min(packs) * 1e3:.0f} ms, unpack {min(unpacks) * 1e3:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("cost")
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--mb", type=int, default=256)
    p = sub.add_parser("raw")
    p.add_argument("--calls", type=int, default=5000)
    p.add_argument("--mb", type=int, default=512)
    p = sub.add_parser("flood")
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--big-gb", type=float, default=1.0)
    p.add_argument("--login", action="store_true",
                   help="hmac: send with the PLAIN login token (a peer that read it off the wire)")
    p = sub.add_parser("bigframe")
    p.add_argument("--gb", type=float, default=1.0)
    p.add_argument("--heartbeat-timeout", type=float, default=2.0)
    p = sub.add_parser("sign")
    p.add_argument("--mb", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("HPCPAR_DIR", tempfile.mkdtemp(prefix="hpcpar-bench-"))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent),
                                                             os.environ.get("PYTHONPATH")]))
    {"cost": cost, "raw": raw, "flood": flood, "bigframe": bigframe, "sign": sign}[args.what](args)


if __name__ == "__main__":
    main()
