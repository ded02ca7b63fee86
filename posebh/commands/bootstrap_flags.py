"""``--bootstrap N`` and its seed flag, the same on every sub-command that reports intervals
(eval, compare, crosstype, reproduce <table>, reproduce ablations)."""

from __future__ import annotations

import argparse

from posebh.evaluation.bootstrap import DEFAULT_RESAMPLES

__all__ = ["add_bootstrap_arguments"]


def add_bootstrap_arguments(
    p: argparse.ArgumentParser, what: str, *, seed_flag: str = "--bootstrap-seed"
) -> None:
    """``--bootstrap N`` (image resamples behind ``what``; 0 turns them off) and the seed."""
    p.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_RESAMPLES,
        metavar="N",
        help=f"image resamples behind {what} (default {DEFAULT_RESAMPLES}; 0: off)",
    )
    p.add_argument(seed_flag, type=int, default=0, help="resampling seed (recorded)")
