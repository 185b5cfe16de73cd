"""`hpcpar render`, building launchers from config, and rebuilding them in another process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcpar.cli import main
from hpcpar.config import ConfigError, load_config
from hpcpar.launchers import get_launcher_class
from hpcpar.launchers.base import LauncherError
from hpcpar.launchers.build import check_network, engine_command, make_launcher
from hpcpar.launchers.ledger import read_jobs
from hpcpar.launchers.local import LocalLauncher
from hpcpar.launchers.slurm import SlurmLauncher
from hpcpar.paths import ProfileDir


def test_render_prints_every_script_and_submits_nothing(isolated: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(isolated / "empty-path"))  # no sbatch/qsub could run
    code = main(["render", "--engines", "slurm", "--controller", "pbs", "-n", "6", "--queue", "short",
                 "--walltime", "00:30:00", "--ip", "*", "--set", "batch.memory=2G", "--set", "batch.mode=\"jobs\""])
    out = capsys.readouterr().out
    assert code == 0
    assert "# ===== controller: controller.pbs.sh [pbs] (submitted)" in out
    assert "# ===== engines: engines.slurm.sh [slurm] (submitted), submitted 6 times" in out
    assert "#PBS -q short\n" in out and "#SBATCH --partition=short\n" in out
    assert "#SBATCH --mem=2048M\n" in out and "--array" not in out
    assert "hpcpar controller --profile-dir" in out and "--ip '*'" in out
    assert "export HPCPAR_CONNECTION_INFO='<engine connection JSON" in out
    assert read_jobs(ProfileDir.for_profile("default")) == []


def test_render_refuses_a_loopback_controller_with_batch_engines(capsys) -> None:
    assert main(["render", "--engines", "sge", "-n", "2"]) == 1
    err = capsys.readouterr().err
    assert "controller.ip is '127.0.0.1'" in err and "--ip '*'" in err


def test_render_with_local_launchers_has_nothing_to_submit(capsys) -> None:
    assert main(["render"]) == 0
    assert "nothing to submit" in capsys.readouterr().out


def test_render_reports_config_errors(capsys) -> None:
    assert main(["render", "--walltime", "forever"]) == 1
    assert "walltime 'forever'" in capsys.readouterr().err


def test_check_network_needs_a_reachable_listen_address() -> None:
    check_network(load_config(overrides={"engines": "slurm", "controller.ip": "*", "controller.location": "10.0.0.5"}))
    check_network(load_config(overrides={"engines": "local"}))
    with pytest.raises(ConfigError, match="controller.ip"):  # advertising does not help a loopback listener
        check_network(load_config(overrides={"engines": "slurm", "controller.location": "10.0.0.5"}))
    with pytest.raises(ConfigError, match="controller.ip"):
        check_network(load_config(overrides={"controller": "slurm"}))


def test_make_launcher_applies_config_and_checks(isolated: Path) -> None:
    config = load_config(overrides={"batch.queue": "q", "slurm.memory_flag": "mem-per-cpu"})
    pd = ProfileDir.for_profile("p", create=True)
    launcher = make_launcher("slurm", "engines", 4, config=config, profile_dir=pd, cluster_id="x")
    assert isinstance(launcher, SlurmLauncher)
    assert (launcher.options["queue"], launcher.options["memory_flag"]) == ("q", "mem-per-cpu")
    assert isinstance(make_launcher("local", "engines", 2, config=config), LocalLauncher)
    with pytest.raises(LauncherError, match="pe in \\[sge\\]"):
        make_launcher("sge", "engines", 2, config=load_config(overrides={"cpus_per_engine": 2}))
    with pytest.raises(LauncherError, match="did you mean 'slurm'"):
        make_launcher("slrum", "engines", 2)


def test_engine_command_depends_on_connection_mode(isolated: Path) -> None:
    pd = ProfileDir.for_profile("p")
    cmd = engine_command(load_config(), pd, "c")
    assert cmd[3] == "engine" and "--profile-dir" not in cmd
    assert cmd[-4:] == ["--controller-timeout", "60", "--connect-timeout", "30"]
    cmd = engine_command(load_config(overrides={"engine.connection": "file", "controller_timeout": 15}), pd, "c", mpi=True)
    assert cmd[4:8] == ["--profile-dir", str(pd.path), "--cluster-id", "c"]
    assert cmd[-5:] == ["--controller-timeout", "15", "--connect-timeout", "30", "--mpi"]
    assert "--profile-dir" in engine_command(load_config(), pd, "c", profile_files=True)


def test_to_dict_round_trip_through_json(isolated: Path) -> None:
    pd = ProfileDir.for_profile("p", create=True)
    launcher = SlurmLauncher(role="engines", n=4, profile_dir=pd, cluster_id="c", options={"queue": "q"}, job_ids=["5"])
    launcher.cancelled.add("5")
    data = json.loads(json.dumps(launcher.to_dict()))
    again = get_launcher_class(data["launcher"]).from_dict(data)
    assert isinstance(again, SlurmLauncher)
    assert (again.job_ids, again.cancelled, again.options["queue"], again.profile_dir, again.cluster_id) == (
        ["5"], {"5"}, "q", pd, "c"
    )


def test_profile_list_shows_user_and_site_profiles(site_dir: Path, capsys) -> None:
    (site_dir / "s.toml").write_text('[profiles.gpu.batch]\nqueue = "gpu"\n')
    assert main(["profile", "create", "mine"]) == 0
    assert main(["profile", "list"]) == 0
    out = capsys.readouterr().out
    assert "gpu\tsite" in out and "mine\tuser" in out


def test_render_slurm_forwarder_per_node(isolated: Path, capsys, tmp_path) -> None:
    """forwarder_per_node: one forwarder step per node started in the background, engines
    pointed at their node's forwarder, the forwarders stopped when the engines end."""
    import subprocess

    code = main(["render", "--engines", "slurm", "-n", "4", "--ip", "*", "--set", "batch.mode=\"mpi\"",
                 "--set", "slurm.forwarder_per_node=true"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    [fwd] = [i for i, line in enumerate(lines) if " hpcpar forwarder " in line]
    [eng] = [i for i, line in enumerate(lines) if " hpcpar engine " in line]
    assert lines[fwd].startswith('srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks="$SLURM_JOB_NUM_NODES" '
                                 "--ntasks-per-node=1 --overlap ")
    assert lines[fwd].endswith(" --from-env &") and "--profile-dir" in lines[fwd]
    assert lines[eng].startswith("srun --overlap ") and "--via-local-forwarder --profile-dir" in lines[eng]
    assert fwd < eng and "export HPCPAR_CONNECTION_INFO=" in "\n".join(lines[:fwd])
    assert lines[eng + 1:eng + 4] == ["hpcpar_status=$?", 'kill "$hpcpar_forwarders" 2>/dev/null',
                                      'wait "$hpcpar_forwarders"']
    script = tmp_path / "engines.sh"
    script.write_text(out.split("(submitted)\n", 1)[1])
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


@pytest.mark.parametrize("engines, mode, message", [
    ("slurm", "array", 'needs mode = "mpi"'),
    ("pbs", "mpi", "not supported for pbs"),
    ("sge", "mpi", "not supported for sge"),
])
def test_render_refuses_forwarder_per_node_where_it_cannot_work(engines, mode, message, capsys) -> None:
    code = main(["render", "--engines", engines, "-n", "2", "--ip", "*", "--set", f"batch.mode=\"{mode}\"",
                 "--set", "batch.forwarder_per_node=true"])
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and "forwarder_per_node" in err


def test_a_scrubbed_script_run_by_hand_says_what_happened(monkeypatch):
    from hpcpar.connection import CONNECTION_ENV, ConnectionFileError, ConnectionInfo
    from hpcpar.launchers.batch import SCRUBBED

    monkeypatch.setenv(CONNECTION_ENV, SCRUBBED)
    with pytest.raises(ConnectionFileError, match="placeholder.*hpcpar start"):
        ConnectionInfo.from_env()
