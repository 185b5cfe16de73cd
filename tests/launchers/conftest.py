"""Fixtures for launcher and config tests: an isolated hpcpar directory and site config."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
FAKES = TESTS / "fakes"
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))  # for `from systems import require_system`
import systems  # noqa: E402,F401  (captures CI_ENV before the fixture below clears HPCPAR_*)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Own $HPCPAR_DIR, an empty site config, and no stray HPCPAR_* settings."""
    for name in list(os.environ):
        if name.startswith("HPCPAR_"):
            monkeypatch.delenv(name)
    home = tmp_path / "hpcpar-home"
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setenv("HPCPAR_DIR", str(home))
    monkeypatch.setenv("HPCPAR_SITE_CONFIG", str(site))
    return tmp_path


@pytest.fixture
def site_dir(isolated: Path) -> Path:
    return isolated / "site"


@pytest.fixture
def fake_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Put the LSF and WinHPC test doubles first on PATH, with their state in tmp_path."""
    state = tmp_path / "fake-state"
    state.mkdir()
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HPCPAR_FAKE_STATE", str(state))
    monkeypatch.setenv("HPCPAR_FAKE_PYTHON", sys.executable)
    return state
