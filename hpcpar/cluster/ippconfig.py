"""ipyparallel's launcher configuration, translated into hpcpar's config keys.

ipyparallel users configure a Cluster with traitlets config::

    c = traitlets.config.Config()          # or a plain nested dict
    c.SlurmEngineSetLauncher.queue = "short"
    cluster = hpcpar.Cluster(engines="slurm", config=c)
    cluster.config.SlurmEngineSetLauncher.timelimit = "1:00:00"

Each documented launcher trait becomes the hpcpar key with the same meaning (``queue`` ->
``batch.queue``, ``timelimit`` -> ``batch.walltime``, ``mpi_args`` -> ``mpi.args`` ...); a
trait of an ``...EngineSetLauncher`` / ``...ControllerLauncher`` class applies to that role
only, and, as in ipyparallel, only when that launcher is the one in use. A trait that has no
meaning here raises ConfigError naming it and the hpcpar key (or argument) to use instead.
"""

from __future__ import annotations

import re
import shlex
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import Config, ConfigError

# Launcher class name prefixes (ipyparallel's entry point names) -> hpcpar launcher names.
_SYSTEMS = {"slurm": "slurm", "pbs": "pbs", "sge": "sge", "lsf": "lsf", "htcondor": "htcondor",
            "windowshpc": "winhpc", "winhpc": "winhpc", "mpi": "mpi", "mpiexec": "mpi", "ssh": "ssh",
            "local": "local", "localprocess": "local", "batchsystem": "batch", "batch": "batch", "base": "any",
            "sshproxy": "sshproxy"}
_ROLE_SUFFIXES = (("EngineSetLauncher", "engines"), ("EngineLauncher", "engines"),
                  ("ControllerLauncher", "controller"), ("Launcher", None))
_BATCH = ("slurm", "pbs", "sge", "lsf", "htcondor", "winhpc", "torque")

# c.Cluster.<trait> -> the Cluster() argument of that meaning.
CLUSTER_TRAITS = {"n": "n", "profile": "profile", "profile_dir": "profile_dir", "cluster_id": "cluster_id",
                  "engine_launcher_class": "engine_launcher_class",
                  "controller_launcher_class": "controller_launcher_class", "controller_ip": "controller_ip",
                  "controller_location": "controller_location", "controller_args": "controller_args",
                  "engine_args": "engine_args", "engine_timeout": "engine_timeout", "delay": "delay",
                  "log_level": "log_level", "shutdown_atexit": "shutdown_atexit",
                  "send_engines_connection_env": "send_engines_connection_env"}

_TEMPLATE = ("hpcpar's job scripts are Jinja templates: put your own templates/<system>/engines.sh.j2 "
             "(or controller.sh.j2) in ~/.hpcpar/profile_<name>/templates/ (docs/site-admin.md), or add "
             "lines with batch.prologue / batch.extra_directives")
_INTERNAL = "hpcpar handles this itself and has no setting for it: drop the setting"
# Traits ipyparallel documents that mean nothing here, with what to do instead.
_NO_MEANING = {
    "batch_template": _TEMPLATE, "batch_template_file": _TEMPLATE,
    "namespace": "template variables: " + _TEMPLATE,
    "batch_file_name": "hpcpar writes job scripts to <profile>/run/ itself: drop the setting",
    "job_file_name": "hpcpar writes job files to <profile>/run/ itself: drop the setting",
    "job_id_regexp": "hpcpar reads each system's job ids itself; for another output format wrap the "
                     "command in <system>.submit_command",
    "job_id_regexp_group": "hpcpar reads each system's job ids itself; for another output format wrap "
                           "the command in <system>.submit_command",
    "signal_command": "hpcpar signals engines through the controller (Cluster.signal_engines, "
                      "Client.send_signal): drop the setting",
    "engine_cmd": "hpcpar engines run `python -m hpcpar engine`: set engine.python (the interpreter "
                  "on the compute nodes) instead",
    "controller_cmd": "the controller runs `python -m hpcpar controller`: set engine.python (for batch "
                      "jobs) instead",
    "work_dir": "jobs start in <profile>/run/: change directory with batch.prologue = [\"cd DIR\"]",
    "profile_dir": "give Cluster(profile_dir=...) instead",
    "cluster_id": "give Cluster(cluster_id=...) instead",
    "stop_timeout": _INTERNAL, "stop_seconds_until_kill": _INTERNAL, "poll_seconds": _INTERNAL + " "
    "(batch queue polling: batch.poll_interval)", "output_limit": _INTERNAL,
    "connection_info_timeout": "use Cluster(engine_timeout=...) / controller startup errors name the log",
    "ssh_cmd": "choose the ssh program with ssh.client (\"openssh\" or \"paramiko\") and ssh.config",
    "scp_cmd": "hpcpar sends the connection info in the environment, nothing is copied: drop the setting",
    "scp_args": "hpcpar sends the connection info in the environment, nothing is copied: drop the setting",
    "to_send": "hpcpar sends the connection info in the environment, nothing is copied: drop the setting",
    "to_fetch": "hpcpar sends the connection info in the environment, nothing is copied: drop the setting",
    "hostname": "list engine hosts in ssh.hosts; run the whole cluster on another host with "
                "`hpcpar start --on HOST`",
    "user": "give hosts as user@host in ssh.hosts (or set User in ssh.config)",
    "location": "give hosts in ssh.hosts; the controller's advertised address is controller.location",
    "remote_output_file": "engine logs go to the log/ directory of ssh.profile_dir",
    "ipcluster_cmd": "run the whole cluster on another host with `hpcpar start --on HOST`",
    "ipcluster_args": "run the whole cluster on another host with `hpcpar start --on HOST`",
}


def _as_list(value: Any) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def slurm_time(value: Any) -> str:
    """A Slurm time limit (minutes, M:S, H:M:S, D-H, D-H:M, D-H:M:S) as hpcpar's HH:MM:SS."""
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise ValueError(f"timelimit {value!r} is not a Slurm time (minutes, H:M:S, D-H:M:S ...)")
    days, a, b, c = m.groups()
    if days is not None:  # D-H[:M[:S]]
        seconds = ((int(days) * 24 + int(a)) * 60 + int(b or 0)) * 60 + int(c or 0)
    elif c is not None:  # H:M:S
        seconds = (int(a) * 60 + int(b)) * 60 + int(c)
    else:  # M or M:S
        seconds = int(a) * 60 + int(b or 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def slurm_options(value: Any) -> list[str]:
    """``options = "--exclusive -C haswell"`` as directives: each flag with its arguments."""
    directives: list[str] = []
    for line in str(value).splitlines() if isinstance(value, str) else [" ".join(map(str, value))]:
        line = re.sub(r"^\s*#SBATCH\s+", "", line)
        for word in shlex.split(line):
            if word.startswith("-") or not directives:
                directives.append(word)
            else:
                directives[-1] += " " + word
    return directives


def _ssh_hosts(value: Any) -> dict[str, int]:
    hosts: dict[str, int] = {}
    for host, spec in dict(value).items():
        if isinstance(spec, Mapping):
            extra = sorted(set(spec) - {"n"})
            if extra:
                raise ValueError(f"per-host {', '.join(extra)} have no hpcpar equivalent: give each host "
                                 "its engine count only (ssh.env / ssh.prologue apply to every host)")
            spec = spec.get("n", 1)
        hosts[str(host)] = int(spec)
    return hosts


def _ssh_options(value: Any) -> list[str]:
    words, options = _as_list(value), []
    while words:
        flag = words.pop(0)
        if flag == "-o" and words:
            options.append(words.pop(0))
        elif flag.startswith("-o") and len(flag) > 2:
            options.append(flag[2:])
        else:
            raise ValueError(f"ssh argument {flag!r} is not an -o option: use ssh.config (an ssh_config "
                             "file) for it, ssh.key for -i")
    return options


@dataclass
class Settings:
    """What a traitlets config means here: config keys, and Cluster() arguments."""

    overrides: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    engine_args: list[str] = field(default_factory=list)
    controller_args: list[str] = field(default_factory=list)


def parse_class(name: str) -> tuple[str, str | None]:
    """``"SlurmEngineSetLauncher"`` (or a dotted path to it) -> ``("slurm", "engines")``."""
    short = str(name).rsplit(".", 1)[-1]
    for suffix, role in _ROLE_SUFFIXES:
        if short.endswith(suffix) and short[: -len(suffix)].lower() in _SYSTEMS:
            return _SYSTEMS[short[: -len(suffix)].lower()], role
    raise ConfigError([f"{name}: not an ipyparallel launcher class (e.g. SlurmEngineSetLauncher, "
                       "PBSControllerLauncher, MPIEngineSetLauncher, SSHEngineSetLauncher)"])


def launcher_name(value: Any) -> Any:
    """An ipyparallel launcher given as a class name (``"SlurmEngineSetLauncher"``, a dotted path)
    or an entry point name (``"Slurm"``) -> hpcpar's launcher name; other values unchanged."""
    if not isinstance(value, str):
        return value
    if value.rsplit(".", 1)[-1].endswith("Launcher"):
        system, _ = parse_class(value)
        if system in ("batch", "any", "sshproxy"):
            raise ConfigError([f"launcher {value!r} has no hpcpar equivalent: name the system "
                               f"(engines=\"slurm\", \"pbs\", \"sge\", \"lsf\", \"mpi\", \"ssh\", \"local\" ...)"
                               + ("; to run the cluster on another host use `hpcpar start --on HOST`"
                                  if system == "sshproxy" else "")])
        return system
    return _SYSTEMS.get(value.lower(), value.lower()) if value.lower() in _SYSTEMS else value


def plain(value: Any, default: Any) -> Any:
    """A traitlets lazy value (``c.X.mpi_args.append(...)``) resolved against ``default``."""
    get_value = getattr(value, "get_value", None)
    if get_value is not None and type(value).__name__ == "LazyConfigValue":
        return get_value(default)
    return value


def sections(config: Any) -> dict[str, dict[str, Any]]:
    """The class sections of a traitlets Config or nested dict, as plain dicts."""
    if not isinstance(config, Mapping):
        raise ConfigError([f"config must be a traitlets Config or a dict of class sections "
                           f"({{'SlurmEngineSetLauncher': {{'queue': 'short'}}}}), not {type(config).__name__}"])
    out: dict[str, dict[str, Any]] = {}
    for cls, section in config.items():
        if not isinstance(section, Mapping):
            raise ConfigError([f"config[{cls!r}] must be a section of traits (a dict), not {section!r}"])
        out[str(cls)] = {str(k): v for k, v in section.items()
                         if not (type(v).__name__ == "LazyConfigValue" and not v.to_dict())}
    return out


class Translator:
    """Turns class sections into Settings for a cluster whose launchers are known."""

    def __init__(self, config: Config, engines: str, controller: str) -> None:
        self.config, self.engines, self.controller = config, engines, controller
        self.problems: list[str] = []

    def applies(self, system: str, role: str | None) -> list[str]:
        """The roles a class's traits configure here (none: its launcher is not in use)."""
        in_use = {"engines": self.engines, "controller": self.controller}
        roles = [role] if role else ["engines", "controller"]
        if system == "any":
            return roles
        if system == "batch":
            return [r for r in roles if in_use[r] in _BATCH]
        return [r for r in roles if in_use[r] == system]

    def translate(self, sections_: Mapping[str, Mapping[str, Any]]) -> Settings:
        out = Settings()
        for cls, traits in sections_.items():
            if cls in ("Cluster", "IPClusterEngines", "IPClusterStart", "IPCluster"):
                continue  # Cluster traits are Cluster() arguments (see cluster_kwargs)
            if cls in ("IPController", "IPEngine"):
                self._app(cls, traits, out)
                continue
            try:
                system, role = parse_class(cls)
            except ConfigError as e:
                self.problems.extend(e.problems)
                continue
            roles = self.applies(system, role)
            if system == "sshproxy" and roles:
                self.problems.append(f"{cls}: no hpcpar equivalent; run the cluster on another host "
                                     "with `hpcpar start --on HOST` (docs/ssh.md)")
                continue
            for trait, value in traits.items():
                if roles:
                    self._trait(cls, system, role, roles, trait, value, out)
        if self.problems:
            raise ConfigError(self.problems)
        return out

    def _app(self, cls: str, traits: Mapping[str, Any], out: Settings) -> None:
        keys = {("IPController", "ip"): "controller.ip", ("IPController", "location"): "controller.location"}
        for trait, value in traits.items():
            if (cls, trait) in keys:
                out.overrides[keys[cls, trait]] = value
            else:
                self.problems.append(f"{cls}.{trait}: controller and engine settings are hpcpar config keys "
                                     "([controller], [engine], [security]: `hpcpar config show` lists them)")

    def _trait(self, cls: str, system: str, role: str | None, roles: list[str], trait: str, value: Any,
               out: Settings) -> None:
        name = f"{cls}.{trait}"
        batch = system in _BATCH or system == "batch"
        # where a batch key goes: the role's section for role classes, the system's for the others
        section = f"batch.{role}" if role else ("batch" if system in ("batch", "any") else system)
        try:
            if trait == "environment":
                out.env.update({str(k): str(v) for k, v in dict(plain(value, {})).items()})
            elif trait == "engine_args" and "engines" in roles:
                out.engine_args += _as_list(plain(value, []))
            elif trait == "controller_args" and "controller" in roles:
                out.controller_args += _as_list(plain(value, []))
            elif batch and trait in ("queue", "account"):
                out.overrides[f"{section}.{trait}"] = str(value)
            elif batch and trait == "timelimit":
                out.overrides[f"{section}.walltime"] = slurm_time(value) if str(value).strip() else ""
            elif batch and trait == "output_file":
                out.overrides[f"{section}.output"] = str(value)
            elif batch and trait in ("qos", "options"):
                more = [f"--qos={value}"] if trait == "qos" else slurm_options(plain(value, []))
                self._add_directives(out, section, roles, more)
            elif batch and trait in ("submit_command", "delete_command") and system in _BATCH:
                key = "submit_command" if trait == "submit_command" else "cancel_command"
                out.overrides[f"{system}.{key}"] = _as_list(plain(value, []))
            elif system == "winhpc" and trait in ("scheduler", "job_cmd"):
                key = {"scheduler": "winhpc.scheduler", "job_cmd": "winhpc.job_command"}[trait]
                out.overrides[key] = str(value) if trait == "scheduler" else _as_list(value)
            elif system == "mpi" and trait in ("mpi_cmd", "mpi_args"):
                out.overrides["mpi.command" if trait == "mpi_cmd" else "mpi.args"] = _as_list(plain(value, []))
            elif system == "ssh" and trait in ("engines", "remote_python", "remote_profile_dir", "ssh_args"):
                key, conv = {"engines": ("ssh.hosts", _ssh_hosts), "remote_python": ("ssh.python", str),
                             "remote_profile_dir": ("ssh.profile_dir", str),
                             "ssh_args": ("ssh.options", _ssh_options)}[trait]
                out.overrides[key] = conv(plain(value, []))
            elif trait in _NO_MEANING or trait == "delay":
                why = _NO_MEANING.get(trait, "engines start as soon as the controller is up; "
                                             "Cluster(delay=...) waits before starting them")
                self.problems.append(f"{name}: no meaning in hpcpar; {why}")
            else:
                self.problems.append(f"{name}: not a trait hpcpar knows for this launcher; set the hpcpar key "
                                     f"of that meaning instead (`hpcpar config show` lists them, docs/launchers.md)")
        except (TypeError, ValueError) as e:
            self.problems.append(f"{name} = {value!r}: {e}")

    def _add_directives(self, out: Settings, section: str, roles: list[str], more: list[str]) -> None:
        key = f"{section}.extra_directives"
        if key not in out.overrides:
            if section.startswith("batch."):
                system = self.engines if roles == ["engines"] else self.controller
                out.overrides[key] = list(self.config.launcher_options(system, roles[0])["extra_directives"])
            else:
                out.overrides[key] = list(self.config.get(key) or self.config["batch.extra_directives"])
        out.overrides[key] += [d for d in more if d not in out.overrides[key]]


def cluster_kwargs(sections_: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``c.Cluster.<trait>`` as Cluster() arguments; unknown ones raise ConfigError."""
    given = dict(sections_.get("Cluster", {}))
    given.pop("load_profile", None)  # hpcpar always reads the profile's config.toml
    unknown = sorted(set(given) - set(CLUSTER_TRAITS))
    if unknown:
        raise ConfigError([f"Cluster.{t}: not a Cluster setting hpcpar knows; Cluster() arguments are "
                           f"{', '.join(sorted(CLUSTER_TRAITS))}, other settings are config keys" for t in unknown])
    return {CLUSTER_TRAITS[k]: plain(v, []) for k, v in given.items()}


class TraitSection:
    """``cluster.config.SlurmEngineSetLauncher``: setting a trait here configures the cluster."""

    def __init__(self, owner: Callable[[], Any], cls: str) -> None:
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_cls", cls)

    def __setattr__(self, trait: str, value: Any) -> None:
        cluster = self._owner()
        if cluster is None:
            raise ConfigError([f"{self._cls}.{trait}: the Cluster this config belonged to is gone"])
        cluster._set_ipp_trait(self._cls, trait, value)

    def __getattr__(self, trait: str) -> Any:
        cluster = self._owner()
        traits = getattr(cluster, "_ipp_traits", {}).get(self._cls, {}) if cluster is not None else {}
        if trait in traits:
            return traits[trait]
        raise AttributeError(f"{self._cls}.{trait} is not set")


class ClusterConfig(Config):
    """A Cluster's merged configuration; ``.SomeLauncher.trait = value`` sets ipyparallel traits."""

    @classmethod
    def of(cls, config: Config, cluster: Any) -> ClusterConfig:
        made = cls.__new__(cls)
        made.__dict__.update(config.__dict__)
        made.__dict__["_owner"] = weakref.ref(cluster)
        return made

    def __getattr__(self, name: str) -> Any:
        owner = self.__dict__.get("_owner")
        if owner is not None and name[:1].isupper():
            return TraitSection(owner, name)
        raise AttributeError(name)
