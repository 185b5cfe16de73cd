"""A Cluster configured ipyparallel's way: traitlets config (or a nested dict) on the launcher
classes, ``cluster.config.<Class>.<trait> = value``, ipyparallel's launcher class names.
The SLURM test submits to the real SLURM of ci/setup.sh and reads the job back from scontrol."""

from __future__ import annotations

import os
import subprocess

import pytest
import traitlets.config
from systems import CI_ENV, require_system

import hpcpar as ipp
from hpcpar.config import ConfigError
from hpcpar.paths import ProfileDir

PROFILE = """
[controller]
ip = "*"
heartbeat_interval = 0.25
heartbeat_timeout = 2.0
[engine]
controller_timeout = 20.0
[batch]
poll_interval = 0.3
poll_max_interval = 1.0
"""


def scontrol(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout
    return dict(word.split("=", 1) for word in out.split() if "=" in word)


@pytest.mark.timeout(150)
def test_slurm_cluster_configured_with_traitlets_submits_those_directives():
    require_system("slurm")
    partition = CI_ENV.get("HPCPAR_SLURM_PARTITION", "debug")
    pd = ProfileDir.for_profile(f"compat-ippcfg-{os.getpid()}", create=True)
    (pd.path / "config.toml").write_text(PROFILE)
    c = traitlets.config.Config()
    c.SlurmEngineSetLauncher.queue = partition
    c.SlurmEngineSetLauncher.options = "--comment=from-ipp-options"
    c.Cluster.n = 2
    cluster = ipp.Cluster(engines="slurm", profile=pd.name, config=c)
    cluster.config.SlurmEngineSetLauncher.timelimit = "7"  # Slurm minutes, as ipyparallel passes it on
    assert cluster.n == 2 and cluster.config["batch.engines.walltime"] == "00:07:00"
    rc = cluster.start_and_connect_sync(timeout=90)
    try:
        assert sorted(rc[:].apply_sync(lambda: 6 * 7)) == [42, 42]
        [job] = [j for j in cluster.job_states() if j["role"] == "engines"]
        seen = scontrol(job["job_id"])
        assert seen["Partition"] == partition and seen["TimeLimit"] == "00:07:00"
        assert seen["Comment"] == "from-ipp-options"
    finally:
        cluster.stop_cluster_sync()


def test_launcher_class_names_and_traits_translate_to_config_keys():
    """No job here: what each documented trait becomes, and that a trait for a launcher not
    in use is ignored (as ipyparallel ignores config of classes it does not make)."""
    name = f"compat-ippkeys-{os.getpid()}"
    c = {"SlurmLauncher": {"account": "proj1"}, "SlurmEngineSetLauncher": {"qos": "long", "timelimit": "1-2"},
         "PBSEngineSetLauncher": {"queue": "not-used"}, "BatchSystemLauncher": {"output_file": "/tmp/o.out"},
         "IPController": {"ip": "*"}}
    cluster = ipp.Cluster(engine_launcher_class="ipyparallel.cluster.launcher.SlurmEngineSetLauncher", n=2,
                          profile=name, config=c)
    assert cluster.engine_launcher == "slurm"
    cfg = cluster.config
    assert (cfg["slurm.account"], cfg["batch.engines.walltime"], cfg["batch.queue"]) == ("proj1", "26:00:00", "")
    assert "--qos=long" in cfg["batch.engines.extra_directives"] and cfg["batch.output"] == "/tmp/o.out"
    assert cfg["controller.ip"] == "*"
    mpi = ipp.Cluster(engines="MPI", n=2, profile=name, config=traitlets.config.Config(
        {"MPIEngineSetLauncher": {"mpi_args": ["--oversubscribe"], "mpi_cmd": ["mpiexec"]},
         "LocalEngineSetLauncher": {"environment": {"OMP_NUM_THREADS": "1"}}}))
    assert (mpi.engine_launcher, mpi.config["mpi.args"], mpi.config["mpi.command"]) == ("mpi", ["--oversubscribe"], ["mpiexec"])
    ssh = ipp.Cluster(engines="ssh", n=3, profile=name, config={"SSHEngineSetLauncher": {
        "engines": {"node1": 2, "user@node2": {"n": 1}}, "remote_python": "/opt/py/bin/python"}})
    assert ssh.config["ssh.hosts"] == {"node1": 2, "user@node2": 1} and ssh.config["ssh.python"] == "/opt/py/bin/python"


def test_a_trait_without_meaning_here_names_the_trait_and_what_to_use():
    name = f"compat-ippbad-{os.getpid()}"
    with pytest.raises(ConfigError) as info:
        ipp.Cluster(engines="slurm", n=2, profile=name,
                    config={"SlurmEngineSetLauncher": {"batch_template_file": "x.tpl", "job_id_regexp": r"\d+"}})
    text = str(info.value)
    assert "SlurmEngineSetLauncher.batch_template_file" in text and "templates/" in text
    assert "SlurmEngineSetLauncher.job_id_regexp" in text and "submit_command" in text
    cluster = ipp.Cluster(engines="slurm", n=2, profile=name)
    with pytest.raises(ConfigError, match=r"SlurmEngineSetLauncher.timelimit = 'soon'"):
        cluster.config.SlurmEngineSetLauncher.timelimit = "soon"
    assert cluster.config.get("batch.engines.walltime") is None  # a refused setting leaves the config as it was


@pytest.mark.parametrize("system, cls, queue_line, time_line", [
    ("pbs", "PBSEngineSetLauncher", "#PBS -q short", "#PBS -l walltime=02:00:00"),
    ("sge", "SGEEngineSetLauncher", "#$ -q short", "#$ -l h_rt=02:00:00"),
    ("lsf", "LSFEngineSetLauncher", "#BSUB -q short", "#BSUB -W 2:00"),
])
def test_pbs_sge_lsf_traits_reach_the_rendered_job_script(system, cls, queue_line, time_line):
    """The engine script `hpcpar start` would submit (rendered, not submitted) carries the
    queue and time limit set on ipyparallel's launcher class of that system."""
    from hpcpar.launchers.build import render_cluster

    c = traitlets.config.Config()
    getattr(c, cls).queue = "short"
    getattr(c, cls).timelimit = "2:00:00"
    c.IPController.ip = "*"
    cluster = ipp.Cluster(engines=system, n=4, profile=f"compat-ipprender-{os.getpid()}", config=c)
    [job] = [j for j in render_cluster(cluster.config, cluster.profile_dir, cluster.cluster_id, n=4)
             if j.role == "engines"]
    assert queue_line in job.script.splitlines()
    assert time_line in job.script.splitlines()
