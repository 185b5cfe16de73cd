"""Golden files for every system's templates, and the template rules (quoting, strictness,
overrides). Regenerate goldens after an intended change with HPCPAR_UPDATE_GOLDEN=1."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from hpcpar.launchers.base import LauncherError
from hpcpar.launchers.batch import BatchLauncher
from hpcpar.launchers.htcondor import HTCondorLauncher
from hpcpar.launchers.lsf import LSFLauncher
from hpcpar.launchers.pbs import PBSLauncher, TorqueLauncher
from hpcpar.launchers.sge import SGELauncher
from hpcpar.launchers.slurm import SlurmLauncher
from hpcpar.launchers.winhpc import WinHPCLauncher
from hpcpar.paths import ProfileDir

GOLDEN = Path(__file__).parent / "golden"
UPDATE = bool(os.environ.get("HPCPAR_UPDATE_GOLDEN"))  # read before fixtures clear HPCPAR_*
LOG = "/home/ann/.hpcpar/profile_x/log/engines-c1.log"
ENGINE = ["/opt/venv/bin/python", "-m", "hpcpar", "engine"]
CONTROLLER = ["/opt/venv/bin/python", "-m", "hpcpar", "controller", "--ip", "*"]
ENV = {"HPCPAR_CONNECTION_INFO": '{"key": "k", "urls": ["tcp://10.1.2.3:5555"]}'}

EXTRA = {
    "slurm": ["--qos=debug", "#SBATCH --constraint=haswell"],
    "pbs": ["-l filesystems=home:eagle"],
    "torque": ["-W group_list=hpc"],
    "sge": ["-l gpu=1"],
    "lsf": ['-R "select[mem>4000]"'],
    "htcondor": ["+ProjectName = \"astro\""],
    "winhpc": [],
}
CLASSES: dict[str, type[BatchLauncher]] = {
    "slurm": SlurmLauncher,
    "pbs": PBSLauncher,
    "torque": TorqueLauncher,
    "sge": SGELauncher,
    "lsf": LSFLauncher,
    "htcondor": HTCondorLauncher,
    "winhpc": WinHPCLauncher,
}
SYSTEM_OPTIONS = {
    "sge": {"pe": "smp", "mpi_pe": "mpi"},
    "lsf": {"memory_unit": "MB"},
    "winhpc": {"work_directory": "C:\\hpcpar", "prologue": [], "epilogue": []},
}


def representative(system: str) -> dict:
    return {
        "job_name": "my job/1",
        "queue": "normal",
        "account": "proj-42",
        "walltime": "1-02:03:04",
        "memory": "3G",
        "cpus_per_engine": 2,
        "prologue": ["module load python/3.11", "source activate hp"],
        "epilogue": ["echo engine exited"],
        "extra_directives": EXTRA[system],
        **SYSTEM_OPTIONS.get(system, {}),
    }


CASES = {
    "engines-array": ("engines", 4, lambda s: representative(s), ENGINE, ENV),
    "engines-mpi": ("engines", 8, lambda s: {**representative(s), "mode": "mpi", "engines_per_node": 4, "cpus_per_engine": 1}, ENGINE + ["--mpi"], ENV),
    "engines-jobs-defaults": ("engines", 3, lambda s: {"mode": "jobs", **SYSTEM_OPTIONS.get(s, {})}, ENGINE, ENV),
    # 4 engines, 2 per array task, one GPU each, at most one task running at once.
    "engines-perjob-gpus": ("engines", 4, lambda s: {**representative(s), "engines_per_job": 2, "gpus_per_engine": 1, "array_limit": 1}, ENGINE, ENV),
    "controller-skip": ("controller", 1, lambda s: {**representative(s), "cpus_per_engine": 1, "skip_directives": ["account", "walltime", "output"]}, CONTROLLER, {}),
}


def rendered(system: str, case: str) -> str:
    role, n, options, command, env = CASES[case]
    launcher = CLASSES[system](role=role, n=n, cluster_id="c1", options=options(system))
    job = launcher.render(command, env, LOG.replace("engines", role))
    return "".join(f"===== {name}{' (submitted)' if name == job.submit_file else ''} x{job.copies}\n{text}" for name, text in job.files.items())


PARAMS = [(s, c) for s in CLASSES for c in CASES
          if not (s == "htcondor" and c == "engines-mpi") and not (s == "winhpc" and c == "engines-perjob-gpus")]


@pytest.mark.parametrize("system,case", PARAMS, ids=[f"{s}-{c}" for s, c in PARAMS])
def test_golden(system: str, case: str) -> None:
    text = rendered(system, case)
    path = GOLDEN / f"{system}-{case}.txt"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with HPCPAR_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.mark.parametrize("system,case", PARAMS, ids=[f"{s}-{c}" for s, c in PARAMS])
def test_directives_start_at_column_zero(system: str, case: str) -> None:
    text = rendered(system, case)
    assert not re.search(r"^[ \t]+#(SBATCH|PBS|\$|BSUB)", text, re.MULTILINE)
    assert "\n\n\n" not in text


def test_htcondor_refuses_mpi_mode() -> None:
    with pytest.raises(LauncherError, match='mode = "mpi"'):
        HTCondorLauncher(role="engines", n=2, options={"mode": "mpi"}).render(ENGINE, {}, LOG)


def test_user_values_are_shell_quoted() -> None:
    launcher = SlurmLauncher(role="engines", n=2, options={"queue": "a b;rm -rf ~", "account": "$(id)"})
    script = launcher.render(ENGINE, {"X": "it's"}, LOG).script
    assert "#SBATCH --partition='a b;rm -rf ~'\n" in script
    assert "#SBATCH --account='$(id)'\n" in script
    assert "export X='it'\"'\"'s'\n" in script


def test_job_name_is_sanitized() -> None:
    script = PBSLauncher(role="engines", n=2, options={"job_name": "9 (x)/y%z"}).render(ENGINE, {}, LOG).script
    assert "#PBS -N j9__x__y_z-engines\n" in script


def test_pbs_single_engine_is_a_plain_job_not_an_array() -> None:
    script = PBSLauncher(role="engines", n=1).render(ENGINE, {}, LOG).script
    assert "-J" not in script and "-r y" not in script


def test_sge_multicore_without_pe_is_refused_with_the_fix() -> None:
    with pytest.raises(LauncherError, match=r"set pe in \[sge\].*qconf -spl"):
        SGELauncher(role="engines", n=2, options={"cpus_per_engine": 4}).render(ENGINE, {}, LOG)
    with pytest.raises(LauncherError, match="mpi_pe"):
        SGELauncher(role="engines", n=2, options={"mode": "mpi"}).render(ENGINE, {}, LOG)


def test_bad_environment_names_are_refused() -> None:
    with pytest.raises(LauncherError, match="not valid"):
        SlurmLauncher(role="engines", n=2).render(ENGINE, {"A;B": "x"}, LOG)


def test_profile_template_overrides_builtin_by_file_name(isolated: Path) -> None:
    pd = ProfileDir.for_profile("t", create=True)
    override = pd.path / "templates" / "slurm" / "engines.sh.j2"
    override.parent.mkdir(parents=True)
    override.write_text('#!/bin/sh\n#SBATCH --partition={{ queue|shquote }}\n{% include "common/body.sh.j2" %}')
    launcher = SlurmLauncher(role="engines", n=2, profile_dir=pd, options={"queue": "q"})
    assert launcher.render(ENGINE, {}, LOG).script.startswith("#!/bin/sh\n#SBATCH --partition=q\n")
    # the controller template is untouched
    controller = SlurmLauncher(role="controller", n=1, profile_dir=pd)
    assert "#SBATCH --job-name=hpcpar-controller" in controller.render(CONTROLLER, {}, LOG).script


def test_site_template_overrides_builtin(site_dir: Path) -> None:
    (site_dir / "site.toml").write_text("")
    (site_dir / "templates" / "sge").mkdir(parents=True)
    (site_dir / "templates" / "sge" / "directives.j2").write_text("#!/bin/bash\n#$ -q site.q\n")
    script = SGELauncher(role="engines", n=2).render(ENGINE, {}, LOG).script
    assert script.startswith("#!/bin/bash\n#$ -q site.q\n")


def test_undefined_template_values_are_errors(isolated: Path) -> None:
    pd = ProfileDir.for_profile("t", create=True)
    (pd.path / "templates" / "lsf").mkdir(parents=True)
    (pd.path / "templates" / "lsf" / "engines.sh.j2").write_text("#BSUB -q {{ partition }}\n")
    with pytest.raises(ValueError, match="'partition' is undefined"):
        LSFLauncher(role="engines", n=2, profile_dir=pd).render(ENGINE, {}, LOG)


def test_winhpc_xml_is_escaped_and_uses_windows_quoting() -> None:
    launcher = WinHPCLauncher(role="engines", n=2, options={"work_directory": "C:\\w"})
    xml = launcher.render(["C:\\Python\\python.exe", "-c", 'print("a b")'], {"K": "<&>"}, LOG).script
    assert 'CommandLine="C:\\Python\\python.exe -c &#34;print(\\&#34;a b\\&#34;)&#34;"' in xml
    assert "<Value>&lt;&amp;&gt;</Value>" in xml


def test_every_template_file_is_shipped_as_package_data() -> None:
    """setup.py maps templates/ to hpcpar.templates; pyproject ships "*/*.j2" from it."""
    root = Path(__file__).resolve().parents[2]
    files = [p.relative_to(root / "templates") for p in (root / "templates").rglob("*") if p.is_file()]
    assert files and all(len(f.parts) == 2 and f.suffix == ".j2" for f in files), files
    assert '"hpcpar.templates" = ["*/*.j2"]' in (root / "pyproject.toml").read_text()
    assert '"hpcpar.templates": "templates"' in (root / "setup.py").read_text()
