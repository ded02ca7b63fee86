"""One table of the paper, in one of three modes (``posebh reproduce TABLE`` maps its flags
onto :class:`TableOptions` and calls :func:`run_table`):

* synthetic default (neither ``data_root`` nor ``weights``): generate SynthPose, train tiny
  stand-ins of the table's models (cached), evaluate, mark every number as synthetic;
* real (``data_root`` and ``weights``): the release checkpoints on the official data tree,
  each cell against its published value and tolerance;
* train (``data_root`` and ``train``): the official recipes under torchrun, then as real.

``gpus`` (``--gpus N``) in real and train mode with CUDA evaluation: each (model, row) is
evaluated by ``torchrun --nproc_per_node N -m posebh.cli eval`` (:mod:`posebh.reproduce.launch`;
``dry_run`` prints those commands); N = 1, or evaluation on the CPU, evaluates in-process.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from posebh.evaluation.bootstrap import DEFAULT_RESAMPLES
from posebh.reproduce.harness import (
    RunContext,
    TableRun,
    evaluate_table,
    floor_summary,
    headline,
    wide_table,
    write_run,
)
from posebh.reproduce.launch import eval_plan
from posebh.reproduce.releases import train_plan
from posebh.reproduce.tables import Table, load_table

__all__ = ["TableOptions", "TableOutcome", "link_latest", "run_id", "run_table"]


@dataclass(frozen=True)
class TableOptions:
    """How to reproduce a table (the defaults are the synthetic default's)."""

    data_root: Path | None = None  # official data/ tree (real and train modes)
    weights: Path | None = None  # folder of release checkpoints (real mode)
    train: bool = False  # train with the official recipes first (needs data_root)
    # train: processes per node (torchrun; None: 8); real/train evaluation on CUDA: torchrun
    # ranks per (model, row) (None: 1 in real mode, in-process)
    gpus: int | None = None
    dry_run: bool = False  # train, or real mode with gpus > 1: print the commands only
    models: tuple[str, ...] | None = None  # model ids (columns); None: all
    out: Path | None = None  # run folder; None: results/<table>/<mode>-<UTC time>
    cache_dir: Path | None = None  # synthetic world + tiny runs
    world: str = "mini"  # SynthPose preset of the synthetic default
    seed: int = 0  # seed of the world and the tiny runs
    train_steps: int | None = None  # synthetic: compress every tiny run to N steps
    device: str | None = None  # evaluation device (None: cpu / cuda)
    batch_size: int = 32  # evaluation batch size
    decode_backend: str = "auto"
    plots: bool = True
    floor: bool = True  # the no-model floor column (train mean pose per row)
    max_instances: int | None = None  # evaluate the first N instances of every row only
    bootstrap: int = DEFAULT_RESAMPLES  # image resamples of every interval and Δ (0: none)
    bootstrap_seed: int = 0
    progress: bool = True
    command: str | None = None  # recorded in results.json (None: this process's argv)


@dataclass
class TableOutcome:
    """What :func:`run_table` did: the evaluated run (None after a dry run), its folder and
    files, the training commands of the train mode."""

    run: TableRun | None
    out: Path
    files: dict[str, str]
    plan: list[list[str]]
    wall_time_s: float


def run_id(mode: str) -> str:
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


def run_table(
    table_name: str, options: TableOptions, *, log: Callable[[str], None] = print
) -> TableOutcome:
    """Reproduce ``table_name`` as ``options`` say; print (``log``) the table and where the
    report went.  Raises ValueError for options that cannot work together."""
    start = time.perf_counter()
    o = options
    table = load_table(table_name)
    models = list(o.models) if o.models else None
    if models:
        unknown = [m for m in models if m not in {c.id for c in table.models}]
        if unknown:
            raise ValueError(f"--models {unknown}: not columns of {table.name}")
    if o.max_instances is not None and o.max_instances < 1:
        raise ValueError(f"--max-instances must be ≥ 1, got {o.max_instances}")
    command = o.command if o.command is not None else shlex.join(sys.argv)
    extra: dict[str, Any] = {"command": command, "seed": o.seed}
    plan: list[list[str]] = []
    if o.train:
        if o.data_root is None:
            raise ValueError("--train needs --data-root (the official data/ tree)")
        out = o.out or Path("results") / table.name / run_id("train")
        files = [m.checkpoint for m in table.models if not models or m.id in models]
        plan = train_plan(files, o.data_root, out / "work", _train_gpus(o), log=log)
        for cmd in plan:
            log("$ " + shlex.join(cmd))
        if o.dry_run:
            return TableOutcome(None, out, {}, plan, round(time.perf_counter() - start, 1))
        context = _trained(plan, out, o.data_root, _train_gpus(o))
        extra["training"] = [shlex.join(c) for c in plan]
    elif o.data_root is not None or o.weights is not None:
        if o.data_root is None or o.weights is None:
            raise ValueError("real mode needs both --data-root and --weights")
        out = o.out or Path("results") / table.name / run_id("real")
        context = RunContext(
            data_root=o.data_root, weights=o.weights, mode="real",
            measured_label=f"release checkpoints from {o.weights} on {o.data_root}",
        )  # fmt: skip
    else:
        out = o.out or Path("results") / table.name / run_id("synthetic")
        context, extra["synthetic"] = _synthetic(table, models, out, o)
    context = dataclasses.replace(
        context,
        device=o.device,
        batch_size=o.batch_size,
        decode_backend=o.decode_backend,
        progress=o.progress,
        floor=o.floor,
        max_instances=o.max_instances,
        gpus=_eval_ranks(o),
        bootstrap=o.bootstrap,
        bootstrap_seed=o.bootstrap_seed,
    )
    if o.gpus is not None and o.gpus > 1 and context.gpus == 1 and context.mode == "real":
        log(f"--gpus {o.gpus}: evaluating on the CPU in this process (ranks need CUDA)")
    if context.gpus > 1 and o.dry_run:
        plan = eval_plan(
            table, context.data_root, context.weights, out, models=models,
            ranks=context.gpus, device=o.device or "cuda", batch_size=o.batch_size,
            decode_backend=o.decode_backend, max_instances=o.max_instances, progress=o.progress,
            bootstrap=o.bootstrap, bootstrap_seed=o.bootstrap_seed,
        )  # fmt: skip
        for cmd in plan:
            log("$ " + shlex.join(cmd))
        return TableOutcome(None, out, {}, plan, round(time.perf_counter() - start, 1))
    run = evaluate_table(table, context, out, models=models)
    extra["wall_time_s"] = round(time.perf_counter() - start, 1)
    written = write_run(run, out, extra=extra, plots=o.plots)
    link_latest(out)
    log("")
    log("\n".join(headline(run)))
    log(wide_table(run))
    for line in floor_summary(run):
        log(line)
    log(f"\nwrote {written['markdown']} and {written['json']} (wall time {extra['wall_time_s']} s)")
    return TableOutcome(run, out, written, plan, extra["wall_time_s"])


def _train_gpus(o: TableOptions) -> int:
    return 8 if o.gpus is None else o.gpus


def _eval_ranks(o: TableOptions) -> int:
    """torchrun ranks per evaluated cell: ``gpus`` in real and train mode when evaluating on
    CUDA (an explicit ``--device cuda``, or none given and CUDA present), else 1."""
    if o.data_root is None or (o.weights is None and not o.train):
        return 1
    ranks = o.gpus if o.gpus is not None else (8 if o.train else 1)
    device = o.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return ranks if ranks > 1 and torch.device(device).type == "cuda" else 1


def _trained(plan: Sequence[list[str]], out: Path, data_root: Path, gpus: int) -> RunContext:
    """Run the training commands, gather each run's model.pth under its release name."""
    for cmd in plan:
        subprocess.run(cmd, check=True)
    weights = out / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    for cmd in plan:
        run_dir = Path(cmd[cmd.index("--work-dir") + 1])
        (weights / f"{run_dir.name}.pth").write_bytes((run_dir / "model.pth").read_bytes())
    return RunContext(
        data_root=data_root, weights=weights, mode="train",
        measured_label=f"models trained here with the official recipes ({gpus} GPUs)",
    )  # fmt: skip


def _synthetic(
    table: Table, models: list[str] | None, out: Path, o: TableOptions
) -> tuple[RunContext, dict[str, Any]]:
    """Generate the world, train (or reuse) the stand-ins: the synthetic default's context."""
    from posebh.reproduce.synthetic import prepare

    steps = f", every run compressed to {o.train_steps} steps" if o.train_steps else ""
    setup = prepare(
        {m.id: m.checkpoint for m in table.models if not models or m.id in models},
        out,
        cache_dir=o.cache_dir,
        world_preset=o.world,
        seed=o.seed,
        train_steps=o.train_steps,
        progress=o.progress,
    )
    context = RunContext(
        data_root=setup.data_root, weights=setup.weights, mode="synthetic",
        measured_label=f"tiny stand-in models trained on SynthPose '{o.world}' "
        f"(seed {o.seed}{steps}) and evaluated on its {table.name} splits",
        absent=setup.absent, specs=_synthetic_specs(table, setup.data_root, out),
    )  # fmt: skip
    return context, {"world": setup.world, "runs": setup.runs}


def _synthetic_specs(table: Table, world: Path, out: Path) -> dict[tuple[str, str], Any]:
    """SynthPose has no COCO test-dev; stand in its COCO val images, boxes and file list
    (without keypoints, as test-dev) so the submission path runs for real."""
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
