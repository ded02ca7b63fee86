"""Repository-wide pytest hooks (tests/ and benchmarks/): a per-test watchdog.

A test that hangs (a dead lock file, a deadlocked worker) must fail CI with a traceback, not
run into the CI job's wall-clock limit with no clue. When one test runs longer than
``POSEBH_TEST_TIMEOUT`` seconds (default 900; 0 disables; the slowest test takes about 35 s on
the 2-core CI machine, plus about 30 s when it builds a C++ extension first), a timer thread
lifts pytest's output capture, prints the test's id and every thread's stack, and ends the run
with exit code 1. A ``faulthandler`` timer two minutes later is the backstop for a hang that
never releases the GIL (it exits too, but its stacks may land in the captured output).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
from collections.abc import Iterator

import pytest


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
