"""Shared fixtures: real local clusters in a private HPCPAR_DIR.

Every cluster here is real: a controller process and engine processes on
loopback, started the way users start them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cluster_helpers import start_cluster

IN_CI = os.environ.get("CI") == "true"


def _missing_import(report) -> bool:
    """A skip from pytest.importorskip: a package the test extra installs is missing."""
    return report.skipped and "could not import" in str(report.longrepr)


@pytest.hookimpl(tryfirst=True)
def pytest_collectreport(report):
    # In CI a missing package must fail the run, as a missing real system does (tests/systems.py).
    if IN_CI and _missing_import(report):
        report.outcome = "failed"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and _missing_import(report) and not hasattr(report, "wasxfail"):
        report.outcome = "failed"


@pytest.fixture(scope="session", autouse=True)
def hpcpar_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hpcpar-home")
    old = os.environ.get("HPCPAR_DIR")
    os.environ["HPCPAR_DIR"] = str(path)
    # Engines unpickle functions defined in test modules by reference, as they
    # would a user's own module: they must be able to import them.
    tests_dir = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))
    yield path
    if old is None:
        os.environ.pop("HPCPAR_DIR", None)
    else:
        os.environ["HPCPAR_DIR"] = old


@pytest.fixture(scope="session")
def cluster():
    """Four engines shared by the API tests; tests must not kill them."""
    c, rc = start_cluster(4, "shared")
    yield c
    c.stop_cluster_sync()


@pytest.fixture()
def rc(cluster):
    """A fresh client on the shared cluster, with clean engine namespaces."""
    import hpcpar

    client = hpcpar.Client(profile="shared", timeout=30)
    client.wait_for_engines(4, timeout=30, interactive=False)
    client.clear(block=True)
    yield client
    client.close()


@pytest.fixture()
def private_cluster(request):
    """A cluster of its own, for tests that kill engines or stop the controller."""
    n = getattr(request, "param", 2)
    c, client = start_cluster(n, f"private-{os.getpid()}-{request.node.name[:40]}".replace("[", "-").replace("]", ""))
    yield c, client
    c.stop_cluster_sync()
