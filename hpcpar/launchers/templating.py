"""Jinja environment for job scripts: strict, shell-safe, and overridable by file name.

Search order: the profile's ``templates/``, the site's ``templates/`` (next to the site
config files), then the built-in ones; a site admin overrides e.g. ``slurm/engines.sh.j2``
by dropping a file with that relative path into one of the first two.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

import hpcpar

from ..config import display_path, site_template_dirs
from ..paths import ProfileDir
from .base import LauncherError
from .formats import pathquote, shjoin, shquote


class TemplateError(LauncherError, ValueError):
    """A job template that cannot be used: not found, not valid Jinja, or an override
    that replaces nothing. The message names the file, the line and the fix."""


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
    check_overrides(search_path)
    try:
        template = make_environment(search_path).get_template(name)
        return template.render(**context)
    except jinja2.TemplateNotFound:
        raise TemplateError(
            f"job template {name!r} not found in {', '.join(str(p) for p in search_path)}"
        ) from None
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(_syntax_message(e)) from None
    except jinja2.UndefinedError as e:
        raise TemplateError(f"job template {name!r} uses an undefined value: {e.message}") from None


def _syntax_message(e: jinja2.TemplateSyntaxError) -> str:
    """File, line and the offending text of a template that is not valid Jinja."""
    where = display_path(e.filename) if e.filename else repr(e.name)
    text = ""
    if e.source and e.lineno:
        lines = e.source.splitlines()
        if 0 < e.lineno <= len(lines):
            text = f"\n    {e.lineno} | {lines[e.lineno - 1]}"
    return (f"job template {where}, line {e.lineno}: {e.message}{text}\n"
            "fix that line (Jinja syntax: {{ value }}, {% if ... %} ... {% endif %}), or delete the file "
            "to use the built-in template")


def builtin_template_names() -> list[str]:
    root = builtin_template_dir()
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.j2"))


def check_overrides(search_path: Sequence[Path]) -> None:
    """Every ``*.j2`` in an override directory must replace a built-in template: a file
    whose name matches none (``slurm/engine.sh.j2``) would otherwise be silently ignored."""
    builtin = builtin_template_dir()
    names = builtin_template_names()
    problems = []
    for directory in search_path:
        if Path(directory) == builtin or not Path(directory).is_dir():
            continue
        for path in sorted(Path(directory).rglob("*.j2")):
            rel = path.relative_to(directory).as_posix()
            if rel in names:
                continue
            close = difflib.get_close_matches(rel, names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f" (templates: {', '.join(names)})"
            problems.append(f"template override {display_path(path)} matches no job template{hint}")
    if problems:
        raise TemplateError(
            "; ".join(problems) + ". An override must have the relative path of the template it "
            "replaces, e.g. slurm/engines.sh.j2")
