"""``hpcpar logs N``: the output of engine id N (fetched over SSH for engines on other hosts).

Engine ids are the controller's (``rc.ids``, ``hpcpar status``); a launch slot (the
order in which a launcher started its processes) is ``--index``. The engine behind an
id is found by asking the controller for its host and pid, else by the line
"registered as engine N" that every engine writes to its output.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from . import add_profile_args, count, profile_dir_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("logs", help="show an engine's (or the controller's) output")
    add_profile_args(p)
    p.add_argument("engine", nargs="?", type=count(0, "the engine id"), default=None,
                   help="engine id, as in rc.ids and 'hpcpar status' (default: list the engines)")
    p.add_argument("--index", type=count(0, "--index"), default=None,
                   help="launch slot instead of engine id: the N-th process the engine set started")
    p.add_argument("--set", type=count(0, "--set"), default=0,
                   help="engine set of --index (0 = the first 'hpcpar start' set)")
    p.add_argument("--controller", action="store_true", help="the controller's log")
    p.add_argument("--list", action="store_true", help="list engine processes: engine id, host, pid, alive, log")
    p.add_argument("--tail", type=count(1, "--tail"), default=None, help="only the last N lines")
    p.set_defaults(func=run)


def _tail(text: str, n: int | None) -> str:
    if not n:
        return text
    return "".join(text.splitlines(keepends=True)[-n:])


def _registered(text: str) -> list[int]:
    """Engine ids in the order an output file registered them."""
    return [int(m) for m in re.findall(r"registered as engine (\d+) via", text)]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _controller_engines(pd: Any, cluster_id: str) -> list[dict[str, Any]] | None:
    from .status import _engines

    reply, _why = _engines(pd, cluster_id, 5.0)
    return None if reply is None else list(reply.get("engines", []))


def _slots(cluster: Any, pd: Any) -> list[tuple[int, int, Any, Path | None]]:
    """(set, index, process, local log path or None) of every engine process the sets started."""
    out = []
    for i, launcher in enumerate(cluster.engine_sets):
        for j, p in enumerate(getattr(launcher, "processes", [])):
            if hasattr(launcher, "read_log"):
                out.append((i, getattr(p, "index", j), p, None))
            else:
                out.append((i, j, p, pd.log_file(f"engine-{i}-{j}", cluster.cluster_id)))
    return out


def _batch_outputs(cluster: Any, pd: Any) -> list[Path]:
    """Output files of this cluster's batch engine jobs (their names carry the job id)."""
    ids = [str(j).split(".")[0].split("[")[0] for s in cluster.engine_sets for j in getattr(s, "job_ids", []) or []]
    if not ids or not pd.log.is_dir():
        return []
    return sorted(p for p in pd.log.iterdir() if p.is_file() and any(i in p.name for i in ids))


def _find_engine(engine_id: int, cluster: Any, pd: Any) -> tuple[str, Any]:
    """("slot", (set, index, proc, log)) or ("file", path) for engine id N; CommandError if unknown."""
    from ..cli import CommandError

    slots = _slots(cluster, pd)
    engines = _controller_engines(pd, cluster.cluster_id)
    if engines is not None:
        info = next((e for e in engines if e.get("id") == engine_id), None)
        if info is None:
            have = ", ".join(str(e.get("id")) for e in sorted(engines, key=lambda e: e.get("id", 0))) or "none"
            raise CommandError(f"no engine id {engine_id} in this cluster (engine ids: {have}); "
                               "'hpcpar logs --list' shows them, --index N picks a launch slot instead")
        by_pid = [s for s in slots if getattr(s[2], "pid", None) == info.get("pid")]
        same_host = [s for s in by_pid if getattr(s[2], "host", None) in (None, info.get("hostname"))]
        if len(same_host or by_pid) >= 1:
            return "slot", (same_host or by_pid)[0]
    for slot in slots:  # the per-slot logs: the last registration in each is its current engine
        ids = _registered(_read(slot[3])) if slot[3] is not None else []
        if ids and ids[-1] == engine_id:
            return "slot", slot
    for path in _batch_outputs(cluster, pd):
        if engine_id in _registered(_read(path)):
            return "file", path
    if engines is None:
        raise CommandError(
            f"cannot tell which process is engine id {engine_id}: the controller is not reachable and no "
            "engine output names it; 'hpcpar logs --list' shows the launch slots, --index N shows slot N")
    raise CommandError(f"engine id {engine_id} is registered, but its output was not found in this "
                       "cluster's logs (it may have been started by hand)")


def run(args: argparse.Namespace) -> int:
    from ..cli import CommandError
    from ..cluster import Cluster
    from .which import resolve_cluster_id

    pd = profile_dir_from(args)
    cluster_id = resolve_cluster_id(pd, args.cluster_id, "logs")
    if args.controller:
        path = pd.log_file("controller", cluster_id)
        try:
            sys.stdout.write(_tail(path.read_text(errors="replace"), args.tail))
        except OSError as e:
            raise CommandError(f"no controller log {path} ({e.strerror})") from None
        return 0
    state = pd.state_file(cluster_id)
    if not state.exists():
        raise CommandError(f"no cluster in profile {pd.name!r} ('hpcpar list' shows running clusters)")
    cluster = Cluster.from_file(state)
    if not cluster.engine_sets:
        raise CommandError("this cluster has no engine sets")
    if args.list or (args.engine is None and args.index is None):
        _list(cluster, pd)
        return 0
    if args.engine is not None and args.index is not None:
        raise CommandError("give an engine id or --index, not both")
    try:
        if args.index is not None:
            if args.set >= len(cluster.engine_sets):
                raise CommandError(f"--set must be 0..{len(cluster.engine_sets) - 1}")
            match = [s for s in _slots(cluster, pd) if s[0] == args.set and s[1] == args.index]
            if not match:
                raise CommandError(f"no launch slot {args.index} in engine set {args.set} "
                                   "('hpcpar logs --list' shows them)")
            kind, where = "slot", match[0]
        else:
            kind, where = _find_engine(args.engine, cluster, pd)
        if kind == "file":
            sys.stdout.write(_tail(_read(where), args.tail))
        elif where[3] is None:  # a launcher that fetches logs itself (ssh)
            sys.stdout.write(cluster.engine_sets[where[0]].read_log(where[1], tail=args.tail))
        else:
            sys.stdout.write(_tail(where[3].read_text(errors="replace"), args.tail))
    except OSError as e:
        raise CommandError(f"cannot read the log: {e}") from None
    return 0


def _list(cluster: Any, pd: Any) -> None:
    engines = _controller_engines(pd, cluster.cluster_id) or []
    by_pid = {e.get("pid"): e.get("id") for e in engines}
    print(f"{'SET':>3} {'INDEX':>5} {'ENGINE ID':>9}  {'HOST':<24} {'PID':>8}  {'ALIVE':<5}  LOG")
    for i, launcher in enumerate(cluster.engine_sets):
        procs = getattr(launcher, "processes", [])
        alive_by_host = launcher.alive_by_host() if hasattr(launcher, "alive_by_host") else None
        for j, p in enumerate(procs):
            if alive_by_host is not None:
                index, host, log = p.index, p.host, p.log
                alive = p.pid in alive_by_host.get(p.host, [])
            else:
                index, host, alive = j, "localhost", p.alive()
                log = pd.log_file(f"engine-{i}-{j}", cluster.cluster_id)
            eid = by_pid.get(p.pid)
            if eid is None and alive_by_host is None:
                ids = _registered(_read(Path(log)))
                eid = ids[-1] if ids and alive else None
            print(f"{i:>3} {index:>5} {'-' if eid is None else eid:>9}  {host:<24} {p.pid:>8}  "
                  f"{str(alive).lower():<5}  {log}")
    for path in _batch_outputs(cluster, pd):
        ids = _registered(_read(path))
        print(f"  - batch job output {path}: engine ids {', '.join(map(str, ids)) or '-'}")
