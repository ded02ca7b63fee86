"""``posebh reproduce TABLE`` (one table of the paper, in one of three modes) and
``posebh reproduce ablations``; ``reproduce/<table>.py`` and ``reproduce/ablations.py`` are
the same commands under their script names."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from posebh.commands.bootstrap_flags import add_bootstrap_arguments
from posebh.reproduce import ablations
from posebh.reproduce.run import TableOptions, link_latest, run_id, run_table
from posebh.reproduce.tables import TABLE_NAMES, load_table

__all__ = ["add_parser"]

EXAMPLES = """\
modes:
  (no --data-root/--weights)  synthetic default: generate SynthPose, train tiny stand-ins of the
                              table's models on 2 CPU cores (cached), evaluate, print the table
                              with the published values beside numbers that are clearly
                              marked as synthetic.
  --data-root D --weights W   evaluate the release checkpoints in W (official file names, e.g.
                              posebh_base.pth) on the datasets under D (official data/ layout),
                              split per dataset automatically, each cell under its protocol;
                              prints published / measured / Δ with pass/fail per tolerance and
                              exits 1 when a cell fails.
  --data-root D --train       print (--dry-run) or launch the official training recipes with
                              torchrun, then evaluate the trained models like --weights.

examples:
  posebh reproduce table1
  posebh reproduce table3 --data-root data --weights weights --models posebh_b
  posebh reproduce table1 --data-root data --train --gpus 8 --dry-run
  posebh reproduce table1 --data-root data --weights weights --gpus 8 --device cuda
  posebh reproduce ablations            # components, M, compat (see its --help)
  posebh reproduce scale-root --out data_scale --weights weights_random   # COCO-size root
  posebh reproduce table1 --data-root data_scale --weights weights_random --max-instances 64
  nox -s reproduce_table1 -- --data-root data --weights weights
"""


def add_parser(sub: argparse._SubParsersAction, progs: Mapping[str, str]) -> None:
    """``reproduce`` with one sub-command per table and ``ablations``; ``progs`` renames a
    sub-command's usage line (``{"reproduce table1": "reproduce/table1.py"}``)."""
    rep = sub.add_parser(
        "reproduce",
        help="reproduce a table of the paper (synthetic default, or real data and weights)",
        description="Reproduce one table of the PoseBH paper/README: published values beside "
        "measured ones, written to results/<table>/<run-id>/ as JSON, Markdown and plots.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tables = rep.add_subparsers(dest="table", required=True, metavar="table")
    for name in TABLE_NAMES:
        p = tables.add_parser(
            name,
            prog=progs.get(f"reproduce {name}"),
            help=load_table(name).title,
            description=f"Reproduce {name} (posebh reproduce {name}): published values beside "
            f"measured ones, written to results/{name}/<run-id>/ as JSON, Markdown and plots.",
            epilog=EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_table_arguments(p)
        p.set_defaults(func=_cmd_table)
    abl = tables.add_parser(
        "ablations",
        prog=progs.get("reproduce ablations"),
        help="ablations: components, M, compat (no published cells)",
        description="PoseBH ablations: components, M, compat (synthetic default).",
        epilog=ablations.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_ablation_arguments(abl)
    abl.set_defaults(func=_cmd_ablations)
    scale = tables.add_parser(
        "scale-root",
        prog=progs.get("reproduce scale-root"),
        help="write a COCO-size data root (and random-weight release files) for real mode",
        description="Write the generated COCO-size data root in the official data/ layout "
        "(posebh.synth.scale_root: 5,000 val images, the 104,125-box detection file, GT, a "
        "150,000-person train file; AIC/MPII/AP-10K/APT-36K linked from SynthPose at mini "
        "size) and, with --weights, release files in the official format with seeded random "
        "weights (posebh.reproduce.random_weights). Both are cached.",
        epilog="then: posebh reproduce table1 --data-root OUT --weights W --max-instances N",
    )
    scale.add_argument("--out", type=Path, required=True, help="the data root to write")
    scale.add_argument("--size", choices=("full", "small"), default="full")
    scale.add_argument("--seed", type=int, default=0, help="seed of the data and the weights")
    scale.add_argument(
        "--weights", type=Path, default=None, help="also write random-weight releases here"
    )
    scale.add_argument(
        "--files",
        default=None,
        help="comma-separated release files for --weights (default: the base columns, "
        "vitpose+_base.pth,posebh_base.pth)",
    )
    scale.add_argument("--no-progress", action="store_true")
    scale.set_defaults(func=_cmd_scale_root)


def _add_table_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", type=Path, default=None, help="official data/ tree (real mode)")
    p.add_argument("--weights", type=Path, default=None, help="folder of release checkpoints")
    p.add_argument("--train", action="store_true", help="train with the official recipes first")
    p.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="--train: processes per node (torchrun, default 8); real mode (and after "
        "--train) on CUDA: evaluate each (model, dataset) with torchrun --nproc_per_node N "
        "(default 1: in-process)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the commands only (--train: the recipes; real mode with --gpus N > 1: "
        "the torchrun evaluations)",
    )
    p.add_argument("--models", default=None, help="comma-separated model ids (default: all)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default results/...)")
    p.add_argument("--cache-dir", type=Path, default=None, help="synthetic world + tiny runs")
    p.add_argument("--world", default="mini", help="SynthPose preset of the synthetic default")
    p.add_argument("--seed", type=int, default=0, help="seed of the world and the tiny runs")
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="synthetic default: compress every tiny run to N steps (a quick look)",
    )
    p.add_argument("--device", default=None, help="evaluation device (default: cpu / cuda)")
    p.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    p.add_argument(
        "--decode-backend", default="auto", help="heatmap decoding backend (auto, cpp, torch)"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the no-model floor column (train mean pose per row; reads the train "
        "annotations)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--max-instances",
        type=int,
        default=None,
        metavar="N",
        help="evaluate (and floor) only the first N instances of every row, in file order; "
        "the reports say so (a smoke run on real-size files, not a result)",
    )
    add_bootstrap_arguments(p, "every interval and paired Δ")


def _cmd_table(args: argparse.Namespace) -> int:
    options = TableOptions(
        data_root=args.data_root,
        weights=args.weights,
        train=args.train,
        gpus=args.gpus,
        dry_run=args.dry_run,
        models=tuple(m.strip() for m in args.models.split(",")) if args.models else None,
        out=args.out,
        cache_dir=args.cache_dir,
        world=args.world,
        seed=args.seed,
        train_steps=args.train_steps,
        device=args.device,
        batch_size=args.batch_size,
        decode_backend=args.decode_backend,
        plots=not args.no_plots,
        floor=not args.no_floor,
        progress=not args.no_progress,
        max_instances=args.max_instances,
        bootstrap=args.bootstrap,
        bootstrap_seed=args.bootstrap_seed,
    )
    outcome = run_table(args.table, options)
    failed = outcome.run.failed() if outcome.run is not None else []
    if failed:
        print(f"{len(failed)} cell(s) outside their tolerance", file=sys.stderr)
        return 1
    return 0


def _add_ablation_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--world", default="mini")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=200, help="PoseBH-stage steps per variant")
    p.add_argument(
        "--baseline-steps", type=int, default=None, help="multi-head baseline steps (full)"
    )
    p.add_argument("--only", default=None, help="comma-separated variant ids")
    p.add_argument("--no-cross-type", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    add_bootstrap_arguments(p, "the intervals and the paired Δ against the baseline")
    p.add_argument("--data-root", type=Path, default=None, help="--train: official data/")
    p.add_argument("--weights", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--train", action="store_true")
    p.add_argument("--init", type=Path, default=Path("weights/vitpose+_base.pth"))
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--dry-run", action="store_true")


def _cmd_ablations(args: argparse.Namespace) -> int:
    if args.weights is not None:
        raise ValueError(
            "no ablation checkpoints are released; use --data-root D --train (GPU cluster) "
            "or the synthetic default"
        )
    if args.train:
        if args.data_root is None:
            raise ValueError("--train needs --data-root")
        out = args.out or Path("results") / "ablations" / run_id("train")
        plan = ablations.train_plan(args.data_root, out, args.init, args.gpus)
        for cmd in plan:
            print("$ " + shlex.join(cmd))
        if not args.dry_run:
            for cmd in plan:
                subprocess.run(cmd, check=True)
        return 0
    out = args.out or Path("results") / "ablations" / run_id("synthetic")
    report = ablations.run_ablations(
        out,
        cache_dir=args.cache_dir,
        world_preset=args.world,
        seed=args.seed,
        steps=args.steps,
        baseline_steps=args.baseline_steps,
        only=[s.strip() for s in args.only.split(",")] if args.only else None,
        cross_type=not args.no_cross_type,
        progress=not args.no_progress,
        bootstrap=args.bootstrap,
        bootstrap_seed=args.bootstrap_seed,
    )
    link_latest(out)
    print(ablations.markdown(report))
    print(f"wrote {out}/results.md, results.json, ablations.png ({report['wall_time_s']} s)")
    return 0


def _cmd_scale_root(args: argparse.Namespace) -> int:
    from posebh.reproduce.random_weights import DEFAULT_FILES, write_random_releases
    from posebh.synth.scale_root import MANIFEST, write_scale_root

    manifest = write_scale_root(args.out, args.size, args.seed, progress=not args.no_progress)
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items())
    print(f"{args.out} ({args.size}, seed {args.seed}): {counts}; see {args.out / MANIFEST}")
    if args.weights is not None:
        files = [f.strip() for f in args.files.split(",")] if args.files else DEFAULT_FILES
        for name, path in write_random_releases(args.weights, files, args.seed).items():
            print(f"{path}: {name} with seeded random weights (official format)")
    return 0
