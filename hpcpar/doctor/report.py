"""What `hpcpar doctor` found: one row per check, printed as a table or as JSON.

A check is ``ok``, ``warn`` (works, but something is off), ``fail`` (would stop
``hpcpar start`` or its engines), ``skip`` (not applicable here) or ``info``.
Only ``fail`` makes the command exit non-zero.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from dataclasses import asdict, dataclass, field
from typing import Any

OK, WARN, FAIL, SKIP, INFO = "ok", "warn", "fail", "skip", "info"
STATUSES = (OK, WARN, FAIL, SKIP, INFO)


@dataclass
class Check:
    """One finding: ``name`` is stable (scripts match on it), ``result`` says what was
    seen, ``fix`` what to do about it (empty when nothing is to be done)."""

    name: str
    status: str
    result: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check status must be one of {STATUSES}, not {self.status!r}")


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        return check

    def extend(self, checks: list[Check]) -> None:
        self.checks.extend(checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def by_name(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def to_json(self) -> str:
        doc = {"ok": not self.failed, "checks": [asdict(c) for c in self.checks]}
        return json.dumps(doc, indent=1)

    def table(self, width: int | None = None) -> str:
        """CHECK / RESULT / FIX columns; long cells wrap inside their column."""
        width = width or shutil.get_terminal_size((120, 24)).columns
        rows = [("CHECK", "RESULT", "FIX")]
        rows += [(c.name, f"{c.status.upper():<4} {c.result}", c.fix) for c in self.checks]
        name_w = max(len(r[0]) for r in rows)
        room = max(40, width - name_w - 4)
        result_w = min(max(len(r[1]) for r in rows), max(24, room // 2))
        fix_w = max(16, room - result_w)
        lines: list[str] = []
        for name, result, fix in rows:
            left = textwrap.wrap(result, result_w, break_on_hyphens=False) or [""]
            right = textwrap.wrap(fix, fix_w, break_on_hyphens=False) or [""]
            for i in range(max(len(left), len(right))):
                cells = (name if i == 0 else "", left[i] if i < len(left) else "", right[i] if i < len(right) else "")
                lines.append(f"{cells[0]:<{name_w}}  {cells[1]:<{result_w}}  {cells[2]}".rstrip())
        failed = self.failed
        summary = (f"{len(failed)} check(s) failed: {', '.join(c.name for c in failed)}" if failed
                   else "nothing found that would stop 'hpcpar start'")
        return "\n".join([*lines, "", summary])
