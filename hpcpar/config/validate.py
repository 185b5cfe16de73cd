"""Validation of configuration layers: every problem names the file, the key and the fix."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from . import schema
from .units import parse_memory, parse_walltime


class ConfigError(ValueError):
    """One or more configuration problems; nothing may be submitted while any remain."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def display_path(path: str | os.PathLike) -> str:
    """A path with the home directory shown as ``~``, as users type it."""
    text, home = str(path), os.path.expanduser("~")
    if home not in ("", "/") and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home) :]
    return text


def _choice(*allowed: str) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(repr(a) for a in allowed)}, not {value!r}")

    return check


def _at_least(low: float) -> Callable[[Any], None]:
    def check(value: Any) -> None:
        if value < low:
            raise ValueError(f"must be at least {low}, not {value!r}")

    return check


def _port(value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"must be a port number 0-65535 (0 = any free port), not {value}")


def bind_address(value: str) -> None:
    """"*", an IP address, or a host or interface name; dotted numbers must be a real IPv4 address."""
    import ipaddress

    if value in ("", "*"):
        return
    try:
        ipaddress.ip_address(value.strip("[]"))
        return
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+", value):
        raise ValueError(f"{value!r} is not an IPv4 address (four numbers 0-255, e.g. 10.1.2.3); "
                         "use '*' for every interface or 127.0.0.1 for this machine only")
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?", value):
        raise ValueError(f"{value!r} is not an address: use '*', an IP address, a host name or an "
                         "interface name (e.g. ib0)")


def _launcher_name(value: str) -> None:
    if not re.match(r"^[A-Za-z][A-Za-z0-9_.-]*$", value):
        raise ValueError(f"must be a launcher name such as 'local' or 'slurm', not {value!r}")


def _optional(parse: Callable[[str], Any]) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value:
            parse(value)

    return check


def _directive_keys(value: list[str]) -> None:
    for item in value:
        if item not in schema.DIRECTIVE_KEYS:
            close = difflib.get_close_matches(item, schema.DIRECTIVE_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown directive key {item!r}{hint} (valid: {', '.join(schema.DIRECTIVE_KEYS)})"
            )


def _ssh_hosts(value: dict) -> None:
    for host, count in value.items():
        if not re.match(r"^(?:[^@\s]+@)?[^:@\s]+(?::\d+)?$", host):
            raise ValueError(f"host {host!r} must be host, user@host or user@host:port")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"engine count of {host!r} must be a whole number of at least 1, not {count!r}")


def _name_values(value: list[str]) -> None:
    for item in value:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", item):
            raise ValueError(f"{item!r} must look like NAME=value")


def _command(value: list[str]) -> None:
    if not value or not value[0]:
        raise ValueError("must name a program, e.g. [\"sbatch\"]")


def _env_assignments(value: list[str]) -> None:
    for item in value:
        name, sep, _ = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"entries must look like NAME=value, e.g. \"OMP_NUM_THREADS=1\", not {item!r}")


# Checks beyond the type, by key name (they apply wherever the key may appear).
CHECKS: dict[str, Callable[[Any], None]] = {
    "cluster.n": _at_least(-1),
    "cluster.forwarders": _at_least(0),
    "cluster.engines": _launcher_name,
    "cluster.controller": _launcher_name,
    "controller.ip": bind_address,
    "controller.port": _port,
    "controller.engine_port": _port,
    "controller.heartbeat_interval": _at_least(0.01),
    "controller.heartbeat_timeout": _at_least(0.01),
    "security.transport": _choice("auto", "curve", "hmac"),
    "security.max_message_size": lambda v: None if v == -1 else _at_least(1 << 20)(v),
    "security.replay_window": _at_least(1.0),
    "engine.controller_timeout": _at_least(10),  # the controller answers heartbeats every few seconds
    "engine.connect_timeout": _at_least(0.1),
    "engine.connection": _choice("env", "file"),
    "mpi.env": _env_assignments,
    "mpi.n_flag": lambda v: None if v.startswith("-") else _choice("-n")(v),
    "mpi.registration_delay": _at_least(0.0),
    "batch.walltime": _optional(parse_walltime),
    "batch.memory": _optional(parse_memory),
    "batch.mode": _choice("array", "mpi", "jobs"),
    "batch.nodes": _at_least(0),
    "batch.cpus_per_engine": _at_least(1),
    "batch.engines_per_node": _at_least(0),
    "batch.engines_per_job": _at_least(1),
    "batch.gpus_per_engine": _at_least(0),
    "batch.array_limit": _at_least(0),
    "batch.drain": _at_least(0),
    "batch.skip_directives": _directive_keys,
    "batch.command_timeout": _at_least(0.1),
    "batch.poll_interval": _at_least(0.01),
    "batch.poll_max_interval": _at_least(0.01),
    "batch.poll_error_threshold": _at_least(1),
    "pool.min": _at_least(0),
    "pool.max": _at_least(0),
    "pool.surge": _at_least(0),
    "pool.interval": _at_least(0.1),
    "pool.idle_timeout": _at_least(0.0),
    "pool.wait_count": _at_least(1),
    "pool.lead": _at_least(0.0),
    "pool.backoff": _at_least(0.0),
    "pool.backoff_max": _at_least(0.0),
    "pool.max_failures": _at_least(1),
    "slurm.mpi_launcher": _choice("srun", "mpiexec"),
    "slurm.memory_flag": _choice("mem", "mem-per-cpu"),
    "slurm.gpu_flag": _choice("gpus-per-task", "gres"),
    "sge.gpu_resource": lambda v: _launcher_name(v) if v else None,
    "pbs.status_format": _choice("auto", "json", "text"),
    "sge.memory_resource": lambda v: _launcher_name(v) if v else None,
    "lsf.memory_unit": _choice("auto", "KB", "MB", "GB", "TB"),
    "winhpc.priority": _choice("Lowest", "BelowNormal", "Normal", "AboveNormal", "Highest"),
    "htcondor.request_disk": _optional(parse_memory),
    "ssh.hosts": _ssh_hosts,
    "ssh.env": _name_values,
    "ssh.client": _choice("auto", "openssh", "paramiko"),
}
for _system in schema.SYSTEMS:
    for _name in ("submit_command", "status_command", "cancel_command", "job_command"):
        CHECKS[f"{_system}.{_name}"] = _command


def check_value(key: schema.Key, value: Any) -> Any:
    """The value converted to the key's type; ValueError with a sentence otherwise."""
    kind = key.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"must be {key.type_name}, e.g. [\"a\", \"b\"], not {value!r}")
    elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"must be {key.type_name}, not {type(value).__name__} {value!r}")
    for text in value if isinstance(value, list) else [value]:
        if isinstance(text, str) and ("\n" in text or "\r" in text):
            raise ValueError("must be a single line (a newline would end the directive)")
    check = CHECKS.get(key.dotted)
    if check:
        check(value)
    return value


def _same_start(name: str, candidates: list[str]) -> list[str]:
    """Keys sharing a prefix of four or more letters ('wallclock' -> 'walltime')."""
    best, length = [], 3
    for c in candidates:
        n = len(os.path.commonprefix([name, c]))
        if n > length:
            best, length = [c], n
    return best


def closest_key(name: str, section: str) -> str:
    """A 'did you mean' hint: the closest key in the section, else anywhere."""
    candidates = list(schema.keys_of(section))
    local = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6) or _same_start(name, candidates)
    if local:
        return f"; did you mean {local[0]!r}?"
    everywhere = {k.name: k.section for k in schema.schema().values()}
    other = difflib.get_close_matches(name, list(everywhere), n=1, cutoff=0.6)
    if other:
        return f"; did you mean {other[0]!r} in [{everywhere[other[0]]}]?"
    return f" (valid keys in [{section}]: {', '.join(schema.keys_of(section))})"


def validate_table(
    data: Mapping[str, Any], source: str, *, allow_profiles: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """Flatten one parsed file to ``{dotted: value}`` and list its problems."""
    flat: dict[str, Any] = {}
    problems: list[str] = []
    sections = schema.valid_sections()
    for top, table in data.items():
        if top == "profiles" and allow_profiles:
            continue
        if top == "profiles":
            problems.append(
                f"[profiles] in {source} is only allowed in a site config file "
                "(/etc/hpcpar/*.toml or $HPCPAR_SITE_CONFIG); a profile's config.toml sets keys directly"
            )
            continue
        if not isinstance(table, dict):
            owner = next((k.section for k in schema.schema().values() if k.name == top), None)
            where = f"; put it under [{owner}]" if owner else closest_key(top, "batch")
            problems.append(f"key {top!r} in {source} must be inside a section{where}")
            continue
        if top not in sections:
            close = difflib.get_close_matches(top, sections, n=1)
            hint = f"; did you mean [{close[0]}]?" if close else f" (sections: {', '.join(sections)})"
            problems.append(f"unknown section [{top}] in {source}{hint}")
            continue
        _flatten_section(top, table, source, flat, problems)
    return flat, problems


def _flatten_section(
    section: str, table: Mapping[str, Any], source: str, flat: dict[str, Any], problems: list[str]
) -> None:
    allowed = schema.keys_of(section)
    for name, value in table.items():
        if section == schema.BATCH and name in schema.ROLES and isinstance(value, dict):
            _flatten_section(f"{schema.BATCH}.{name}", value, source, flat, problems)
            continue
        key = allowed.get(name)
        if key is None:
            problems.append(f"unknown key {name!r} in {source} [{section}]{closest_key(name, section)}")
            continue
        try:
            flat[f"{section}.{name}"] = check_value(key, value)
        except ValueError as e:
            problems.append(f"{section}.{name} in {source}: {e}")
