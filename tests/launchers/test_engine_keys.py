"""engines_per_job, gpus_per_engine and array_limit: what each system renders, what is
refused, and what the rendered job script really does when bash runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from hpcpar.config import ConfigError, load_config
from hpcpar.launchers.base import LauncherError
from hpcpar.launchers.lsf import LSFLauncher
from hpcpar.launchers.pbs import PBSLauncher, TorqueLauncher
from hpcpar.launchers.sge import SGELauncher
from hpcpar.launchers.slurm import SlurmLauncher
from hpcpar.launchers.winhpc import WinHPCLauncher

LOG = "/tmp/x/log/engines-c1.log"
ENGINE = ["/opt/venv/bin/python", "-m", "hpcpar", "engine"]


def script_of(cls, n: int, command=ENGINE, **options) -> str:
    return cls(role="engines", n=n, cluster_id="c1", options=options).render(command, {}, LOG).script


def run_script(tmp_path: Path, script: str, env: dict[str, str]) -> list[str]:
    path = tmp_path / "job.sh"
    path.write_text(script)
    subprocess.run(["bash", str(path)], env={"PATH": os.environ["PATH"], **env}, check=True, timeout=60)
    return sorted((tmp_path / "out").read_text().splitlines())


def test_each_engine_of_a_job_gets_its_own_slot_and_gpus(tmp_path: Path) -> None:
    out = tmp_path / "out"
    probe = ["sh", "-c", f'echo "$HPCPAR_ENGINE_SLOT $CUDA_VISIBLE_DEVICES" >> {out}']
    script = script_of(SlurmLauncher, 6, probe, engines_per_job=3, gpus_per_engine=2, mode="jobs")
    assert "#SBATCH --cpus-per-task=3\n" in script and "#SBATCH --gpus-per-task=6\n" in script
    # The scheduler's device list is split between the engines...
    assert run_script(tmp_path, script, {"CUDA_VISIBLE_DEVICES": "4,5,6,7,8,9"}) == ["0 4,5", "1 6,7", "2 8,9"]
    out.unlink()
    # ... and where it sets none, devices 0..K*G-1 are.
    assert run_script(tmp_path, script, {}) == ["0 0,1", "1 2,3", "2 4,5"]


def test_without_gpus_the_engines_get_only_a_slot(tmp_path: Path) -> None:
    out = tmp_path / "out"
    probe = ["sh", "-c", f'echo "$HPCPAR_ENGINE_SLOT ${{CUDA_VISIBLE_DEVICES-unset}}" >> {out}']
    script = script_of(SGELauncher, 4, probe, engines_per_job=2, pe="smp")
    assert "#$ -pe smp 2\n" in script and "#$ -t 1-2\n" in script and "-l gpu" not in script and "hpcpar_gpus" not in script
    assert run_script(tmp_path, script, {}) == ["0 unset", "1 unset"]


def test_cancelling_the_job_stops_every_engine_and_reports_failure(tmp_path: Path) -> None:
    """The scheduler signals the job script; its trap passes it on to all engines."""
    pids = tmp_path / "pids"
    probe = ["sh", "-c", f"echo $$ >> {pids}; exec sleep 600"]
    path = tmp_path / "job.sh"
    path.write_text(script_of(SlurmLauncher, 3, probe, engines_per_job=3, mode="jobs"))
    job = subprocess.Popen(["bash", str(path)])
    deadline = time.monotonic() + 30
    while (not pids.exists() or len(pids.read_text().split()) < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    engines = [int(p) for p in pids.read_text().split()]
    assert len(engines) == 3
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=30) != 0
    for pid in engines:
        with pytest.raises(ProcessLookupError):
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.05)


@pytest.mark.parametrize("cls, options, expected", [
    (SlurmLauncher, {}, "#SBATCH --array=1-8%3\n"),
    (PBSLauncher, {}, "#PBS -J 1-8%3\n"),
    (TorqueLauncher, {}, "#PBS -t 1-8%3\n"),
    (SGELauncher, {}, "#$ -t 1-8\n#$ -tc 3\n"),
    (LSFLauncher, {"memory_unit": "MB"}, '#BSUB -J "hpcpar-engines[1-8]%3"\n'),
])
def test_array_limit_per_system(cls, options, expected) -> None:
    assert expected in script_of(cls, 8, array_limit=3, **options)


def test_array_limit_only_applies_to_arrays() -> None:
    assert "%" not in script_of(SlurmLauncher, 8, array_limit=3, mode="jobs").split("#SBATCH --output")[0]


@pytest.mark.parametrize("cls, options, expected", [
    (SlurmLauncher, {"mode": "mpi", "engines_per_node": 2}, "#SBATCH --gpus-per-task=1\n"),
    (SlurmLauncher, {"mode": "mpi", "engines_per_node": 2, "gpu_flag": "gres"}, "#SBATCH --gres=gpu:2\n"),
    (SlurmLauncher, {"gpu_flag": "gres"}, "#SBATCH --gres=gpu:1\n"),
    (PBSLauncher, {"mode": "mpi", "engines_per_node": 2}, "#PBS -l select=2:ncpus=2:mpiprocs=2:ngpus=2\n"),
    (TorqueLauncher, {"mode": "mpi", "engines_per_node": 2}, "#PBS -l nodes=2:ppn=2:gpus=2\n"),
    (SGELauncher, {"mode": "mpi", "mpi_pe": "mpi", "gpu_resource": "tesla"}, "#$ -l tesla=4\n"),
    (LSFLauncher, {"mode": "mpi", "memory_unit": "MB"}, '#BSUB -gpu "num=1/task"\n'),
])
def test_gpus_per_engine_per_system(cls, options, expected) -> None:
    assert expected in script_of(cls, 4, gpus_per_engine=1, **options)


@pytest.mark.parametrize("cls, options, message", [
    (SlurmLauncher, {"engines_per_job": 4}, r"n = 6 engines is not a multiple of engines_per_job = 4.*-n 4 or -n 8"),
    (SlurmLauncher, {"engines_per_job": 2, "mode": "mpi"}, 'engines_per_job = 2 does not apply to mode = "mpi"'),
    (SlurmLauncher, {"gpus_per_engine": 1, "gpu_flag": "gres", "mode": "mpi"}, "needs engines_per_node"),
    (SGELauncher, {"engines_per_job": 2}, r"set pe in \[sge\]"),
    (SGELauncher, {"gpus_per_engine": 1, "gpu_resource": ""}, r"set gpu_resource in \[sge\]"),
    (WinHPCLauncher, {"gpus_per_engine": 1}, "set gpus_per_engine = 0"),
    (WinHPCLauncher, {"engines_per_job": 2}, "set engines_per_job = 1"),
    (WinHPCLauncher, {"array_limit": 2}, "set array_limit = 0"),
])
def test_impossible_combinations_are_refused_with_the_fix(cls, options, message) -> None:
    with pytest.raises(LauncherError, match=message):
        script_of(cls, 6, **options)


def test_config_validates_the_new_keys() -> None:
    for bad, message in [("engines_per_job", "at least 1"), ("array_limit", "at least 0"),
                         ("gpus_per_engine", "at least 0")]:
        with pytest.raises(ConfigError, match=message):
            load_config(overrides={f"batch.{bad}": -1})
    with pytest.raises(ConfigError, match="gpus-per-task"):
        load_config(overrides={"slurm.gpu_flag": "gpus"})
    config = load_config(overrides={"batch.engines_per_job": 4, "slurm.gpu_flag": "gres"})
    assert config.launcher_options("slurm", "engines")["engines_per_job"] == 4
