"""Run a batch-system command with a timeout and turn "not installed" into advice."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .base import LauncherError


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stdout + "\n" + self.stderr).strip()

    def describe(self) -> str:
        text = self.output or "(no output)"
        return f"`{' '.join(self.argv)}` exited with {self.returncode}: {text}"


def run_command(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    setting: str = "",
) -> CommandResult:
    """Run ``argv``; LauncherError if it is missing or hangs (``setting`` names the key to fix)."""
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        where = f" (set {setting} to its full path)" if setting else ""
        raise LauncherError(
            f"{argv[0]!r} was not found on PATH: run this on a login node of the batch system{where}"
        ) from None
    except subprocess.TimeoutExpired:
        raise LauncherError(
            f"`{' '.join(argv)}` did not finish within {timeout:g} s "
            "(the scheduler may be overloaded; raise batch.command_timeout)"
        ) from None
    return CommandResult(argv, proc.returncode, proc.stdout, proc.stderr)
