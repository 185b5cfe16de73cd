"""Load-balancing schemes: which engine gets the next task.

Each scheme picks among engines that still have room under the high-water
mark (``hwm`` tasks in flight per engine; 0 means unlimited). A low hwm
balances well when task lengths vary; a high one hides the round-trip
latency of short tasks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from .engines import EngineRecord

Scheme = Callable[[Sequence[EngineRecord]], EngineRecord]


def leastload(engines: Sequence[EngineRecord]) -> EngineRecord:
    # Fewest tasks in flight; ties go to the engine that was given work longest ago.
    return min(engines, key=lambda e: (e.lb_in_flight, e.last_assigned))


def lru(engines: Sequence[EngineRecord]) -> EngineRecord:
    return min(engines, key=lambda e: e.last_assigned)


def plainrandom(engines: Sequence[EngineRecord]) -> EngineRecord:
    return random.choice(engines)


def twobin(engines: Sequence[EngineRecord]) -> EngineRecord:
    # Two random picks; keep the one that was given work longer ago.
    if len(engines) < 2:
        return engines[0]
    a, b = random.sample(list(engines), 2)
    return a if a.last_assigned <= b.last_assigned else b


def weighted(engines: Sequence[EngineRecord]) -> EngineRecord:
    # Two random picks weighted by inverse load; keep the less loaded one.
    if len(engines) < 2:
        return engines[0]
    weights = [1.0 / (1 + e.lb_in_flight) for e in engines]
    a, b = random.choices(list(engines), weights=weights, k=2)
    return a if a.lb_in_flight <= b.lb_in_flight else b


SCHEMES: dict[str, Scheme] = {
    "leastload": leastload,
    "lru": lru,
    "plainrandom": plainrandom,
    "twobin": twobin,
    "weighted": weighted,
}


def get_scheme(name: str) -> Scheme:
    try:
        return SCHEMES[name]
    except KeyError:
        raise ValueError(
            f"unknown scheduling scheme {name!r}; choose one of {', '.join(SCHEMES)}"
        ) from None
