"""Progress display while waiting: tqdm on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "it", enabled: bool | None = None) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.enabled = enabled if enabled is not None else True
        self.tty = sys.stderr.isatty()
        self.value = 0
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if self.enabled and self.tty:
            try:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, leave=False)
            except ImportError:
                self._bar = None
        return self

    def update_to(self, value: int) -> None:
        if value == self.value:
            return
        if self._bar is not None:
            self._bar.update(value - self.value)
        elif self.enabled and not self.tty:
            print(f"{self.desc}: {value}/{self.total}", file=sys.stderr, flush=True)
        self.value = value

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()
