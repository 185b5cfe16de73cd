"""Per-system spelling of names, wall-clock limits and memory sizes.

Each batch system has its own units (SLURM MiB, PBS "mb", SGE per-slot "M", LSF
LSF_UNIT_FOR_LIMITS, HTCondor MiB); all of them are computed here from bytes and seconds,
always rounding up so a request is never smaller than what the user asked for.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..config.units import ceil_div, format_hms

MiB = 1024**2
_LSF_UNITS = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def sanitize_job_name(name: str, limit: int = 64) -> str:
    """Letters, digits and ``_ . + -`` only, starting with a letter (PBS and SGE rules)."""
    clean = re.sub(r"[^A-Za-z0-9_.+-]", "_", name.strip()) or "hpcpar"
    if not clean[0].isalpha():
        clean = "j" + clean
    return clean[:limit]


def slurm_time(seconds: int) -> str:
    days, rest = divmod(int(seconds), 86400)
    return f"{days}-{format_hms(rest)}" if days else format_hms(rest)


def lsf_time(seconds: int) -> str:
    """``H:MM``: LSF's -W takes no seconds, so round up to the next minute."""
    minutes = ceil_div(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}"


def mebibytes(nbytes: int) -> int:
    return max(1, ceil_div(int(nbytes), MiB))


def lsf_memory(nbytes: int, unit: str) -> str:
    """``-M`` value in the site's LSF_UNIT_FOR_LIMITS (a bare number, as bsub expects)."""
    return str(max(1, ceil_div(int(nbytes), _LSF_UNITS[unit])))


def detect_lsf_unit(environ: Mapping[str, str] | None = None) -> str:
    """LSF_UNIT_FOR_LIMITS from lsf.conf ($LSF_ENVDIR, else /etc), else LSF's default KB."""
    env = os.environ if environ is None else environ
    for directory in (env.get("LSF_ENVDIR"), env.get("LSF_CONFDIR"), "/etc"):
        if not directory:
            continue
        conf = Path(directory) / "lsf.conf"
        try:
            text = conf.read_text(errors="replace")
        except OSError:
            continue
        m = re.search(r"^\s*LSF_UNIT_FOR_LIMITS\s*=\s*\"?([A-Za-z]+)", text, re.MULTILINE)
        if m and m.group(1).upper() in _LSF_UNITS:
            return m.group(1).upper()
    return "KB"


def shquote(value: object) -> str:
    """Quote a value for the shell (and for directive parsers, which follow shell rules)."""
    return shlex.quote(str(value))


def pathquote(value: object) -> str:
    """Like shquote, but keeps scheduler placeholders ($JOB_ID, %j, ^array_index^) bare.

    Quoting would stop SGE from expanding $JOB_ID in -o; paths made only of safe
    characters and placeholders need no quotes anyway.
    """
    text = str(value)
    if re.fullmatch(r"[\w@%+=:,./^$-]+", text):
        return text
    return shlex.quote(text)


def shjoin(argv: Iterable[object]) -> str:
    return " ".join(shquote(a) for a in argv)


def strip_prefix(directive: str, prefix: str) -> str:
    """Let users write extra directives with or without the '#SBATCH' prefix."""
    text = directive.strip()
    return text[len(prefix) :].strip() if text.startswith(prefix) else text
