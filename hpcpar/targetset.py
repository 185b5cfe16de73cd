"""How a direct request names its targets and their msg_ids without growing with N.

A request for several engines is one signed message that every target receives and
parses. If its header listed every target's msg_id, each of N engines would parse O(N)
data: O(N^2) work and traffic per broadcast. Instead the header carries

- ``msg_id``: a base id, and each target's msg_id is derived from it (``task_id``), so an
  engine computes its own from the base and its engine id, in O(1);
- ``targets``: a compact target set (``compact``): an engine id, or a run
  ``[first, last]`` / ``[first, last, step]`` (inclusive), per item; ``[[0, 4999]]`` for
  5000 contiguous engines. Only the controller expands it (``expand``).

A derived msg_id is ``<base>-<engine id>``; users should treat it as an opaque string.
"""

from __future__ import annotations

from typing import Any

SEPARATOR = "-"  # not in a base id (uuid4 hex), so derived ids stay unique
MAX_TARGETS = 1 << 20  # a range larger than any cluster is a malformed request, not a huge allocation
_MIN_RUN = 3  # shorter runs are cheaper as plain ids


def task_id(base: str, engine_id: int) -> str:
    """The msg_id of ``engine_id``'s part of the direct request whose header msg_id is ``base``."""
    return f"{base}{SEPARATOR}{engine_id}"


def compact(ids: list[int]) -> list[Any]:
    """``ids`` in order, with each run of 3+ ids of one positive step as ``[first, last(, step)]``."""
    out: list[Any] = []
    i, n = 0, len(ids)
    while i < n:
        j = i + 1
        step = ids[j] - ids[i] if j < n else 0
        if step > 0:
            while j + 1 < n and ids[j + 1] - ids[j] == step:
                j += 1
        if step > 0 and j - i + 1 >= _MIN_RUN:
            out.append([ids[i], ids[j]] if step == 1 else [ids[i], ids[j], step])
            i = j + 1
        else:
            out.append(ids[i])
            i += 1
    return out


def _is_id(x: Any) -> bool:
    return type(x) is int and x >= 0


def expand(spec: Any) -> list[int]:
    """The engine ids a compact target set names, in order.

    Raises ValueError naming the problem for anything but ids and runs with no engine twice."""
    if not isinstance(spec, list) or not spec:
        raise ValueError("a direct request needs 'targets': a non-empty list of engine ids "
                         "and [first, last(, step)] runs")
    ids: list[int] = []
    for item in spec:
        if _is_id(item):
            ids.append(item)
        elif (isinstance(item, list) and len(item) in (2, 3) and all(_is_id(x) for x in item)
              and item[0] <= item[1] and (len(item) == 2 or item[2] > 0)):
            step = item[2] if len(item) == 3 else 1
            if (item[1] - item[0]) // step + 1 + len(ids) > MAX_TARGETS:
                raise ValueError(f"target run {item} names more than {MAX_TARGETS} engines")
            ids.extend(range(item[0], item[1] + 1, step))
        else:
            raise ValueError(f"bad item {item!r} in 'targets': give an engine id (int >= 0) "
                             "or a run [first, last] / [first, last, step] with first <= last, step > 0")
        if len(ids) > MAX_TARGETS:
            raise ValueError(f"'targets' names more than {MAX_TARGETS} engines")
    if len(set(ids)) != len(ids):
        seen: set[int] = set()
        twice = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(f"'targets' names engine {twice} twice; a direct request runs once per engine")
    return ids
