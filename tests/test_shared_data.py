"""The shared-data rule of the root ``conftest.py`` (tests/ and benchmarks/ alike): a missing
golden file or fixture folder skips on a developer machine and fails under ``CI=true``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("ci", "outcome"), [(None, "2 skipped"), ("true", "2 failed")])
def test_missing_shared_data_skips_here_and_fails_under_ci(
    tmp_path: Path, ci: str | None, outcome: str
) -> None:
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    shared = tmp_path / "shared"
    (shared / "data" / "golden").mkdir(parents=True)  # the folder exists, a file does not
    (tmp_path / "test_needs_shared.py").write_text(
        textwrap.dedent(
            """
            def test_golden_file(golden_dir, shared_file):
                shared_file(golden_dir / "suite" / "losses.pt")

            def test_shared_folder(shared_dir, shared_file):
                shared_file(shared_dir / "data" / "mmpose_testdata")
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["POSEBH_SHARED"] = str(shared)
    if ci:
        env["CI"] = ci
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = run.stdout + run.stderr
    assert outcome in text, text
    assert "losses.pt not found" in text and "set POSEBH_SHARED" in text
    assert run.returncode == (1 if ci else 0), text
