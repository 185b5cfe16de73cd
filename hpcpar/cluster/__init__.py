"""Clusters: a controller plus engine sets, started by launchers configured from the profile.

- ``api``: the :class:`Cluster` class users call (coroutines and their ``_sync`` twins);
- ``controller``: starting, restoring and stopping the controller;
- ``engines``: engine sets (and forwarders): start, wait for registration, signal, stop, restart;
- ``state``: what is persisted in ``<profile>/run/``, ``to_dict``/``from_dict``/``from_file``;
- ``manager``: :class:`ClusterManager`, clusters of several profiles by key;
- ``helpers``: the error class, cluster ids, job states, log tails.

Scaling (``Cluster.scale``/``adapt``) lives in :mod:`hpcpar.pool`, which drives the
engine sets through the methods of ``engines``.
"""

from .api import Cluster
from .helpers import FINAL_STATES, ClusterError
from .manager import ClusterManager
from .state import ClusterState, running_clusters

__all__ = ["FINAL_STATES", "Cluster", "ClusterError", "ClusterManager", "ClusterState", "running_clusters"]
