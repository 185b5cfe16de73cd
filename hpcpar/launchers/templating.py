"""Jinja environment for job scripts: strict, shell-safe, and overridable by file name.

Search order: the profile's ``templates/``, the site's ``templates/`` (next to the site
config files), then the built-in ones; a site admin overrides e.g. ``slurm/engines.sh.j2``
by dropping a file with that relative path into one of the first two.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

import hpcpar

from ..config import site_template_dirs
from ..paths import ProfileDir
from .formats import pathquote, shjoin, shquote


def builtin_template_dir() -> Path:
    """``hpcpar/templates`` in an installed wheel, the top-level ``templates/`` in a checkout."""
    package = Path(hpcpar.__file__).resolve().parent
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "common").is_dir():
            return candidate
    raise FileNotFoundError(
        f"hpcpar's job templates are missing (looked in {package}/templates and "
        f"{package.parent}/templates); reinstall hpcpar"
    )


def template_search_path(
    profile_dir: ProfileDir | None = None, environ: Mapping[str, str] | None = None
) -> list[Path]:
    dirs: list[Path] = []
    if profile_dir is not None and (profile_dir.path / "templates").is_dir():
        dirs.append(profile_dir.path / "templates")
    dirs.extend(site_template_dirs(environ))
    dirs.append(builtin_template_dir())
    return dirs


@jinja2.pass_context
def _want(context: Any, key: str, value: Any = True) -> bool:
    """True when a directive has a value and its key is not in skip_directives."""
    return bool(value) and key not in context.get("skip_directives", ())


def make_environment(search_path: Sequence[Path]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search_path]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # Shell scripts must not be HTML-escaped; only the WinHPC job XML is escaped.
        autoescape=lambda name: bool(name and name.endswith(".xml.j2")),
    )
    env.filters["shquote"] = shquote
    env.filters["shjoin"] = shjoin
    env.filters["pathquote"] = pathquote
    env.globals["want"] = _want
    return env


def render_template(name: str, context: Mapping[str, Any], search_path: Sequence[Path]) -> str:
    try:
        template = make_environment(search_path).get_template(name)
        return template.render(**context)
    except jinja2.TemplateNotFound:
        raise FileNotFoundError(
            f"job template {name!r} not found in {', '.join(str(p) for p in search_path)}"
        ) from None
    except jinja2.UndefinedError as e:
        raise ValueError(f"job template {name!r} uses an undefined value: {e.message}") from None
