"""Elastic engine pools: scale, adapt, walltime replacement and failure back-off for batch
engines, driven through the launchers' submit / poll / cancel (no scheduler code here).

Modules: state (the pool file), policy (decisions), backoff (failed jobs), blocks (the
launcher side), manager (the loop, its own process), control (scale / adapt / describe),
mixin (the Cluster methods).
"""

from .control import adapt, describe, ensure_manager, scale, stop_adapt, stop_manager
from .state import PoolState, read_pool

__all__ = ["PoolState", "adapt", "describe", "ensure_manager", "read_pool", "scale", "stop_adapt", "stop_manager"]
