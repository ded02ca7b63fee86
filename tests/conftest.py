"""Shared test fixtures: where the golden vectors and real fixtures live.

``../shared`` sits beside the repository (on developer machines and in CI).  Set
``POSEBH_SHARED`` to point elsewhere.  Tests that need it skip when it is absent, except
under CI (``CI=true``), where a missing folder is an error: a green run must not hide it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("POSEBH_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not (path / "data").is_dir():
        msg = f"shared data folder not found at {path} (set POSEBH_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "golden"


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "mmpose_testdata"
