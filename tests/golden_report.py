"""Printing golden-comparison tables from test modules (kept out of conftest.py so that the
benchmarks' conftest cannot shadow it)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext

import pytest


def write_error_table(request: pytest.FixtureRequest, title: str, errors: Mapping) -> None:
    """Print a golden-comparison table (case → max |error|) to the terminal after a module's
    tests, without needing ``-s``: the errors reached are part of what the suite reports."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not errors:
        return

    def fmt(err: object) -> str:
        return f"{err:.3g}" if isinstance(err, float) else str(err)

    lines = ["", title] + [f"  {case:<44s} {fmt(err)}" for case, err in errors.items()]
    with capture.global_and_fixture_disabled() if capture is not None else nullcontext():
        for line in lines:
            reporter.write_line(line)
