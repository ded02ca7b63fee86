"""nox sessions for posebh.

All sessions use ``venv_backend="none"``: they run in the environment where
``pip install -e ".[dev]"`` installed posebh.  A fresh virtualenv per session would
reinstall torch (~200 MB) every run, and on these machines only an exact CPU wheel
keeps pip from pulling a CUDA build.  Install once, then run ``nox``.

Default sessions (what CI runs): ``lint`` then ``tests``.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "none"


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff over the whole tree."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Unit, golden-parity and integration tests, plus benchmarks as a smoke test."""
    args = session.posargs or []
    session.run("python", "-m", "pytest", "tests", *args)
    session.run("python", "-m", "pytest", "benchmarks", "--benchmark-disable", "-q", *args)
