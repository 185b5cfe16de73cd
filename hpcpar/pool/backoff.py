"""Failed jobs: resubmit with exponential back-off, stop after ``max_failures`` in a row.

A job fails when it leaves the queue before any of its engines registered (a typo in the
prologue, no Python on the nodes, an account that cannot charge). Each failure in a row
doubles the wait before the next submission (``backoff``, up to ``backoff_max``): no
submission storms. After ``max_failures`` the pool stops submitting and keeps the reason,
with the last lines of the job's output, for ``hpcpar status`` and the client.
"""

from __future__ import annotations

from pathlib import Path

from .state import Block, PoolState

TAIL_LINES = 8


def delay(state: PoolState) -> float:
    """Seconds to wait after the current run of failures."""
    if state.failures <= 0:
        return 0.0
    return min(state.backoff_max, state.backoff * 2 ** (state.failures - 1))


def failed(state: PoolState, block: Block, now: float, output: str) -> str:
    """Count a failed job; returns the decision text (back-off or stop)."""
    state.failures += 1
    state.next_submit_at = now + delay(state)
    what = f"job {block.job_id} ended ({block.state}) before any engine registered"
    quote = f"; last lines of its output:\n{output}" if output else " (no job output found)"
    if state.failures >= state.max_failures:
        state.stopped = (f"stopped submitting after {state.failures} failed jobs in a row: {what}{quote}\n"
                         "fix the job (hpcpar render shows the script), then 'hpcpar scale N' to try again")
        return state.stopped
    return f"{what}: failure {state.failures} of {state.max_failures}, next submission in {delay(state):g} s{quote}"


def succeeded(state: PoolState) -> None:
    """An engine of a job registered: the run of failures is over."""
    state.failures = 0
    state.next_submit_at = 0.0


def may_submit(state: PoolState, now: float) -> tuple[bool, str]:
    if state.stopped:
        return False, "stopped after repeated failures"
    if now < state.next_submit_at:
        return False, f"backing off for {state.next_submit_at - now:.0f} s after {state.failures} failure(s)"
    return True, ""


def job_output(log_dir: Path, job_id: str, lines: int = TAIL_LINES) -> str:
    """The last lines of the newest output file naming the job (any system's pattern)."""
    key = str(job_id).split(".")[0]
    files = [p for p in log_dir.glob(f"*{key}*") if p.is_file()] if log_dir.is_dir() else []
    if not files:
        return ""
    newest = max(files, key=lambda p: p.stat().st_mtime)
    try:
        text = newest.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(f"  | {line}" for line in text[-lines:]) + f"\n  ({newest})"
