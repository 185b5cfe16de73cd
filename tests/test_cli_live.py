"""`hpcpar start` says what is happening while jobs queue, and a foreground start whose
terminal closes (SIGHUP) stops its cluster and cancels its jobs, as Ctrl-C does.

Real SLURM and Grid Engine (a job told to start later stays queued with the scheduler's
own reason: SLURM "BeginTime", SGE "execution time not reached"); in CI a missing system
fails. The live line's terminal form is checked on a pseudo-terminal.
"""

from __future__ import annotations

import datetime
import io
import os
import re
import signal
import subprocess
import time

import pytest
from cluster_helpers import hpcpar_cmd
from systems import require_system
from test_cluster_batch import env_for, make_profile, queued, run, wait_gone

from hpcpar.launchers.ledger import read_jobs


def later(system: str, seconds: int) -> str:
    """--set making every job of ``system`` start ``seconds`` from now, not before."""
    if system == "slurm":
        return f'batch.extra_directives=["--begin=now+{seconds}"]'
    when = datetime.datetime.now() + datetime.timedelta(seconds=seconds)
    return f'batch.extra_directives=["-a {when:%Y%m%d%H%M.%S}"]'


REASON = {"slurm": "BeginTime", "sge": "execution time not reached"}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_live_line_shows_elapsed_job_state_reason_and_engines(system):
    require_system(system)
    pd = make_profile(f"live-{system}")
    env = env_for(system)
    start = run(["start", "--profile", pd.name, "--engines", system, "-n", "2", "--timeout", "90",
                 "--set", later(system, 24)], env, timeout=200)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        lines = start.stdout.splitlines()
        queued_lines = [x for x in lines if f": pending ({REASON[system]})" in x]
        # Not a terminal: a line at each change and one every 10 s while nothing changes.
        assert len(queued_lines) >= 2, start.stdout
        for x in queued_lines:
            assert re.match(rf"\[\d+:\d\d\] engines registered 0/2; {system} job \S+: pending", x), x
        seconds = [int(m[1]) * 60 + int(m[2]) for x in queued_lines if (m := re.match(r"\[(\d+):(\d\d)\]", x))]
        assert seconds == sorted(seconds) and seconds[-1] - seconds[0] >= 9
        assert any(re.match(rf"\[\d+:\d\d\] engines registered 2/2; {system} job \S+: running", x) for x in lines)
    finally:
        stop = run(["stop", "--profile", pd.name], env, timeout=150)
    assert stop.returncode == 0, stop.stderr


@pytest.mark.timeout(240)
@pytest.mark.parametrize("system", ["slurm", "sge"])
def test_sighup_while_jobs_queue_cancels_them(system):
    require_system(system)
    pd = make_profile(f"hup-{system}")
    env = env_for(system)
    proc = subprocess.Popen(hpcpar_cmd("start", "--profile", pd.name, "--engines", system, "-n", "2",
                                       "--timeout", "90", "--set", later(system, 300)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out = ""
        deadline = time.monotonic() + 90
        while ": pending" not in out and time.monotonic() < deadline:
            out += proc.stdout.readline()
        assert ": pending" in out, out
        jobs = [r.job_id for r in read_jobs(pd)]
        assert jobs and queued(system, jobs, env)
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    wait_gone(system, jobs, env, timeout=90)  # cancelled, as Ctrl-C would have
    assert not pd.state_file().exists() and read_jobs(pd) == []


@pytest.mark.timeout(240)
def test_sighup_stops_a_foreground_batch_cluster():
    require_system("slurm")
    pd = make_profile("hup-fg")
    env = env_for("slurm")
    proc = subprocess.Popen(hpcpar_cmd("start", "--profile", pd.name, "--engines", "slurm", "-n", "2",
                                       "--foreground", "--timeout", "90"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out = ""
        deadline = time.monotonic() + 120
        while "press Ctrl-C" not in out and time.monotonic() < deadline and proc.poll() is None:
            out += proc.stdout.readline()
        assert "press Ctrl-C" in out, out
        jobs = [r.job_id for r in read_jobs(pd)]
        controller = int(__import__("json").loads(pd.client_file().read_text())["controller_pid"])
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    wait_gone("slurm", jobs, env, timeout=90)
    assert not os.path.exists(f"/proc/{controller}") or "Z" in open(f"/proc/{controller}/stat").read().split(")")[1][:3]
    assert not pd.state_file().exists()


def test_sighup_stops_a_foreground_local_cluster():
    from hpcpar.paths import ProfileDir

    pd = ProfileDir.for_profile(f"hup-local-{os.getpid()}")
    proc = subprocess.Popen(hpcpar_cmd("start", "--profile", pd.name, "-n", "2", "--timeout", "60"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out = ""
        deadline = time.monotonic() + 90
        while "press Ctrl-C" not in out and time.monotonic() < deadline and proc.poll() is None:
            out += proc.stdout.readline()
        assert "press Ctrl-C" in out, out
        import json

        state = json.loads(pd.state_file().read_text())
        pids = [p["pid"] for s in state["engine_sets"] for p in s["state"]["processes"]]
        pids += [p["pid"] for p in state["controller"]["state"]["processes"]]
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    deadline = time.monotonic() + 20
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)
    assert not pd.state_file().exists()


class _Job:
    """A batch engine set as the live line sees it (name, job ids, poll, pending_reason)."""

    def __init__(self, states: dict[str, str], reason: str = "") -> None:
        from hpcpar.launchers.batch import JobState

        self.name = "slurm"
        self.job_ids = list(states)
        self._states = {j: JobState(s) for j, s in states.items()}
        self.reason = reason
        self.asked = 0

    def poll(self):
        return dict(self._states)

    def pending_reason(self, job_id: str) -> str:
        self.asked += 1
        return self.reason


def test_live_line_on_a_terminal_is_a_bar_redrawn_in_place():
    from hpcpar.progress import LiveLine

    out = io.StringIO()
    live = LiveLine(stream=out, tty=True)
    job = _Job({"7": "pending"}, "Priority")
    live("controller up")
    live.waiting(0, 4, [job])
    live.waiting(0, 4, [job])  # same second, same text: not redrawn
    live.waiting(4, 4, [job])
    text = out.getvalue()
    assert text.startswith("controller up\n\r\x1b[K[0:00] [....................] engines registered 0/4; "
                           "slurm job 7: pending (Priority)")
    assert text.count("registered 0/4") == 1
    assert "[####################] engines registered 4/4" in text and text.endswith("\r\x1b[K")


def test_live_line_groups_many_jobs_and_asks_reasons_sparingly():
    from hpcpar.progress import LiveLine

    out = io.StringIO()
    live = LiveLine(stream=out, tty=False)
    job = _Job({"1": "running", "2": "pending", "3": "pending", "4": "pending", "5": "pending"}, "Resources")
    for _ in range(5):
        live.waiting(2, 5, [job])
    lines = out.getvalue().splitlines()
    assert lines == ["[0:00] engines registered 2/5; slurm jobs 1, 2, 3, ...: 1 running, "
                     "3 pending (Resources), 1 pending"]
    assert job.asked == 3  # at most three per refresh, each at most every 10 s


def test_pending_reason_parsers():
    from hpcpar.config import load_config
    from hpcpar.launchers.lsf import LSFLauncher
    from hpcpar.launchers.pbs import PBSLauncher
    from hpcpar.launchers.sge import SGELauncher
    from hpcpar.launchers.slurm import SlurmLauncher

    cfg = load_config(overrides={"controller.ip": "*"})
    slurm = SlurmLauncher.from_config("engines", 2, cfg)
    assert slurm.parse_reason("PENDING|Priority\nRUNNING|None\nPENDING|Priority\n") == "Priority"
    sge = SGELauncher.from_config("engines", 2, cfg)
    qstat_j = ("job_number:                 12\nscheduling info:            cannot run in PE \"smp\" "
               "because it only offers 0 slots\n                            queue instance \"all.q@n1\" "
               "dropped because it is full\n")
    assert sge.parse_reason(qstat_j) == ('cannot run in PE "smp" because it only offers 0 slots; '
                                         'queue instance "all.q@n1" dropped because it is full')
    pbs = PBSLauncher.from_config("engines", 2, cfg)
    qstat_f = ("Job Id: 12.pbs\n    job_state = Q\n    comment = Not Running: Insufficient amount of reso\n"
               "\turce: ncpus (R: 64 A: 16 T: 16)\n    etime = Thu Dec  3 08:00:00 2026\n")
    assert pbs.parse_reason(qstat_f) == "Not Running: Insufficient amount of resource: ncpus (R: 64 A: 16 T: 16)"
    assert pbs.parse_reason("Job Id: 13\n    job_state = Q\n") == ""
    lsf = LSFLauncher.from_config("engines", 2, cfg)
    bjobs_p = ("JOBID USER STAT QUEUE\n12 alice PEND normal\n PENDING REASONS:\n"
               " New job is waiting for scheduling: 1 host;\n Not enough job slot(s): 3 hosts;\n\n")
    assert lsf.parse_reason(bjobs_p) == ("New job is waiting for scheduling: 1 host; "
                                         "Not enough job slot(s): 3 hosts")


@pytest.mark.timeout(240)
def test_the_batch_mpi_config_of_docs_mpi_md_starts_on_slurm():
    """docs/mpi.md's `mode = "mpi"` profile, as printed there, with fewer engines than its
    engines_per_node: one job asking for exactly those slots, every rank registered."""
    require_system("slurm")
    from doc_snippets import ROOT, blocks

    [block] = [b for b in blocks(ROOT / "docs" / "mpi.md") if b.lang == "toml" and 'mode = "mpi"' in b.text]
    pd = make_profile("doc-mpi")
    (pd.path / "config.toml").write_text(block.text + "\n[engine]\ncontroller_timeout = 20.0\n")
    env = env_for("slurm")
    start = run(["start", "--profile", pd.name, "-n", "2", "--timeout", "120"], env, timeout=200)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        assert "one job of 2 MPI ranks" in start.stdout and "engines registered 2/2" in start.stdout
    finally:
        stop = run(["stop", "--profile", pd.name], env, timeout=150)
    assert stop.returncode == 0, stop.stderr
