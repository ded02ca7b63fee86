"""Cross-type measurement: how well dataset d's head predicts d's keypoints on the images of
every other dataset e, scored against the full cross-type ground truth SynthPose keeps for
every image (:mod:`posebh.synth.crossgt`).

Shape vocabulary: a *head* d is a dataset whose keypoints a model head predicts (its skeleton,
K_d keypoints); an *image set* e is a dataset whose val instances (GT boxes, as read by
``posebh.datasets.read_dataset``) are the people / animals the head runs on; a *cell* (d, e)
exists when SynthPose stores d's skeleton for e's figures (human skeletons on human images,
quadruped ones on animal images), and the diagonal (d, d) is the in-domain number.

Every cell goes through the evaluation path of ``posebh eval``, only with other inputs:

1. e's instances (boxes, centres, scales, images) carry d's cross-type keypoints
   (:func:`cross_instances`);
2. :func:`posebh.evaluate.predict` runs head d (and, by default, expert d) under d's official
   protocol (flip test, DARK-UDP decode);
3. :func:`posebh.evaluate.scored_records` / :func:`~posebh.evaluate.score_records` score
   them under d's protocol (as ``compute_metrics``): rescoring + OKS-NMS and OKS AP with d's
   sigmas against ``cross_type_gt(e → d)`` (COCO, AIC with 0.53·w·h, AP-10K, APT-36K), the
   five-part WholeBody AP, or MPII PCKh with the MPII head boxes of e's figures.

``bootstrap=N`` adds each cell's percentile 95 % interval over N resamples of e's images
(:mod:`posebh.evaluation.bootstrap`). The resamples of image set e depend only on
``bootstrap_seed`` and e's position among the image sets: every head sees the same multisets
of e, and different image sets are resampled independently, so the mean over the other image
sets and the gap own − mean get their intervals replicate by replicate.

``oracle=True`` feeds the cross GT back as predictions through steps 1 and 3
(:func:`posebh.evaluate.ground_truth_predictions`): every cell scores exactly 1 (100 for
PCKh), which checks the pairing of instances, files and metrics.

    from posebh.crosstype import cross_type_eval
    res = cross_type_eval(model, "data_synth")
    print(res.to_markdown())          # rows: heads d, columns: image sets e
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from posebh.datasets import DatasetSpec, Instance, default_spec, read_dataset
from posebh.evaluate import (
    default_protocol,
    ground_truth_predictions,
    predict,
    score_records,
    scored_records,
)
from posebh.evaluation import library_versions, mpii_gt_arrays, pckh, pckh_resampler
from posebh.evaluation.bootstrap import Resampler, percentile_interval, replicates
from posebh.evaluation.predict import EvalProtocol
from posebh.protocol import TRAINING_DATASETS, get_protocol
from posebh.skeletons import get_skeleton
from posebh.synth.crossgt import cross_type_gt, load_cross_gt, source_group
from posebh.synth.labels import COMPATIBLE

__all__ = [
    "DEFAULT_DATASETS",
    "CrossTypeResult",
    "cross_instances",
    "cross_pairs",
    "cross_type_eval",
    "headline",
]

#: The multi-dataset training sets (head order of a six-head model).
DEFAULT_DATASETS: tuple[str, ...] = tuple(p.name for p in TRAINING_DATASETS)
_KIND_OF = {s: kind for kind, names in COMPATIBLE.items() for s in names}


def headline(metrics: Mapping[str, Any]) -> tuple[str, float]:
    """The number a cell is reported by: OKS AP, WholeBody whole-body AP or MPII PCKh."""
    if isinstance(metrics.get("wholebody"), Mapping):
        return "AP(wholebody)", float(metrics["wholebody"]["AP"])
    for key in ("AP", "PCKh"):
        if key in metrics:
            return key, float(metrics[key])
    raise ValueError(f"no headline metric among {sorted(metrics)}")


#: A headline (:func:`headline`) → its flat name in a cell's Resampler.
_RESAMPLED_NAME = {"AP(wholebody)": "wholebody/AP", "AP": "AP", "PCKh": "PCKh"}


def image_set_seed(bootstrap_seed: int, position: int) -> int:
    """The resample seed of the image set at ``position``: independent streams per image set,
    the same for every head."""
    return int(np.random.SeedSequence([bootstrap_seed, position]).generate_state(1)[0])


def cross_pairs(heads: Sequence[str], datasets: Sequence[str]) -> list[tuple[str, str]]:
    """The (head d, image set e) cells whose ground truth exists: d's skeleton describes e's
    figures (same kind: human, quadruped or hand)."""
    out = []
    for d in heads:
        for e in datasets:
            if _KIND_OF.get(get_skeleton(d).name) == _KIND_OF.get(get_skeleton(e).name):
                out.append((d, e))
    return out


def _figure_index(cross: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(str(f["image_id"]), str(f["id"])): f for f in cross["figures"]}


def cross_instances(
    instances: Sequence[Instance], cross: Mapping[str, Any], target: str
) -> list[Instance]:
    """e's instances with ``target``'s keypoints [K_d, 3] (x, y in pixels, v ∈ {0, 1}) from
    the cross GT ``cross`` (:func:`posebh.synth.crossgt.load_cross_gt` of e's split) in
    place of e's own; ``extras["index"]`` is the position in the list (the PCKh order) and
    ``extras["figure"]`` the cross-GT figure.  Raises ``KeyError`` for an instance without a
    cross-GT figure (a detection box, or GT of another world)."""
    stored = get_protocol(target).eval_expert  # OCHuman's keypoints are stored as COCO's
    figures = _figure_index(cross)
    out = []
    for i, inst in enumerate(instances):
        key = (str(inst.image_id), str(inst.ann_id))
        if key not in figures:
            raise KeyError(
                f"instance {i} (image {inst.image_id!r}, annotation {inst.ann_id!r}) has no "
                "cross-type ground truth; is this a SynthPose tree with GT boxes?"
            )
        fig = figures[key]
        kp = np.asarray(fig["keypoints"][stored], dtype=np.float32).reshape(-1, 3)
        kp[:, 2] = (kp[:, 2] > 0).astype(np.float32)
        out.append(
            dataclasses.replace(
                inst,
                keypoints=kp,
                extras={**inst.extras, "index": i, "figure": fig},
            )
        )
    return out


def _mpii_gt(instances: Sequence[Instance]) -> dict[str, np.ndarray]:
    """The ``mpii_gt_val.mat`` arrays of cross instances (1-based joints, MPII head boxes)."""
    joints = np.stack([np.asarray(inst.keypoints[:, :2], np.float64) + 1.0 for inst in instances])
    visible = np.stack([np.asarray(inst.keypoints[:, 2]) > 0 for inst in instances])
    boxes = np.stack(
        [
            np.asarray(inst.extras["figure"]["head_box"], np.float64).reshape(2, 2) + 1.0
            for inst in instances
        ]
    )
    return mpii_gt_arrays(joints, boxes, visible)


@dataclass
class CrossTypeResult:
    """The measured cells.

    ``matrix[d][e]``: the headline value of head d on e's images (None where no GT exists);
    ``metric[d]``: its name (AP, AP(wholebody), PCKh); ``metrics[d][e]``: the full metric
    dict of the cell; ``instances[e]``: e's instance count; ``meta``: settings and timing;
    ``ci[d][e]``: the cell's percentile 95 % interval [lo, hi] (``bootstrap=N``; empty when
    off); ``replicates[d][e]``: the headline on each resample (in memory only, not in
    :meth:`to_dict`), from which :meth:`summary` derives its intervals.
    """

    heads: list[str]
    datasets: list[str]
    matrix: dict[str, dict[str, float | None]]
    metric: dict[str, str]
    metrics: dict[str, dict[str, dict[str, Any]]] = field(repr=False, default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    ci: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)
    replicates: dict[str, dict[str, np.ndarray]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def value(self, head: str, dataset: str) -> float | None:
        """One cell (None where there is no ground truth)."""
        return self.matrix[head][dataset]

    def diagonal(self) -> dict[str, float | None]:
        """head d → its in-domain value (None when d is not also an image set)."""
        return {d: self.matrix[d].get(d) for d in self.heads}

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per head d: ``in_domain`` (the diagonal), ``cross_mean`` (mean over the other image
        sets with ground truth) and their ``gap`` (in_domain − cross_mean); None where a
        side is missing.  Units are the head's metric (AP in [0, 1], PCKh in percent).

        Bootstrapped (``replicates``): also ``in_domain_ci95``, ``cross_mean_ci95`` and
        ``gap_ci95``, percentile intervals of the same statistics taken replicate by
        replicate (the image sets are resampled independently)."""
        out: dict[str, dict[str, Any]] = {}
        for d in self.heads:
            own = self.matrix[d].get(d)
            others = [e for e, v in self.matrix[d].items() if e != d and v is not None]
            cross = float(np.mean([self.matrix[d][e] for e in others])) if others else None
            gap = own - cross if own is not None and cross is not None else None
            out[d] = {"in_domain": own, "cross_mean": cross, "gap": gap}
            reps = self.replicates.get(d)
            if not reps:
                continue
            own_r = reps.get(d) if own is not None else None
            cross_r = np.mean([reps[e] for e in others], axis=0) if others else None
            out[d]["in_domain_ci95"] = None if own_r is None else percentile_interval(own_r)
            out[d]["cross_mean_ci95"] = None if cross_r is None else percentile_interval(cross_r)
            out[d]["gap_ci95"] = (
                None if own_r is None or cross_r is None else percentile_interval(own_r - cross_r)
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: heads, datasets, matrix, metric names, full metrics, counts, meta, the
        cells' intervals and :meth:`summary` (not the replicates)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "replicates"}  # fmt: skip
        return _jsonable({**fields, "summary": self.summary()})

    def to_markdown(self, digits: int = 3) -> str:
        """The matrix as a Markdown table: one row per head d (with its metric), one column
        per image set e; the in-domain cell in bold, "–" where there is no ground truth;
        bootstrapped, each cell is followed by its 95 % interval."""
        lines = [
            "| head \\ images | metric | " + " | ".join(self.datasets) + " |",
            "|---|---|" + "---|" * len(self.datasets),
        ]
        for d in self.heads:
            cells = []
            for e in self.datasets:
                v = self.matrix[d].get(e)
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    cells.append("–")
                    continue
                pct = self.metric[d] == "PCKh"
                places = max(digits - 2, 1) if pct else digits
                text = f"{v:.{places}f}"
                text = f"**{text}**" if d == e else text
                ci = self.ci.get(d, {}).get(e)
                if ci and ci[0] is not None and ci[1] is not None:
                    text += f" [{ci[0]:.{places}f}, {ci[1]:.{places}f}]"
                cells.append(text)
            lines.append(f"| {d} | {self.metric[d]} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _model_heads(model: torch.nn.Module) -> list[str]:
    """The datasets whose head the model has: the six-head layout, or one head per model
    with a single head (not knowable: ask for ``heads=``)."""
    ks = [h.num_keypoints for h in model.heads]
    wanted = [get_skeleton(d).num_keypoints for d in DEFAULT_DATASETS]
    if ks == wanted:
        return list(DEFAULT_DATASETS)
    raise ValueError(
        f"the model's heads predict {ks} keypoints, not the six-dataset layout {wanted}; "
        "pass heads=[...] (dataset names) and head_index={...}"
    )


def cross_type_eval(
    model: torch.nn.Module | None,
    data_root: str | os.PathLike[str],
    *,
    heads: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    split: str = "val",
    batch_size: int = 64,
    progress: bool = True,
    route: Literal["head", "image"] = "head",
    head_index: Mapping[str, int] | None = None,
    device: str | torch.device | None = None,
    oracle: bool = False,
    perturb: Callable[[str, str, list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
) -> CrossTypeResult:
    """Head d's keypoints on e's ``split`` images, for every cell with ground truth.

    Args:
        model: a multi-head PoseBH / ViTPose++ model (None with ``oracle=True``).
        data_root: a SynthPose tree (``posebh synth --out``); the cross GT lives under
            ``synthpose/cross_gt``.
        heads: head datasets d (rows); default: the model's six datasets.
        datasets: image sets e (columns); default: ``heads``.  Any SynthPose dataset with a
            ``split`` (e.g. ochuman) works.
        split: the split of e's images ("val").
        batch_size: inference batch size.
        progress: a progress line per cell (``log``, default print) and tqdm bars.
        route: which backbone expert runs: "head" (d's, the deployed d model) or "image"
            (e's, as in the multi-dataset forward pass of training).
        head_index: dataset → head index overrides (default: the skeleton's multi-dataset
            index, OCHuman → COCO's).
        device: inference device (default: the model's).
        oracle: predictions = the cross GT itself (every cell must score 1 / 100).
        perturb: ``perturb(d, e, predictions) → predictions`` applied before scoring (tests:
            a perturbed oracle).
        work_dir: where the per-cell GT files are written (default: a temporary folder).
        log: progress sink (default ``print`` when ``progress``).
        bootstrap: resamples of each image set for the cells' 95 % intervals (0: off).
        bootstrap_seed: seed of the resamples (:func:`image_set_seed` per image set).

    Returns:
        :class:`CrossTypeResult` (rows ``heads``, columns ``datasets``).
    """
    if model is None and not oracle:
        raise ValueError("cross_type_eval needs a model unless oracle=True")
    if route not in ("head", "image"):
        raise ValueError(f"route must be 'head' or 'image', got {route!r}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be ≥ 0 resamples (0: off), got {bootstrap}")
    start = time.perf_counter()
    if log is None and progress:
        log = print
    head_names = [get_skeleton(d).name for d in (heads or _model_heads(model))]
    image_sets = [get_skeleton(e).name for e in (datasets or head_names)]
    root = Path(data_root)
    pairs = cross_pairs(head_names, image_sets)
    index = dict(head_index or {})

    def head_of(name: str) -> int | None:
        if name in index:
            return index[name]
        return get_protocol(name).eval_head

    matrix: dict[str, dict[str, float | None]] = {d: dict.fromkeys(image_sets) for d in head_names}
    metric = {d: ("PCKh" if d == "mpii" else "AP(wholebody)" if d == "coco_wholebody" else "AP")
              for d in head_names}  # fmt: skip
    metrics: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in head_names}
    counts: dict[str, int] = {}
    ci: dict[str, dict[str, list[float | None]]] = {}
    reps: dict[str, dict[str, np.ndarray]] = {}
    loaded: dict[str, tuple[list[Instance], dict[str, Any]]] = {}
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="posebh_crosstype_")
        out = Path(tmp.name)
    else:
        out = Path(work_dir)
        out.mkdir(parents=True, exist_ok=True)
    try:
        for d, e in pairs:
            if e not in loaded:
                spec = default_spec(e, split, root, use_gt_bbox=True)
                instances, _ = read_dataset(spec, show_progress=False)
                loaded[e] = (instances, load_cross_gt(root, e, split))
                counts[e] = len(instances)
            instances, cross = loaded[e]
            cells = cross_instances(instances, cross, d)
            protocol = default_protocol(d)
            gt = cross_type_gt(root, e, d, split)
            ann_file = out / f"{d}_on_{e}_{split}.json"
            ann_file.write_text(json.dumps(gt, separators=(",", ":")))
            spec = DatasetSpec(
                name=d,
                ann_file=str(ann_file),
                img_prefix=str(Path(default_spec(e, split, root).img_prefix)),
                use_gt_bbox=True,
                split=split,
                source=f"cross-type GT: {d} keypoints on {e} {split} ({source_group(e)} images)",
            )
            if oracle:
                preds = ground_truth_predictions(cells)
            else:
                h = head_of(d)
                expert = h if route == "head" else head_of(e)
                preds = predict(
                    model,
                    cells,
                    protocol,
                    head=h,
                    expert=expert if expert is not None else h,
                    batch_size=batch_size,
                    device=device,
                    progress=progress,
                )
            if perturb is not None:
                preds = perturb(d, e, preds)
            m, resampler = _score_cell(preds, cells, spec, protocol, resample=bootstrap > 0)
            name, value = headline(m)
            metric[d] = name
            matrix[d][e] = value
            metrics[d][e] = m
            if resampler is not None:
                seed = image_set_seed(bootstrap_seed, image_sets.index(e))
                column = resampler.names.index(_RESAMPLED_NAME[name])
                reps.setdefault(d, {})[e] = replicates(resampler, bootstrap, seed)[:, column]
                ci.setdefault(d, {})[e] = percentile_interval(reps[d][e])
            if log is not None:
                log(f"crosstype: {d} head on {e} {split} ({len(cells)} instances): {name} "
                    f"{value:.4f}")  # fmt: skip
    finally:
        if tmp is not None:
            tmp.cleanup()
    meta = {
        "data_root": str(root),
        "split": split,
        "route": route,
        "oracle": oracle,
        "pairs": [list(p) for p in pairs],
        "boxes": "ground truth",
        "protocols": {d: dataclasses.asdict(default_protocol(d)) for d in head_names},
        "versions": library_versions("torch"),
        "wall_time_s": round(time.perf_counter() - start, 3),
    }
    if bootstrap > 0:
        meta["bootstrap"] = {"resamples": bootstrap, "seed": bootstrap_seed, "unit": "image",
                             "interval": "percentile 95 %",
                             "seeds": {e: image_set_seed(bootstrap_seed, i)
                                       for i, e in enumerate(image_sets)}}  # fmt: skip
    return CrossTypeResult(
        heads=head_names,
        datasets=image_sets,
        matrix=matrix,
        metric=metric,
        metrics=metrics,
        instances=counts,
        meta=meta,
        ci=ci,
        replicates=reps,
    )


def _score_cell(
    preds: list[dict[str, Any]],
    cells: list[Instance],
    spec: DatasetSpec,
    protocol: EvalProtocol,
    *,
    resample: bool,
) -> tuple[dict[str, Any], Resampler | None]:
    """A cell's metrics (as ``compute_metrics`` / :func:`pckh`) and, with ``resample``, their
    Resampler over e's images."""
    if protocol.metric == "pckh":
        # PCKh matches predictions to GT by position: both are in ``cells`` order.
        arr = np.stack([np.asarray(p["keypoints"])[:, :2] for p in preds])
        gt = _mpii_gt(cells)
        m = pckh(arr, gt)
        if not resample:
            return m, None
        return m, pckh_resampler(arr, gt, np.array([str(c.image_id) for c in cells]))
    records, _ = scored_records(preds, cells, spec, protocol)
    return score_records(records, cells, spec, protocol, resample=resample)
