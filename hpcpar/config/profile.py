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


REQUIRED = "# REQUIRED:"

# What a batch profile must set to start, with values that work on a typical cluster, and
# why each is required (written above the key, marked REQUIRED).
BATCH_REQUIRED = {
    "cluster.n": ("4", "how many engines `hpcpar start` submits (batch engines need a count; "
                       "-n on the command line overrides it)"),
    "controller.ip": ('"*"', "the engines run on compute nodes, which must reach the controller: "
                            '"*" listens on every interface, or give the login node\'s cluster-network address'),
}


def commented_defaults(settings: dict[str, str] | None = None, notes: dict[str, str] | None = None) -> str:
    """The defaults file with every assignment commented out, except ``settings``.

    ``settings`` maps dotted keys to TOML literals written uncommented, e.g.
    ``{"cluster.engines": '"slurm"'}``; ``notes`` adds a REQUIRED comment above a key.
    """
    settings = dict(settings or {})
    notes = dict(notes or {})
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
                if dotted in notes:
                    out.append(f"{REQUIRED} {notes.pop(dotted)}")
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
    settings: dict[str, str] = {}
    notes: dict[str, str] = {}
    header = f"# hpcpar profile {name!r}: uncomment a line to change that setting.\n"
    if launcher:
        from ..launchers.build import is_batch

        settings["cluster.engines"] = f'"{launcher}"'
        notes["cluster.engines"] = "the launcher of this profile's engines"
        if is_batch(launcher):
            for dotted, (value, why) in BATCH_REQUIRED.items():
                settings[dotted], notes[dotted] = value, why
            header += (
                f"# Lines marked REQUIRED are what `hpcpar start --profile {name}` needs for {launcher} engines;\n"
                "# they hold values that work on most clusters: check them. Your site may also need a\n"
                "# queue, an account or a walltime ([batch] below). `hpcpar start` checks every value\n"
                f"# before it submits; `hpcpar render --profile {name}` shows the job scripts without submitting.\n"
            )
    path.write_text(header + commented_defaults(settings, notes))
    return path
