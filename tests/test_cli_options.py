"""Bad input to `hpcpar` is refused before anything starts, with a message naming the fix;
only hpcpar's own bugs print a traceback, and that says where to report it.

These tests need no batch system: ci/test.sh also runs them on the oldest and newest
supported Python against the installed wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_helpers import ROOT, hpcpar_cmd


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(hpcpar_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd="/")


def refused(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The command failed with a message (no traceback) containing every needle."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


def nothing_started(profile: str) -> None:
    from hpcpar.paths import ProfileDir

    pd = ProfileDir.for_profile(profile)
    assert not pd.state_file().exists() and not pd.client_file().exists()


# -- packaging ---------------------------------------------------------------------------------

def test_pyproject_declares_license_urls_classifiers_and_tomli():
    from hpcpar.config import toml

    project = toml.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "BSD-3-Clause"
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License\n")
    assert {"Homepage", "Issues", "Documentation"} <= set(project["urls"])
    assert "tomli>=1.1; python_version < '3.11'" in project["dependencies"]
    low = int(project["requires-python"].split(">=3.")[1])
    for minor in range(low, 14):
        assert f"Programming Language :: Python :: 3.{minor}" in project["classifiers"]


def test_installed_metadata_when_installed_as_a_wheel():
    """In ci/test.sh's core venvs hpcpar is a real install: its metadata is what users get."""
    import json
    from importlib import metadata

    dist = metadata.distribution("hpcpar")
    direct = json.loads(dist.read_text("direct_url.json") or "{}")
    if direct.get("dir_info", {}).get("editable"):
        pytest.skip("editable install: its metadata dates from when it was installed")
    assert dist.metadata["License-Expression"] == "BSD-3-Clause"
    assert any(r.startswith("tomli") and "3.11" in r for r in dist.requires or [])
    if sys.version_info < (3, 11):
        import tomli  # noqa: F401 - declared for 3.10, so installed with hpcpar
    assert run("config", "show", "--changed").returncode == 0


# -- controller options ------------------------------------------------------------------------

@pytest.mark.parametrize("args, needles", [
    (["--scheme", "leastlaod"], ["unknown scheme 'leastlaod'", "did you mean 'leastload'"]),
    (["--hwm", "-1"], ["--hwm must be at least 0"]),
    (["--timeout", "-5"], ["must be a positive number of seconds"]),
    (["-n", "-1"], ["-n must be at least 0"]),
    (["--forwarders", "x"], ["'x' is not a whole number"]),
    (["--profile", ""], ["an empty profile name"]),
    (["--profile", "a/b"], ["invalid profile name 'a/b'"]),
    (["--wait"], ["--wait only goes with --daemonize"]),
])
def test_start_refuses_bad_options_before_starting(args, needles):
    profile = [] if "--profile" in args else ["--profile", "opts"]
    refused(run("start", *profile, *args), *needles)
    nothing_started("opts")


@pytest.mark.parametrize("ip, needle", [
    ("999.1.1.1", "'999.1.1.1' is not an IPv4 address"),
    ("no such host!", "is not an address"),
    ("192.0.2.77", "is not an address of this machine"),  # TEST-NET-1: never this machine's
])
def test_start_refuses_an_ip_the_controller_cannot_listen_on(ip, needle):
    refused(run("start", "--profile", "opts", "-n", "1", "--ip", ip), "nothing was started", needle)
    nothing_started("opts")


def test_controller_command_checks_its_options_too():
    refused(run("controller", "--profile", "opts", "--scheme", "lur"), "did you mean 'lru'")
    refused(run("controller", "--profile", "opts", "--ip", "1.2.3.400"), "not an IPv4 address")
    nothing_started("opts")


# -- environment variables ---------------------------------------------------------------------

def test_misspelled_environment_variable_names_the_closest_one():
    err = refused(run("start", "--profile", "opts", "-n", "1", env={"HPCPAR_BATCH_WALLTME": "1:00:00"}),
                  "$HPCPAR_BATCH_WALLTME", "did you mean $HPCPAR_BATCH_WALLTIME (batch.walltime)")
    assert "nothing was started" in err
    refused(run("config", "show", env={"HPCPAR_BATCH_ENGINES_QUEU": "x"}), "$HPCPAR_BATCH_ENGINES_QUEUE")
    nothing_started("opts")


def test_unrelated_hpcpar_variables_are_left_alone():
    from hpcpar.config.loader import misspelled_env

    others = {"HPCPAR_CI_SYSTEMS": "slurm", "HPCPAR_SLURM_PARTITION": "debug", "HPCPAR_SGE_PE_SMP": "smp",
              "HPCPAR_DIR": "/x", "HPCPAR_TASK_ID": "1", "HPCPAR_SHARED_MEMORY": "0", "HPCPAR_VENV": "/v"}
    assert misspelled_env(others) == []
    assert misspelled_env({"HPCPAR_BATCH_QUEUE": "debug"}) == []  # a real one
    assert "HPCPAR_CLUSTER_N" in misspelled_env({"HPCPAR_CLUSTR_N": "2"})[0]


def test_valid_environment_variable_still_applies():
    out = run("config", "show", "--json", env={"HPCPAR_BATCH_WALLTIME": "01:00:00"})
    assert out.returncode == 0, out.stderr
    assert '"env HPCPAR_BATCH_WALLTIME"' in out.stdout


# -- errors versus bugs ------------------------------------------------------------------------

def test_an_internal_error_says_it_is_a_bug_and_where_to_report_it(capsys):
    from hpcpar.cli import ISSUES_URL, report_exception

    try:
        {}["missing"]
    except KeyError as e:
        assert report_exception("status", e) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err
    assert "this is a bug in hpcpar" in err and ISSUES_URL in err


def test_a_user_error_prints_no_traceback(capsys):
    from hpcpar.cli import report_exception
    from hpcpar.config import ConfigError
    from hpcpar.launchers.base import LauncherError

    assert report_exception("start", ConfigError(["a is wrong", "b too"])) == 1
    assert report_exception("start", LauncherError("sbatch said no")) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "bug" not in err
    assert "  a is wrong\n  b too\n" in err and "sbatch said no" in err


# -- templates ---------------------------------------------------------------------------------

@pytest.fixture
def site(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    (site / "templates" / "slurm").mkdir(parents=True)
    (site / "site.toml").write_text('[controller]\nip = "*"\n')
    return {"HPCPAR_SITE_CONFIG": str(site)}


def test_jinja_syntax_error_in_a_site_template_shows_file_line_and_text(site):
    template = Path(site["HPCPAR_SITE_CONFIG"]) / "templates" / "slurm" / "engines.sh.j2"
    template.write_text("#!/bin/bash\n# fine\n{% if queue %}\n#SBATCH -p {{ queue }\n{% endif %}\n")
    err = refused(run("render", "--engines", "slurm", "-n", "2", env=site), str(template), "line 4")
    assert "#SBATCH -p {{ queue }" in err
    assert len(err.splitlines()) <= 6, err


def test_template_override_that_matches_no_template_is_an_error(site):
    bad = Path(site["HPCPAR_SITE_CONFIG"]) / "templates" / "slurm" / "engine.sh.j2"
    bad.write_text("#!/bin/bash\n")
    refused(run("render", "--engines", "slurm", "-n", "2", env=site),
            str(bad), "matches no job template", "did you mean 'slurm/engines.sh.j2'")


# -- profile create ----------------------------------------------------------------------------

def test_profile_create_for_a_batch_launcher_marks_and_checks_required_keys():
    from hpcpar.config import load_config
    from hpcpar.paths import ProfileDir

    out = run("profile", "create", "made-slurm", "--launcher", "slurm")
    assert out.returncode == 0, out.stderr
    assert "checked: the configuration is valid and renders 1 job script" in out.stdout
    text = (ProfileDir.for_profile("made-slurm").path / "config.toml").read_text()
    assert text.count("# REQUIRED:") == 3
    config = load_config("made-slurm")
    assert (config["cluster.engines"], config["cluster.n"], config["controller.ip"]) == ("slurm", 4, "*")
    render = run("render", "--profile", "made-slurm")
    assert render.returncode == 0 and "#SBATCH --array=1-4" in render.stdout, render.stderr
    refused(run("profile", "create", "bad/name"), "invalid profile name")
    refused(run("profile", "create", "x", "--launcher", "slrum"), "slrum")


# -- MPI mode slots ----------------------------------------------------------------------------

@pytest.mark.parametrize("system, wanted, unwanted", [
    ("slurm", ["#SBATCH --ntasks=2\n", "#SBATCH --ntasks-per-node=2\n"], ["--ntasks-per-node=4"]),
    ("pbs", ["#PBS -l select=1:ncpus=2:mpiprocs=2\n"], ["ncpus=4", "mpiprocs=4"]),
    ("lsf", ["#BSUB -n 2\n", 'span[ptile=2]'], ["ptile=4"]),
])
def test_mpi_mode_asks_no_more_slots_than_engines(system, wanted, unwanted):
    out = run("render", "--engines", system, "-n", "2", "--ip", "*", "--mode", "mpi",
              "--set", "batch.engines_per_node=4")
    assert out.returncode == 0, out.stderr
    for text in wanted:
        assert text in out.stdout, out.stdout
    for text in unwanted:
        assert text not in out.stdout, out.stdout


# -- n = 0 means no engines, everywhere --------------------------------------------------------

def test_cluster_n_must_be_a_whole_number():
    import hpcpar
    from hpcpar.config import ConfigError

    with pytest.raises(ConfigError, match="n must be a whole number of engines \\(e.g. n=4\\), not str 'two'"):
        hpcpar.Cluster(n="two", profile="opts")
    with pytest.raises(ConfigError, match="not float 2.5"):
        hpcpar.Cluster(n=2.5, profile="opts")


def test_zero_engines_is_a_controller_alone_from_flag_and_config_alike():
    import hpcpar

    assert hpcpar.Cluster(n=0, profile="opts").n == 0
    from_config = subprocess.run(
        [sys.executable, "-c", "import hpcpar; print(hpcpar.Cluster(profile='opts').n)"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HPCPAR_CLUSTER_N": "0"})
    assert from_config.stdout.strip() == "0", from_config.stderr
    unset = subprocess.run([sys.executable, "-c", "import hpcpar; print(hpcpar.Cluster(profile='opts').n)"],
                           capture_output=True, text=True, timeout=60)
    assert unset.stdout.strip() == str(os.cpu_count() or 1), unset.stderr


def test_batch_engines_refuse_zero():
    err = refused(run("start", "--profile", "opts", "--engines", "slurm", "-n", "0", "--ip", "*"),
                  "nothing was started", "'slurm' engines need a count of 1 or more (n=0 was given)")
    assert "-n 0" in err  # the way to a controller alone
    refused(run("start", "--profile", "opts", "--engines", "slurm", "--ip", "*"), "no count was given")
    nothing_started("opts")
