"""Which cluster of a profile a command means, the same way for every command.

Without --cluster-id: the profile's cluster without an id if it has one, else its only
cluster (as ``Client()`` and ``hpcpar list`` find it); with several, the user is asked
to pick one, with the list. A cluster counts when it has a state file (started by
``hpcpar start``), a job ledger (batch jobs of a start that died early) or a client
connection file (a controller started by hand with ``hpcpar controller``).
"""

from __future__ import annotations

from typing import Any


def _suffix_id(name: str, prefix: str, suffix: str) -> str | None:
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    rest = name[len(prefix):-len(suffix)]
    if rest == "":
        return ""
    return rest[1:] if rest.startswith("-") else None


def cluster_ids(pd: Any) -> list[str]:
    """Ids of the clusters this profile has any trace of, in name order ("" = no id)."""
    found: dict[str, None] = {}
    places = ((pd.run, "cluster", ".json"), (pd.run, "jobs", ".json"), (pd.security, "hpcpar", "-client.json"))
    for directory, prefix, suffix in places:
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            cid = _suffix_id(path.name, prefix, suffix)
            if cid is not None:
                found[cid] = None
    return sorted(found)


def resolve_cluster_id(pd: Any, given: str | None, command: str) -> str:
    """The cluster id a command acts on; CommandError when the choice is ambiguous."""
    from ..cli import CommandError

    if given:
        return given
    ids = cluster_ids(pd)
    if "" in ids or not ids:
        return ""
    if len(ids) == 1:
        return ids[0]
    listed = ", ".join(ids)
    raise CommandError(
        f"profile {pd.name!r} has {len(ids)} clusters (cluster ids: {listed}); say which with "
        f"--cluster-id, e.g. 'hpcpar {command} --profile {pd.name} --cluster-id {ids[0]}'"
    )
