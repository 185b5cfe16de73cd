"""What an open dashboard costs the cluster: a 5,000-task load-balanced run with and without it.

The target (issue 17): at most 5% slower with the dashboard open. Runs alternate
(without, with, without, ...) on one local cluster so machine noise hits both
sides alike; "with" means ``hpcpar dashboard`` running (polling twice a second, the
default) with a page subscribed to its event stream: a headless Chromium when
/usr/bin/chromium and selenium are there (``--browser``), else a plain reader of
the stream. Prints the medians and their ratio:

    python benchmarks/dashboard.py                  # 2 engines, 5,000 tasks, 5 rounds
    python benchmarks/dashboard.py --engines 4 --tasks 5000 --rounds 7 --browser
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import hpcpar


def task(x):
    return x + 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (less noisy than wall time on a shared machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class OpenDashboard:
    """``hpcpar dashboard`` on the cluster plus one subscriber to its live updates."""

    def __init__(self, profile_dir: Path, browser: bool) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "hpcpar", "dashboard", "--profile-dir", str(profile_dir),
                                      "--port", "0"], stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().split()[-1]
        self.driver = None
        self.updates = 0
        if browser:
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service

            options = webdriver.ChromeOptions()
            options.binary_location = "/usr/bin/chromium"
            for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         f"--user-data-dir={tempfile.mkdtemp(prefix='hpcpar-bench-chromium-')}"):
                options.add_argument(flag)
            self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
            self.driver.get(self.url)
        else:
            threading.Thread(target=self._read, daemon=True).start()
        time.sleep(2.0)  # the first ticks (the window's history) are behind us

    def _read(self) -> None:
        events = self.url.replace("/?token=", "/events?token=")
        try:
            with urllib.request.urlopen(events, timeout=60) as r:
                for line in r:
                    if line.startswith(b"data:"):
                        self.updates += 1
        except Exception:  # noqa: BLE001 - the server went away at close()
            pass

    def close(self) -> None:
        if self.driver is not None:
            self.driver.quit()
        self.proc.terminate()
        self.proc.wait(timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engines", type=int, default=2)
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--browser", action="store_true", help="a headless Chromium has the page open")
    args = p.parse_args()
    pdir = Path(tempfile.mkdtemp(prefix="hpcpar-bench-dashboard-"))
    cluster = hpcpar.Cluster(n=args.engines, profile_dir=pdir / "profile_bench", cluster_id="")
    cluster.start_cluster_sync()
    try:
        rc = cluster.wait_for_engines_sync(timeout=120, interactive=False)
        view = rc.load_balanced_view()
        view.map_sync(task, range(500))  # warm up (function cache, sockets)
        controller = cluster.controller.processes[0].pid
        without: list[float] = []
        with_dash: list[float] = []
        cpu_without: list[float] = []
        cpu_with: list[float] = []

        def timed(walls: list[float], cpus: list[float]) -> None:
            c0, t0 = cpu_seconds(controller), time.perf_counter()
            view.map_sync(task, range(args.tasks))
            walls.append(time.perf_counter() - t0)
            cpus.append(cpu_seconds(controller) - c0)

        for r in range(args.rounds):
            timed(without, cpu_without)
            dash = OpenDashboard(cluster.profile_dir.path, args.browser)
            try:
                timed(with_dash, cpu_with)
                updates = dash.updates
            finally:
                dash.close()
            print(f"round {r + 1}: without {without[-1]:.3f} s (controller cpu {cpu_without[-1]:.2f} s), "
                  f"with the dashboard open {with_dash[-1]:.3f} s (controller cpu {cpu_with[-1]:.2f} s)"
                  + ("" if args.browser else f", {updates} updates pushed"), flush=True)
        # What the dashboard adds per finished task, measured alone (steadier than the ratio on a
        # busy machine): the controller's CPU to read one run's records through the hub's
        # task stream, as the dashboard does in pieces during a run.
        t_end = time.time() + 1
        per_read = []
        for _ in range(10):
            c0 = cpu_seconds(controller)
            reply = rc._request("task_stream_request", {"since": t_end - 3600, "until": t_end,
                                                        "limit": args.tasks})
            per_read.append(cpu_seconds(controller) - c0)
        n_rows = len(reply.meta["rows"])
        per_task = statistics.median(per_read) / max(1, n_rows)
        print(f"hub task stream: {per_task * 1e6:.1f} us of controller CPU per finished task "
              f"({n_rows} rows a read); for a {args.tasks}-task run that is "
              f"{100 * per_task * args.tasks / statistics.median(cpu_without):.1f}% of its controller CPU")
        # The fixed cost: an idle cluster's controller, 10 s without and 10 s with a dashboard.
        c0 = cpu_seconds(controller)
        time.sleep(10)
        idle = cpu_seconds(controller) - c0
        dash = OpenDashboard(cluster.profile_dir.path, args.browser)
        try:
            c0 = cpu_seconds(controller)
            time.sleep(10)
            idle_with = cpu_seconds(controller) - c0
        finally:
            dash.close()
        print(f"idle controller: {idle * 10:.2f}% of a core without, {idle_with * 10:.2f}% with the dashboard open")
        a, b = statistics.median(without), statistics.median(with_dash)
        ca, cb = statistics.median(cpu_without), statistics.median(cpu_with)
        print(f"{args.tasks} tasks on {args.engines} engines, median of {args.rounds}: without {a:.3f} s, "
              f"with {b:.3f} s; ratio {b / a:.3f} (target <= 1.05); controller CPU ratio {cb / ca:.3f}")
    finally:
        cluster.stop_cluster_sync()
        shutil.rmtree(pdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
