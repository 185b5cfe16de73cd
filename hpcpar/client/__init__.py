"""The client side: Client, views and AsyncResult.

Names are imported on first use: engines import ``hpcpar`` (and, through
``hpcpar.require``, ``hpcpar.client.dependency``) and must not pay for the
client's machinery (zmq sockets, views) they never use.
"""

from __future__ import annotations

_LAZY = {
    "AsyncHubResult": "hubqueries",
    "AsyncMapResult": "asyncresult",
    "AsyncResult": "asyncresult",
    "Metadata": "asyncresult",
    "Client": "client",
    "ConnectionRejected": "channel",
    "View": "view",
    "DirectView": "directview",
    "BroadcastView": "broadcastview",
    "LoadBalancedView": "loadbalanced",
    "ViewExecutor": "executor",
}


def __getattr__(name: str):
    import importlib

    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcpar.client' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_LAZY)
