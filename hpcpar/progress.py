"""Progress display while waiting.

An ipywidgets bar in a notebook (when ipywidgets is installed), tqdm on a
terminal, plain ``desc: n/total`` lines otherwise (logs, batch jobs).
"""

from __future__ import annotations

import sys
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter kernel (output goes to a notebook or lab)."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def _widgets_available() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


class Progress:
    """``with Progress(total, desc) as bar: bar.update_to(n)``.

    ``enabled=False`` shows nothing. ``widget`` forces (True) or forbids
    (False) the notebook widget; by default it is used in a notebook when
    ipywidgets is installed. ``mode`` tells which display was chosen:
    ``widget``, ``tqdm``, ``lines`` or ``off``.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", enabled: bool | None = None,
                 widget: bool | None = None) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.enabled = enabled if enabled is not None else True
        self.tty = sys.stderr.isatty()
        self.value = 0
        self._bar: Any = None
        self._widget: Any = None
        self._label: Any = None
        if not self.enabled:
            self.mode = "off"
        elif widget or (widget is None and in_notebook() and _widgets_available()):
            self.mode = "widget"
        elif self.tty:
            self.mode = "tqdm"
        else:
            self.mode = "lines"

    def __enter__(self) -> Progress:
        if self.mode == "widget":
            import ipywidgets
            from IPython.display import display

            self._widget = ipywidgets.IntProgress(value=0, min=0, max=max(self.total, 1),
                                                  description=self.desc)
            self._label = ipywidgets.HTML(value=self._text())
            display(ipywidgets.HBox([self._widget, self._label]))
        elif self.mode == "tqdm":
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, leave=False)
            except ImportError:
                self.mode = "lines"
        return self

    def _text(self) -> str:
        return f"{self.value}/{self.total} {self.unit}s"

    def update_to(self, value: int) -> None:
        if value == self.value:
            return
        if self.mode == "widget" and self._widget is not None:
            self.value = value
            self._widget.value = value
            self._label.value = self._text()
            return
        if self._bar is not None:
            self._bar.update(value - self.value)
        elif self.mode == "lines":
            print(f"{self.desc}: {value}/{self.total}", file=sys.stderr, flush=True)
        self.value = value

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._widget is not None:
            self._widget.bar_style = "success" if self.value >= self.total else "warning"


# -- the live line of `hpcpar start` -------------------------------------------------------------

def elapsed_text(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class LiveLine:
    """What `hpcpar start` prints while it waits for engines.

    Steps arrive as lines (``live("controller up ...")``). While it waits, ``waiting(have,
    want, engine_sets)`` is called often; it shows one status line: elapsed time, engines
    registered n/N, each batch job's state and, while a job is queued, the scheduler's reason.
    On a terminal it is a bar redrawn in place; elsewhere (logs, CI, nohup) a plain line at
    each change of a job's state or reason, and every ``every`` seconds while nothing changes.
    """

    def __init__(self, stream: Any = None, every: float = 10.0, tty: bool | None = None,
                 reason_every: float = 10.0) -> None:
        import time

        self.stream = stream if stream is not None else sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = every
        self.reason_every = reason_every
        self.started = time.monotonic()
        self._drawn = False
        self._key: Any = None
        self._have_shown = -1
        self._line_at = 0.0
        self._reasons: dict[str, tuple[float, str]] = {}

    # steps
    def __call__(self, text: str) -> None:
        self._clear()
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away (SIGHUP): keep working silently
            pass

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\x1b[K")
            self._drawn = False

    def done(self) -> None:
        """Leave the terminal on a fresh line."""
        self._clear()

    # the status line
    def _reason(self, launcher: Any, job_id: str, now: float) -> str:
        if not hasattr(launcher, "pending_reason"):
            return ""
        at, text = self._reasons.get(job_id, (-1e9, ""))
        if now - at >= self.reason_every:
            try:
                text = launcher.pending_reason(job_id)
            except Exception:  # noqa: BLE001 - decoration only: never fail the start for it
                text = ""
            self._reasons[job_id] = (now, text)
        return text

    def job_parts(self, engine_sets: list[Any], now: float) -> list[str]:
        """"slurm job 188: pending (Resources)" per batch engine set; reasons asked for
        at most three queued jobs per set, each at most every reason_every seconds."""
        parts = []
        for s in engine_sets:
            ids = list(getattr(s, "job_ids", []) or [])
            if not ids or not hasattr(s, "poll"):
                continue
            try:
                states = s.poll()
            except Exception:  # noqa: BLE001
                states = {}
            groups: dict[tuple[str, str], list[str]] = {}
            asked = 0
            for j in ids:
                st = states[j].state if j in states else "pending"
                reason = ""
                if st in ("pending", "held") and asked < 3:
                    reason, asked = self._reason(s, j, now), asked + 1
                groups.setdefault((st, reason), []).append(j)
            if len(ids) == 1:
                (st, reason), = groups
                parts.append(f"{s.name} job {ids[0]}: {st}" + (f" ({reason})" if reason else ""))
                continue
            shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
            states_text = ", ".join(f"{len(js)} {st}" + (f" ({reason})" if reason else "")
                                    for (st, reason), js in groups.items())
            parts.append(f"{s.name} jobs {shown}: {states_text}")
        return parts

    def waiting(self, have: int, want: int, engine_sets: list[Any]) -> None:
        import shutil
        import time

        now = time.monotonic()
        jobs = self.job_parts(engine_sets, now)
        elapsed = elapsed_text(now - self.started)
        text = f"engines registered {have}/{want}" + (f"; {'; '.join(jobs)}" if jobs else "")
        if self.tty:
            width = shutil.get_terminal_size((100, 24)).columns
            filled = int(20 * min(have, want) / want) if want else 20
            line = f"[{elapsed}] [{'#' * filled}{'.' * (20 - filled)}] {text}"[: max(20, width - 1)]
            if line != self._key or not self._drawn:
                self._write("\r\x1b[K" + line)
                self._key, self._drawn = line, True
            if have >= want:
                self.done()
            return
        key = (tuple(jobs), have >= want)
        changed = key != self._key or (have != self._have_shown and now - self._line_at >= 1.0)
        if changed or now - self._line_at >= self.every or (have >= want and have != self._have_shown):
            self._write(f"[{elapsed}] {text}\n")
            self._key, self._have_shown, self._line_at = key, have, now
