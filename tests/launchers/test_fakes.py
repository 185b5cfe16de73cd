"""LSF and WinHPC end to end against test doubles on PATH (tests/fakes): they parse the
directives they receive, reject what the real system rejects, and run the script locally."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpcpar.launchers.base import LauncherError
from hpcpar.launchers.build import stop_recorded_jobs
from hpcpar.launchers.ledger import read_jobs
from hpcpar.launchers.lsf import LSFLauncher
from hpcpar.launchers.winhpc import WinHPCLauncher
from hpcpar.paths import ProfileDir

FAST = {"poll_interval": 0.05, "poll_max_interval": 0.2, "command_timeout": 20.0}
WRITE_INDEX = [sys.executable, "-c", "import os; print('task', os.environ.get('LSB_JOBINDEX'), os.environ['FOO'])"]
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def profile(isolated: Path) -> ProfileDir:
    return ProfileDir.for_profile("fake", create=True)


@pytest.mark.timeout(60)
def test_lsf_array_runs_every_task_and_finishes(fake_path, profile) -> None:
    launcher = LSFLauncher(role="engines", n=3, profile_dir=profile, cluster_id="c",
                           options={**FAST, "queue": "short", "walltime": "00:10:00", "memory": "1G", "memory_unit": "MB"})
    launcher.start(WRITE_INDEX, {"FOO": "bar baz"}, str(profile.log / "engines-c.log"))
    [job_id] = launcher.job_ids
    assert [r.job_id for r in read_jobs(profile, "c")] == [job_id]  # in the ledger at once
    assert launcher.wait({"done", "failed"}, timeout=30) == "done"
    outputs = sorted(p.read_text() for p in profile.log.glob(f"engines-c-{job_id}_*.out"))
    assert outputs == ["task 1 bar baz\n", "task 2 bar baz\n", "task 3 bar baz\n"]


@pytest.mark.timeout(60)
def test_lsf_cancel_then_cancel_again_is_fine(fake_path, profile) -> None:
    launcher = LSFLauncher(role="engines", n=2, profile_dir=profile, options=FAST)
    launcher.start(SLEEP, {}, str(profile.log / "engines.log"))
    assert launcher.wait({"running"}, timeout=30) == "running"
    launcher.stop()
    assert launcher.status() == "cancelled"
    assert read_jobs(profile) == []
    # the job is gone now: bkill answers "already finished", which is not an error
    launcher.cancel(launcher.job_ids)
    fresh = LSFLauncher(role="engines", n=2, job_ids=launcher.job_ids, options=FAST)
    assert fresh.wait({"failed", "cancelled", "done"}, timeout=20) == "failed"  # EXIT, as LSF says


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "options,message",
    [
        ({"queue": "nosuchq"}, "nosuchq: No such queue"),
        ({"extra_directives": ["-Z 1"]}, "illegal option -- Z"),
        ({"extra_directives": ["-W 00:10:30"]}, "Bad RUNLIMIT"),
    ],
)
def test_lsf_rejections_surface_as_launcher_errors(fake_path, profile, options, message) -> None:
    launcher = LSFLauncher(role="engines", n=2, profile_dir=profile, options={**FAST, **options})
    with pytest.raises(LauncherError, match=message):
        launcher.start(SLEEP, {}, str(profile.log / "engines.log"))
    assert launcher.job_ids == [] and read_jobs(profile) == []


@pytest.mark.timeout(30)
def test_fake_bsub_reads_only_the_header_and_refuses_indented_directives(fake_path, tmp_path) -> None:
    script = "#!/bin/sh\n#BSUB -J ok\necho hi\n#BSUB -Z late-directive-is-ignored\n"
    done = subprocess.run(["bsub"], input=script, capture_output=True, text=True)
    assert done.returncode == 0 and "is submitted" in done.stdout
    bad = subprocess.run(["bsub"], input="#!/bin/sh\n    #BSUB -J x\n", capture_output=True, text=True)
    assert bad.returncode != 0 and "indented" in bad.stderr


@pytest.mark.timeout(30)
def test_lsf_banner_before_the_job_line(fake_path, profile, monkeypatch) -> None:
    monkeypatch.setenv("HPCPAR_FAKE_BANNER", "1")
    launcher = LSFLauncher(role="controller", n=1, profile_dir=profile, options=FAST)
    launcher.start(WRITE_INDEX, {"FOO": "x"}, str(profile.log / "controller.log"))
    assert launcher.job_ids[0].isdigit()
    assert launcher.wait({"done"}, timeout=20) == "done"


@pytest.mark.timeout(60)
def test_winhpc_parametric_job_runs_and_cancels(fake_path, profile) -> None:
    launcher = WinHPCLauncher(role="engines", n=3, profile_dir=profile, cluster_id="w",
                              options={**FAST, "work_directory": str(profile.path)})
    launcher.start(SLEEP, {"FOO": "<&>"}, str(profile.log / "engines-w.log"))
    assert launcher.wait({"running"}, timeout=30) == "running"
    assert read_jobs(profile, "w")[0].job_id == launcher.job_ids[0]
    stop_recorded_jobs(profile, "w")  # as `hpcpar stop` would, from the ledger only
    assert read_jobs(profile, "w") == []
    fresh = WinHPCLauncher(role="engines", n=3, job_ids=launcher.job_ids, options=FAST)
    assert fresh.wait({"cancelled"}, timeout=20) == "cancelled"
    fresh.cancel(fresh.job_ids)  # "already finished" is tolerated


@pytest.mark.timeout(60)
def test_winhpc_environment_reaches_the_task(fake_path, profile) -> None:
    out = profile.log / "env.out"
    launcher = WinHPCLauncher(role="controller", n=1, profile_dir=profile,
                              options={**FAST, "work_directory": str(profile.path), "output": str(out)})
    launcher.start([sys.executable, "-c", "import os; print(os.environ['FOO'])"], {"FOO": "a<b>&c"}, str(profile.log / "c.log"))
    assert launcher.wait({"done", "failed"}, timeout=30) == "done"
    assert out.read_text() == "a<b>&c\n"


@pytest.mark.timeout(30)
def test_winhpc_rejects_a_bad_priority(fake_path, profile) -> None:
    launcher = WinHPCLauncher(role="engines", n=2, profile_dir=profile,
                              options={**FAST, "work_directory": str(profile.path), "priority": "Normal"})
    launcher.options["priority"] = "Urgent"  # bypassing config validation, as a bad template would
    with pytest.raises(LauncherError, match="unknown Priority 'Urgent'"):
        launcher.start(SLEEP, {}, str(profile.log / "e.log"))
