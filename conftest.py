"""Repository-wide pytest hooks and fixtures (tests/ and benchmarks/): a per-test watchdog, and
where the shared golden vectors and real fixtures live.

A test that hangs (a dead lock file, a deadlocked worker) must fail CI with a traceback, not
run into the CI job's wall-clock limit with no clue. When one test runs longer than
``POSEBH_TEST_TIMEOUT`` seconds (default 900; 0 disables; the slowest test takes about 35 s on
the 2-core CI machine, plus about 30 s when it builds a C++ extension first), a timer thread
lifts pytest's output capture, prints the test's id and every thread's stack, and ends the run
with exit code 1. A ``faulthandler`` timer two minutes later is the backstop for a hang that
never releases the GIL (it exits too, but its stacks may land in the captured output).

Shared data: ``../shared`` beside the repository (developer machines and CI), or
``POSEBH_SHARED``.  A test or benchmark that needs a folder or file of it skips when it is
absent, except under CI (``CI=true``), where that is an error: a green run must not hide it.
Every such check goes through :func:`require_shared` (the ``shared_dir``, ``golden_dir``,
``fixtures_dir`` and ``shared_file`` fixtures).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent


def shared_root() -> Path:
    env = os.environ.get("POSEBH_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def require_shared(path: Path) -> Path:
    """``path`` (a folder or file of the shared data) if it exists; else skip the test, or
    fail it under CI."""
    if not path.exists():
        msg = f"shared data {path} not found (set POSEBH_SHARED to the shared folder)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    require_shared(root / "data")
    return root


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "golden"


@pytest.fixture(scope="session")
def fixtures_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "mmpose_testdata"


@pytest.fixture(scope="session")
def shared_file() -> Callable[[Path], Path]:
    """``shared_file(path)``: :func:`require_shared` for one file a test needs."""
    return require_shared


def _timeout() -> float:
    return float(os.environ.get("POSEBH_TEST_TIMEOUT", "900"))


def _expire(item: pytest.Item, seconds: float) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend(in_=True)  # back to the real terminal
    sys.stderr.write(
        f"\n\nposebh test watchdog: {item.nodeid} ran longer than {seconds:.0f} s "
        "(POSEBH_TEST_TIMEOUT); stacks of every thread follow, then the run ends.\n"
    )
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()
    os._exit(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    seconds = _timeout()
    timer = None
    if seconds > 0:
        timer = threading.Timer(seconds, _expire, args=(item, seconds))
        timer.daemon = True
        timer.start()
        faulthandler.dump_traceback_later(seconds + 120, exit=True)
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
            faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def compile_check_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, Path]:
    """The whole GPU compile check (``posebh.ops.compile_check`` for sm_80 and sm_90), run once
    per session: its records and the same records as a JSON file (the self-check reads it)."""
    import dataclasses
    import json

    pytest.importorskip("triton")
    from posebh.ops import compile_check

    lines: list[str] = []
    records = compile_check.run_compile_check(progress=lines.append)
    sys.stderr.write("\n".join(lines[-3:]) + "\n" + compile_check.summary(records) + "\n")
    path = tmp_path_factory.mktemp("compile_check") / "records.json"
    path.write_text(json.dumps([dataclasses.asdict(r) for r in records]))
    return records, path
