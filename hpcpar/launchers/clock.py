"""Times the schedulers print (when a job started), read without time-zone guesswork.

squeue, qstat (SGE, PBS, the SLURM PBS wrappers) print local time in the zone of the
process that runs them, without saying which. The status commands therefore run with
``TZ=UTC0`` and ``LC_ALL=C`` (:func:`status_env`), so what they print is UTC with English
month and day names, whatever this host's or the user's zone is; :func:`read_time` reads it.
"""

from __future__ import annotations

import calendar
import os
import re
import time

# What the schedulers print: squeue %S and SGE JAT_start_time (ISO), PBS / Torque / the
# SLURM wrappers' qstat -f (ctime), SGE's plain qstat column (US date).
_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%a %b %d %H:%M:%S %Y", "%m/%d/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S")


def status_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a status command: the caller's, with UTC and the C locale."""
    env = dict(os.environ if base is None else base)
    env["TZ"] = "UTC0"
    env["LC_ALL"] = "C"
    return env


def read_time(text: str | None) -> float | None:
    """Epoch seconds from a time a status command printed under :func:`status_env`; None
    for empty, "N/A", "Unknown", "0" or anything unreadable (the caller then falls back)."""
    value = (text or "").strip()
    if not value or value in ("N/A", "Unknown", "None", "(null)", "0", "--"):
        return None
    if value.isdigit():  # epoch seconds (Torque) or milliseconds (some Grid Engines)
        number = int(value)
        return number / 1000.0 if number > 10**11 else float(number)
    value = re.sub(r"\.\d+$", "", re.sub(r"\s+", " ", value))  # fractional seconds: not needed
    for fmt in _FORMATS:
        try:
            return float(calendar.timegm(time.strptime(value, fmt)))
        except ValueError:
            continue
    return None


def earliest(times: list[float | None]) -> float | None:
    """The first start among a job's tasks (an array started when its first task did)."""
    known = [t for t in times if t is not None]
    return min(known) if known else None
