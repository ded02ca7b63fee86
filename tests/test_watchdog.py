"""The repository's per-test watchdog (``conftest.py`` at the root) ends a hanging run with the
test's id and its stack instead of letting CI run into its wall-clock limit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_hanging_test_ends_the_run_with_its_id_and_stack(tmp_path: Path) -> None:
    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sleepy.py").write_text(
        textwrap.dedent(
            """
            import time

            def test_quick():
                pass

            def test_sleeps_forever():
                time.sleep(600)
            """
        )
    )
    env = {**os.environ, "POSEBH_TEST_TIMEOUT": "2"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_sleepy.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "test_sleepy.py::test_sleeps_forever ran longer than 2 s" in run.stderr
    assert 'test_sleepy.py", line 8 in test_sleeps_forever' in run.stderr
    assert "test_quick" not in run.stderr  # a finished test's timer was cancelled
