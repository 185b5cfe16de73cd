"""One controller, many simulated engines (the real protocol, no code run)."""

from __future__ import annotations

import subprocess
import time

from cluster_helpers import hpcpar_cmd

import hpcpar
from hpcpar.client.asyncresult import AsyncResult


def test_controller_holds_hundreds_of_simulated_engines(tmp_path):
    pdir = tmp_path / "sim"
    ctl = subprocess.Popen(hpcpar_cmd("controller", "--profile-dir", str(pdir), "--db", "memory",
                                      "--heartbeat-interval", "0.5", "--heartbeat-timeout", "3"),
                           stderr=subprocess.DEVNULL)
    sims = []
    try:
        client_file = pdir / "security" / "hpcpar-client.json"
        deadline = time.monotonic() + 30
        while not client_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        sims = [subprocess.Popen(hpcpar_cmd("simulate", "--profile-dir", str(pdir), "-n", "150"),
                                 stderr=subprocess.DEVNULL) for _ in range(2)]
        with hpcpar.Client(client_file, timeout=30) as rc:
            rc.wait_for_engines(300, timeout=60, interactive=False)
            assert rc.ids == list(range(300))
            lowest = 300
            for _ in range(5):
                assert rc[:].apply_sync(int) == [None] * 300  # simulated engines answer None
                lowest = min(lowest, len(rc.ids))
            end = time.monotonic() + 4  # several heartbeat timeouts' worth of heartbeats
            while time.monotonic() < end:
                lowest = min(lowest, len(rc.ids))
                time.sleep(0.1)
            assert lowest == 300, "engines were dropped for missed heartbeats"
            _check_broadcast_header_is_bounded(rc)
            lb = rc.load_balanced_view()
            ars = [lb.apply_async(int) for _ in range(600)]
            assert [ar.get(timeout=60) for ar in ars] == [None] * 600
            assert len({ar.engine_id for ar in ars}) > 100  # spread over many engines
    finally:
        for p in [*sims, ctl]:
            p.terminate()
        for p in [*sims, ctl]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_large_fan_out_extends_heartbeat_timeouts(tmp_path):
    """10 MB to 256 engines keeps everything busy for seconds; engines must not be
    declared dead because their heartbeats queued behind it."""
    from hpcpar.controller.app import Controller, ControllerConfig
    from hpcpar.paths import ProfileDir

    ctl = Controller(ControllerConfig(profile_dir=ProfileDir(tmp_path / "p"), heartbeat_timeout=2.0, db="none"))
    try:
        rec = ctl.engines.register(b"e0", "uuid-0", None, {})
        rec.ready = True
        now = time.monotonic()
        rec.last_seen = now - 5.0  # silent for longer than the timeout
        ctl._allow_for_bulk([b"sig", b"{}", b"{}", b"p", b"x" * (16 << 20)], copies=64)  # 1 GiB in all
        ctl.check_heartbeats(now)
        assert 0 in ctl.engines.by_id, "declared dead during a bulk transfer"
        ctl._bulk_until = 0.0
        ctl.check_heartbeats(now)
        assert 0 not in ctl.engines.by_id
    finally:
        ctl.close()


def _check_broadcast_header_is_bounded(rc: hpcpar.Client) -> None:
    """The signed header every target parses does not grow with the number of targets
    (it used to carry one msg_id per target: O(N) for each of N engines)."""
    def header_of(targets: list[int]) -> tuple[list[str], list, dict]:
        msg_ids, frames, header = rc._submit("apply_request", route="direct", targets=targets,
                                             obj=(int, (), {}))
        return msg_ids, frames, header

    one = len(header_of([0])[1][1])
    for targets in (rc.ids, rc.ids[::3], rc.ids[:100] + rc.ids[200:]):
        msg_ids, frames, header = header_of(targets)
        assert len(frames[1]) < one + 64, (len(targets), len(frames[1]), one)
        assert len(set(msg_ids)) == len(targets)
    # The 300-target request, sent as packed: every simulated engine finds its own msg_id.
    msg_ids, frames, header = header_of(rc.ids)
    ar = AsyncResult(rc, msg_ids, fname="apply", targets=rc.ids)
    rc._send_tracked(msg_ids, frames, header, ar, rc.ids)
    assert ar.get(timeout=60) == [None] * 300
    assert [md["engine_id"] for md in ar.metadata] == rc.ids
