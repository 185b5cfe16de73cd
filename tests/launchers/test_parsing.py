"""Job ids from submit output (banners included), native states mapped, polls that fail,
back-off, cancel tolerance, and unit formatting."""

from __future__ import annotations

from typing import ClassVar

import pytest

from hpcpar.config.units import parse_memory, parse_walltime
from hpcpar.launchers.base import LauncherError
from hpcpar.launchers.batch import BatchLauncher, JobState, PollError
from hpcpar.launchers.formats import detect_lsf_unit, lsf_memory, lsf_time, mebibytes, slurm_time
from hpcpar.launchers.htcondor import HTCondorLauncher, parse_condor_id
from hpcpar.launchers.lsf import parse_bjobs, parse_bsub_id
from hpcpar.launchers.pbs import (
    PBSLauncher,
    check_qstat_result,
    numeric_id,
    parse_qstat_full,
    parse_qstat_json,
    parse_qsub_id,
)
from hpcpar.launchers.sge import SGELauncher, map_state, parse_qstat_xml, parse_terse_id
from hpcpar.launchers.shell import CommandResult
from hpcpar.launchers.slurm import SlurmLauncher, parse_sbatch_id, parse_squeue
from hpcpar.launchers.winhpc import parse_job_submit_id, parse_job_view

BANNER = "auks: credential renewed\nWARNING: your allocation is 90% used\n"


def result(stdout: str = "", stderr: str = "", rc: int = 0) -> CommandResult:
    return CommandResult(["cmd"], rc, stdout, stderr)


@pytest.mark.parametrize(
    "parse,output,expected",
    [
        (parse_sbatch_id, "17\n", "17"),
        (parse_sbatch_id, BANNER + "17;cluster2\n", "17"),
        (parse_sbatch_id, "sbatch: Submitted batch job 23\n", "23"),
        (parse_qsub_id, BANNER + "123.pbs01.example.org\n", "123.pbs01.example.org"),
        (parse_qsub_id, "456[].pbs01\n", "456[].pbs01"),
        (parse_qsub_id, "18\n", "18"),
        (parse_terse_id, "15\n", "15"),
        (parse_terse_id, BANNER + "11.1-4:1\n", "11"),
        (parse_terse_id, 'Your job-array 12.1-2:1 ("x") has been submitted\n', "12"),
        (parse_bsub_id, BANNER + "Job <77> is submitted to default queue <normal>.\n", "77"),
        (parse_bsub_id, "Job <78> is submitted to queue <short>.\n", "78"),
        (parse_condor_id, "Submitting job(s)....\n4 job(s) submitted to cluster 42.\n", "42"),
        (parse_condor_id, "42.0 - 42.3\n", "42"),
        (parse_job_submit_id, "Job has been submitted. ID: 9.\n", "9"),
    ],
)
def test_job_id_parsing(parse, output, expected) -> None:
    assert parse(output) == expected


@pytest.mark.parametrize(
    "parse", [parse_sbatch_id, parse_qsub_id, parse_terse_id, parse_bsub_id, parse_condor_id]
)
def test_job_id_parsing_rejects_output_without_an_id(parse) -> None:
    with pytest.raises(ValueError):
        parse("sbatch: error: Batch job submission failed: Invalid account\n")


def test_pbs_ids_compare_on_their_number() -> None:
    assert numeric_id("123[].pbs01.example.org") == numeric_id("123.pbs01.ex*") == "123"


def test_squeue_states_grouped_per_array() -> None:
    out = "\n".join(
        [
            "10|10_[3-4]|PENDING|None",
            "10|10_1|RUNNING|None",
            "10|10_2|COMPLETED|None",
            "11|11|PENDING|JobHeldUser",
            "12|12|TIMEOUT|TimeLimit",
            "13|13|CANCELLED|None",
            "14|14_1|COMPLETED|None",
            "14|14_2|OUT_OF_MEMORY|None",
            "15|15|SUSPENDED|None",
        ]
    )
    states = parse_squeue(result(out), ["10", "11", "12", "13", "14", "15", "16"])
    assert {k: v.state for k, v in states.items()} == {
        "10": "running",
        "11": "held",
        "12": "failed",
        "13": "cancelled",
        "14": "failed",
        "15": "held",
    }
    assert states["10"].native == "COMPLETED,PENDING,RUNNING"


def test_squeue_answers_for_one_array_task() -> None:
    """An id asked as 10_3 gets that task's state; pending ranges hold their tasks (step, %)."""
    out = "10|10_[3-4,8-12:2%1]|PENDING|None\n10|10_1|RUNNING|None\n10|10_2|CANCELLED|None\n11|11|RUNNING|None"
    asked = ["10_1", "10_2", "10_3", "10_10", "10_9", "10_7", "10", "11", "11_1"]
    states = parse_squeue(result(out), asked)
    assert {k: v.state for k, v in states.items()} == {
        "10_1": "running", "10_2": "cancelled", "10_3": "pending", "10_10": "pending", "10": "running", "11": "running",
    }


def test_squeue_invalid_id_means_gone_other_errors_are_failed_polls() -> None:
    assert parse_squeue(result("", "slurm_load_jobs error: Invalid job id specified", 1), ["5"]) == {}
    with pytest.raises(PollError, match="Socket timed out"):
        parse_squeue(result("", "slurm_load_jobs error: Socket timed out on send/recv operation", 1), ["5"])


def test_pbs_json_states_and_exit_status() -> None:
    out = """{"Jobs": {
      "1.pbs01.example.org": {"job_state": "F", "Exit_status": 0},
      "2.pbs01.example.org": {"job_state": "F", "Exit_status": 1},
      "3.pbs01.example.org": {"job_state": "F", "Exit_status": 271},
      "4[].pbs01.example.org": {"job_state": "B"},
      "5.pbs01.example.org": {"job_state": "H"},
      "6.pbs01.example.org": {"job_state": "Q"}}}"""
    states = parse_qstat_json(out, ["1.pbs01", "2.pbs01", "3.pbs01", "4[].pbs01", "5.pbs01", "6.pbs01", "7.pbs01"])
    assert {k: v.state for k, v in states.items()} == {
        "1.pbs01": "done",
        "2.pbs01": "failed",
        "3.pbs01": "cancelled",
        "4[].pbs01": "running",
        "5.pbs01": "held",
        "6.pbs01": "pending",
    }
    with pytest.raises(PollError):
        parse_qstat_json("{not json", ["1"])


def test_qstat_full_text_from_torque_and_slurm_wrappers() -> None:
    out = "Job Id:\t7\n\tJob_Name = x\n\tjob_state = R\n\nJob Id: 8.torque01\n    job_state = C\n    exit_status = 2\n"
    states = parse_qstat_full(out, ["7", "8.torque01"])
    assert states["7"] == JobState("running", "R")
    assert states["8.torque01"].state == "failed"


def test_qstat_failures() -> None:
    check_qstat_result(result("", "", 153))  # SLURM's qstat wrapper: unknown id, silent
    check_qstat_result(result("", "qstat: Unknown Job Id 5.pbs01\n", 35))
    check_qstat_result(result("", "qstat: 5.pbs01 Job has finished, use -x or -H\n", 35))
    with pytest.raises(PollError):
        check_qstat_result(result("", "Connection refused\nqstat: cannot connect to server pbs01\n", 2))
    with pytest.raises(PollError):
        check_qstat_result(result("", "", 1))


SGE_XML = """<?xml version='1.0'?>
<job_info><queue_info>
 <job_list state="running"><JB_job_number>20</JB_job_number><state>r</state><tasks>1</tasks></job_list>
 <job_list state="running"><JB_job_number>21</JB_job_number><state>dr</state></job_list>
</queue_info><job_info>
 <job_list state="pending"><JB_job_number>20</JB_job_number><state>qw</state><tasks>2-4:1</tasks></job_list>
 <job_list state="pending"><JB_job_number>22</JB_job_number><state>Eqw</state></job_list>
 <job_list state="pending"><JB_job_number>23</JB_job_number><state>hqw</state></job_list>
 <job_list state="pending"><JB_job_number>24</JB_job_number><state>qw</state></job_list>
</job_info></job_info>"""


def test_sge_states() -> None:
    states = parse_qstat_xml(SGE_XML, ["20", "21", "22", "23", "24", "25"])
    assert {k: v.state for k, v in states.items()} == {
        "20": "running",
        "21": "cancelled",
        "22": "failed",
        "23": "held",
        "24": "pending",
    }
    assert [map_state(s) for s in ("t", "Rr", "s", "hr", "x")] == ["running", "running", "held", "held", "unknown"]
    with pytest.raises(PollError):
        parse_qstat_xml("<job_info", ["1"])


def test_sge_answers_for_one_array_task() -> None:
    """qstat -xml lists started tasks one by one, pending ones as ranges; a finished task of a
    live array is not listed (checked on real SGE: tests/launchers/test_real_systems.py)."""
    xml = """<?xml version='1.0'?><job_info><queue_info>
    <job_list state="running"><JB_job_number>30</JB_job_number><state>r</state><tasks>1</tasks></job_list>
    </queue_info><job_info>
    <job_list state="pending"><JB_job_number>30</JB_job_number><state>qw</state><tasks>4-10:2</tasks></job_list>
    </job_info></job_info>"""
    states = parse_qstat_xml(xml, ["30", "30.1", "30.2", "30.6", "30.7", "31.1"])
    assert {k: v.state for k, v in states.items()} == {"30": "running", "30.1": "running", "30.6": "pending"}


def test_which_batch_job_and_array_task() -> None:
    """engine/batchjob.py: the ledger's id (the dashboard counts by it) and the task's own id
    (what a restored controller asks about), from each system's variables."""
    from hpcpar.engine.batchjob import batch_job

    cases = [
        ({"SLURM_JOB_ID": "18", "SLURM_ARRAY_JOB_ID": "17", "SLURM_ARRAY_TASK_ID": "3"}, ("17", "17_3")),
        ({"SLURM_JOB_ID": "18"}, ("18", "18")),
        ({"JOB_ID": "20", "SGE_TASK_ID": "2"}, ("20", "20.2")),
        ({"JOB_ID": "20", "SGE_TASK_ID": "undefined"}, ("20", "20")),
        ({"PBS_JOBID": "5[3].srv", "PBS_ARRAY_ID": "5[].srv", "PBS_ARRAY_INDEX": "3"}, ("5[]", "5[3]")),
        ({"PBS_JOBID": "6.srv"}, ("6", "6")),
        ({"LSB_JOBID": "7", "LSB_JOBINDEX": "2"}, ("7", "7[2]")),
        ({"LSB_JOBID": "7", "LSB_JOBINDEX": "0"}, ("7", "7")),
        ({"CCP_JOBID": "8"}, ("8", "8")),
    ]
    for env, expected in cases:
        job = batch_job(env)
        assert job is not None and (job.job_id, job.task_id) == expected, env
    assert batch_job({"HOME": "/root"}) is None


def test_bjobs_states_and_missing_jobs() -> None:
    out = "30 RUN\n30 PEND\n31 DONE\n32 EXIT\n33 PSUSP\n34 UNKWN\n"
    states = parse_bjobs(result(out, "Job <35> is not found\n", 255), ["30", "31", "32", "33", "34", "35"])
    assert {k: v.state for k, v in states.items()} == {
        "30": "running",
        "31": "done",
        "32": "failed",
        "33": "held",
        "34": "unknown",
    }
    with pytest.raises(PollError):
        parse_bjobs(result("", "LSF is down; try again later\n", 255), ["30"])


def test_condor_and_winhpc_states() -> None:
    launcher = HTCondorLauncher(role="engines", n=2)
    states = launcher.parse_status(result("40 1\n40 2\n41 5\n42 4\n"), ["40", "41", "42"])
    assert {k: v.state for k, v in states.items()} == {"40": "running", "41": "held", "42": "done"}
    assert parse_job_view("Job ID : 3\nState       : Canceled\n").state == "cancelled"
    assert parse_job_view("State : Queued\n").state == "pending"
    with pytest.raises(PollError):
        parse_job_view("garbage")


class ScriptedLauncher(SlurmLauncher):
    """A SLURM launcher whose status command is replaced by scripted answers."""

    answers: ClassVar[list] = []

    def query(self, job_ids):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_failed_polls_are_not_failed_jobs() -> None:
    launcher = ScriptedLauncher(role="engines", n=2, job_ids=["1"], options={"poll_error_threshold": 3})
    ScriptedLauncher.answers = [
        {"1": JobState("running", "RUNNING")},
        PollError("socket timed out"),
        LauncherError("squeue did not finish"),
        PollError("again"),
        {"1": JobState("running", "RUNNING")},
    ]
    assert launcher.poll(force=True)["1"].state == "running"
    assert launcher.poll(force=True)["1"].state == "running"  # one failure: last known state
    assert launcher.poll(force=True)["1"].state == "running"
    third = launcher.poll(force=True)["1"]
    assert third.state == "unknown" and "again" in third.detail
    assert launcher.status() == "unknown"
    assert launcher.poll(force=True)["1"].state == "running"


def test_poll_backs_off_while_nothing_changes() -> None:
    launcher = ScriptedLauncher(role="engines", n=2, job_ids=["1"], options={"poll_interval": 1.0, "poll_max_interval": 5.0})
    same = {"1": JobState("pending", "PENDING")}
    ScriptedLauncher.answers = [same, same, same, same, same, {"1": JobState("running", "RUNNING")}]
    intervals = []
    for _ in range(6):
        launcher.poll(force=True)
        intervals.append(launcher._poll.interval)
    assert intervals == [1.0, 2.0, 4.0, 5.0, 5.0, 1.0]
    # within the interval the cached answer is returned without asking again
    assert launcher.poll()["1"].state == "running" and ScriptedLauncher.answers == []


def test_missing_job_is_done_and_cancelled_job_is_cancelled() -> None:
    launcher = ScriptedLauncher(role="engines", n=2, job_ids=["1", "2"])
    launcher.cancelled.add("2")
    ScriptedLauncher.answers = [{}]
    states = launcher.poll(force=True)
    assert (states["1"].state, states["2"].state) == ("done", "cancelled")


@pytest.mark.parametrize(
    "cls,output,rc,tolerated",
    [
        (SlurmLauncher, "scancel: error: Kill job error on job id 5: Invalid job id specified", 1, True),
        (SlurmLauncher, "scancel: error: Kill job error on job id 5: Access/permission denied", 1, False),
        (SGELauncher, 'denied: job "9" does not exist', 1, True),
        (SGELauncher, 'root has registered the job 8 for deletion\ndenied: job "9" does not exist', 1, True),
        (SGELauncher, "error: commlib error: got select error (Connection refused)", 1, False),
        (PBSLauncher, "", 1, True),
        (PBSLauncher, "qdel: Unknown Job Id 5.pbs01", 153, True),
        (PBSLauncher, "qdel: Unauthorized Request", 159, False),
    ],
)
def test_cancel_tolerates_only_jobs_already_gone(cls: type[BatchLauncher], output: str, rc: int, tolerated: bool) -> None:
    launcher = cls(role="engines", n=2)
    assert launcher.cancel_tolerated(CommandResult(["x"], rc, "", output)) is tolerated


def test_units() -> None:
    assert parse_walltime("1-02:03:04") == 93784
    assert parse_walltime("01:30") == 5400
    for bad in ("90", "1:60:00", "00:00:00", "1h"):
        with pytest.raises(ValueError):
            parse_walltime(bad)
    assert parse_memory("1.5G") == 1536 * 1024**2
    assert parse_memory("2GiB") == parse_memory("2GB") == parse_memory("2g") == 2 * 1024**3
    assert parse_memory("1000") == 1000
    assert slurm_time(93784) == "1-02:03:04" and slurm_time(59) == "00:00:59"
    assert lsf_time(61) == "0:02" and lsf_time(93784) == "26:04"
    assert mebibytes(1) == 1 and mebibytes(1024**2 + 1) == 2
    assert lsf_memory(3 * 1024**3, "MB") == "3072" and lsf_memory(3 * 1024**3 + 1, "GB") == "4"


def test_lsf_unit_detection(tmp_path) -> None:
    (tmp_path / "lsf.conf").write_text('LSF_LOGDIR=/x\nLSF_UNIT_FOR_LIMITS = "GB"\n')
    assert detect_lsf_unit({"LSF_ENVDIR": str(tmp_path)}) == "GB"
    assert detect_lsf_unit({"LSF_ENVDIR": str(tmp_path / "none"), "LSF_CONFDIR": ""}) in ("KB", "MB", "GB", "TB")


def test_start_times_read_from_each_schedulers_status_output() -> None:
    """Printed under TZ=UTC0 (clock.status_env), read as UTC; a pending job's forecast is not a start."""
    from hpcpar.launchers.clock import read_time

    t = 1796314167.0  # 2026-12-03T16:09:27Z
    assert [read_time(s) for s in ("2026-12-03T16:09:27", "Thu Dec  3 16:09:27 2026", "12/03/2026 16:09:27",
                                   "2026-12-03T16:09:27.250", str(int(t)), str(int(t * 1000)))] == [t] * 6
    assert [read_time(s) for s in ("N/A", "", None, "Unknown", "soon")] == [None] * 5
    squeue = parse_squeue(result("30|30_1|RUNNING|None|2026-12-03T16:09:30\n30|30_0|RUNNING|None|2026-12-03T16:09:27\n"
                                 "31|31|PENDING|Resources|2026-12-03T17:00:00\n"), ["30", "31"])
    assert (squeue["30"].started, squeue["31"].started) == (t, None)
    xml = SGE_XML.replace("<state>r</state>", "<state>r</state><JAT_start_time>2026-12-03T16:09:27</JAT_start_time>")
    assert parse_qstat_xml(xml, ["20", "24"])["20"].started == t and parse_qstat_xml(xml, ["24"])["24"].started is None
    wrapper = "Job Id: 7\n\tjob_state = R\n\tqtime = Thu Dec  3 16:09:20 2026\n\tmtime = Thu Dec  3 16:09:27 2026\n"
    pbspro = "Job Id: 8.pbs01\n    job_state = R\n    stime = Thu Dec  3 16:09:27 2026\n    mtime = Thu Dec  3 17:00:00 2026\n"
    torque = "Job Id: 9.torque01\n    job_state = R\n    start_time = 1796314167\n    mtime = 1796317000\n"
    assert [parse_qstat_full(t_, [j])[j].started for t_, j in ((wrapper, "7"), (pbspro, "8"), (torque, "9"))] == [t] * 3
    assert parse_qstat_json('{"Jobs": {"8.pbs01": {"job_state": "R", "stime": "Thu Dec  3 16:09:27 2026"}}}',
                            ["8"])["8"].started == t
