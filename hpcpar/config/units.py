"""Parse the two quantities users get wrong most: wall-clock limits and memory sizes.

They are parsed once, to seconds and bytes, so every launcher formats them in its own
system's units from the same number.
"""

from __future__ import annotations

import re

_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(I?B?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}


def parse_walltime(text: str) -> int:
    """Seconds in ``[D-]HH:MM:SS`` or ``HH:MM``; raises ValueError naming the accepted forms."""
    m = _WALLTIME.match(text.strip())
    if not m:
        raise ValueError(
            f"walltime {text!r} is not '[D-]HH:MM:SS' or 'HH:MM' (for example '01:30:00')"
        )
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    if minutes >= 60 or seconds >= 60:
        raise ValueError(f"walltime {text!r}: minutes and seconds must be below 60")
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"walltime {text!r} must be longer than zero")
    return total


def parse_memory(text: str) -> int:
    """Bytes in ``4G``, ``500MB``, ``2GiB``, ``1024`` (all binary: 1G = 1024**3 bytes).

    Binary everywhere because SLURM, PBS and SGE read "G" as GiB; a bare number is bytes.
    """
    m = _MEMORY.match(text)
    if not m:
        raise ValueError(
            f"memory {text!r} is not a size like '4G', '500M', '2GiB' or a number of bytes"
        )
    number, prefix, _suffix = m.groups()
    value = float(number) * 1024 ** _POWERS[prefix.upper()]
    if value < 1:
        raise ValueError(f"memory {text!r} must be at least one byte")
    return int(value + 0.5)


def format_hms(seconds: int) -> str:
    """``HH:MM:SS`` with hours above 24 allowed (PBS, SGE, SLURM all accept it)."""
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
