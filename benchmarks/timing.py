"""Timing helper shared by the benchmark modules (imported as ``timing``: pytest puts this
folder on ``sys.path``, as for ``mmpose0x_reference``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def min_ms(fn: Callable[[], Any], rounds: int) -> float:
    """The fastest of ``rounds`` calls of ``fn``, in milliseconds (a reference timed inside
    another benchmark's test, so both numbers come from the same run)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3
