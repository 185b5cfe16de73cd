"""Create a profile: its directories and a config.toml listing every key, commented out.

Every key is commented out so that the site config still applies; the user uncomments
what they want to change and the documentation sits right above it.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..paths import ProfileDir
from .loader import profile_config_path
from .schema import defaults_text

_ASSIGNMENT = re.compile(r"^([A-Za-z_][\w-]*)\s*=")


def commented_defaults(settings: dict[str, str] | None = None) -> str:
    """The defaults file with every assignment commented out, except ``settings``.

    ``settings`` maps dotted keys to TOML literals written uncommented, e.g.
    ``{"cluster.engines": '"slurm"'}``.
    """
    settings = dict(settings or {})
    out: list[str] = []
    section = ""
    for line in defaults_text().splitlines():
        header = re.match(r"^\[([\w.]+)\]", line)
        if header:
            section = header.group(1)
        m = _ASSIGNMENT.match(line)
        if m and section:
            dotted = f"{section}.{m.group(1)}"
            if dotted in settings:
                out.append(f"{m.group(1)} = {settings.pop(dotted)}")
            else:
                out.append("# " + line)
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def create_profile(name: str, launcher: str | None = None, *, force: bool = False) -> Path:
    """Create ``profile_<name>`` with security/, log/, run/, templates/ and config.toml.

    An existing config.toml is kept unless ``force``: it holds the user's edits.
    """
    pd = ProfileDir.for_profile(name, create=True)
    (pd.path / "templates").mkdir(exist_ok=True)
    path = profile_config_path(pd)
    if path.exists() and not force:
        raise FileExistsError(
            f"{path} already exists; edit it, or pass --force to replace it with a fresh copy"
        )
    settings = {}
    if launcher:
        settings["cluster.engines"] = f'"{launcher}"'
    header = f"# hpcpar profile {name!r}: uncomment a line to change that setting.\n"
    path.write_text(header + commented_defaults(settings))
    return path
