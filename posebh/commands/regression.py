"""``posebh regression``: recompute the committed metric baselines and fail on a regression
(``nox -s regression`` runs it; :mod:`posebh.reproduce.regression` explains the sections)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from posebh.reproduce.regression import SECTIONS, check

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "regression",
        help="recompute the committed metric baselines (reproduce/baselines/) and fail on "
        "any regression",
        description="Recompute the committed metric baselines and fail on any regression.",
        epilog="example: posebh regression --sections protocol; "
        "nox -s regression -- --refresh (deliberately, then commit the files)",
    )
    p.add_argument("--sections", default=",".join(SECTIONS), help="protocol,training")
    p.add_argument("--refresh", action="store_true", help="rewrite the baselines (deliberate)")
    p.add_argument("--baselines", type=Path, default=None, help="baseline folder")
    p.add_argument("--cache-dir", type=Path, default=None, help="world + tiny runs cache")
    p.add_argument("--out", type=Path, default=Path("results") / "regression")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=_cmd_regression)


def _cmd_regression(args: argparse.Namespace) -> int:
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    ok, report = check(
        sections,
        baseline_dir=args.baselines,
        cache_dir=args.cache_dir,
        out_dir=args.out,
        refresh=args.refresh,
        progress=args.progress,
    )
    print(report)
    if not ok:
        print(
            "\nmetric regression: if the change is intended, refresh deliberately with "
            "`nox -s regression -- --refresh` and commit reproduce/baselines/ with a reason.",
            file=sys.stderr,
        )
    return 0 if ok else 1
