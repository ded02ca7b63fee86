"""``posebh compare A B``: paired bootstrap comparison of two result sets on one ground truth
(:mod:`posebh.compare`); writes ``DIR/compare.json`` and ``DIR/compare.md``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from posebh.commands.bootstrap_flags import add_bootstrap_arguments
from posebh.compare import CompareInputs, compare, compare_markdown

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="paired bootstrap comparison of two result files on the same ground truth",
        description="Score A and B on one ground truth, resample the evaluation images with "
        "the same resamples for both, and report per metric a, b, Δ = b − a, the 95 %% "
        "interval of Δ and a two-sided bootstrap p-value.",
        epilog="example: posebh compare vitpose/predictions.json posebh/predictions.json "
        "--dataset coco --ann-file data/coco/annotations/person_keypoints_val2017.json "
        "--out results/compare",
    )
    p.add_argument("a", type=Path, help="results JSON (or a posebh eval --out folder)")
    p.add_argument("b", type=Path, help="results JSON (or folder) compared with A: Δ = B − A")
    p.add_argument("--dataset", required=True, help="coco, aic, mpii, ap10k, apt36k, …")
    p.add_argument("--ann-file", type=Path, required=True, help="the ground-truth annotations")
    p.add_argument("--gt-file", type=Path, default=None, help="MPII: mpii_gt_val.mat")
    add_bootstrap_arguments(p, "the intervals and p-values (≥ 1 here)", seed_flag="--seed")
    p.add_argument("--out", type=Path, default=Path("results") / "compare")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    if args.bootstrap < 1:
        raise ValueError(f"--bootstrap must be ≥ 1 for a comparison, got {args.bootstrap}")
    inputs = CompareInputs(args.dataset, args.ann_file, args.gt_file)
    result = compare(
        args.a, args.b, inputs, num_resamples=args.bootstrap, seed=args.seed,
        progress=not args.no_progress,
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(result, indent=2))
    text = compare_markdown(result)
    (args.out / "compare.md").write_text(f"# posebh compare\n\n{text}\n")
    print(text)
    print(f"\nwrote {args.out / 'compare.json'}, {args.out / 'compare.md'}")
    return 0
