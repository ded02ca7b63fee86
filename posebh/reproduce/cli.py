"""``posebh reproduce TABLE``: one table of the paper, in one of three modes.

    posebh reproduce table1                                   # synthetic default (minutes)
    posebh reproduce table1 --data-root data --weights weights      # the release checkpoints
    posebh reproduce table1 --data-root data --train --gpus 8       # official recipes, then eval

The same entry point backs ``reproduce/table<N>.py`` and ``nox -s reproduce_table<N>``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posebh.reproduce.tables import TABLE_NAMES, Table, load_table

__all__ = ["add_arguments", "build_parser", "main", "run"]

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
  posebh reproduce ablations            # components, M, compat (see its --help)
  nox -s reproduce_table1 -- --data-root data --weights weights
"""

# Recipes of --train: release file → (training preset, the release file it starts from).
TRAIN_RECIPES: dict[str, tuple[str, str | None]] = {
    "vitpose+_base.pth": ("vitpose_plus_vit_base", None),
    "posebh_base.pth": ("posebh_vit_base", "vitpose+_base.pth"),
    "posebh_huge.pth": ("posebh_vit_huge", "vitpose+_huge.pth"),
    "posebh_base_interhand2d.pth": ("posebh_interhand2d", "posebh_base.pth"),
    "posebh_base_pw3d.pth": ("posebh_pw3d", "posebh_base.pth"),
}


def add_arguments(p: argparse.ArgumentParser, *, with_table: bool = True) -> None:
    if with_table:
        p.add_argument("table", choices=TABLE_NAMES, help="which table (or: ablations)")
    p.add_argument("--data-root", type=Path, default=None, help="official data/ tree (real mode)")
    p.add_argument("--weights", type=Path, default=None, help="folder of release checkpoints")
    p.add_argument("--train", action="store_true", help="train with the official recipes first")
    p.add_argument("--gpus", type=int, default=8, help="--train: processes per node (torchrun)")
    p.add_argument("--dry-run", action="store_true", help="--train: print the commands only")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="posebh reproduce",
        description="Reproduce one table of the PoseBH paper/README (see the modes below).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return p


def _run_id(mode: str) -> str:
    return f"{mode}-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


def link_latest(out: Path) -> None:
    """Point ``<out>/../latest`` at the run folder ``out`` (best effort)."""
    latest = out.parent / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out.name)
    except OSError:  # filesystems without symlinks: the run folder is still complete
        pass


def _train_plan(table: Table, args: argparse.Namespace, work: Path) -> list[list[str]]:
    files = [m.checkpoint for m in table.models if not args.models or m.id in args.models]
    plan: list[list[str]] = []
    done: set[str] = set()

    def add(fname: str) -> None:
        if fname in done:
            return
        if fname not in TRAIN_RECIPES:
            done.add(fname)
            print(
                f"# no training recipe in posebh for {fname} (its numbers come from another "
                "codebase); put the file in the weights folder of a --weights run instead"
            )
            return
        preset, init = TRAIN_RECIPES[fname]
        if init:
            add(init)
        cmd = [
            "torchrun", f"--nproc_per_node={args.gpus}", "-m", "posebh.train",
            "--preset", preset, "--data-root", str(args.data_root),
            "--work-dir", str(work / Path(fname).stem),
        ]  # fmt: skip
        if init:
            cmd += ["--init", str(work / Path(init).stem / "model.pth")]
        plan.append(cmd)
        done.add(fname)

    for f in files:
        add(f)
    return plan


def run(args: argparse.Namespace, table_name: str | None = None) -> int:
    """Run the parsed arguments; returns the exit status (1 when a real cell fails)."""
    from posebh.reproduce.harness import (
        RunContext,
        evaluate_table,
        floor_summary,
        headline,
        wide_table,
        write_run,
    )

    start = time.perf_counter()
    table = load_table(table_name or args.table)
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    if models:
        unknown = [m for m in models if m not in {c.id for c in table.models}]
        if unknown:
            raise ValueError(f"--models {unknown}: not columns of {table.name}")
    progress = not args.no_progress
    extra: dict[str, Any] = {"command": shlex.join(sys.argv), "seed": args.seed}
    if args.train:
        if args.data_root is None:
            raise ValueError("--train needs --data-root (the official data/ tree)")
        mode = "train"
        out = args.out or Path("results") / table.name / _run_id(mode)
        work = out / "work"
        plan = _train_plan(table, argparse.Namespace(**{**vars(args), "models": models}), work)
        for cmd in plan:
            print("$ " + shlex.join(cmd))
        if args.dry_run:
            return 0
        for cmd in plan:
            subprocess.run(cmd, check=True)
        weights = out / "weights"
        weights.mkdir(parents=True, exist_ok=True)
        for cmd in plan:
            run_dir = Path(cmd[cmd.index("--work-dir") + 1])
            (weights / f"{run_dir.name}.pth").write_bytes((run_dir / "model.pth").read_bytes())
        context = RunContext(
            data_root=args.data_root, weights=weights, mode="train",
            measured_label=f"models trained here with the official recipes ({args.gpus} GPUs)",
        )  # fmt: skip
        extra["training"] = [shlex.join(c) for c in plan]
    elif args.data_root is not None or args.weights is not None:
        if args.data_root is None or args.weights is None:
            raise ValueError("real mode needs both --data-root and --weights")
        mode = "real"
        out = args.out or Path("results") / table.name / _run_id(mode)
        context = RunContext(
            data_root=args.data_root, weights=args.weights, mode="real",
            measured_label=f"release checkpoints from {args.weights} on {args.data_root}",
        )  # fmt: skip
    else:
        from posebh.reproduce.synthetic import prepare

        mode = "synthetic"
        steps = f", every run compressed to {args.train_steps} steps" if args.train_steps else ""
        out = args.out or Path("results") / table.name / _run_id(mode)
        setup = prepare(
            {m.id: m.checkpoint for m in table.models if not models or m.id in models},
            out,
            cache_dir=args.cache_dir,
            world_preset=args.world,
            seed=args.seed,
            train_steps=args.train_steps,
            progress=progress,
        )
        context = RunContext(
            data_root=setup.data_root, weights=setup.weights, mode="synthetic",
            measured_label=f"tiny stand-in models trained on SynthPose '{args.world}' "
            f"(seed {args.seed}{steps}) and evaluated on its {table.name} splits",
            absent=setup.absent, specs=_synthetic_specs(table, setup.data_root, out),
        )  # fmt: skip
        extra["synthetic"] = {"world": setup.world, "runs": setup.runs}
    context = _with_eval_options(context, args, progress)
    run_ = evaluate_table(table, context, out, models=models)
    extra["wall_time_s"] = round(time.perf_counter() - start, 1)
    files = write_run(run_, out, extra=extra, plots=not args.no_plots)
    link_latest(out)
    print()
    print("\n".join(headline(run_)))
    print(wide_table(run_))
    for line in floor_summary(run_):
        print(line)
    print(f"\nwrote {files['markdown']} and {files['json']} (wall time {extra['wall_time_s']} s)")
    failed = run_.failed()
    if failed:
        print(f"{len(failed)} cell(s) outside their tolerance", file=sys.stderr)
        return 1
    return 0


def _with_eval_options(context, args: argparse.Namespace, progress: bool):
    import dataclasses

    return dataclasses.replace(
        context,
        device=args.device,
        batch_size=args.batch_size,
        decode_backend=args.decode_backend,
        progress=progress,
        floor=not args.no_floor,
    )


def _synthetic_specs(table: Table, world: Path, out: Path) -> dict[tuple[str, str], Any]:
    """SynthPose has no COCO test-dev; stand in its COCO val images, boxes and file list
    (without keypoints, as test-dev) so the submission path runs for real."""
    import json

    from posebh.datasets import DatasetSpec, default_spec

    specs: dict[tuple[str, str], Any] = {}
    for row in table.rows:
        if (row.dataset, row.split) != ("coco", "test-dev"):
            continue
        val = default_spec("coco", "val", world)
        data = json.loads(Path(val.ann_file).read_text())
        info = {k: data[k] for k in ("images", "categories") if k in data}
        info["info"] = {"description": "SynthPose COCO val as a test-dev stand-in (no keypoints)"}
        path = out / "synthetic_test-dev" / "image_info_test-dev2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(info))
        specs[("coco", "test-dev")] = DatasetSpec(
            name="coco",
            ann_file=str(path),
            img_prefix=val.img_prefix,
            det_file=val.det_file,
            use_gt_bbox=False,
            split="test-dev",
            source="SynthPose COCO val standing in for test-dev (posebh.reproduce)",
        )
    return specs


def main(argv: Sequence[str] | None = None, table: str | None = None) -> int:
    """Entry point; ``table`` fixes the table (the ``reproduce/table<N>.py`` scripts)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if table is None and argv[:1] == ["ablations"]:
        from posebh.reproduce.ablations import main as ablations_main

        return ablations_main(argv[1:])
    parser = build_parser()
    if table is not None:
        parser = argparse.ArgumentParser(
            prog=f"reproduce/{table}.py",
            description=f"Reproduce {table} (posebh reproduce {table}).",
            epilog=EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_arguments(parser, with_table=False)
    args = parser.parse_args(argv)
    try:
        return run(args, table)
    except (ValueError, FileNotFoundError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"posebh reproduce: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
