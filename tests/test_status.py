"""``hpcpar status``: text and JSON output against the shared cluster, --watch, no cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

from cluster_helpers import hpcpar_cmd


def status(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(hpcpar_cmd("status", *args), capture_output=True, text=True, timeout=timeout)


def test_json_lists_engines_jobs_and_task_totals(rc):
    rc[:].apply_sync(pow, 2, 3)  # at least one task done per engine
    busy = rc[2].execute("import time; time.sleep(3)", block=False)
    deadline = time.monotonic() + 10
    while not rc.queue_status(2)["queue"] and time.monotonic() < deadline:
        time.sleep(0.05)
    p = status("--profile", "shared", "--json")
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["profile"] == "shared" and st["controller"]["reachable"]
    engines = {e["id"]: e for e in st["engines"]}
    assert sorted(engines) == [0, 1, 2, 3]
    pids = set(rc[:].apply_sync(os.getpid))
    for e in engines.values():
        assert e["pid"] in pids and e["host"] and e["mpi_rank"] is None
        assert e["done"] >= 1 and 0 <= e["last_heartbeat"] < 3
    assert engines[2]["state"] == "busy" and engines[2]["running"] == 1
    assert engines[0]["state"] == "idle" and engines[0]["running"] == 0 and engines[0]["queued"] == 0
    roles = sorted(j["role"] for j in st["jobs"])
    assert roles == ["controller", "engines"]
    eng_job = next(j for j in st["jobs"] if j["role"] == "engines")
    assert eng_job["system"] == "local" and eng_job["n"] == 4 and eng_job["state"] == "running"
    assert set(eng_job["id"].split(", ")) == {str(p) for p in pids}
    assert st["tasks"]["submitted"] >= st["tasks"]["finished"] >= 4
    busy.get(timeout=30)


def test_text_output_has_tables(rc):
    p = status("--profile", "shared")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert re.search(r"^cluster shared: controller pid \d+ at tcp://", out, re.M)
    assert re.search(r"^ENGINES: 4 \(\d busy, \d idle\)$", out, re.M)
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ID"))
    assert lines[start].split() == ["ID", "HOST", "PID", "MPI", "RANK", "STATE", "DONE", "QUEUED", "RUNNING",
                                    "HEARTBEAT"]
    rows = [line.split() for line in lines[start + 1:start + 5]]
    assert lines[start + 5] == ""
    assert [r[0] for r in rows] == ["0", "1", "2", "3"]
    assert all(r[3] == "-" and r[4] in ("idle", "busy") and r[-2:] == ["s", "ago"] for r in rows)
    assert re.search(r"^JOBS: 2$", out, re.M) and re.search(r"^[\d, ]+\s+local\s+engines\s+4\s+running$", out, re.M)
    assert re.search(r"^TASKS: submitted \d+, finished \d+, pending \d+, unassigned \d+", out, re.M)


def test_watch_refreshes_until_interrupted(cluster):
    proc = subprocess.Popen(hpcpar_cmd("status", "--profile", "shared", "--watch", "0.2", "--json"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        second = json.loads(proc.stdout.readline())
        assert second["time"] > first["time"] and len(second["engines"]) == 4
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_no_cluster_is_a_clear_error():
    p = status("--profile", "nothing-here")
    assert p.returncode == 1
    assert "no cluster in profile 'nothing-here'" in p.stderr
