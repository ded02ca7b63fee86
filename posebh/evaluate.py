"""Top-down evaluation: dataset → crops → model (+ flip test) → decode → rescoring/NMS → metric.

Shape vocabulary: N instances (boxes), K keypoints of the evaluated skeleton, H×W heatmap.

``evaluate(model, "coco", data_root=...)`` runs one dataset under the protocol of the
official evaluation configs (:func:`default_protocol`, from ``PROTOCOL.md`` §3 and §6) and
writes ``metrics.json`` (values + every setting, file, version and timing the numbers depend
on), ``metrics.md`` and ``predictions.json`` when ``out_dir`` is given.
``gt_as_prediction=True`` replaces the network by the ground truth, which exercises the
readers, rescoring, NMS and metric code on real files (every AP should be 1.0).
``mean_pose_from="train"`` replaces it by the no-model floor: the train split's mean pose,
placed in every evaluated box (:func:`mean_pose_predictions`).  A model that learned nothing
from the pixels scores about that; "far above chance" means far above it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tabulate import tabulate

from posebh.datasets import DatasetSpec, Instance, ReadSummary, default_spec, read_dataset
from posebh.evaluation import (
    auc,
    cpu_name,
    epe,
    library_versions,
    oks_eval,
    pck_accuracy,
    pck_auc_epe_resampler,
    pckh,
    pckh_resampler,
    rescore_and_nms,
    wholebody_eval,
)
from posebh.evaluation.bootstrap import Resampler, bootstrap
from posebh.evaluation.coco_resample import oks_resampler, wholebody_resampler
from posebh.evaluation.distributed import eval_world, predict_on_ranks
from posebh.evaluation.predict import (  # noqa: F401  (re-exported: posebh.evaluate.predict, ...)
    MAX_AUTO_WORKERS,
    PRECISIONS,
    EvalProtocol,
    default_num_workers,
    default_protocol,
    inference_autocast,
    predict,
)
from posebh.protocol import DatasetProtocol, get_protocol


@dataclass
class EvalResult:
    """Metrics of one evaluation plus everything needed to say where they came from."""

    dataset: str
    metrics: dict[str, Any]
    meta: dict[str, Any]
    predictions: list[dict[str, Any]] = field(repr=False, default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    # The metrics on resampled image multisets (bootstrap > 0; in memory only): the harness
    # pairs two models' resamplers for its Δ columns.
    resampler: Resampler | None = field(default=None, repr=False, compare=False)

    def table(self) -> str:
        ci = self.metrics.get("ci95", {})
        rows = [
            (k, f"{v:.4f}", _interval_text(ci.get(k)))
            for k, v in _flat_metrics(self.metrics).items()
        ]
        headers = ["metric", "value", "95 % interval (image bootstrap)"]
        if not ci:
            rows, headers = [r[:2] for r in rows], headers[:2]
        return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _interval_text(ci: Sequence[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "–"
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def _flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in _flat_metrics(v).items()})
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def ground_truth_predictions(instances: Sequence[Instance]) -> list[dict[str, Any]]:
    """The ground truth in :func:`predict`'s format.

    Keypoint scores are the visibility flags (1 labelled, 0 not): an unlabelled keypoint
    then carries no score, and a WholeBody part with no labelled keypoint is dropped as a
    detection of that part (the xtcocotools rule), so that perfect predictions score AP 1.
    """
    out = []
    for i, inst in enumerate(instances):
        kpts = np.asarray(inst.keypoints, dtype=np.float32).copy()
        kpts[:, 2] = (kpts[:, 2] > 0).astype(np.float32)
        out.append(_box_prediction(inst, i, kpts))
    return out


def _box_prediction(inst: Instance, index: int, keypoints: np.ndarray) -> dict[str, Any]:
    """A model-free prediction record for ``inst``'s box (:func:`predict`'s format)."""
    scale = np.asarray(inst.scale, dtype=np.float32)
    return {
        "keypoints": keypoints,
        "center": np.asarray(inst.center, dtype=np.float32),
        "scale": scale,
        "area": float(np.prod(scale * 200.0)),
        "score": float(inst.bbox_score),
        "image_id": inst.image_id,
        "category_id": inst.category_id,
        "index": index,
    }


def mean_pose(reference: Sequence[Instance]) -> tuple[np.ndarray, np.ndarray]:
    """The mean box-normalised pose of ``reference`` (K keypoints).

    Each labelled keypoint is expressed as ``(xy − center) / (scale · 200)``, i.e. relative
    to the instance's padded, aspect-fixed crop box, and averaged over the instances that
    label it.  Returns ``offsets`` [K, 2] (0 for a keypoint no instance labels) and
    ``frequency`` [K] (fraction of instances labelling it, in [0, 1]).
    """
    if not reference:
        raise ValueError("mean_pose needs at least one reference instance")
    k = np.stack([np.asarray(r.keypoints, dtype=np.float64) for r in reference])  # [N, K, 3]
    center = np.stack([np.asarray(r.center, dtype=np.float64) for r in reference])[:, None]
    size = np.stack([np.asarray(r.scale, dtype=np.float64) * 200.0 for r in reference])[:, None]
    labelled = k[..., 2] > 0
    rel = np.where(labelled[..., None], (k[..., :2] - center) / size, 0.0)
    count = labelled.sum(0)
    offsets = rel.sum(0) / np.maximum(count, 1)[:, None]
    return offsets, count / len(reference)


def mean_pose_predictions(
    reference: Sequence[Instance], instances: Sequence[Instance]
) -> list[dict[str, Any]]:
    """The no-model floor in :func:`predict`'s format: :func:`mean_pose` of ``reference``
    (normally the train split) placed in every box of ``instances``, whatever the image.

    Keypoint scores are the labelling frequencies (a keypoint no reference instance labels
    scores 0); the instance score is the box score, as for a model.
    """
    offsets, frequency = mean_pose(reference)
    k = len(offsets)
    out = []
    for i, inst in enumerate(instances):
        if len(inst.keypoints) != k:
            raise ValueError(
                f"mean pose has {k} keypoints but instance {i} of {inst.dataset} "
                f"({inst.image_file}) has {len(inst.keypoints)}: reference and evaluated "
                "instances must share a skeleton"
            )
        center = np.asarray(inst.center, dtype=np.float64)
        size = np.asarray(inst.scale, dtype=np.float64) * 200.0
        kpts = np.empty((k, 3), dtype=np.float32)
        kpts[:, :2] = center + offsets * size
        kpts[:, 2] = frequency
        out.append(_box_prediction(inst, i, kpts))
    return out


# ------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------


def _coco_records(kept: list[dict[str, Any]], record: DatasetProtocol) -> list[dict[str, Any]]:
    records = []
    for p in kept:
        k = np.asarray(p["keypoints"], dtype=np.float64)
        rec = {
            "image_id": p["image_id"],
            "category_id": int(p["category_id"] or 1),
            "score": float(p["score"]),
        }
        if record.metric == "wholebody":
            parts = record.skeleton.parts
            fields = {
                "body": "keypoints",
                "foot": "foot_kpts",
                "face": "face_kpts",
                "lefthand": "lefthand_kpts",
                "righthand": "righthand_kpts",
            }
            for part, name in fields.items():
                start, end = parts[part]
                rec[name] = k[start:end].reshape(-1).tolist()
        else:
            rec["keypoints"] = k.reshape(-1).tolist()
        records.append(rec)
    return records


def compute_metrics(
    predictions: Sequence[dict[str, Any]],
    instances: Sequence[Instance],
    spec: DatasetSpec,
    protocol: EvalProtocol,
    *,
    score: bool = True,
    subset: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score predictions under the protocol; returns (metrics, the records that were scored).

    ``score=False`` (a split without public keypoints, COCO test-dev) stops after rescoring
    and NMS: the records are the server submission, the metrics only count them.
    ``subset=True``: ``instances`` are only part of the split (``evaluate(max_instances=N)``);
    the ground truth is cut to them (:func:`_subset_ground_truth`).
    """
    records, images = scored_records(predictions, instances, spec, protocol)
    if not score:
        return {"submission": {"results": len(records), "images": images}}, records
    metrics, _ = score_records(records, instances, spec, protocol, subset=subset)
    return metrics, records


def scored_records(
    predictions: Sequence[dict[str, Any]],
    instances: Sequence[Instance],
    spec: DatasetSpec,
    protocol: EvalProtocol,
) -> tuple[list[dict[str, Any]], int]:
    """The records the metric scores (``predictions.json``) and the number of images they
    cover: for OKS metrics the COCO results after rescoring and OKS-NMS, otherwise one
    ``{"index", "keypoints"}`` per instance, in instance order."""
    record = get_protocol(protocol.dataset)
    if not predictions or (
        protocol.metric not in ("oks", "wholebody") and len(predictions) != len(instances)
    ):
        # PCKh / PCK pair the i-th prediction with the i-th instance.
        raise ValueError(
            f"{spec.ann_file}: {len(predictions)} predictions for {len(instances)} instances. "
            "Fix: predict every instance read from the file (predict() gives one per instance)."
        )
    if protocol.metric in ("oks", "wholebody"):
        per_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for p in predictions:
            per_image[p["image_id"]].append(p)
        kept = rescore_and_nms(
            per_image,
            record.skeleton.sigmas_array(),
            vis_thr=protocol.vis_thr,
            oks_thr=protocol.oks_thr,
            soft=protocol.soft_nms,
            use_nms=protocol.use_nms,
        )
        return _coco_records([p for ps in kept.values() for p in ps], record), len(kept)
    records = [
        {"index": int(p["index"]), "keypoints": np.asarray(p["keypoints"]).tolist()}
        for p in predictions
    ]
    return records, len({inst.image_id for inst in instances})


def score_records(
    records: Sequence[dict[str, Any]],
    instances: Sequence[Instance],
    spec: DatasetSpec,
    protocol: EvalProtocol,
    *,
    subset: bool = False,
    resample: bool = False,
) -> tuple[dict[str, Any], Resampler | None]:
    """The metrics of :func:`scored_records`' records; with ``resample=True`` also their
    :class:`~posebh.evaluation.bootstrap.Resampler` over the evaluation images (from the same
    scoring run: one pycocotools evaluation for OKS AP)."""
    skeleton = get_protocol(protocol.dataset).skeleton
    if protocol.metric in ("oks", "wholebody"):
        gt: Any = _subset_ground_truth(spec, instances) if subset else spec.ann_file
        if protocol.metric == "wholebody":
            if resample:
                return wholebody_resampler(gt, records)
            return wholebody_eval(gt, records), None
        kw = {"sigmas": skeleton.sigmas_array(), "use_area": protocol.use_area}
        if resample:
            return oks_resampler(gt, records, **kw)
        return oks_eval(gt, records, **kw), None
    if len(records) != len(instances):
        raise ValueError(
            f"{spec.ann_file}: {len(records)} prediction records for {len(instances)} "
            "instances. Fix: give one record per instance read from the file, in file order."
        )
    preds = np.stack([np.asarray(r["keypoints"], dtype=np.float64)[:, :2] for r in records])
    image_ids = np.array([str(inst.image_id) for inst in instances])
    if protocol.metric == "pckh":
        if not spec.gt_file or not Path(spec.gt_file).is_file():
            raise FileNotFoundError(
                f"MPII PCKh needs the head boxes of mpii_gt_val.mat; not found at "
                f"{spec.gt_file!r}. Fix: put the file next to {spec.ann_file}."
            )
        order = np.argsort([int(inst.extras.get("index", i)) for i, inst in enumerate(instances)])
        gt_mat: Any = _subset_ground_truth(spec, instances) if subset else spec.gt_file
        metrics = pckh(preds[order], gt_mat)
        if resample:
            return metrics, pckh_resampler(preds[order], gt_mat, image_ids[order])
        return metrics, None
    if protocol.metric == "pck_auc_epe":
        gt = np.stack([np.asarray(inst.keypoints)[:, :2] for inst in instances])
        mask = np.stack([np.asarray(inst.keypoints)[:, 2] > 0 for inst in instances])
        box = np.array([max(inst.bbox[2], inst.bbox[3]) for inst in instances], dtype=np.float64)
        norm = np.repeat(box[:, None], 2, axis=1)
        _, pck, _ = pck_accuracy(preds, gt, mask, 0.2, norm)
        metrics = {
            "PCK": float(pck),
            "AUC": float(auc(preds, gt, mask, 30.0, num_thrs=20)),
            "EPE": float(epe(preds, gt, mask)),
            "meta": {
                "pck_thr": 0.2,
                "pck_norm": "max(w, h) of the tight joint box",
                "auc_norm_px": 30.0,
                "auc_num_thrs": 20,
            },
        }
        if not resample:
            return metrics, None
        r = pck_auc_epe_resampler(preds, gt, mask, norm, image_ids)
        return metrics, r
    raise ValueError(f"unknown metric {protocol.metric!r}")


def bootstrap_metrics(
    metrics: dict[str, Any], resampler: Resampler, num_resamples: int, seed: int
) -> dict[str, Any]:
    """Add ``metrics["ci95"]`` (flat metric name → [lo, hi], the percentile 95 % interval over
    ``num_resamples`` image resamples) and return what ``meta["bootstrap"]`` records: only
    what the resamples are (deterministic; the run's time is ``meta["wall_time_s"]``), so two
    runs that score the same give the same meta."""
    result = bootstrap(resampler, num_resamples, seed)
    metrics["ci95"] = {name: r["ci95"] for name, r in result.items()}
    undefined = {name: r["undefined"] for name, r in result.items() if r["undefined"]}
    return {
        "resamples": num_resamples,
        "seed": seed,
        "unit": "image (drawn with replacement; the persons of an image stay together)",
        "images": resampler.num_units,
        "interval": "percentile, 95 % (2.5th and 97.5th)",
        "undefined": undefined,
    }


# ------------------------------------------------------------------------------------------
# The entry point
# ------------------------------------------------------------------------------------------


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def evaluate(
    model: torch.nn.Module | None,
    dataset: str | DatasetSpec,
    *,
    data_root: str | os.PathLike[str] = "data",
    split: str = "val",
    use_gt_bbox: bool | None = None,
    protocol: EvalProtocol | None = None,
    head: int | None = None,
    expert: int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    gt_as_prediction: bool = False,
    heatmap_oracle: bool = False,
    mean_pose_from: str | DatasetSpec | None = None,
    submission_only: bool = False,
    out_dir: str | os.PathLike[str] | None = None,
    checkpoint: str | None = None,
    progress: bool = True,
    decode_backend: str = "auto",
    max_instances: int | None = None,
    precision: str = "fp32",
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> EvalResult:
    """Evaluate ``model`` on ``dataset`` (a name under ``data_root``'s official layout, or a
    :class:`DatasetSpec`) and return the metrics with their provenance.

    ``model=None`` requires ``gt_as_prediction=True`` (ground-truth keypoints as predictions)
    or ``heatmap_oracle=True`` (ground-truth target heatmaps decoded, see :func:`predict`);
    both use the GT boxes.  ``mean_pose_from`` (a split name under ``data_root``, e.g.
    ``"train"``, or a :class:`DatasetSpec`) replaces the model by the no-model floor
    (:func:`mean_pose_predictions`) on the same boxes a model would get.
    ``submission_only`` (COCO test-dev, whose keypoints are not public): no metrics;
    ``predictions.json`` is the file to upload to the evaluation server.
    The ``protocol`` defaults to the dataset's official one; ``head``/``expert`` default to
    the dataset's training index (or 0 for a single-head model).
    ``max_instances=N`` evaluates the first N instances in file order (boxes of the detection
    file, GT instances otherwise) and scores them against the ground truth of those
    instances only (:func:`_subset_ground_truth`); the meta says so (``max_instances``,
    ``instances_total``, ``subset``).
    ``precision``: ``"fp32"`` (exact), ``"bf16"`` or ``"fp16"`` autocast of the forward pass
    (:func:`predict`).  In an initialised process group of N ranks (``torchrun``, see
    :mod:`posebh.evaluation.distributed`) each rank predicts a shard and rank 0 alone scores,
    writes and returns the result (a single process's, bit for bit); the other ranks get an
    empty result (metrics ``{}``).  ``meta`` records ``precision`` and ``world_size``.
    ``bootstrap=N`` (> 0) adds ``metrics["ci95"]``: each metric's percentile 95 % interval
    over N resamples of the evaluation images (seed ``bootstrap_seed``, recorded with the
    rest in ``meta["bootstrap"]``; :func:`bootstrap_metrics`).
    """
    start = time.perf_counter()
    rank, world_size = eval_world()
    if max_instances is not None and max_instances < 1:
        raise ValueError(f"max_instances must be ≥ 1, got {max_instances}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be ≥ 0 resamples (0: off), got {bootstrap}")
    if sum([gt_as_prediction, heatmap_oracle, mean_pose_from is not None]) > 1:
        raise ValueError("pass at most one of gt_as_prediction, heatmap_oracle, mean_pose_from")
    if mean_pose_from is not None and model is not None:
        raise ValueError("mean_pose_from replaces the model: pass model=None")
    oracle = gt_as_prediction or heatmap_oracle
    record = get_protocol(dataset.name if isinstance(dataset, DatasetSpec) else dataset)
    name = record.name
    if isinstance(dataset, DatasetSpec):
        spec = dataset
    else:
        spec = default_spec(name, split, data_root, use_gt_bbox=True if oracle else use_gt_bbox)
    if oracle and not spec.use_gt_bbox:
        spec = dataclasses.replace(spec, use_gt_bbox=True, det_file=None)
    protocol = protocol or default_protocol(record)
    instances, summary = read_dataset(spec)
    if log:
        log(f"{name} ({spec.split or split}): {summary}")
    if not instances:
        raise ValueError(f"{spec.ann_file}: no instances to evaluate ({summary})")
    instances_total = len(instances)
    capped = max_instances is not None and max_instances < instances_total
    if capped:
        instances = instances[:max_instances]
    reference_meta = None
    if gt_as_prediction:
        predictions = ground_truth_predictions(instances)
    elif mean_pose_from is not None:
        ref_spec = (
            mean_pose_from
            if isinstance(mean_pose_from, DatasetSpec)
            else default_spec(name, mean_pose_from, data_root, use_gt_bbox=True)
        )
        # Only the annotations are averaged: the reference split's images need not exist.
        reference, ref_summary = read_dataset(
            dataclasses.replace(ref_spec, use_gt_bbox=True, check_images=False)
        )
        reference = [r for r in reference if np.any(np.asarray(r.keypoints)[:, 2] > 0)]
        if not reference:
            raise ValueError(
                f"{ref_spec.ann_file}: no instance with a labelled keypoint to average for "
                f"the mean pose ({ref_summary})"
            )
        predictions = mean_pose_predictions(reference, instances)
        reference_meta = {
            "annotation_file": ref_spec.ann_file,
            "split": ref_spec.split,
            "instances": len(reference),
        }
    elif model is None and not heatmap_oracle:
        raise ValueError(
            "evaluate() needs a model unless gt_as_prediction=True or heatmap_oracle=True"
        )
    else:
        predictions = predict_on_ranks(
            model,
            instances,
            protocol,
            head=head,
            expert=expert,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            progress=progress,
            decode_backend=decode_backend,
            heatmap_oracle=heatmap_oracle,
            precision=precision,
        )
    if rank != 0 or predictions is None:  # rank 0 of a multi-rank evaluation scores alone
        return EvalResult(name, metrics={}, meta={"rank": rank, "world_size": world_size})
    if submission_only and protocol.metric not in ("oks", "wholebody"):
        raise ValueError(f"submission_only applies to COCO-format splits, not {name}")
    records, images = scored_records(predictions, instances, spec, protocol)
    bootstrap_meta, resampler = None, None
    if submission_only:
        metrics: dict[str, Any] = {"submission": {"results": len(records), "images": images}}
    else:
        metrics, resampler = score_records(
            records, instances, spec, protocol, subset=capped, resample=bootstrap > 0
        )
        if resampler is not None:
            bootstrap_meta = bootstrap_metrics(metrics, resampler, bootstrap, bootstrap_seed)
    meta = {
        "dataset": name,
        "split": spec.split or split,
        "annotation_file": spec.ann_file,
        "image_prefix": spec.img_prefix,
        "box_file": None if spec.use_gt_bbox else spec.det_file,
        "boxes": "ground truth" if spec.use_gt_bbox else "detections",
        "det_bbox_thr": spec.det_bbox_thr,
        "spec_source": spec.source,
        "instances": len(instances),
        "max_instances": max_instances,
        "instances_total": instances_total,
        "subset": _subset_note(protocol.metric, len(instances), instances_total)
        if capped
        else None,
        "read_summary": _summary_dict(summary),
        "protocol": dataclasses.asdict(protocol),
        "predictions_from": "ground truth"
        if gt_as_prediction
        else "ground-truth target heatmaps, decoded (no flip test)"
        if heatmap_oracle
        else "mean pose of the reference split in every box (no model)"
        if reference_meta
        else "model",
        "mean_pose_reference": reference_meta,
        "decode_backend": None if gt_as_prediction or reference_meta else decode_backend,
        "precision": precision if model is not None and not gt_as_prediction else None,
        "world_size": world_size,
        "checkpoint": checkpoint,
        "model_config": _model_config(model)
        if model is not None and not gt_as_prediction
        else None,
        "commit": _git_commit(),
        "versions": library_versions("torch", "tabulate"),
        "hardware": {
            "machine": platform.machine(),
            "processor": cpu_name(),
            "cpus": os.cpu_count(),
            "device": str(device or "cpu"),
        },
        "bootstrap": bootstrap_meta,
        "wall_time_s": round(time.perf_counter() - start, 3),
    }
    result = EvalResult(
        dataset=name, metrics=metrics, meta=meta, predictions=records, resampler=resampler
    )
    if out_dir is not None:
        result.files = write_result(result, out_dir)
    if log:
        log(result.table())
    return result


def _subset_ground_truth(spec: DatasetSpec, instances: Sequence[Instance]) -> Any:
    """The ground truth of ``instances`` alone (a ``max_instances`` cap): for OKS metrics the
    annotation file cut to the images the instances lie in (every annotation of those images
    kept, so a GT person of a kept image without a kept box counts as missed); for MPII PCKh
    the ``.mat`` arrays of the kept records, in record order."""
    if spec.name == "mpii":
        from posebh.evaluation import load_mpii_gt

        mat = load_mpii_gt(spec.gt_file)
        rows = np.sort([int(inst.extras.get("index", i)) for i, inst in enumerate(instances)])
        return {
            "pos_gt_src": np.asarray(mat["pos_gt_src"])[..., rows],
            "headboxes_src": np.asarray(mat["headboxes_src"])[..., rows],
            "jnt_missing": np.asarray(mat["jnt_missing"])[..., rows],
            **({"dataset_joints": mat["dataset_joints"]} if "dataset_joints" in mat else {}),
        }
    data = json.loads(Path(spec.ann_file).read_text())
    kept = {inst.image_id for inst in instances}
    data["images"] = [img for img in data["images"] if img["id"] in kept]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
    return data


def _subset_note(metric: str, kept: int, total: int) -> str:
    """What a capped evaluation measured, in words (the meta's ``subset``)."""
    scope = {
        "oks": "OKS AP over the images of the kept instances (all their GT persons)",
        "wholebody": "OKS AP over the images of the kept instances (all their GT persons)",
        "pckh": "PCKh over the kept records",
    }.get(metric, "the metric over the kept instances")
    return f"instances evaluated {kept} of {total} (the first {kept} in file order); {scope}"


def _summary_dict(summary: ReadSummary) -> dict[str, Any]:
    return {"read": summary.read, "kept": summary.kept, "skipped": dict(summary.skipped)}


def _model_config(model: torch.nn.Module) -> dict[str, Any] | None:
    cfg = getattr(model, "config", None)
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else None


def write_result(result: EvalResult, out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Write ``metrics.json``, ``metrics.md`` and ``predictions.json`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "metrics_json": out / "metrics.json",
        "metrics_md": out / "metrics.md",
        "predictions": out / "predictions.json",
    }
    payload = {"dataset": result.dataset, "metrics": result.metrics, "meta": result.meta}
    files["metrics_json"].write_text(json.dumps(_jsonable(payload), indent=2))
    m = result.meta
    md = [
        f"# {result.dataset} — {m['split']}",
        "",
        f"- predictions from: {m['predictions_from']}; checkpoint: {m['checkpoint']}",
        f"- annotations: `{m['annotation_file']}`; boxes: {m['boxes']}"
        + (f" (`{m['box_file']}`)" if m["box_file"] else ""),
        f"- protocol: {m['protocol']}",
        f"- commit {m['commit']}; versions {m['versions']}",
        "",
        result.table(),
        "",
    ]
    files["metrics_md"].write_text("\n".join(md))
    files["predictions"].write_text(json.dumps(_jsonable(result.predictions)))
    return {k: str(v) for k, v in files.items()}
