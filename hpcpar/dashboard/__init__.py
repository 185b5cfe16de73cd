"""A live web dashboard of a running cluster (``hpcpar dashboard``, ``Client.dashboard()``).

The page is served on 127.0.0.1 by a process that is an ordinary client of the
cluster, so it reaches the controller however that client does (directly, or
through the one SSH tunnel of ``Client(sshserver=...)``). The web server
(tornado) is the optional extra ``pip install hpcpar[dashboard]``: nothing in the
core imports this package, and this module itself imports no web code, so
``python -m hpcpar.dashboard.jobs`` runs on a login node without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["start_dashboard"]


def start_dashboard(client: Any = None, **kwargs: Any) -> Any:
    """Serve the dashboard of ``client``'s cluster from a background thread; returns a
    :class:`~hpcpar.dashboard.server.DashboardHandle` (a str: the URL)."""
    from .server import start_dashboard as _start

    return _start(client, **kwargs)
