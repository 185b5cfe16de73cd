"""One controller, many simulated engines (the real protocol, no code run)."""

from __future__ import annotations

import subprocess
import time

from cluster_helpers import hpcpar_cmd

import hpcpar


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
