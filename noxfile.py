"""nox sessions for posebh.

All sessions use ``venv_backend="none"``: they run in the environment where
``pip install -e ".[dev]"`` installed posebh.  A fresh virtualenv per session would
reinstall torch (~200 MB) every run, and on these machines only an exact CPU wheel
keeps pip from pulling a CUDA build.  Install once, then run ``nox``.

Default sessions (what CI runs): ``lint``, ``tests``, then ``regression``.
``nox -s gpu`` runs the GPU self-check (``python -m posebh.selfcheck``, see DEVELOPERS.md).
``nox -s bench`` (not a default: it times for minutes) runs ``posebh bench`` and writes
``results/bench/<UTC time>/`` with ``bench.json``, ``bench.md`` and ``bench.png``; arguments
after ``--`` go to ``posebh bench``, e.g. ``nox -s bench -- -k decode``.

Reproduction (tag ``reproduce``, ``nox -t reproduce`` runs them all): ``reproduce_table1`` …
``reproduce_table5`` and ``reproduce_ablations`` run ``reproduce/<name>.py``; with no
arguments on the synthetic default, with ``-- --data-root data --weights weights`` on the
release checkpoints.  ``regression`` (a default session) recomputes the committed metric
baselines ``reproduce/baselines/*.json`` and fails on any metric outside its tolerance;
``nox -s regression -- --refresh`` rewrites them deliberately.
"""

from __future__ import annotations

import nox

TABLES = ("table1", "table2", "table3", "table4", "table5")

nox.options.sessions = ["lint", "tests", "regression"]
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


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Timed benchmarks: JSON, Markdown table and speed-up plot (see ``posebh bench --help``)."""
    session.run("python", "-m", "posebh.cli", "bench", *session.posargs)


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """The GPU self-check (DEVELOPERS.md): ``nox -s gpu -- --out DIR`` (default
    ``results/selfcheck``); without a GPU it runs the kernel compile check only."""
    args = session.posargs or ["--out", "results/selfcheck"]
    session.run("python", "-m", "posebh.selfcheck", "--device", "cuda", *args)


@nox.session(venv_backend="none")
def regression(session: nox.Session) -> None:
    """Recompute the committed metric baselines (reproduce/baselines/); fail on any drift.

    ``nox -s regression -- --refresh`` rewrites them (deliberately; commit with a reason).
    """
    session.run("python", "-m", "posebh.cli", "regression", *session.posargs)


def _reproduce(name: str) -> None:
    @nox.session(name=f"reproduce_{name}", venv_backend="none", tags=["reproduce"])
    def session(session: nox.Session) -> None:
        session.run("python", f"reproduce/{name}.py", *session.posargs)

    session.__doc__ = f"{name}: synthetic default, or -- --data-root D --weights W (real)."


for _name in (*TABLES, "ablations"):
    _reproduce(_name)
