"""Evaluation inside a run: the val splits scored through the path of ``posebh eval`` (ground
truth boxes where the recipe says so), each with its no-model floor at the end of the run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from posebh.datasets import DatasetError, DatasetSpec, default_spec
from posebh.evaluate import evaluate
from posebh.training.config import TrainConfig
from posebh.training.sources import train_spec

__all__ = ["evaluate_val_splits", "headline_metric", "mean_pose_floor"]

Floor = tuple[str, float]


def headline_metric(metrics: Mapping[str, Any]) -> tuple[str, float] | None:
    """The number a dataset is ranked by: OKS AP, WholeBody whole-body AP, MPII PCKh,
    InterHand AUC."""
    if "wholebody" in metrics and isinstance(metrics["wholebody"], Mapping):
        return "AP(wholebody)", float(metrics["wholebody"]["AP"])
    for key in ("AP", "PCKh", "AUC", "PCK"):
        if key in metrics:
            return key, float(metrics[key])
    return None


def mean_pose_floor(
    spec: DatasetSpec, config: TrainConfig, data_root: Path, log: Callable[[str], None]
) -> Floor | None:
    """The no-model floor of ``spec``: the training split's mean pose in every val box
    (:func:`posebh.evaluate.mean_pose_predictions`), or None with a note if it cannot
    be computed (e.g. no train annotations next to the val ones)."""
    try:
        ref = train_spec(spec.name, config, data_root)
        res = evaluate(None, spec, mean_pose_from=ref, progress=False, log=None)
    except (DatasetError, OSError, ValueError) as err:
        log(f"eval {spec.name}: no mean-pose floor ({err})")
        return None
    return headline_metric(res.metrics)


def evaluate_val_splits(
    model: torch.nn.Module,
    config: TrainConfig,
    *,
    data_root: Path,
    device: torch.device,
    work_dir: Path,
    step: int,
    tag: str,
    log: Callable[[str], None],
    record: Callable[[Mapping[str, Any]], None],
) -> tuple[dict[str, dict[str, Any]], dict[str, Floor]]:
    """Metrics per val dataset (missing val files are skipped with a note) and, for the
    ``"final"`` evaluation, each dataset's mean-pose floor.  ``record`` receives one
    ``log.jsonl`` record per dataset."""
    cfg = config.data
    names = cfg.val_datasets if cfg.val_datasets is not None else cfg.datasets
    results: dict[str, dict[str, Any]] = {}
    floors: dict[str, Floor] = {}
    for name in names:
        try:
            spec = default_spec(
                name, cfg.val_split, data_root, use_gt_bbox=True if cfg.eval_gt_bbox else None
            )
        except DatasetError as err:
            log(f"eval {name}: skipped ({err})")
            continue
        missing = [
            p
            for p in (spec.ann_file, None if spec.use_gt_bbox else spec.det_file)
            if p and not Path(p).is_file()
        ]
        if missing:
            log(f"eval {name}: skipped, {missing[0]} not found")
            continue
        res = evaluate(
            model,
            spec,
            batch_size=cfg.eval_batch_size,
            device=device,
            out_dir=work_dir / "eval" / tag / name,
            checkpoint=f"{work_dir} @ step {step}",
            progress=False,
            log=None,
        )
        results[name] = res.metrics
        head = headline_metric(res.metrics)
        msg = f"{head[0]} {head[1]:.4f}" if head else "done"
        floor = mean_pose_floor(spec, config, data_root, log) if tag == "final" else None
        if floor is not None:
            floors[name] = floor
            msg += f" (mean-pose floor {floor[1]:.4f})"
        log(f"eval {name} ({cfg.val_split}) at step {step}: {msg}")
        record(
            {
                "type": "eval",
                "step": step,
                "tag": tag,
                "dataset": name,
                "split": cfg.val_split,
                "headline": head,
                "mean_pose_floor": floor,
                "metrics": res.metrics,
            }
        )
    return results, floors
