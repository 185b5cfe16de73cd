"""Clusters: a controller plus engine sets, started by launchers configured from the profile.

- ``api``: the :class:`Cluster` class users call (start, connect, stop, context managers);
- ``controller``: starting, restoring and stopping the controller;
- ``engines``: engine sets (and forwarders): start, wait for registration, add, stop;
- ``state``: what is persisted in ``<profile>/run/`` and rebuilding a Cluster from it;
- ``helpers``: the error class, job states, log tails.
"""

from .api import Cluster
from .helpers import FINAL_STATES, ClusterError
from .state import ClusterState, running_clusters

__all__ = ["FINAL_STATES", "Cluster", "ClusterError", "ClusterState", "running_clusters"]
