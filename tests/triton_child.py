"""Run a test module's ``interp`` tests in a child pytest with the Triton interpreter on.

``TRITON_INTERPRET=1`` must be set before Triton kernels are defined, so a module's
``test_interp_*`` tests run in a child process (``POSEBH_TRITON_CHILD=1`` marks it) started by
one parent test; see tests/test_ops_similarity.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_interpreter_tests(test_file: str, timeout: float) -> None:
    """Run ``test_file -k interp`` under the interpreter; fail with the child's output."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "POSEBH_TRITON_CHILD": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", test_file, "-k", "interp", "-q", "-p", "no:cacheprovider"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and " failed" not in run.stdout, run.stdout[-3000:]
