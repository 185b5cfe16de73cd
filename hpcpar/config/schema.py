"""The configuration schema, read from the one documented defaults file.

``defaults.toml`` is the single source of truth: each key's default gives its type and
the comment above it is its documentation (shown by ``config show`` and written into new
profiles), so the schema, the defaults and the docs cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from . import toml as tomllib

BATCH = "batch"
ROLES = ("controller", "engines")
# Sections that configure one batch system; each may also override any [batch] key.
SYSTEMS = ("slurm", "pbs", "torque", "sge", "lsf", "winhpc", "htcondor")
# Keys of generated directives that skip_directives may name.
DIRECTIVE_KEYS = (
    "job_name",
    "queue",
    "account",
    "walltime",
    "memory",
    "nodes",
    "cpus",
    "array",
    "output",
    "error",
    "shell",
    "rerunnable",
    "place",
    "pe",
    "cwd",
    "gpus",
)


@dataclass(frozen=True)
class Key:
    """One configuration key: where it lives, its default, its type and its doc."""

    section: str
    name: str
    default: Any
    doc: str

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def kind(self) -> type:
        return type(self.default)

    @property
    def type_name(self) -> str:
        return {
            str: "a string",
            int: "an integer",
            float: "a number",
            bool: "true or false",
            list: "a list of strings",
            dict: "a table",
        }[self.kind]


def defaults_text() -> str:
    return resources.files("hpcpar.config").joinpath("defaults.toml").read_text()


@cache
def schema() -> dict[str, Key]:
    """All keys of the defaults file, by dotted name, in file order."""
    values = tomllib.loads(defaults_text())
    docs = _comments_by_key(defaults_text())
    keys: dict[str, Key] = {}
    for section, table in values.items():
        for name, default in table.items():
            keys[f"{section}.{name}"] = Key(section, name, default, docs.get(f"{section}.{name}", ""))
    return keys


def _comments_by_key(text: str) -> dict[str, str]:
    """The comment block directly above each ``key = value`` line."""
    docs: dict[str, str] = {}
    section, pending = "", []
    for line in text.splitlines():
        stripped = line.strip()
        header = re.match(r"^\[([\w.]+)\]", stripped)
        if header:
            section, pending = header.group(1), []
        elif stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
        elif "=" in stripped and section:
            docs[f"{section}.{stripped.split('=', 1)[0].strip()}"] = " ".join(pending)
            pending = []
        else:
            pending = []
    return docs


def section_names() -> list[str]:
    return list(dict.fromkeys(k.section for k in schema().values()))


def keys_of(section: str) -> dict[str, Key]:
    """Keys valid in ``section`` (a system section also accepts every [batch] key)."""
    own = {k.name: k for k in schema().values() if k.section == section}
    if section in SYSTEMS:
        return {**{k.name: k for k in schema().values() if k.section == BATCH}, **own}
    if section in (f"{BATCH}.{r}" for r in ROLES):
        return {k.name: k for k in schema().values() if k.section == BATCH}
    return own


def valid_sections() -> list[str]:
    return section_names() + [f"{BATCH}.{r}" for r in ROLES]


def key_for(dotted: str) -> Key | None:
    """The schema key behind a dotted name, including system and role overrides."""
    section, _, name = dotted.rpartition(".")
    return keys_of(section).get(name) if section in valid_sections() else None
