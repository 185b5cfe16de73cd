"""Merge the configuration layers and remember where every value came from."""

from __future__ import annotations

import difflib
import glob
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..paths import DEFAULT_PROFILE, ProfileDir, check_profile_name
from . import schema
from . import toml as tomllib
from .validate import ConfigError, check_value, closest_key, display_path, validate_table

SITE_ENV = "HPCPAR_SITE_CONFIG"
SITE_DIR = "/etc/hpcpar"
ENV_PREFIX = "HPCPAR_"
DEFAULT_SOURCE = "default"
CLI_SOURCE = "command line"


@dataclass
class Config:
    """The merged configuration: ``values`` by dotted key and the ``sources`` of each."""

    values: dict[str, Any]
    sources: dict[str, str]
    profile: str = DEFAULT_PROFILE
    site_files: list[str] = field(default_factory=list)
    site_profiles: list[str] = field(default_factory=list)

    def __getitem__(self, dotted: str) -> Any:
        return self.values[dotted]

    def get(self, dotted: str, default: Any = None) -> Any:
        return self.values.get(dotted, default)

    def section(self, name: str) -> dict[str, Any]:
        prefix = name + "."
        return {k[len(prefix) :]: v for k, v in self.values.items() if k.startswith(prefix) and "." not in k[len(prefix) :]}

    def launcher_options(self, system: str, role: str) -> dict[str, Any]:
        """Flat options for one launcher: [batch] < [<system>] < [batch.<role>], plus the
        system's own keys, plus the [engine] keys a job script needs."""
        options = self.section(schema.BATCH)
        options.update(self.section(system))
        options.update(self.section(f"{schema.BATCH}.{role}"))
        options["system"] = system
        options["engine_python"] = self.values["engine.python"]
        return options

    def source_of(self, dotted: str) -> str:
        return self.sources.get(dotted, DEFAULT_SOURCE)

    def explain(self) -> list[tuple[str, Any, str]]:
        """(dotted key, value, source) for every set key, defaults first in file order."""
        order = list(schema.schema())
        keys = sorted(self.values, key=lambda k: (order.index(k) if k in order else len(order), k))
        return [(k, self.values[k], self.source_of(k)) for k in keys]


def defaults_config() -> Config:
    """Only the built-in defaults: what a launcher uses when built without a config."""
    return Config({dotted: key.default for dotted, key in schema.schema().items()}, {})


def site_config_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """``$HPCPAR_SITE_CONFIG`` (files or directories, ':'-separated) or /etc/hpcpar/*.toml."""
    env = os.environ if environ is None else environ
    spec = env.get(SITE_ENV)
    entries = spec.split(os.pathsep) if spec else [SITE_DIR]
    files: list[Path] = []
    for entry in filter(None, entries):
        p = Path(entry).expanduser()
        if p.is_dir():
            files.extend(Path(f) for f in sorted(glob.glob(str(p / "*.toml"))))
        elif p.exists() or spec:
            files.append(p)
    return files


def site_template_dirs(environ: Mapping[str, str] | None = None) -> list[Path]:
    """``templates/`` next to each site config file, first file first."""
    dirs = dict.fromkeys(f.parent / "templates" for f in site_config_files(environ))
    return [d for d in dirs if d.is_dir()]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError([f"config file {display_path(path)} does not exist (check ${SITE_ENV})"])
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{display_path(path)} is not valid TOML: {e}"])


def profile_config_path(profile_dir: ProfileDir) -> Path:
    return profile_dir.path / "config.toml"


def load_config(
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    profile_dir: ProfileDir | None = None,
    environ: Mapping[str, str] | None = None,
    override_source: str = CLI_SOURCE,
) -> Config:
    """Load and validate every layer; raise ConfigError listing all problems at once.

    ``overrides`` are command-line or API values by dotted key (``batch.queue``) or by a
    bare key that is unique outside the system sections (``queue``, ``n``, ``walltime``).
    """
    env = os.environ if environ is None else environ
    name = check_profile_name(profile or (profile_dir.name if profile_dir else DEFAULT_PROFILE))
    pdir = profile_dir or ProfileDir.for_profile(name)
    values = {dotted: key.default for dotted, key in schema.schema().items()}
    sources: dict[str, str] = {}
    problems: list[str] = []
    site_files = site_config_files(env)
    site_profiles: list[str] = []

    def apply(flat: Mapping[str, Any], source: str) -> None:
        for dotted, value in flat.items():
            values[dotted] = value
            sources[dotted] = source

    for path in site_files:
        try:
            data = read_toml(path)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        shown = f"site {display_path(path)}"
        flat, found = validate_table(data, shown, allow_profiles=True)
        problems.extend(found)
        apply(flat, shown)
        named = data.get("profiles", {})
        if not isinstance(named, dict):
            problems.append(f"[profiles] in {shown} must be a table of profile tables")
            continue
        site_profiles.extend(named)
        if isinstance(named.get(name), dict):
            where = f"{shown} [profiles.{name}]"
            flat, found = validate_table(named[name], where)
            problems.extend(found)
            apply(flat, where)

    user_file = profile_config_path(pdir)
    if user_file.exists():
        try:
            flat, found = validate_table(read_toml(user_file), display_path(user_file))
            problems.extend(found)
            apply(flat, f"profile {display_path(user_file)}")
        except ConfigError as e:
            problems.extend(e.problems)

    flat, found = _from_environment(env)
    problems.extend(found)
    for dotted, (value, var) in flat.items():
        apply({dotted: value}, f"env {var}")

    flat, found = normalize_overrides(overrides or {}, override_source)
    problems.extend(found)
    apply(flat, override_source)

    if problems:
        raise ConfigError(problems)
    return Config(values, sources, name, [str(p) for p in site_files], site_profiles)


def _env_names() -> dict[str, str]:
    """Environment variable name -> dotted key, for every key that may be set."""
    names: dict[str, str] = {}
    for section in schema.valid_sections():
        for key in schema.keys_of(section):
            dotted = f"{section}.{key}"
            names[ENV_PREFIX + dotted.upper().replace(".", "_")] = dotted
    return names


# HPCPAR_* variables hpcpar reads that are not configuration keys.
OTHER_ENV = frozenset({
    "HPCPAR_DIR", SITE_ENV, "HPCPAR_CONNECTION_INFO", "HPCPAR_TASK_ID", "HPCPAR_MPI_JOB",
    "HPCPAR_SHARED_MEMORY", "HPCPAR_SHARED_MEMORY_THRESHOLD",
})


def _env_sections() -> dict[str, str]:
    """Variable prefix -> section, longest first (HPCPAR_BATCH_ENGINES_ before HPCPAR_BATCH_)."""
    prefixes = {ENV_PREFIX + s.upper().replace(".", "_") + "_": s for s in schema.valid_sections()}
    return dict(sorted(prefixes.items(), key=lambda kv: -len(kv[0])))


def misspelled_env(env: Mapping[str, str]) -> list[str]:
    """Problems for HPCPAR_* variables that look like a configuration variable with a typo
    (``HPCPAR_BATCH_WALLTME``): set but ignored, they would silently change nothing.
    Variables that resemble no key are left alone: other tools may use the prefix too."""
    names = _env_names()
    problems = []
    for var in sorted(env):
        if not var.startswith(ENV_PREFIX) or var in names or var in OTHER_ENV:
            continue
        close: list[str] = []
        for prefix, section in _env_sections().items():
            if var.startswith(prefix):
                keys = [k.upper() for k in schema.keys_of(section)]
                close = [prefix + k for k in difflib.get_close_matches(var[len(prefix):], keys, n=1, cutoff=0.8)]
                break
        if not close:
            close = difflib.get_close_matches(var, list(names), n=1, cutoff=0.9)
        if close:
            problems.append(
                f"unknown environment variable ${var}; did you mean ${close[0]} ({names[close[0]]})? "
                f"Rename it, or unset it ('unset {var}')"
            )
    return problems


def _from_environment(env: Mapping[str, str]) -> tuple[dict[str, tuple[Any, str]], list[str]]:
    found: dict[str, tuple[Any, str]] = {}
    problems: list[str] = misspelled_env(env)
    for var, dotted in _env_names().items():
        if var not in env:
            continue
        key = schema.key_for(dotted)
        assert key is not None
        try:
            found[dotted] = (check_value(key, parse_env_value(env[var], key.kind)), var)
        except ValueError as e:
            problems.append(f"${var}: {e}")
    return found, problems


def parse_env_value(text: str, kind: type) -> Any:
    """Text of an environment variable as the key's type (lists as TOML arrays)."""
    if kind is str:
        return text
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"must be true or false, not {text!r}")
    if kind is dict:
        try:
            return tomllib.loads(f"v = {text}")["v"] if text.strip() else {}
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"is not a TOML table ({e}); write it like {{\"node1\" = 4}}")
    if kind is list:
        if text.strip().startswith("["):
            try:
                return tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"is not a TOML array ({e}); write it like [\"a\", \"b\"]")
        return [text] if text else []
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"must be {'an integer' if kind is int else 'a number'}, not {text!r}")


def bare_key_map() -> dict[str, str]:
    """Bare names usable as overrides (``queue`` -> ``batch.queue``), unique ones only."""
    seen: dict[str, list[str]] = {}
    for key in schema.schema().values():
        if key.section not in schema.SYSTEMS:
            seen.setdefault(key.name, []).append(key.dotted)
    return {name: dotted[0] for name, dotted in seen.items() if len(dotted) == 1}


def normalize_overrides(
    overrides: Mapping[str, Any], source: str = CLI_SOURCE
) -> tuple[dict[str, Any], list[str]]:
    """Overrides by dotted key, checked; ``None`` values mean "not given" and are dropped."""
    bare = bare_key_map()
    flat: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in overrides.items():
        if value is None:
            continue
        dotted = name if "." in name else bare.get(name, "")
        key = schema.key_for(dotted) if dotted else None
        if key is None:
            section = name.rpartition(".")[0] if "." in name else schema.BATCH
            hint = closest_key(name.rpartition(".")[2], section if section in schema.valid_sections() else schema.BATCH)
            problems.append(f"unknown setting {name!r} from {source}{hint}")
            continue
        try:
            flat[dotted] = check_value(key, value)
        except ValueError as e:
            problems.append(f"{dotted} from {source}: {e}")
    return flat, problems
