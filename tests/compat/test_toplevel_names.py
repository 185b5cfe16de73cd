"""ipyparallel's top-level namespace: the public names its users import from ``ipyparallel``."""

from __future__ import annotations

import sys

import cloudpickle
import pytest

import hpcpar as ipp

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # engines cannot import this module

# Names ipyparallel 9.2 exports at top level (its views, results, decorators, errors, serialization).
IPYPARALLEL_NAMES = [
    "Client", "Cluster", "ClusterManager", "DirectView", "LoadBalancedView", "BroadcastView", "ViewExecutor",
    "AsyncResult", "AsyncMapResult", "AsyncHubResult", "RemoteFunction", "ParallelFunction", "remote",
    "parallel", "require", "depend", "dependent", "Dependency", "interactive", "bind_kernel",
    "register_joblib_backend", "Reference", "PrePickled", "use_pickle", "use_cloudpickle", "use_dill",
    "serialize_object", "deserialize_object", "IPythonError", "KernelError", "EngineError",
    "NoEnginesRegistered", "TaskAborted", "TaskTimeout", "TimeoutError", "UnmetDependency",
    "ImpossibleDependency", "DependencyTimeout", "InvalidDependency", "RemoteError", "CompositeError",
    "AlreadyDisplayedError", "TaskRejectError", "collect_exceptions", "__version__", "version_info",
]


@pytest.mark.parametrize("name", IPYPARALLEL_NAMES)
def test_name_is_importable_from_the_top_level(name):
    assert getattr(ipp, name) is not None
    exec(f"from hpcpar import {name}", {})


def test_error_hierarchy_as_ipyparallel_users_catch_it():
    assert ipp.TimeoutError is TimeoutError
    assert issubclass(ipp.DependencyTimeout, ipp.ImpossibleDependency)
    assert issubclass(ipp.InvalidDependency, ipp.ImpossibleDependency)
    assert issubclass(ipp.AlreadyDisplayedError, ipp.RemoteError)
    assert issubclass(ipp.RemoteError, ipp.KernelError) and issubclass(ipp.KernelError, ipp.IPythonError)


class Counted:
    """Counts how often it is pickled (here, in the client)."""

    pickled = 0

    def __init__(self, value):
        self.value = value

    def __reduce__(self):
        Counted.pickled += 1
        return (Counted, (self.value,))


def test_prepickled_argument_is_pickled_once_and_arrives_as_the_object(rc):
    Counted.pickled = 0
    pre = ipp.PrePickled({"obj": Counted(b"x" * 100_000), "f": lambda v: v + 1})
    assert Counted.pickled == 1
    assert rc[:].apply_sync(lambda p: len(p["obj"].value), pre) == [100_000] * len(rc.ids)
    assert rc.load_balanced_view().map_sync(lambda p, i: p["f"](i), [pre] * 3, range(3)) == [1, 2, 3]
    assert Counted.pickled == 1  # not pickled again for any of the engines or tasks
    rc[:].apply_sync(lambda c: c.value[:1], Counted(b"y"))
    assert Counted.pickled == 2  # (what an argument that is not PrePickled costs each time)


def test_serialize_object_round_trip():
    import numpy as np

    arr = np.arange(10_000.0)
    frames = ipp.serialize_object({"a": arr, "f": lambda: 7})
    back, rest = ipp.deserialize_object(frames)
    assert rest == [] and back["f"]() == 7 and (back["a"] == arr).all()


def test_module_level_use_dill_and_use_pickle_switch_every_client(rc):
    import dill  # noqa: F401 - in the test extra

    try:
        ipp.use_dill()
        assert rc._pickler == "dill"
        offset = 3
        assert rc[0].apply_sync(ipp.interactive(lambda x: x + offset), 1) == 4
    finally:
        ipp.use_pickle()
    assert rc._pickler == "cloudpickle"
    scale = 2
    assert rc[0].apply_sync(lambda x: x * scale, 5) == 10  # lambdas and closures still reach the engines


def test_module_level_register_joblib_backend_runs_on_the_engines(cluster):
    import joblib

    from hpcpar.bridges import joblib_backend

    # The backend's client is Client() (the default profile); the shared test cluster has its own.
    joblib_backend._default[:] = [ipp.Client(profile="shared", timeout=30)]
    ipp.register_joblib_backend("hpcpar-toplevel")
    try:
        with joblib.parallel_backend("hpcpar-toplevel"):
            out = joblib.Parallel(n_jobs=-1)(joblib.delayed(engine_pid)(i) for i in range(8))
        assert [x for x, _ in out] == list(range(8))
        assert {pid for _, pid in out} <= set(joblib_backend._default[0][:].apply_sync(__import__("os").getpid))
    finally:
        for client in joblib_backend._default:
            client.close()
        joblib_backend._default.clear()


def engine_pid(x):
    import os

    return x, os.getpid()
