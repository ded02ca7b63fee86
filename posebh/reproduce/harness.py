"""Evaluate a table's model columns on its dataset rows and compare with the published values.

One code path for every mode: a *data root* in the official ``data/`` layout and a *weights*
folder holding the release files under their official names (``vitpose+_base.pth``,
``posebh_base.pth``, ``posebh_base_interhand2d.pth`` …).  Real mode points both at the
user's folders; the synthetic default points them at the SynthPose world and at tiny models
trained on it (:mod:`posebh.reproduce.synthetic`), so what runs downstream is the same.

Per (row, model) the checkpoint is loaded with :func:`posebh.checkpoint.load_model`; a
multi-dataset file (experts present) is split to the row's dataset expert and head as the
official ``tools/model_split.py`` + single-dataset test configs do (OCHuman uses the COCO
expert), a transfer file (one head, plain ViT) is used as it is.  The row's protocol is the
dataset's official one (:func:`posebh.evaluate.default_protocol`), with the row's boxes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from posebh.evaluation.bootstrap import DEFAULT_RESAMPLES, Resampler
from posebh.protocol import get_protocol
from posebh.reproduce.deltas import PairedDelta, delta_text, deltas_by_key, model_pairs
from posebh.reproduce.deltas import paired_deltas as compute_paired_deltas
from posebh.reproduce.tables import DISPLAY_NAMES, Table, TableRow, read_interval, read_metric

__all__ = [
    "Cell",
    "RunContext",
    "TableRun",
    "evaluate_table",
    "row_spec",
]

#: Cell states.  "pass"/"fail": |measured − expected| ≤ / > tolerance (real data only);
#: "measured": no published value to compare with; "synthetic": measured on SynthPose, not
#: comparable; "submission": COCO test-dev results written for the server; "not run": the
#: reason says why (missing checkpoint, …).
STATUSES = ("pass", "fail", "measured", "synthetic", "submission", "not run")

#: A measured cell has learned its row ("above floor") when it beats the row's no-model floor
#: by at least FLOOR_MARGIN points (pixels for EPE) *and* either by a factor of two or by
#: FLOOR_WIDE_MARGIN points (rows with a high floor: MPII's PCKh floor is about 19); otherwise it
#: is reported as "not above floor", so that a number at chance level cannot pass for a result.
FLOOR_MARGIN = 1.0
FLOOR_WIDE_MARGIN = 10.0
#: Metrics where lower is better.
LOWER_IS_BETTER = frozenset({"EPE"})


def versus_floor(measured: float | None, floor: float | None, metric: str) -> str | None:
    """The verdict "above floor" or "not above floor" (the rule above :data:`FLOOR_MARGIN`);
    None when either number is missing."""
    if measured is None or floor is None:
        return None
    if metric in LOWER_IS_BETTER:
        gain, twofold = floor - measured, measured <= floor / 2
    else:
        gain, twofold = measured - floor, measured >= 2 * floor
    learned = gain >= FLOOR_MARGIN and (twofold or gain >= FLOOR_WIDE_MARGIN)
    return "above floor" if learned else "not above floor"


@dataclass
class Cell:
    """One (row, metric, model) cell of a table run."""

    row: str
    dataset: str
    split: str
    metric: str
    model: str
    model_label: str
    expected: float | None
    measured: float | None
    tolerance: float
    status: str
    note: str = ""
    eval_dir: str | None = None
    # Instances scored / in the row (they differ under a --max-instances cap).
    instances: int | None = None
    instances_total: int | None = None
    # Percentile 95 % interval of the measured value over image resamples (table unit).
    ci95: tuple[float, float] | None = None

    @property
    def delta(self) -> float | None:
        """measured − published; None when either is missing or the cell is synthetic (a
        SynthPose measurement is not comparable with a published number)."""
        if self.expected is None or self.measured is None or self.status == "synthetic":
            return None
        return self.measured - self.expected


@dataclass(frozen=True)
class RunContext:
    """Where the inputs come from and how the measurement is labelled."""

    data_root: Path
    weights: Path
    mode: str  # "real" | "synthetic" | "train"
    measured_label: str  # e.g. "measured (SynthPose mini, tiny models)"
    # Model ids whose checkpoint is deliberately absent in this mode → the reason printed.
    absent: Mapping[str, str] = field(default_factory=dict)
    # (dataset, split) → a DatasetSpec to use instead of the official layout.
    specs: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    device: str | None = None
    batch_size: int = 32
    decode_backend: str = "auto"
    progress: bool = True
    # Score each row's no-model floor too: the train split's mean pose in the row's boxes.
    floor: bool = True
    # Evaluate (and floor) only the first N instances of every row (--max-instances).
    max_instances: int | None = None
    # > 1: each (model, row) runs as `torchrun --nproc_per_node gpus -m posebh.cli eval` on
    # CUDA (posebh.reproduce.launch); 1: in this process.
    gpus: int = 1
    # Image resamples behind every interval and paired Δ (0: none), and their seed.
    bootstrap: int = DEFAULT_RESAMPLES
    bootstrap_seed: int = 0


#: What the floor column is, for reports.
FLOOR_LABEL = "no-model floor (train mean pose)"


@dataclass
class TableRun:
    """The cells of one table run plus its provenance.  ``floors`` maps (row label, metric)
    to the no-model floor of that row and where it came from (or why it is missing)."""

    table: Table
    context: RunContext
    cells: list[Cell]
    checkpoints: dict[str, dict[str, Any]]
    seconds: float
    floors: dict[tuple[str, str], tuple[float | None, str]] = field(default_factory=dict)
    # PoseBH − ViTPose++ of the same size per (row, metric), paired (posebh.reproduce.deltas).
    deltas: list[PairedDelta] = field(default_factory=list)

    def failed(self) -> list[Cell]:
        return [c for c in self.cells if c.status == "fail"]

    def floor_of(self, row: str, metric: str) -> float | None:
        """The no-model floor of a (row label, metric), None when not scored."""
        return self.floors.get((row, metric), (None, ""))[0]

    def versus_floor(self, cell: Cell) -> str | None:
        """The cell against its row's no-model floor (:func:`versus_floor`)."""
        return versus_floor(cell.measured, self.floor_of(cell.row, cell.metric), cell.metric)

    def not_above_floor(self) -> list[Cell]:
        return [c for c in self.cells if self.versus_floor(c) == "not above floor"]


def row_spec(row: TableRow, context: RunContext):
    """The :class:`~posebh.datasets.DatasetSpec` a row is evaluated on."""
    from posebh.datasets import default_spec

    override = context.specs.get((row.dataset, row.split))
    if override is not None:
        return override
    return default_spec(row.dataset, row.split, context.data_root, use_gt_bbox=row.use_gt_bbox)


def _is_multi_dataset(state: Mapping[str, Any]) -> bool:
    sd = state.get("state_dict", state)
    return any(".mlp.experts." in k for k in sd)


def _sha256(path: Path, limit_mb: int = 4096) -> str | None:
    import hashlib

    if path.stat().st_size > limit_mb * 2**20:
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def evaluate_table(
    table: Table,
    context: RunContext,
    out_dir: str | os.PathLike[str],
    *,
    models: Sequence[str] | None = None,
    log: Callable[[str], None] | None = print,
) -> TableRun:
    """Evaluate every (row, model) of ``table`` under ``context``; per-cell evaluation files
    go to ``out_dir/eval/<model>/<dataset>_<split>/``."""
    from posebh.checkpoint import CheckpointError, load_model, read_checkpoint
    from posebh.evaluate import default_protocol, evaluate

    start = time.perf_counter()
    out = Path(out_dir)
    wanted = [m for m in table.models if models is None or m.id in models]
    cells: list[Cell] = []
    checkpoints: dict[str, dict[str, Any]] = {}
    resamplers: dict[tuple[str, str], Resampler] = {}
    say = log or (lambda _msg: None)
    for column in wanted:
        path = context.weights / column.checkpoint
        reason = context.absent.get(column.id)
        if reason is None and not path.is_file():
            reason = f"checkpoint {path} not found (put the release file there)"
        state = None
        if reason is None:
            try:
                state = read_checkpoint(path)
            except CheckpointError as err:
                reason = f"unreadable checkpoint: {err}"
        if state is not None:
            checkpoints[column.id] = {
                "file": str(path),
                "bytes": path.stat().st_size,
                "sha256": _sha256(path),
                "multi_dataset": _is_multi_dataset(state),
            }
        for row in table.rows:
            base = dict(
                row=row.label,
                dataset=row.dataset,
                split=row.split,
                model=column.id,
                model_label=column.label,
                tolerance=row.tolerance,
            )
            expected = {m: row.expected_value(column.id, m) for m in row.metrics}
            if state is None:
                cells += [
                    Cell(
                        metric=m,
                        expected=expected[m],
                        measured=None,
                        status="not run",
                        note=str(reason),
                        **base,
                    )
                    for m in row.metrics
                ]
                continue
            say(f"[{table.name}] {column.label} on {row.label} ({row.boxes})")
            eval_dir = out / "eval" / column.id / f"{row.dataset}_{row.split}"
            try:
                if context.gpus > 1:
                    result = _torchrun_cell(row, path, eval_dir, context)
                else:
                    if checkpoints[column.id]["multi_dataset"]:
                        model = load_model(state, dataset=get_protocol(row.dataset).eval_expert)
                    else:
                        model = load_model(state)
                    result = evaluate(
                        model,
                        row_spec(row, context),
                        protocol=default_protocol(row.dataset),
                        batch_size=context.batch_size,
                        device=context.device,
                        submission_only=row.submission_only,
                        out_dir=eval_dir,
                        checkpoint=str(path),
                        progress=context.progress,
                        decode_backend=context.decode_backend,
                        max_instances=context.max_instances,
                        bootstrap=context.bootstrap,
                        bootstrap_seed=context.bootstrap_seed,
                        log=None,
                    )
                if result.resampler is None and context.bootstrap > 0:
                    result.resampler = _resampler_from_files(row, eval_dir, context)
            except (CheckpointError, FileNotFoundError, ValueError) as err:
                cells += [
                    Cell(
                        metric=m,
                        expected=expected[m],
                        measured=None,
                        status="not run",
                        note=f"{type(err).__name__}: {err}",
                        **base,
                    )
                    for m in row.metrics
                ]
                say(f"  not run: {err}")
                continue
            for m in row.metrics:
                if row.submission_only:
                    sub = result.metrics.get("submission", {})
                    cells.append(
                        Cell(
                            metric=m,
                            expected=expected[m],
                            measured=None,
                            status="submission",
                            note=f"{sub.get('results', 0)} results in "
                            f"{result.files.get('predictions')} (upload to the COCO server)",
                            eval_dir=str(eval_dir),
                            **base,
                        )
                    )
                    continue
                value = read_metric(result.metrics, m, row.part)
                ci = read_interval(result.metrics, m, row.part)
                cells.append(
                    Cell(
                        metric=m,
                        expected=expected[m],
                        measured=value,
                        ci95=ci,
                        status=_status(expected[m], value, row.tolerance, context.mode, ci),
                        note=result.meta.get("subset") or "",
                        eval_dir=str(eval_dir),
                        instances=result.meta.get("instances"),
                        instances_total=result.meta.get("instances_total"),
                        **base,
                    )
                )
            if result.resampler is not None and not row.submission_only:
                resamplers[(row.label, column.id)] = result.resampler
    floors = row_floors(table, context, say) if context.floor and cells else {}
    if model_pairs(table):
        say(f"[{table.name}] paired Δ over {context.bootstrap} image resamples")
    deltas = compute_paired_deltas(
        table, resamplers, num_resamples=context.bootstrap, seed=context.bootstrap_seed
    )
    return TableRun(
        table=table,
        context=context,
        cells=cells,
        checkpoints=checkpoints,
        seconds=time.perf_counter() - start,
        floors=floors,
        deltas=deltas,
    )


def _resampler_from_files(row: TableRow, eval_dir: Path, context: RunContext) -> Any:
    """A torchrun cell's Resampler, rebuilt from the predictions.json it wrote (the whole
    split only: a --max-instances cap cuts the ground truth in memory)."""
    from posebh.compare import CompareInputs, resampler_of

    if context.max_instances is not None or not (eval_dir / "predictions.json").is_file():
        return None
    spec = row_spec(row, context)
    gt_file = Path(spec.gt_file) if spec.gt_file else None
    return resampler_of(eval_dir, CompareInputs(row.dataset, Path(spec.ann_file), gt_file))[1]


def _torchrun_cell(row: TableRow, path: Path, eval_dir: Path, context: RunContext) -> Any:
    """One cell evaluated by ``context.gpus`` torchrun ranks (:mod:`posebh.reproduce.launch`)."""
    from posebh.reproduce.launch import eval_command, evaluate_with_torchrun

    cmd = eval_command(
        row, path, context.data_root, eval_dir, ranks=context.gpus,
        device=context.device or "cuda", batch_size=context.batch_size,
        decode_backend=context.decode_backend, max_instances=context.max_instances,
        progress=context.progress, bootstrap=context.bootstrap,
        bootstrap_seed=context.bootstrap_seed,
    )  # fmt: skip
    return evaluate_with_torchrun(cmd)


def row_floors(
    table: Table, context: RunContext, log: Callable[[str], None] | None = None
) -> dict[tuple[str, str], tuple[float | None, str]]:
    """Each row's no-model floor: the mean pose of the dataset's train split placed in the
    row's own boxes and scored by the row's metric (:func:`posebh.evaluate.evaluate` with
    ``mean_pose_from``).  A measured number only clears chance if it clears this.  Rows with
    no public GT (server submissions) or no train annotations get ``None`` and the reason."""
    from posebh.datasets import DatasetError, default_spec
    from posebh.evaluate import default_protocol, evaluate

    floors: dict[tuple[str, str], tuple[float | None, str]] = {}
    for row in table.rows:
        if row.submission_only:
            for m in row.metrics:
                floors[(row.label, m)] = (None, "no public GT (server submission)")
            continue
        try:
            reference = default_spec(row.dataset, "train", context.data_root, use_gt_bbox=True)
            if not Path(reference.ann_file).is_file():
                raise FileNotFoundError(f"no train annotations at {reference.ann_file}")
            result = evaluate(
                None,
                row_spec(row, context),
                protocol=default_protocol(row.dataset),
                mean_pose_from=reference,
                progress=False,
                max_instances=context.max_instances,
                log=None,
            )
        except (DatasetError, FileNotFoundError, ValueError) as err:
            for m in row.metrics:
                floors[(row.label, m)] = (None, f"not scored: {err}")
            if log:
                log(f"[{table.name}] floor of {row.label}: not scored ({err})")
            continue
        n = (result.meta.get("mean_pose_reference") or {}).get("instances")
        source = f"mean pose of {n} instances in {reference.ann_file}"
        if result.meta.get("subset"):
            source += f"; {result.meta['subset']}"
        for m in row.metrics:
            floors[(row.label, m)] = (read_metric(result.metrics, m, row.part), source)
    return floors


def _status(
    expected: float | None,
    measured: float | None,
    tol: float,
    mode: str,
    ci95: tuple[float, float] | None = None,
) -> str:
    """ "pass" (consistent): the published value lies inside the measured 95 % interval
    widened by the row's tolerance (without an interval: within the tolerance of the
    measured value); "fail" otherwise."""
    if measured is None:
        return "not run"
    if mode == "synthetic":
        return "synthetic"
    if expected is None:
        return "measured"
    lo, hi = ci95 if ci95 is not None else (measured, measured)
    return "pass" if lo - tol - 1e-9 <= expected <= hi + tol + 1e-9 else "fail"


# ------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------


def _digits(metric: str) -> int:
    return 2 if metric == "EPE" else 1  # pixels get two decimals, percentages one


def _fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _cell_text(c: Cell, verdict: str | None = None) -> str:
    text = _cell_value_text(c)
    return text + " (at floor)" if verdict == "not above floor" else text


def interval_text(ci95: tuple[float, float] | None, digits: int = 1) -> str:
    """``[1.2, 2.4]``; empty when there is no interval."""
    return "" if ci95 is None else f"[{ci95[0]:.{digits}f}, {ci95[1]:.{digits}f}]"


def measured_text(c: Cell) -> str:
    """The measured part of a cell's text: value and interval (the figure writes the same)."""
    digits = _digits(c.metric)
    return " ".join(t for t in (_fmt(c.measured, digits), interval_text(c.ci95, digits)) if t)


def _cell_value_text(c: Cell) -> str:
    digits = _digits(c.metric)
    if c.status == "not run":
        return f"{_fmt(c.expected, digits)} / not run"
    if c.status == "submission":
        return f"{_fmt(c.expected, digits)} / server"
    if c.status == "synthetic":
        return f"{_fmt(c.expected, digits)} / syn {measured_text(c)}"
    if c.status == "measured":
        return f"– / {measured_text(c)}"
    mark = "✓" if c.status == "pass" else "✗"
    d = c.delta or 0.0
    return f"{_fmt(c.expected, digits)} / {measured_text(c)} ({d:+.{digits}f} {mark})"


def delta_header(baseline_label: str, model_label: str) -> str:
    return f"Δ {model_label} − {baseline_label} [95 % CI]"


def wide_table(run: TableRun, tablefmt: str = "github") -> str:
    """Rows × models, each cell 'published / measured [interval] (Δ ✓/✗)', then the paired
    Δ columns (PoseBH − ViTPose++ of the same size) and the floor."""
    from tabulate import tabulate

    models = [m for m in run.table.models if any(c.model == m.id for c in run.cells)]
    pairs = [(a, b) for a, b in model_pairs(run.table) if a in models and b in models]
    keys: list[tuple[str, str]] = []
    for c in run.cells:
        if (c.row, c.metric) not in keys:
            keys.append((c.row, c.metric))
    by = {(c.row, c.metric, c.model): c for c in run.cells}
    deltas = deltas_by_key(run.deltas)
    body = []
    for row, metric in keys:
        line = [row, metric] + [
            _cell_text(by[key], run.versus_floor(by[key]))
            if (key := (row, metric, m.id)) in by
            else ""
            for m in models
        ]
        line += [delta_text(deltas.get((row, metric, b.id)), _digits(metric)) for _, b in pairs]
        if run.floors:
            line.append(_fmt(run.floor_of(row, metric), _digits(metric)))
        body.append(line)
    headers = ["dataset split", "metric"] + [m.label for m in models]
    headers += [delta_header(a.label, b.label) for a, b in pairs]
    return tabulate(
        body,
        headers=headers + ([FLOOR_LABEL] if run.floors else []),
        tablefmt=tablefmt,
        disable_numparse=True,
    )


def floor_summary(run: TableRun) -> list[str]:
    """Lines naming the cells that do not beat their row's no-model floor (none: no lines)."""
    cells = run.not_above_floor()
    if not cells:
        return []
    named = "; ".join(
        f"{c.row} {c.metric}, {c.model_label}: {_fmt(c.measured, _digits(c.metric))} "
        f"(floor {_fmt(run.floor_of(c.row, c.metric), _digits(c.metric))})"
        for c in cells
    )
    lines = [
        f"Not above the no-model floor (ahead by less than {FLOOR_MARGIN:g} point, or by less "
        f"than 2× and {FLOOR_WIDE_MARGIN:g} points), marked '(at floor)': {named}."
    ]
    if run.context.mode == "synthetic":
        lines.append(
            "The tiny CPU models have not learned these rows: their numbers are chance level, "
            "not results (README, 'What the synthetic default shows')."
        )
    return lines


def long_table(run: TableRun, tablefmt: str = "github") -> str:
    """One line per cell with every field (the Markdown report's detail section)."""
    from tabulate import tabulate

    rows = [
        [
            c.row,
            c.metric,
            c.model_label,
            _fmt(c.expected, 2),
            _fmt(c.measured, 2),
            interval_text(c.ci95, 2),
            _fmt(c.delta, 2),
            c.tolerance,
            c.status,
            c.note,
        ]
        for c in run.cells
    ]
    return tabulate(
        rows,
        headers=[
            "dataset split",
            "metric",
            "model",
            "published",
            "measured",
            "95 % CI",
            "Δ",
            "tol",
            "status",
            "note",
        ],
        tablefmt=tablefmt,
        disable_numparse=True,
    )


def provenance(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Commit, library versions and hardware of this process."""
    from posebh.evaluate import _git_commit
    from posebh.evaluation import cpu_name, library_versions

    return {
        "commit": _git_commit(),
        "versions": library_versions("torch", "numpy", "pycocotools", "tabulate", "matplotlib"),
        "python": platform.python_version(),
        "hardware": {
            "machine": platform.machine(),
            "processor": cpu_name(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
        },
        **(dict(extra) if extra else {}),
    }


def headline(run: TableRun) -> list[str]:
    """The lines printed above the table: what was measured, on what, against what."""
    t, ctx = run.table, run.context
    lines = [f"{t.name} — {t.title}", f"published: {t.source} ({t.path})"]
    if ctx.mode == "synthetic":
        lines.append(
            "measured: SYNTHETIC — "
            + ctx.measured_label
            + ". These numbers show the harness working end to end; they are NOT comparable "
            "with the published ones (different images, tiny models, minutes of CPU training)."
        )
    else:
        lines.append(f"measured: {ctx.measured_label}")
    lines.append(f"data: {ctx.data_root}; weights: {ctx.weights}")
    if ctx.max_instances is not None:
        lines.append(cap_line(run))
    if run.floors:
        lines.append(
            f"{FLOOR_LABEL}: each row's train-split mean pose placed in the row's boxes and "
            "scored the same way, no model (posebh eval --mean-pose-floor train)"
        )
    lines.append(bootstrap_line(run))
    boxes = sorted(
        {f"{DISPLAY_NAMES.get(r.dataset, r.dataset)} {r.split}: {r.boxes}" for r in t.rows}
    )
    lines += ["boxes: " + "; ".join(boxes)]
    prov = provenance()
    versions = ", ".join(f"{k} {v}" for k, v in prov["versions"].items())
    lines.append(f"commit {prov['commit'] or 'unknown'}; {versions}")
    return lines


def bootstrap_line(run: TableRun) -> str:
    """What the intervals are."""
    n, seed = run.context.bootstrap, run.context.bootstrap_seed
    if n < 1:
        return "intervals: none (--bootstrap 0)"
    return (
        f"intervals: [lo, hi] = percentile 95 % interval over {n} resamples of each row's "
        f"evaluation images (seed {seed}); Δ columns paired (the same resamples for both "
        "models), * = the interval of Δ excludes 0"
    )


def cap_line(run: TableRun) -> str:
    """The headline's words for a ``--max-instances`` cap, with each row's count."""
    counts: dict[str, tuple[int | None, int | None]] = {}
    for c in run.cells:
        if c.instances is not None:
            counts.setdefault(c.row, (c.instances, c.instances_total))
    rows = "; ".join(f"{row}: instances evaluated {n} of {t}" for row, (n, t) in counts.items())
    return (
        f"CAPPED (--max-instances {run.context.max_instances}): the first N instances of every "
        "row in file order (detection boxes, GT instances otherwise), the floor likewise; OKS "
        "metrics over the images of those instances, PCKh over those records. Not the full "
        "split: not comparable with the published values" + (f" ({rows})" if rows else "")
    )


def run_to_dict(run: TableRun, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    ctx = run.context
    return {
        "table": run.table.name,
        "title": run.table.title,
        "published_source": run.table.source,
        "table_file": run.table.path,
        "mode": ctx.mode,
        "measured_label": ctx.measured_label,
        "comparable_with_published": ctx.mode != "synthetic" and ctx.max_instances is None,
        "data_root": str(ctx.data_root),
        "weights": str(ctx.weights),
        "max_instances": ctx.max_instances,
        "rows": [
            {
                "dataset": r.dataset,
                "split": r.split,
                "boxes": r.boxes,
                "use_gt_bbox": r.use_gt_bbox,
                "metrics": list(r.metrics),
                "tolerance": r.tolerance,
                "submission_only": r.submission_only,
            }
            for r in run.table.rows
        ],
        "cells": [
            dict(
                dataclasses.asdict(c),
                delta=c.delta,
                floor=run.floor_of(c.row, c.metric),
                versus_floor=run.versus_floor(c),
            )
            for c in run.cells
        ],
        "floors": [
            {"row": row, "metric": metric, "value": value, "source": source}
            for (row, metric), (value, source) in run.floors.items()
        ],
        "bootstrap": {
            "resamples": ctx.bootstrap,
            "seed": ctx.bootstrap_seed,
            "unit": "image",
            "interval": "percentile 95 %",
        },
        "deltas": [dict(dataclasses.asdict(d), excludes_zero=d.excludes_zero) for d in run.deltas],
        "checkpoints": run.checkpoints,
        "eval_seconds": round(run.seconds, 2),
        "provenance": provenance(extra),
    }


def write_run(
    run: TableRun,
    out_dir: str | os.PathLike[str],
    *,
    extra: Mapping[str, Any] | None = None,
    plots: bool = True,
) -> dict[str, str]:
    """``results.json``, ``results.md`` and the plots of a table run into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = run_to_dict(run, extra)
    files = {"json": out / "results.json", "markdown": out / "results.md"}
    files["json"].write_text(json.dumps(payload, indent=2, default=str))
    prov = payload["provenance"]
    md = [f"# {run.table.name}: {run.table.title}", ""]
    md += [f"- {line}" for line in headline(run)]
    md += [
        f"- hardware {prov['hardware']}",
        "",
        "Cells: published / measured [95 % interval] (measured − published; ✓ consistent: "
        "the published value lies inside the interval widened by the row's tolerance, ✗ not)."
        if run.context.mode != "synthetic"
        else "Cells: published / syn measured-on-SynthPose [95 % interval] (not comparable "
        "with the published value). The Δ columns compare the two measured models, paired.",
        "",
        wide_table(run),
        "",
        *[line for text in floor_summary(run) for line in (text, "")],
        "## Every cell",
        "",
        long_table(run),
        "",
    ]
    files["markdown"].write_text("\n".join(md))
    if plots:
        files.update(_plots(run, out))
    return {k: str(v) for k, v in files.items()}


def _plots(run: TableRun, out: Path) -> dict[str, Path]:
    try:
        from posebh import plots
    except ImportError:  # matplotlib missing: the report stays complete without pictures
        return {}
    cells = [
        {
            "panel": c.row,
            "row": c.metric,
            "model": c.model_label,
            "expected": c.expected,
            "measured": c.measured,
            "ci95": c.ci95,
            "expected_text": _fmt(c.expected, _digits(c.metric)),
            "measured_text": measured_text(c),
            "measured_kind": "synthetic" if run.context.mode == "synthetic" else "real",
        }
        for c in run.cells
        if c.metric != "EPE"  # pixels do not share the percent axis
    ]
    files: dict[str, Path] = {}
    path = out / "expected_vs_measured.png"
    plots.plot_expected_vs_measured(
        cells,
        path,
        title=f"{run.table.name}: {run.table.title}",
        measured_label=run.context.measured_label,
    )
    files["plot_expected_vs_measured"] = path
    files.update(_model_plots(run, out))
    return files


def _model_plots(run: TableRun, out: Path) -> dict[str, Path]:
    """Per evaluated model: keypoint overlays on a few images of its first row, and for a
    model with prototypes the cross-dataset prototype similarity matrix."""
    from posebh.checkpoint import load_model, read_checkpoint
    from posebh.visualize import visualize_predictions, visualize_prototypes

    files: dict[str, Path] = {}
    for column in run.table.models:
        info = run.checkpoints.get(column.id)
        if info is None:
            continue
        state = read_checkpoint(info["file"])
        model = load_model(state)
        folder = out / "plots" / column.id
        if getattr(model, "keypoint_prototypes", None) is not None:
            for p in visualize_prototypes(model, folder, source=info["file"]):
                files[f"{column.id}_{p.name}"] = p
        row = next((r for r in run.table.rows if not r.submission_only), None)
        if row is None:
            continue
        if info["multi_dataset"]:
            model = load_model(state, dataset=get_protocol(row.dataset).eval_expert)
        try:
            path = visualize_predictions(
                row_spec(dataclasses.replace(row, use_gt_bbox=True), run.context),
                folder,
                model=model,
                num_images=6,
                device=run.context.device or "cpu",
            )
        except (FileNotFoundError, ValueError):  # the cell already says why the row is missing
            continue
        files[f"{column.id}_overlays"] = path
    return files
