"""The dashboard in a real browser (headless Chromium via Selenium) against real clusters:
locally and once through the test sshd, plus a synthetic 1,000-engine state.

Set HPCPAR_DASHBOARD_SCREENSHOT=path.png to keep the local test's screenshot (docs/dashboard.png
was taken that way).
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from browser import Browser, require_browser
from cluster_helpers import FAST_HEARTBEAT, hpcpar_cmd
from systems import require_system
from test_mpi import mpi  # noqa: F401 - the module-scoped 4-rank MPI cluster

import hpcpar
from hpcpar.dashboard.model import DashboardState, Sample

CI_CONFIG = "/opt/hpcpar-ssh/ssh_config"


@pytest.fixture(scope="module")
def chromium():
    require_browser()
    b = Browser()
    yield b
    b.close()


@pytest.fixture()
def browser(chromium):
    chromium.reset()
    yield chromium
    chromium.reset()


class DashboardProcess:
    """``hpcpar dashboard ...`` as a user runs it; ``url`` is what it printed."""

    def __init__(self, *args: str, timeout: float = 90.0) -> None:
        self.proc = subprocess.Popen(hpcpar_cmd("dashboard", "--port", "0", *args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in self.proc.stdout], daemon=True).start()
        try:
            first = lines.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise AssertionError(f"hpcpar dashboard printed no URL within {timeout} s: {self.proc.stderr.read()}")
        assert "http://127.0.0.1:" in first, first + self.proc.stderr.read()
        self.url = first.split()[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _engine_state(browser: Browser, eid: int) -> str | None:
    return browser.js("const r = document.querySelector('#engines .engine-row[data-engine=\"' + arguments[0] + '\"]');"
                      "return r ? r.dataset.state : null;", eid)


def _bars(browser: Browser) -> int:
    return int(browser.js("return document.getElementById('stream').dataset.bars || 0"))


def _failure_texts(browser: Browser) -> list[str]:
    return browser.js("return Array.from(document.querySelectorAll('#failures details')).map(d => d.textContent)")


def slow(x):
    time.sleep(0.3)
    return x


def quick(x):
    time.sleep(0.05)
    return x


def broken(x):
    raise ValueError(f"dashboard test failure {x}")


@pytest.mark.parametrize("private_cluster", [3], indirect=True)
def test_page_shows_a_live_local_cluster(private_cluster, browser, tmp_path):
    cluster, rc = private_cluster
    profile = cluster.profile_dir.name
    dash = DashboardProcess("--profile", profile)
    try:
        browser.get(dash.url)
        browser.wait_for("3 engines on the page", lambda: browser.text("n-engines") == "3")
        assert browser.text("conn") == "live"
        # the jobs panel: the local engine set the cluster started
        browser.wait_for("the engine set in the jobs panel",
                         lambda: "engines" in browser.js("return document.querySelector('#jobs tbody').textContent"))

        # the task stream grows while tasks run
        before = _bars(browser)
        view = rc.load_balanced_view()
        ar = view.map_async(slow, range(120))  # 12 s of work on 3 engines: the stream grows meanwhile
        browser.wait_for("a busy engine", lambda: int(browser.text("n-busy")) > 0)
        browser.wait_for("bars while the map runs", lambda: _bars(browser) > before)
        assert not ar.ready(), "the stream should grow while the tasks still run"
        ar.get(timeout=60)
        browser.wait_for("all 120 tasks in the stream", lambda: _bars(browser) >= before + 120)
        ids = browser.js("return window.hpcparDashboard.state.tasks.map(t => t.id)")
        assert set(ar.msg_ids) <= set(ids) and len(ids) == len(set(ids)), "each task once in the stream"

        # a failing task shows its remote traceback
        bad = view.apply_async(broken, 7)
        with pytest.raises(hpcpar.error.RemoteError):
            bad.get(timeout=30)
        texts = browser.wait_for("the failure", lambda: [t for t in _failure_texts(browser) if "failure 7" in t])
        assert "ValueError" in texts[0] and "in broken" in texts[0], texts[0]
        assert int(browser.js("return document.getElementById('stream').dataset.failed")) >= 1

        # a SIGKILLed engine turns dead
        victim = max(rc.ids)
        pid = rc[victim].apply_sync(os.getpid)
        os.kill(pid, signal.SIGKILL)
        browser.wait_for(f"engine {victim} dead", lambda: _engine_state(browser, victim) == "dead", timeout=60)
        assert browser.text("n-dead") == "1" and browser.text("n-engines") == "2"
        rows = browser.js("return Array.from(document.querySelectorAll('#jobs tbody tr')).map(r => r.textContent)")
        assert any("engines" in r and r.endswith("2 of 3") for r in rows), rows

        shot = os.environ.get("HPCPAR_DASHBOARD_SCREENSHOT") or str(tmp_path / "dashboard.png")
        view.map_async(slow, range(12))  # something running in the picture
        view.map_async(quick, range(40))
        time.sleep(2.5)
        browser.driver.set_window_size(1400, 1000)  # the page's height: no empty band in the picture
        browser.screenshot(shot)
        browser.driver.set_window_size(1400, 1400)
        assert Path(shot).stat().st_size > 10_000
        assert browser.console_errors() == []
    finally:
        dash.stop()
    assert dash.proc.returncode == 0, dash.proc.stderr.read()


@pytest.mark.parametrize("client", ["openssh", "paramiko"])
def test_page_over_ssh(browser, tmp_path, client):
    """``hpcpar dashboard --sshserver``: the connection file is fetched and the controller
    reached through one SSH connection, and batch/process jobs are read over it."""
    require_system("ssh")
    cluster = hpcpar.Cluster(n=2, profile_dir=tmp_path / "profile_dash", cluster_id="", controller_args=FAST_HEARTBEAT)
    cluster.start_cluster_sync()
    try:
        rc = cluster.wait_for_engines_sync(timeout=60, interactive=False)
        remote_python = f"env PYTHONPATH={shlex.quote(os.environ.get('PYTHONPATH', ''))} {shlex.quote(sys.executable)}"
        dash = DashboardProcess("--sshserver", "testhost", "--ssh-config", CI_CONFIG,
                                "--profile-dir", str(cluster.profile_dir.path), "--remote-python", remote_python,
                                *(["--paramiko"] if client == "paramiko" else []))
        try:
            browser.get(dash.url)
            browser.wait_for("2 engines over SSH", lambda: browser.text("n-engines") == "2")
            assert "via testhost" in browser.text("title")
            rc.load_balanced_view().map_sync(slow, range(6))
            browser.wait_for("6 bars", lambda: _bars(browser) >= 6)
            jobs = browser.wait_for("jobs read over SSH", lambda: browser.js(
                "return Array.from(document.querySelectorAll('#jobs tbody tr')).map(r => r.textContent)"))
            assert any("engines" in j and "running" in j for j in jobs), jobs
            bad = rc.load_balanced_view().apply_async(broken, 9)
            with pytest.raises(hpcpar.error.RemoteError):
                bad.get(timeout=30)
            browser.wait_for("the failure over SSH", lambda: [t for t in _failure_texts(browser) if "failure 9" in t])
            assert browser.console_errors() == []
        finally:
            dash.stop()
        # From Python: a client that came through the tunnel serves its dashboard through it too.
        with hpcpar.Client(profile_dir=str(cluster.profile_dir.path), sshserver="testhost", ssh_config=CI_CONFIG,
                           paramiko=client == "paramiko", timeout=30) as tunnelled:
            url = tunnelled.dashboard(remote_python=remote_python)
            try:
                state_url = url.replace("/?token=", "/state.json?token=")
                deadline = time.monotonic() + 60
                state: dict = {}
                while time.monotonic() < deadline and not (len(state.get("engines", [])) == 2 and state.get("jobs")):
                    time.sleep(0.3)
                    with urllib.request.urlopen(state_url, timeout=10) as r:
                        state = json.loads(r.read())
                assert len(state["engines"]) == 2
                assert any(j["role"] == "engines" and j["state"] == "running" for j in state["jobs"]), state["jobs"]
            finally:
                url.stop()
    finally:
        cluster.stop_cluster_sync()


def _synthetic(n: int, t: float, tick: int) -> Sample:
    engines = [{"id": i, "hostname": f"node{i // 32:03d}", "pid": 10_000 + i, "mpi_rank": i if i < 64 else None,
                "completed": tick * 3} for i in range(n)]
    queue = {i: {"queue": [], "tasks": [f"task-{tick}-{i}"] if (i + tick) % 3 else [], "completed": tick * 3,
                 "status": {"state": "busy" if (i + tick) % 3 else "idle", "task": f"task-{tick}-{i}" if (i + tick) % 3 else None,
                            "running_for": 0.4, "call": f"model.py:{10 + i % 4} step{i % 4}", "rss": 200 << 20,
                            "cpu": 97.0, "host": f"node{i // 32:03d}", "pid": 10_000 + i,
                            "mpi_rank": i if i < 64 else None}} for i in range(n)}
    finished = [{"msg_id": f"done-{tick}-{i}", "engine_id": i, "started": t - 0.5, "completed": t - 0.1,
                 "received": t, "status": "ok" if i % 97 else "error", "msg_type": "apply_request",
                 "label": f"step{i % 4}"} for i in range(0, n, 2)]
    return Sample(time=t, engines=engines, totals={"finished": tick * n // 2, "pending": n}, queue=queue,
                  finished=finished)


def test_thousand_engines_render_without_freezing(browser):
    """A synthetic 1,000-engine cluster, updated twice a second: every engine is counted and
    drawn (one lane each), the list stays virtual, and the page keeps answering."""
    from hpcpar.dashboard.server import Dashboard

    state = DashboardState(window=120, title="synthetic")
    t = time.time()
    for tick in range(20):  # some history: 10,000 task bars
        state.apply(_synthetic(1000, t - 20 + tick, tick))
    dash = Dashboard(None, port=0, state=state)
    url = dash.start()
    try:
        browser.get(url)
        browser.wait_for("1000 engines", lambda: browser.text("n-engines") == "1000")
        frames = []
        for tick in range(20, 30):
            dash.server.publish(state.apply(_synthetic(1000, time.time(), tick)))
            time.sleep(0.5)
            # A page that froze would not answer this script (its timeout is 60 s).
            frames.append(browser.js("const t0 = performance.now(); window.hpcparDashboard.apply({type: 'noop'});"
                                     "return performance.now() - t0;"))
        lanes = int(browser.js("return document.getElementById('stream').dataset.lanes"))
        rows = browser.js("return document.querySelectorAll('#engines .engine-row').length")
        assert lanes == 1000
        assert rows < 40, f"{rows} row elements: the engine list should only build the visible rows"
        assert _bars(browser) > 10_000
        # a click on engine 900's square in the map scrolls the list to its row
        browser.js("const cv = document.getElementById('engine-map'), r = cv.getBoundingClientRect();"
                   "const {cell, cols} = window.hpcparDashboard.layout(), step = cell + 2;"
                   "cv.dispatchEvent(new MouseEvent('click', {clientX: r.left + (900 % cols) * step + 2,"
                   " clientY: r.top + Math.floor(900 / cols) * step + 2}));")
        browser.wait_for("engine 900's row in view", lambda: browser.js(
            "return !!document.querySelector('#engines .engine-row[data-engine=\"900\"]:not([style*=\"display: none\"])')"))
        assert "step" in browser.js("return document.getElementById('mpi').textContent")
        print(f"full redraw of 1000 engines: median {sorted(frames)[len(frames) // 2]:.1f} ms")
        assert browser.console_errors() == []
    finally:
        dash.stop()


def test_client_dashboard_returns_the_url(rc):
    url = rc.dashboard()
    try:
        assert url.startswith("http://127.0.0.1:") and "token=" in url
        assert "<iframe" in url._repr_html_()
        state_url = url.replace("/?token=", "/state.json?token=")

        def engines() -> int:
            with urllib.request.urlopen(state_url, timeout=10) as r:
                return len(json.loads(r.read())["engines"])

        deadline = time.monotonic() + 30
        while engines() != 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert engines() == 4
        with pytest.raises(urllib.error.HTTPError, match="403"):  # no token
            urllib.request.urlopen(url.split("?")[0] + "state.json", timeout=10)
        rebound = urllib.request.Request(state_url, headers={"Host": "attacker.example:80"})
        with pytest.raises(urllib.error.HTTPError, match="403"):  # DNS rebinding: another Host
            urllib.request.urlopen(rebound, timeout=10)
        import socket

        port = int(url.split(":")[2].split("/")[0])
        # Loopback only: not on this host's other addresses (the test network's bridge, which
        # ci/setup.sh brings up, is the one other address tests may send to).
        bridge = [a for a in hpcpar.netutil.interface_addresses() if a.startswith("10.200.0.")]
        if bridge:
            with socket.socket() as s:
                s.settimeout(5)
                assert s.connect_ex((bridge[0], port)) != 0
    finally:
        url.stop()


def test_model_marks_vanished_engines_dead_and_uses_engine_status():
    state = DashboardState(window=60)
    t = time.time()
    two = [{"id": 0, "hostname": "a", "pid": 1}, {"id": 1, "hostname": "b", "pid": 2}]
    first = state.apply(Sample(time=t, engines=two, queue={0: {"queue": [], "tasks": ["m1"]}}))
    assert [e["state"] for e in first["engines"]] == ["busy", "idle"]
    assert first["engines"][0]["task"] == "m1" and first["engines"][0]["since"] == t
    status = {"state": "draining", "task": "m2", "running_for": 5.0, "call": "f.py:3 step", "rss": 1 << 20,
              "cpu": 50.0, "host": "a", "pid": 1, "mpi_rank": 3}
    second = state.apply(Sample(time=t + 1, engines=two[:1], queue={0: {"queue": [], "tasks": ["m2"], "status": status}},
                                finished=[{"msg_id": "m1", "engine_id": 0, "started": t, "completed": t + 0.5,
                                           "received": t + 0.5, "status": "ok", "msg_type": "apply_request"}]))
    rows = {e["id"]: e for e in second["engines"]}
    assert rows[0]["state"] == "draining" and rows[0]["mpi_rank"] == 3 and rows[0]["since"] == pytest.approx(t - 4)
    assert rows[1]["state"] == "dead" and rows[1]["dead_at"] == t + 1
    assert second["tasks"] == [{"id": "m1", "e": 0, "s": round(t, 3), "c": round(t + 0.5, 3), "f": "apply", "ok": True}]
    third = state.apply(Sample(time=t + 2, engines=two[:1], queue={0: {"status": status}}))
    assert "engines" not in third  # nothing changed: nothing resent
    assert state.snapshot()["engines"][1]["state"] == "dead"


def test_cli_errors_name_the_fix(tmp_path):
    r = subprocess.run(hpcpar_cmd("dashboard", "--interval", "0.05"), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "use 0.2 or more" in r.stderr
    r = subprocess.run(hpcpar_cmd("dashboard", "--profile-dir", str(tmp_path / "none"), "--timeout", "1"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "cannot reach the cluster" in r.stderr and "hpcpar start" in r.stderr, r.stderr
    r = subprocess.run(hpcpar_cmd("dashboard", "--ssh-config", "x"), capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "go with --sshserver" in r.stderr


@pytest.mark.parametrize("private_cluster", [1], indirect=True)
def test_cluster_dashboard_reads_its_jobs(private_cluster):
    cluster, rc = private_cluster
    url = cluster.dashboard()
    try:
        state_url = url.replace("/?token=", "/state.json?token=")
        deadline = time.monotonic() + 60
        jobs: list = []
        while time.monotonic() < deadline and not any(j["role"] == "engines" for j in jobs):
            time.sleep(0.3)
            with urllib.request.urlopen(state_url, timeout=10) as r:
                jobs = json.loads(r.read())["jobs"]
        assert any(j["role"] == "engines" and j["state"] == "running" and j["system"] == "local" for j in jobs), jobs
    finally:
        url.stop()


def test_task_records_name_the_function(rc):
    """The hub's records carry the applied function's name (what the task stream colours by),
    for apply and for each chunk of a map."""
    view = rc.load_balanced_view()
    a = view.apply_async(slow, 1)
    m = view.map_async(broken, [1, 2])
    d = rc[0].apply_async(slow, 2)
    for ar in (a, d):
        ar.get(timeout=30)
    m.wait(timeout=30)
    recs = rc.db_query({"msg_id": {"$in": a.msg_ids + m.msg_ids + d.msg_ids}}, keys=["msg_id", "fname"])
    names = {r["msg_id"]: r["fname"] for r in recs}
    assert [names[x] for x in a.msg_ids + d.msg_ids] == ["slow", "slow"]
    assert [names[x] for x in m.msg_ids] == ["broken", "broken"]


@pytest.mark.timeout(240)
def test_jobs_panel_reads_a_real_slurm_job():
    """A SLURM engine job: system, job id, running, and its walltime counting down (an upper
    bound, as the job already ran when the dashboard first looked)."""
    from test_cluster_batch import env_for, make_profile, run, wait_gone

    from hpcpar.dashboard.jobs import LocalJobs
    from hpcpar.launchers.ledger import read_jobs

    require_system("slurm")
    pd = make_profile("dash-slurm")
    env = env_for("slurm")
    start = run(["start", "--profile", pd.name, "--engines", "slurm", "-n", "2", "--daemonize", "--wait",
                 "--timeout", "90"], env)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        [job] = [r.job_id for r in read_jobs(pd)]
        jobs = LocalJobs(pd.path)
        [row] = [r for r in jobs() if r["system"] == "slurm"]
        assert (row["id"], row["role"], row["state"], row["n"]) == (job, "engines", "running", 2)
        assert row["walltime"] == 300 and 0 < row["walltime_left"] <= 300 and row["walltime_bound"] is True
        time.sleep(1.5)
        [again] = [r for r in jobs() if r["system"] == "slurm"]
        assert again["walltime_left"] < row["walltime_left"]
        with hpcpar.Client(profile=pd.name, timeout=30) as rc:  # engines name their job (the page counts them)
            rc.wait_for_engines(2, timeout=30, interactive=False)

            def job_ids():
                st = rc.queue_status(verbose=True)
                return [(st[i].get("status") or {}).get("job_id") for i in rc.ids]

            deadline = time.monotonic() + 30
            while job_ids() != [job, job] and time.monotonic() < deadline:
                time.sleep(0.3)
            assert job_ids() == [job, job]
    finally:
        stop = run(["stop", "--profile", pd.name], env, timeout=120)
    assert stop.returncode == 0, stop.stderr
    wait_gone("slurm", [job], env)


def test_mpi_panel_shows_which_ranks_are_in_which_call(mpi, browser):  # noqa: F811
    """Two of four MPI ranks stuck in a Barrier: the page groups ranks by their current call."""
    import warnings

    from hpcpar.mpi import MPISubsetWarning

    cluster, rc = mpi
    dash = DashboardProcess("--profile", cluster.profile_dir.name)
    try:
        browser.get(dash.url)
        browser.wait_for("4 MPI engines", lambda: browser.text("n-engines") == "4")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MPISubsetWarning)
            stuck = rc[:2].execute("comm.Barrier()", block=False)
        text = browser.wait_for("ranks 0-1 in comm.Barrier", lambda: (t := browser.text("mpi"))
                                and "comm.Barrier  ranks 0-1 (2)" in t and t, timeout=60)
        assert "(idle)  ranks 2-3 (2)" in text, text
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MPISubsetWarning)
            rc[2:].execute("comm.Barrier()", block=True)  # the other ranks join: all return
        stuck.get(timeout=30)
        assert browser.console_errors() == []
    finally:
        dash.stop()


def test_the_core_never_imports_the_web_server():
    """hpcpar, its client, cluster and command line (all parsers built) import no dashboard code."""
    code = ("import sys, hpcpar, hpcpar.client, hpcpar.cluster, hpcpar.cli; hpcpar.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.startswith(('tornado', 'hpcpar.dashboard'))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_in_jupyter_client_dashboard_shows_the_page_in_an_iframe(rc):
    """A real kernel (nbclient): ``rc.dashboard()`` as a cell's value renders as an IFrame of
    the page, which the kernel's own thread serves."""
    import nbclient
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import hpcpar, urllib.request\nrc = hpcpar.Client(profile='shared', timeout=30)"),
        nbformat.v4.new_code_cell("url = rc.dashboard()\nurl"),
        nbformat.v4.new_code_cell("print(urllib.request.urlopen(url, timeout=10).read().decode()[:2000])"),
        nbformat.v4.new_code_cell("url.stop(); rc.close()"),
    ]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    [shown] = nb.cells[1].outputs
    html = shown["data"]["text/html"]
    url = shown["data"]["text/plain"].strip("'")
    assert url.startswith("http://127.0.0.1:") and f'<iframe src="{url}"' in html.replace("&amp;", "&")
    assert "<title>hpcpar dashboard</title>" in nb.cells[2].outputs[0]["text"]


def test_a_busy_port_is_named_with_the_fix(rc):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(hpcpar_cmd("dashboard", "--profile", "shared", "--port", str(port)),
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"127.0.0.1:{port}" in r.stderr and "--port" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("db", ["sqlite", "memory"])
def test_hub_task_stream_gives_the_newest_rows_since_a_time(db):
    """The hub's compact read for the dashboard: records received in [since, until), the newest
    ``limit`` of them, oldest first, as rows; a bad request is a clear error."""
    import tempfile

    from hpcpar.controller.taskdb import STREAM_KEYS, open_backend

    backend = open_backend(db, Path(tempfile.mkdtemp()) / "tasks.db")
    t = 1_700_000_000.0
    for i in range(10):
        backend.add({"msg_id": f"m{i}", "engine_id": i % 2, "fname": "f", "status": "ok", "submitted": t + i,
                     "started": t + i, "completed": t + i + 0.5, "received": t + i + 0.6})
    backend.add({"msg_id": "queued", "status": "queued", "submitted": t})
    rows = backend.stream(t + 3, t + 100, 1000)
    assert [r[0] for r in rows] == [f"m{i}" for i in range(3, 10)]
    assert dict(zip(STREAM_KEYS, rows[0])) == {"msg_id": "m3", "engine_id": 1, "fname": "f", "label": None,
                                               "msg_type": None, "status": "ok", "started": t + 3,
                                               "completed": t + 3.5, "received": t + 3.6}
    assert [r[0] for r in backend.stream(t, t + 100, 3)] == ["m7", "m8", "m9"]
    assert backend.stream(t + 100, t + 200, 10) == []


def test_task_stream_request_through_the_controller(rc):
    view = rc.load_balanced_view()
    t0 = time.time() - 1
    ar = view.map_async(slow, range(4))
    ar.get(timeout=60)
    reply = rc._request("task_stream_request", {"since": t0, "until": time.time() + 60, "limit": 1000})
    assert reply.msg_type == "task_stream_reply"
    got = [dict(zip(reply.meta["keys"], row)) for row in reply.meta["rows"]]
    mine = [r for r in got if r["msg_id"] in ar.msg_ids]
    assert len(mine) == 4 and {r["fname"] for r in mine} == {"slow"} and all(r["status"] == "ok" for r in mine)
    bad = rc._request("task_stream_request", {"since": "yesterday"})
    assert bad.msg_type == "error_reply" and "needs 'since' and 'until'" in bad.meta["evalue"]
