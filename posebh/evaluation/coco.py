"""COCO-style OKS keypoint AP with the xtcocotools semantics the official results used.

Shapes and formats first:

* ``gt`` is a COCO keypoint annotation file (path) or the already-loaded dict with ``images``,
  ``annotations`` and ``categories``. Every annotation needs ``image_id``, ``category_id``,
  ``bbox`` ``[x, y, w, h]`` and a flat ``keypoints`` list ``[x1, y1, v1, ...]`` of length 3K;
  COCO-WholeBody annotations also carry ``foot_kpts`` (6·3), ``face_kpts`` (68·3),
  ``lefthand_kpts`` (21·3) and ``righthand_kpts`` (21·3). ``area`` is needed only with
  ``use_area=True``; ``iscrowd`` defaults to 0 (as in xtcocotools' ``COCO`` loader).
* ``results`` is a COCO results file (path) or list: one record per detected instance with
  ``image_id``, ``category_id``, ``keypoints`` (flat 3K list, or a ``[K, 3]`` array) and
  ``score``; WholeBody records add the four part fields and optionally ``<part>_score``.
* ``sigmas`` is the per-keypoint OKS constant array of shape ``(K,)`` (or a skeleton name such as
  ``"aic"``, looked up in :mod:`posebh.skeletons`).

The evaluation itself is **pycocotools** ``COCOeval`` (``evaluate``/``accumulate``/``summarize``
untouched). The official stack used **xtcocotools** ``COCOeval`` (``iouType``, ``sigmas``,
``use_area``); its differences from pycocotools are reproduced by normalising the inputs that
pycocotools reads, which is equivalent to xtcocotools 1.14.3 ``cocoeval.py``:

1. ``params.kpt_oks_sigmas`` is set to the dataset sigmas.
2. A detection whose (part) keypoint scores are all ``<= 0`` is dropped before matching
   (xtcocotools ``_prepare``: ``k = count_nonzero(d[2::3] > 0); if k == 0: continue``).
3. A GT is ignored when it is a crowd or none of its (part) keypoints has ``v > 0``
   (xtcocotools counts ``v > 0``; pycocotools reads ``num_keypoints``, so that field is rewritten
   to the count). ``keypoints_crowd`` keeps the file's ``num_keypoints`` (visible-only in
   CrowdPose), as xtcocotools does.
4. ``use_area=False``: the OKS scale *and* the area-range filter use ``bbox[3]·bbox[2]·0.53``
   (written into ``area``); with ``use_area=True`` the file's ``area`` is used and must exist.
5. Part types ``keypoints_{body,foot,face,lefthand,righthand,wholebody}``: keypoints come from
   the part field (wholebody concatenates the five in that order), scores from ``<part>_score``
   when a record has it and ``score`` otherwise; the GT ``area`` (whole person) is the scale of
   every part and a detection's ``area``/``bbox`` is the extent of its *body* ``keypoints``
   field, as ``loadRes`` computes it.
6. GT annotation ids are renumbered 1..N internally: pycocotools marks "matched" with the
   matched id ``> 0``, so a GT with id 0 would count as unmatched; xtcocotools uses ``-1``.

``keypoints_crowd`` (CrowdPose) returns ``AP, AP50, AP75, AR, AR50, AR75`` and the
crowd-index splits ``AP_easy`` (crowdIndex < 0.2), ``AP_medium`` (< 0.8) and ``AP_hard``; as in
xtcocotools each split is the plain mean of ``precision[:, :, :, 0, :]`` rounded to 4 decimals.

Every result carries a ``meta`` dict (see :mod:`posebh.evaluation`): library versions, the
sigmas, ``use_area``, ``iou_type``, the score field and counts of GTs, ignored GTs, results and
dropped detections.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import numbers
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from posebh.evaluation._meta import XTCOCOTOOLS_SEMANTICS, result_meta
from posebh.skeletons import get_skeleton

__all__ = [
    "CROWD_STAT_NAMES",
    "IOU_TYPES",
    "PART_FIELDS",
    "STAT_NAMES",
    "WHOLEBODY_PARTS",
    "oks_eval",
    "wholebody_eval",
    "write_coco_results",
]

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
CROWD_STAT_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_easy", "AP_medium", "AP_hard")

#: COCO-WholeBody record field of each part, in the concatenation order of ``wholebody``.
PART_FIELDS: Mapping[str, str] = {
    "body": "keypoints",
    "foot": "foot_kpts",
    "face": "face_kpts",
    "lefthand": "lefthand_kpts",
    "righthand": "righthand_kpts",
}
WHOLEBODY_PARTS = (*PART_FIELDS, "wholebody")
IOU_TYPES = ("keypoints", "keypoints_crowd", *(f"keypoints_{p}" for p in WHOLEBODY_PARTS))

# xtcocotools Params.setKpParams / get_type_result(first=0.2, second=0.8).
_CROWD_SPLITS = (0.2, 0.8)

GtLike = str | os.PathLike | Mapping[str, Any]
ResultsLike = str | os.PathLike | Sequence[Mapping[str, Any]]


# ------------------------------------------------------------------------------------------
# Loading and validation
# ------------------------------------------------------------------------------------------


def _load_json(src: Any, what: str) -> tuple[Any, str]:
    """Read ``src`` if it is a path; return ``(data, name used in error messages)``."""
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise ValueError(
                f"{path}: {what} file is empty (0 bytes). Fix: the write or download was "
                "interrupted; regenerate or re-download it."
            )
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f), path
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: {what} file is not valid JSON ({e})") from e
    return src, f"<{what} given in memory>"


def _fields_of(iou_type: str) -> tuple[str, ...]:
    if iou_type in ("keypoints", "keypoints_crowd"):
        return ("keypoints",)
    part = iou_type.removeprefix("keypoints_")
    if part == "wholebody":
        return tuple(PART_FIELDS.values())
    return (PART_FIELDS[part],)


def _score_key_of(iou_type: str) -> str:
    if iou_type in ("keypoints", "keypoints_crowd"):
        return "score"
    return iou_type.removeprefix("keypoints_") + "_score"


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _flat_keypoints(value: Any, where: str, field: str, length: int | None) -> list[float]:
    """``value`` as a flat list of Python floats (a ``[K, 3]`` array is flattened)."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: field {field!r} is not a numeric keypoint list ({e})") from e
    if length is not None and arr.size != length:
        raise ValueError(
            f"{where}: field {field!r} has {arr.size} values, expected {length} "
            f"({length // 3} keypoints x 3)"
        )
    if arr.size % 3:
        raise ValueError(f"{where}: field {field!r} has {arr.size} values, not a multiple of 3")
    if not np.isfinite(arr).all():
        raise ValueError(
            f"{where}: field {field!r} contains NaN or infinite values. Fix: repair the "
            "annotation file, or (in results) the prediction step that wrote them."
        )
    return arr.tolist()


def _length_message(where: str, fields: tuple[str, ...], got: int, expected: int) -> str:
    names = "+".join(map(repr, fields))
    return (
        f"{where}: {names} has {got} values, expected {expected} (len(sigmas) x 3). Fix: "
        "score results of this dataset's skeleton (x, y, score per keypoint)"
    )


def _check_dataset(dataset: Any, src: str) -> None:
    if not isinstance(dataset, Mapping):
        raise ValueError(f"{src}: a COCO annotation file must hold a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(dataset.get(key), list):
            raise ValueError(f"{src}: missing or non-list field {key!r}")
    for key in ("images", "categories"):
        for i, item in enumerate(dataset[key]):
            if not isinstance(item, Mapping) or "id" not in item:
                raise ValueError(f"{src}: {key}[{i}] has no 'id'")
    if not dataset["annotations"]:
        # COCOeval would report -1 for every stat: there is nothing to score against.
        raise ValueError(
            f"{src}: 'annotations' is empty ({len(dataset['images'])} images), so there is "
            "no ground truth to evaluate against. Fix: evaluate on the split's keypoint "
            "annotation file (an image-info file, e.g. COCO test-dev, can only be submitted)."
        )
    # pycocotools/xtcocotools index by id: a repeated id silently replaces or merges records.
    _check_unique_ids(dataset["images"], "images", src)
    _check_unique_ids(dataset["annotations"], "annotations", src)


def _check_unique_ids(records: list[Any], key: str, src: str) -> None:
    """``ValueError`` naming the first repeated ``id`` of ``records`` (records without one pass)."""
    ids = [r.get("id") for r in records if isinstance(r, Mapping) and r.get("id") is not None]
    if len(set(ids)) == len(ids):
        return
    seen: set[Any] = set()
    for i, r in enumerate(records):
        rid = r.get("id") if isinstance(r, Mapping) else None
        if rid is not None and rid in seen:
            raise ValueError(
                f"{src}: {key}[{i}] repeats id {rid!r}. Fix: ids in '{key}' must be unique; "
                "regenerate the annotation file."
            )
        seen.add(rid)


def _prepare_gt(
    dataset: Mapping[str, Any],
    src: str,
    iou_type: str,
    num_values: int,
    use_area: bool,
) -> tuple[dict[str, Any], int]:
    """The GT dataset pycocotools will read, normalised to xtcocotools semantics.

    Returns ``(dataset, number of ignored GTs)``.
    """
    fields = _fields_of(iou_type)
    image_ids = {img["id"] for img in dataset["images"]}
    cat_ids = {cat["id"] for cat in dataset["categories"]}
    anns = []
    ignored = 0
    for i, ann in enumerate(dataset["annotations"]):
        where = f"{src}: annotation {i} (id={ann.get('id')!r})"
        for key in ("image_id", "category_id", "bbox", *fields):
            if key not in ann:
                raise ValueError(f"{where}: missing field {key!r}")
        if ann["image_id"] not in image_ids:
            raise ValueError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        if ann["category_id"] not in cat_ids:
            raise ValueError(f"{where}: category_id {ann['category_id']!r} not in 'categories'")
        bbox = ann["bbox"]
        if not (isinstance(bbox, Sequence) and len(bbox) == 4 and all(map(_is_real, bbox))):
            raise ValueError(f"{where}: field 'bbox' must be 4 numbers [x, y, w, h]")
        kpts: list[float] = []
        for field in fields:
            kpts += _flat_keypoints(ann[field], where, field, None)
        if len(kpts) != num_values:
            raise ValueError(_length_message(where, fields, len(kpts), num_values))
        iscrowd = int(bool(ann.get("iscrowd", 0)))
        if iou_type == "keypoints_crowd":
            if "num_keypoints" not in ann:
                raise ValueError(f"{where}: missing field 'num_keypoints' (keypoints_crowd)")
            num_keypoints = ann["num_keypoints"]
        else:
            num_keypoints = int(np.count_nonzero(np.asarray(kpts[2::3]) > 0))
        if use_area:
            if "area" not in ann:
                raise ValueError(
                    f"{where}: missing field 'area'; evaluate with use_area=False "
                    f"(OKS scale 0.53*w*h of the bbox) for files without it"
                )
            area = ann["area"]
        else:
            # The exact expression of xtcocotools computeOks (w*h is commutative in IEEE).
            area = bbox[3] * bbox[2] * 0.53
        ignored += bool(iscrowd or num_keypoints == 0)
        anns.append(
            {
                "id": len(anns) + 1,  # see module docstring, item 6
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "bbox": list(bbox),
                "area": area,
                "iscrowd": iscrowd,
                "num_keypoints": num_keypoints,
                "keypoints": kpts,
            }
        )
    out = {
        "images": list(dataset["images"]),
        "categories": list(dataset["categories"]),
        "annotations": anns,
    }
    return out, ignored


def _prepare_results(
    results: Any,
    src: str,
    iou_type: str,
    num_values: int,
    image_ids: set[Any],
    cat_ids: set[Any],
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Validated detections in the form ``loadRes`` would produce, minus the dropped ones."""
    if not isinstance(results, Sequence) or isinstance(results, (str, bytes)):
        raise ValueError(f"{src}: results must be a JSON list of records")
    if not results:
        # The official loadRes fails here with an IndexError (it reads anns[0]); a silent AP
        # of 0 would hide a broken prediction step.
        raise ValueError(
            f"{src}: the results list is empty: there is nothing to evaluate. Fix: check the "
            "prediction step (every box gives one record) and the results file."
        )
    fields = _fields_of(iou_type)
    score_key = _score_key_of(iou_type)
    dts: list[dict[str, Any]] = []
    dropped = fallback = 0
    for i, rec in enumerate(results):
        where = f"{src}: result {i}"
        if not isinstance(rec, Mapping):
            raise ValueError(f"{where}: not a JSON object")
        where = f"{src}: result {i} (image_id={rec.get('image_id')!r})"
        for key in ("image_id", "category_id", "score", "keypoints", *fields):
            if key not in rec:
                raise ValueError(f"{where}: missing field {key!r}")
        if rec["image_id"] not in image_ids:
            raise ValueError(
                f"{where}: image_id {rec['image_id']!r} is not in the GT file. Fix: score "
                "results predicted on this annotation file's images"
            )
        if rec["category_id"] not in cat_ids:
            raise ValueError(
                f"{where}: category_id {rec['category_id']!r} not in the GT file. Fix: use the "
                "GT file's category ids"
            )
        if score_key in rec:
            score = rec[score_key]
            used = score_key
        else:
            score = rec["score"]
            used = "score"
            fallback += score_key != "score"
        if not _is_real(score) or not math.isfinite(score):
            raise ValueError(f"{where}: field {used!r} must be a finite number, got {score!r}")
        kpts: list[float] = []
        for field in fields:
            kpts += _flat_keypoints(rec[field], where, field, None)
        if len(kpts) != num_values:
            raise ValueError(_length_message(where, fields, len(kpts), num_values))
        # xtcocotools _prepare: a detection without any positive (part) score is dropped.
        if not np.count_nonzero(np.asarray(kpts[2::3]) > 0):
            dropped += 1
            continue
        # loadRes: area and bbox are the extent of the record's (body) 'keypoints' field.
        if fields == ("keypoints",):
            body = kpts
        else:
            body = _flat_keypoints(rec["keypoints"], where, "keypoints", None)
        if not body:
            raise ValueError(f"{where}: field 'keypoints' is empty")
        x, y = body[0::3], body[1::3]
        x0, x1, y0, y1 = np.min(x), np.max(x), np.min(y), np.max(y)
        dts.append(
            {
                "id": len(dts) + 1,
                "image_id": rec["image_id"],
                "category_id": rec["category_id"],
                "keypoints": kpts,
                "score": float(score),
                "area": (x1 - x0) * (y1 - y0),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
            }
        )
    counts = {
        "num_results": len(results),
        "num_dropped_nonpositive_scores": dropped,
        "num_part_score_fallback": fallback,
    }
    return dts, counts


def _resolve_sigmas(sigmas: Any) -> np.ndarray:
    if isinstance(sigmas, str):
        arr = get_skeleton(sigmas).sigmas_array()
    else:
        arr = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"sigmas must be a non-empty array of positive numbers, got {sigmas!r}")
    return arr


# ------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------


def _coco(dataset: dict[str, Any]):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _run_cocoeval(gt_ds, dts, sigmas, iou_type, images, on_matched=None):
    from pycocotools.cocoeval import COCOeval

    dt_ds = {"images": gt_ds["images"], "categories": gt_ds["categories"], "annotations": dts}
    coco_gt, coco_dt = _coco(gt_ds), _coco(dt_ds)
    ev = COCOeval(coco_gt, coco_dt, "keypoints")
    ev.params.kpt_oks_sigmas = sigmas
    ev.evaluate()
    if on_matched is not None:  # the bootstrap keeps the per-image matches of the full set
        on_matched(ev)
    ev.accumulate()
    ev.summarize()
    s = [float(v) for v in ev.stats]
    if iou_type != "keypoints_crowd":
        return dict(zip(STAT_NAMES, s, strict=True))
    out = {"AP": s[0], "AP50": s[1], "AP75": s[2], "AR": s[5], "AR50": s[6], "AR75": s[7]}
    # xtcocotools get_type_result(first=0.2, second=0.8): re-evaluate per crowd-index split.
    splits: dict[str, list[Any]] = {"AP_easy": [], "AP_medium": [], "AP_hard": []}
    for img in images:
        if "crowdIndex" not in img:
            raise ValueError(f"image {img.get('id')!r} has no 'crowdIndex' (keypoints_crowd)")
        ci = img["crowdIndex"]
        if ci < _CROWD_SPLITS[0]:
            splits["AP_easy"].append(img["id"])
        elif ci < _CROWD_SPLITS[1]:
            splits["AP_medium"].append(img["id"])
        else:
            splits["AP_hard"].append(img["id"])
    for key, ids in splits.items():
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        out[key] = float(round(np.mean(ev.eval["precision"][:, :, :, 0, :]), 4))
    return out


def _evaluate(
    gt_ds: Mapping[str, Any],
    gt_src: str,
    results: Any,
    res_src: str,
    *,
    sigmas: np.ndarray,
    use_area: bool,
    iou_type: str,
    on_matched: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    num_values = 3 * sigmas.size
    norm_gt, ignored = _prepare_gt(gt_ds, gt_src, iou_type, num_values, use_area)
    image_ids = {img["id"] for img in norm_gt["images"]}
    cat_ids = {cat["id"] for cat in norm_gt["categories"]}
    dts, counts = _prepare_results(results, res_src, iou_type, num_values, image_ids, cat_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        stats = _run_cocoeval(norm_gt, dts, sigmas, iou_type, norm_gt["images"], on_matched)
    score_key = _score_key_of(iou_type)
    stats["meta"] = result_meta(
        "oks_ap",
        iou_type=iou_type,
        use_area=use_area,
        sigmas=sigmas.tolist(),
        score_field=score_key,
        semantics=f"pycocotools COCOeval with xtcocotools {XTCOCOTOOLS_SEMANTICS} rules",
        gt=gt_src,
        results=res_src,
        num_gt=len(norm_gt["annotations"]),
        num_gt_ignored=ignored,
        num_evaluated=len(dts),
        **counts,
    )
    return stats


def oks_eval(
    gt: GtLike,
    results: ResultsLike,
    *,
    sigmas: Any,
    use_area: bool = True,
    iou_type: str = "keypoints",
    on_matched: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """OKS keypoint AP/AR of ``results`` against ``gt`` (formats in the module docstring).

    Args:
        gt: COCO annotation file path or loaded dict (not modified).
        results: COCO results file path or list of records (not modified).
        sigmas: OKS sigmas ``(K,)`` of the evaluated keypoints (the part's slice for a part
            ``iou_type``), or a skeleton name.
        use_area: ``False`` uses ``0.53·w·h`` of the GT bbox as OKS scale and area-range value
            (AIC, CrowdPose, 3DPW).
        iou_type: ``"keypoints"``, ``"keypoints_crowd"`` or ``"keypoints_<part>"``.
        on_matched: called with the ``COCOeval`` right after ``evaluate()`` (the bootstrap
            keeps its per-image matches, :mod:`posebh.evaluation.coco_resample`).

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl": float,
        "meta": dict}`` (``keypoints_crowd``: the keys of ``CROWD_STAT_NAMES``). A stat with no
        GT in its area range is ``-1``, as in COCOeval.

    Raises:
        ValueError: malformed or inconsistent input, naming the file, record and field.
    """
    sig = _resolve_sigmas(sigmas)
    gt_ds, gt_src = _load_json(gt, "annotation")
    _check_dataset(gt_ds, gt_src)
    res, res_src = _load_json(results, "results")
    return _evaluate(
        gt_ds, gt_src, res, res_src, sigmas=sig, use_area=use_area, iou_type=iou_type,
        on_matched=on_matched,
    )  # fmt: skip


def wholebody_eval(
    gt: GtLike,
    results: ResultsLike,
    *,
    sigmas: Any = None,
    on_matched: Callable[[str, Any], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """COCO-WholeBody AP per part: ``{part: oks_eval stats}`` for ``WHOLEBODY_PARTS``.

    Each part is evaluated as xtcocotools ``keypoints_<part>`` with ``use_area=True`` and the
    part's slice of the 133 sigmas (``sigmas=None``: the ``coco_wholebody`` skeleton's).
    ``on_matched(part, cocoeval)``: as :func:`oks_eval`'s, once per part.
    """
    skel = get_skeleton("coco_wholebody")
    sig = skel.sigmas_array() if sigmas is None else _resolve_sigmas(sigmas)
    if sig.size != skel.num_keypoints:
        raise ValueError(f"wholebody_eval needs {skel.num_keypoints} sigmas, got {sig.size}")
    gt_ds, gt_src = _load_json(gt, "annotation")
    _check_dataset(gt_ds, gt_src)
    res, res_src = _load_json(results, "results")
    out = {}
    for part in WHOLEBODY_PARTS:
        start, end = skel.parts[part] if part != "wholebody" else (0, skel.num_keypoints)
        out[part] = _evaluate(
            gt_ds,
            gt_src,
            res,
            res_src,
            sigmas=sig[start:end],
            use_area=True,
            iou_type=f"keypoints_{part}",
            on_matched=None if on_matched is None else functools.partial(on_matched, part),
        )
    return out


# ------------------------------------------------------------------------------------------
# Writing results
# ------------------------------------------------------------------------------------------

_OPTIONAL_RESULT_FIELDS = (
    *(f for f in PART_FIELDS.values() if f != "keypoints"),
    *(f"{p}_score" for p in WHOLEBODY_PARTS),
)


def _json_id(value: Any, where: str, field: str) -> int | str:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"{where}: field {field!r} must be an integer or string, got {value!r}")


def write_coco_results(path: str | os.PathLike, results: Sequence[Mapping[str, Any]]) -> Path:
    """Write a COCO keypoint results JSON (the test-dev server submission format).

    Each record becomes ``{"image_id", "category_id", "keypoints": [3K floats], "score"}``;
    ``keypoints`` may be a flat list or a ``[K, 3]`` array. WholeBody part fields
    (``foot_kpts`` ... ``righthand_kpts``) and ``<part>_score`` are kept when present; any other
    field (``center``, ``scale``, ...) is left out. The file is replaced atomically.

    Returns:
        The written path.

    Raises:
        ValueError: a record misses a field or has a non-numeric/non-finite value.
    """
    out = []
    for i, rec in enumerate(results):
        where = f"result {i}"
        if not isinstance(rec, Mapping):
            raise ValueError(f"{where}: not a mapping")
        for key in ("image_id", "category_id", "keypoints", "score"):
            if key not in rec:
                raise ValueError(f"{where}: missing field {key!r}")
        score = rec["score"]
        if not _is_real(score) or not math.isfinite(score):
            raise ValueError(f"{where}: field 'score' must be a finite number, got {score!r}")
        item: dict[str, Any] = {
            "image_id": _json_id(rec["image_id"], where, "image_id"),
            "category_id": _json_id(rec["category_id"], where, "category_id"),
            "keypoints": _flat_keypoints(rec["keypoints"], where, "keypoints", None),
            "score": float(score),
        }
        for key in _OPTIONAL_RESULT_FIELDS:
            if key not in rec:
                continue
            if key.endswith("_score"):
                value = rec[key]
                if not _is_real(value) or not math.isfinite(value):
                    raise ValueError(f"{where}: field {key!r} must be a finite number")
                item[key] = float(value)
            else:
                item[key] = _flat_keypoints(rec[key], where, key, None)
        out.append(item)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(out, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
