"""hpcpar: interactive parallel Python on HPC clusters.

The client API follows ipyparallel's, so ``import hpcpar as ipp`` runs code
written for ipyparallel.
"""

from . import error
from .client.dependency import Dependency, depend, dependent, require
from .error import (
    AlreadyDisplayedError,
    CompositeError,
    DependencyTimeout,
    EngineError,
    ImpossibleDependency,
    InvalidDependency,
    IPythonError,
    KernelError,
    NoEnginesRegistered,
    RemoteError,
    TaskAborted,
    TaskRejectError,
    TaskTimeout,
    TimeoutError,
    UnmetDependency,
    collect_exceptions,
)
from .mpi import MPISubsetWarning

__version__ = "0.1.0"
version_info = (0, 1, 0)

# Values of AsyncResult.wait / get(return_when=...), the same strings as concurrent.futures'
# (defined here so that engines, which import this package, need not import it).
FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"
ALL_COMPLETED = "ALL_COMPLETED"


# Imported on first use: engines import this package and must start fast,
# without the client side (or the launchers) they never use.
_LAZY = {
    "AsyncHubResult": "client",
    "AsyncMapResult": "client",
    "AsyncResult": "client",
    "Client": "client",
    "BroadcastView": "client",
    "DirectView": "client",
    "LoadBalancedView": "client",
    "ViewExecutor": "client",
    "Cluster": "cluster",
    "Reference": "client.reference",
    "View": "client",
    "RemoteFunction": "client.remotefunction",
    "ParallelFunction": "client.remotefunction",
    "remote": "client.remotefunction",
    "parallel": "client.remotefunction",
    "bind_kernel": "engine.kernel",
    "ClusterManager": "cluster",
    # ipyparallel's serialization names (``from ipyparallel import PrePickled``...)
    "PrePickled": "serialize",
    "serialize_object": "serialize",
    "deserialize_object": "serialize",
    "use_pickle": "client.client",
    "use_cloudpickle": "client.client",
    "use_dill": "client.client",
    "register_joblib_backend": "bridges.joblib_backend",
}


def __getattr__(name: str):
    import importlib

    module = _LAZY.get(name)
    if module is None:
        try:  # a submodule, e.g. hpcpar.client before anything imported it
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError:
            raise AttributeError(f"module 'hpcpar' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def load_ipython_extension(ip) -> None:
    """``%load_ext hpcpar``: the %px, %%px, %autopx, %pxresult and %pxconfig magics.
    (IPython is imported here, not when hpcpar is imported: engines import hpcpar.)"""
    from .client.magics import load_ipython_extension as load

    load(ip)


def interactive(f):
    """Mark a function as defined interactively: on an engine it sees the engine's namespace."""
    f.__module__ = "__main__"
    return f


__all__ = [
    "ALL_COMPLETED",
    "AlreadyDisplayedError",
    "DependencyTimeout",
    "IPythonError",
    "InvalidDependency",
    "KernelError",
    "PrePickled",
    "TaskRejectError",
    "TimeoutError",
    "collect_exceptions",
    "deserialize_object",
    "register_joblib_backend",
    "serialize_object",
    "use_cloudpickle",
    "use_dill",
    "use_pickle",
    "version_info",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "AsyncHubResult",
    "AsyncMapResult",
    "AsyncResult",
    "BroadcastView",
    "Client",
    "Cluster",
    "ClusterManager",
    "CompositeError",
    "Dependency",
    "DirectView",
    "EngineError",
    "ImpossibleDependency",
    "LoadBalancedView",
    "MPISubsetWarning",
    "NoEnginesRegistered",
    "ParallelFunction",
    "Reference",
    "RemoteFunction",
    "RemoteError",
    "TaskAborted",
    "TaskTimeout",
    "UnmetDependency",
    "View",
    "ViewExecutor",
    "bind_kernel",
    "depend",
    "dependent",
    "error",
    "interactive",
    "parallel",
    "remote",
    "require",
]
