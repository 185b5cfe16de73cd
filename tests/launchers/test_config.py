"""The configuration layers, their sources, and validation messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from hpcpar.cli import main
from hpcpar.config import ConfigError, load_config, schema
from hpcpar.config.profile import commented_defaults, create_profile


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def profile_file(isolated: Path, name: str) -> Path:
    return isolated / "hpcpar-home" / f"profile_{name}" / "config.toml"


def test_every_key_has_documentation_and_a_core_default():
    keys = schema()
    missing = [k for k, key in keys.items() if not key.doc]
    assert missing == []
    assert keys["controller.ip"].default == "127.0.0.1"
    assert keys["controller.heartbeat_interval"].default == 1.0
    assert keys["controller.heartbeat_timeout"].default == 6.0
    assert keys["cluster.engines"].default == "local"
    assert keys["cluster.controller"].default == "local"
    for name in ("controller.port", "controller.engine_port", "controller.location",
                 "engine.controller_timeout", "cluster.n"):
        assert name in keys


def test_layers_later_wins_and_sources_are_named(isolated, site_dir, monkeypatch):
    write(site_dir / "10-site.toml", """
[batch]
queue = "site-q"
account = "site-acct"
walltime = "02:00:00"
memory = "1G"

[profiles.pbs.cluster]
engines = "pbs"
[profiles.pbs.batch]
account = "pbs-acct"
""")
    write(profile_file(isolated, "pbs"), '[batch]\nwalltime = "01:00:00"\nmemory = "2G"\n')
    monkeypatch.setenv("HPCPAR_BATCH_MEMORY", "3G")
    config = load_config("pbs", {"queue": "cli-q", "n": 8})

    assert config["batch.queue"] == "cli-q"
    assert config.source_of("batch.queue") == "command line"
    assert config["batch.account"] == "pbs-acct"
    assert config.source_of("batch.account").endswith("10-site.toml [profiles.pbs]")
    assert config["batch.walltime"] == "01:00:00"
    assert config.source_of("batch.walltime").startswith("profile ")
    assert config["batch.memory"] == "3G"
    assert config.source_of("batch.memory") == "env HPCPAR_BATCH_MEMORY"
    assert config["cluster.engines"] == "pbs"
    assert config["cluster.n"] == 8
    assert config["controller.ip"] == "127.0.0.1"
    assert config.source_of("controller.ip") == "default"
    assert config.site_profiles == ["pbs"]


def test_site_profile_applies_only_to_its_profile(site_dir):
    write(site_dir / "site.toml", '[profiles.gpu.batch]\nqueue = "gpu"\n')
    assert load_config("gpu")["batch.queue"] == "gpu"
    assert load_config("default")["batch.queue"] == ""


def test_site_config_env_may_name_a_file(isolated, monkeypatch):
    path = write(isolated / "one.toml", '[batch]\nqueue = "x"\n')
    monkeypatch.setenv("HPCPAR_SITE_CONFIG", str(path))
    assert load_config()["batch.queue"] == "x"


def test_unknown_key_names_file_key_and_closest_key(isolated, monkeypatch):
    monkeypatch.setenv("HOME", str(isolated))
    monkeypatch.setenv("HPCPAR_DIR", str(isolated / ".hpcpar"))
    write(isolated / ".hpcpar" / "profile_pbs" / "config.toml", '[batch]\nwallclock = "01:00:00"\n')
    with pytest.raises(ConfigError) as e:
        load_config("pbs")
    assert e.value.problems == [
        "unknown key 'wallclock' in ~/.hpcpar/profile_pbs/config.toml [batch]; did you mean 'walltime'?"
    ]


def test_key_in_the_wrong_section_points_to_the_right_one(isolated):
    write(profile_file(isolated, "p"), '[cluster]\nqueue = "x"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'queue' .*\[cluster\]; did you mean 'queue' in \[batch\]\?"):
        load_config("p")


def test_wrong_types_and_formats_are_all_reported(isolated):
    write(profile_file(isolated, "p"), """
walltime = "1:00:00"
[cluster]
n = "four"
[controller]
port = 70000
heartbeat_interval = 2
[batch]
walltime = "90 minutes"
memory = "lots"
mode = "swarm"
skip_directives = ["qeue"]
extra_directives = "--qos=x"
[slurm]
memory_flag = "mem_per_cpu"
[sgee]
pe = "smp"
""")
    with pytest.raises(ConfigError) as e:
        load_config("p")
    text = str(e.value)
    assert "key 'walltime' in" in text and "must be inside a section; put it under [batch]" in text
    assert "cluster.n in" in text and "must be an integer, not str 'four'" in text
    assert "controller.port" in text and "0-65535" in text
    assert "heartbeat_interval" not in text  # an int is a fine float
    assert "walltime '90 minutes' is not '[D-]HH:MM:SS'" in text
    assert "memory 'lots' is not a size" in text
    assert "must be one of 'array', 'mpi', 'jobs', not 'swarm'" in text
    assert "unknown directive key 'qeue'; did you mean 'queue'?" in text
    assert "batch.extra_directives" in text and "must be a list of strings" in text
    assert "slurm.memory_flag" in text
    assert "unknown section [sgee]" in text and "did you mean [sge]?" in text
    assert len(e.value.problems) == 10


def test_newlines_are_rejected_because_they_would_end_a_directive(isolated):
    with pytest.raises(ConfigError, match="single line"):
        load_config(overrides={"batch.queue": "a\n#SBATCH --wrap=evil"})


def test_profiles_table_only_in_site_config(isolated):
    write(profile_file(isolated, "p"), '[profiles.x.batch]\nqueue = "q"\n')
    with pytest.raises(ConfigError, match=r"\[profiles\] .* only allowed in a site config"):
        load_config("p")


def test_invalid_toml_names_the_file(site_dir):
    write(site_dir / "bad.toml", "[batch\nqueue=")
    with pytest.raises(ConfigError, match=r"bad.toml is not valid TOML"):
        load_config()


def test_environment_values_are_typed(monkeypatch):
    monkeypatch.setenv("HPCPAR_CLUSTER_N", "12")
    monkeypatch.setenv("HPCPAR_BATCH_PROLOGUE", '["module load a", "module load b"]')
    monkeypatch.setenv("HPCPAR_LSF_SUBMIT_VIA_STDIN", "no")
    monkeypatch.setenv("HPCPAR_BATCH_ENGINES_WALLTIME", "00:10:00")
    config = load_config()
    assert config["cluster.n"] == 12
    assert config["batch.prologue"] == ["module load a", "module load b"]
    assert config["lsf.submit_via_stdin"] is False
    assert config["batch.engines.walltime"] == "00:10:00"
    monkeypatch.setenv("HPCPAR_CLUSTER_N", "many")
    with pytest.raises(ConfigError, match=r"\$HPCPAR_CLUSTER_N: must be an integer"):
        load_config()


def test_unknown_override_suggests_a_key():
    with pytest.raises(ConfigError, match=r"unknown setting 'wallclock' from command line; did you mean 'walltime'"):
        load_config(overrides={"wallclock": "1:00"})


def test_launcher_options_order_batch_system_role(site_dir):
    write(site_dir / "s.toml", """
[batch]
queue = "batch-q"
walltime = "01:00:00"
[slurm]
queue = "slurm-q"
[batch.controller]
walltime = "12:00:00"
""")
    config = load_config()
    ctl = config.launcher_options("slurm", "controller")
    eng = config.launcher_options("slurm", "engines")
    assert (ctl["queue"], ctl["walltime"]) == ("slurm-q", "12:00:00")
    assert (eng["queue"], eng["walltime"]) == ("slurm-q", "01:00:00")
    assert config.launcher_options("pbs", "engines")["queue"] == "batch-q"
    assert eng["submit_command"] == ["sbatch"]


def test_profile_create_comments_every_key_out(isolated):
    path = create_profile("mine", "slurm")
    pd = path.parent
    assert {p.name for p in pd.iterdir()} >= {"security", "log", "run", "templates", "config.toml"}
    data = tomllib.loads(path.read_text())
    # A batch profile starts as written: the keys it needs are set, and marked REQUIRED.
    required = {"cluster": {"engines": "slurm", "n": 4}, "controller": {"ip": "*"}}
    assert data == {**{s: {} for s in data}, **required}
    text = path.read_text()
    assert text.count("# REQUIRED:") == 3
    for dotted, key in schema().items():
        assert f"# {key.name} = " in text or dotted in ("cluster.engines", "cluster.n", "controller.ip")
    config = load_config("mine")
    assert config["cluster.engines"] == "slurm"
    with pytest.raises(FileExistsError, match="--force"):
        create_profile("mine")


def test_commented_defaults_keep_the_documentation():
    text = commented_defaults()
    assert "# Wall-clock limit" in text
    assert '# walltime = ""' in text


def test_config_show_prints_values_and_sources(isolated, capsys, monkeypatch):
    write(profile_file(isolated, "p"), '[batch]\nqueue = "normal"\n')
    monkeypatch.setenv("HPCPAR_CLUSTER_N", "3")
    assert main(["config", "show", "--profile", "p"]) == 0
    out = capsys.readouterr().out
    lines = {line.split("#")[0].strip(): line.split("#", 1)[1].strip() for line in out.splitlines() if " = " in line}
    assert lines['queue = "normal"'].startswith("profile ")
    assert lines["n = 3"] == "env HPCPAR_CLUSTER_N"
    assert lines['ip = "127.0.0.1"'] == "default"


def test_config_show_fails_on_invalid_config(isolated, capsys):
    write(profile_file(isolated, "p"), "[batch]\nqueue = 1\n")
    assert main(["config", "show", "--profile", "p"]) == 1
    assert "batch.queue in" in capsys.readouterr().err


def test_profile_create_command_rejects_unknown_launcher(capsys):
    assert main(["profile", "create", "x", "--launcher", "slurmm"]) == 2
    assert "did you mean 'slurm'" in capsys.readouterr().err
    assert main(["profile", "create", "x", "--launcher", "sge"]) == 0
    assert load_config("x")["cluster.engines"] == "sge"


def test_engine_controller_timeout_below_ten_seconds_is_refused() -> None:
    from hpcpar.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="controller_timeout.*at least 10"):
        load_config(overrides={"engine.controller_timeout": 5})
