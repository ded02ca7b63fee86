"""Readers for COCO-format keypoint files and COCO person-detection results.

Covers COCO, AIC, AP-10K, APT-36K, OCHuman, 3DPW (PoseBH's COCO-format 2-D SMPL joints) and
COCO-WholeBody v1.0. Shapes: every returned ``Instance.keypoints`` is [K, 3] float32 with K
from ``posebh.skeletons.get_skeleton(dataset)``.

Semantics of the official 0.x loaders (``TopDownCocoDataset._load_coco_keypoint_annotation_kernel``
and its AIC / PW3D / OCHuman / WholeBody / ``AnimalAP10KDataset`` variants):

* images in file order; per image its annotations in file order (xtcocotools ``COCO``);
* ``iscrowd`` annotations are dropped (``getAnnIds(iscrowd=False)``; a missing ``iscrowd``
  counts as 0, which is what the AIC files need);
* the box is cleaned (:func:`~posebh.datasets.base.clean_bbox`) and kept when
  ``('area' not in ann or area > 0)`` and it does not degenerate;
* an annotation without ``keypoints``, with ``max(keypoints) == 0`` or with
  ``num_keypoints == 0`` is skipped (WholeBody: only ``max`` of the 17 body values is tested);
* visibility = ``min(1, v)`` (WholeBody: ``v > 0``); centre/scale from the cleaned box with
  padding 1.25.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from posebh.skeletons import get_skeleton

from .base import (
    DEFAULT_ASPECT_RATIO,
    DatasetError,
    ImageChecker,
    Instance,
    ReadSummary,
    as_floats,
    box_to_center_scale,
    clean_bbox,
    load_json,
    parse_json,
    progress,
    read_json_bytes,
    require,
)
from .coco_columns import (
    BAD_BBOX,
    CROWD,
    NO_BBOX,
    NO_KPT_FIELD,
    NO_KPTS,
    NOT_PERSON,
    ORPHAN,
    ColumnRead,
    read_detections_columns,
    read_keypoints_columns,
)
from .table import InstanceTable

__all__ = [
    "COCO_STYLE_DATASETS",
    "read_aic",
    "read_ap10k",
    "read_apt36k",
    "read_coco",
    "read_coco_detections",
    "read_coco_keypoints",
    "read_coco_wholebody",
    "read_ochuman",
    "read_pw3d",
]

#: Datasets read by :func:`read_coco_keypoints` (skeleton names).
COCO_STYLE_DATASETS = ("coco", "aic", "ap10k", "apt36k", "ochuman", "pw3d", "coco_wholebody")

# Datasets whose category id matters (results are written per instance with it).
_PER_INSTANCE_CATEGORY = ("ap10k", "apt36k")

# WholeBody field of each skeleton part, in the skeleton's order.
_WHOLEBODY_FIELDS = {
    "body": "keypoints",
    "foot": "foot_kpts",
    "face": "face_kpts",
    "lefthand": "lefthand_kpts",
    "righthand": "righthand_kpts",
}

SKIP_CROWD = "iscrowd"
SKIP_NO_BBOX = "no 'bbox' field"
SKIP_BAD_BBOX = "box empty after cleaning (area <= 0, or x2 <= x1 or y2 <= y1)"
SKIP_NO_KPT_FIELD = "no 'keypoints' field"
SKIP_NO_KPTS = "no labelled keypoints (max(keypoints) == 0 or num_keypoints == 0)"
SKIP_NO_BODY_KPTS = "no labelled body keypoints (max(keypoints) == 0)"
SKIP_ORPHAN = "image_id not in 'images'"
SKIP_NOT_PERSON = "category_id != 1"
SKIP_LOW_SCORE = "score < det_bbox_thr"
_SKIP_REASONS = {
    ORPHAN: SKIP_ORPHAN,
    CROWD: SKIP_CROWD,
    NO_BBOX: SKIP_NO_BBOX,
    BAD_BBOX: SKIP_BAD_BBOX,
    NO_KPT_FIELD: SKIP_NO_KPT_FIELD,
    NO_KPTS: SKIP_NO_KPTS,
}

#: Read well-formed files column-at-a-time (:mod:`posebh.datasets.coco_columns`); False runs
#: the per-record reader on every file (the two give the same instances; tests compare them).
COLUMN_PATH = True


def _index_images(data: Any, source: Path) -> tuple[dict[Any, dict[str, Any]], list[Any]]:
    """{image id: image record} and the ids in file order; errors on bad/duplicate records."""
    images = require(data, "images", "the top-level object", source)
    if not isinstance(images, list):
        raise DatasetError(f"{source}: field 'images' is not a list. Fix: use a COCO-format file.")
    by_id: dict[Any, dict[str, Any]] = {}
    order: list[Any] = []
    for i, img in enumerate(images):
        where = f"images[{i}]"
        img_id = require(img, "id", where, source)
        for key in ("file_name", "width", "height"):
            require(img, key, f"{where} (id={img_id})", source)
        if img_id in by_id:
            raise DatasetError(
                f"{source}: {where} repeats image id {img_id!r}. Fix: image ids must be unique."
            )
        by_id[img_id] = img
        order.append(img_id)
    return by_id, order


def _note_if_empty(summary: ReadSummary, num_images: int, num_anns: int) -> None:
    """A file without images or annotations is a valid empty set; say so in the summary."""
    for n, key in ((num_images, "images"), (num_anns, "annotations")):
        if n == 0:
            summary.notes.append(
                f"the file's '{key}' list is empty: no instances to train on or evaluate "
                "(Fix: check that this is the intended annotation file)"
            )


def read_coco_keypoints(
    ann_file: str | os.PathLike[str],
    img_prefix: str | os.PathLike[str],
    dataset: str = "coco",
    *,
    check_images: bool = True,
    aspect_ratio: float = DEFAULT_ASPECT_RATIO,
    padding: float = 1.25,
    show_progress: bool | None = None,
) -> tuple[InstanceTable, ReadSummary]:
    """GT instances of a COCO-format keypoint file, as the official 0.x loader keeps them.

    Returns (instances, summary): an :class:`InstanceTable` (a sequence of ``Instance``, built
    on access from columns); each instance has ``keypoints`` [K, 3] for the ``dataset``
    skeleton (one of ``COCO_STYLE_DATASETS``), ``bbox_score`` 1.0 and ``extras``
    {"iscrowd": 0, "num_keypoints": ...} plus, for WholeBody, ``part_valid`` (the file's
    ``<part>_valid`` flags; body True) and ``part_boxes`` (``face_box``, ``lefthand_box``,
    ``righthand_box``). ``check_images`` checks (once per image) that referenced images exist.
    """
    if dataset not in COCO_STYLE_DATASETS:
        raise ValueError(f"dataset must be one of {COCO_STYLE_DATASETS}, got {dataset!r}")
    source = Path(ann_file)
    skeleton = get_skeleton(dataset)
    k = skeleton.num_keypoints
    wholebody = dataset == "coco_wholebody"
    what = f"{dataset} annotation"
    raw = read_json_bytes(source, what)
    columns = (
        read_keypoints_columns(
            raw,
            dataset=dataset,
            num_keypoints=k,
            parts=dict(skeleton.parts),
            part_fields=_WHOLEBODY_FIELDS,
            wholebody=wholebody,
            per_instance_category=dataset in _PER_INSTANCE_CATEGORY,
            img_prefix=str(img_prefix),
            aspect_ratio=aspect_ratio,
            padding=padding,
        )
        if COLUMN_PATH
        else None
    )
    if columns is not None:
        return _finish_columns(columns, source, dataset, check_images)
    data = parse_json(raw, source, what)
    del raw
    images, image_order = _index_images(data, source)
    anns = require(data, "annotations", "the top-level object", source)
    if not isinstance(anns, list):
        raise DatasetError(f"{source}: field 'annotations' is not a list. Fix: use a COCO file.")

    summary = ReadSummary(dataset=dataset, source=str(source), unit="annotation", read=len(anns))
    _note_if_empty(summary, len(image_order), len(anns))
    by_image: dict[Any, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    seen_ids: set[Any] = set()
    for i, ann in enumerate(anns):
        ann_id = require(ann, "id", f"annotations[{i}]", source)
        where = f"annotations[{i}] (id={ann_id})"
        if ann_id in seen_ids:
            raise DatasetError(
                f"{source}: {where} repeats annotation id {ann_id!r}. Fix: ids must be unique."
            )
        seen_ids.add(ann_id)
        image_id = require(ann, "image_id", where, source)
        if image_id not in images:
            summary.skip(SKIP_ORPHAN)
            continue
        by_image[image_id].append((i, ann))

    check = ImageChecker(check_images, source)
    prefix = os.path.abspath(img_prefix)
    instances: list[Instance] = []
    images_with_instances = 0
    for image_id in progress(image_order, len(image_order), f"reading {dataset}", show_progress):
        img = images[image_id]
        width, height = img["width"], img["height"]
        image_file = os.path.join(prefix, img["file_name"])
        n_before = len(instances)
        for i, ann in by_image.get(image_id, ()):
            where = f"annotations[{i}] (id={ann['id']})"
            inst = _coco_instance(
                ann,
                where,
                source,
                dataset,
                k,
                skeleton.parts,
                wholebody,
                width,
                height,
                image_file,
                image_id,
                aspect_ratio,
                padding,
                summary,
            )
            if inst is not None:
                check(image_file, image_id, where)
                instances.append(inst)
        images_with_instances += len(instances) > n_before
    summary.kept = len(instances)
    summary.images = images_with_instances
    summary.check()
    return InstanceTable.from_instances(instances, dataset, k), summary


def _finish_columns(
    columns: ColumnRead, source: Path, dataset: str, check_images: bool
) -> tuple[InstanceTable, ReadSummary]:
    """Summary and image check of a column read (the per-record reader's, same order)."""
    table = columns.table
    summary = ReadSummary(
        dataset=dataset, source=str(source), unit="annotation", read=columns.num_records
    )
    _note_if_empty(summary, columns.num_images, columns.num_records)
    reasons = _SKIP_REASONS | ({NO_KPTS: SKIP_NO_BODY_KPTS} if dataset == "coco_wholebody" else {})
    for code, count in columns.skipped:
        summary.skip(reasons[code], count)
    if check_images:
        check = ImageChecker(check_images, source)
        for image_file, image_id, (i, ann_id) in zip(
            table.image_files, table.image_ids, columns.first_records, strict=True
        ):
            check(image_file, image_id, f"annotations[{i}] (id={ann_id})")
    summary.kept = len(table)
    summary.images = columns.images
    summary.check()
    return table, summary


def _coco_instance(
    ann: dict[str, Any],
    where: str,
    source: Path,
    dataset: str,
    k: int,
    parts: Any,
    wholebody: bool,
    width: float,
    height: float,
    image_file: str,
    image_id: Any,
    aspect_ratio: float,
    padding: float,
    summary: ReadSummary,
) -> Instance | None:
    """One annotation → Instance, or None after counting the skip reason in ``summary``."""
    if ann.get("iscrowd", 0):
        summary.skip(SKIP_CROWD)
        return None
    # Validate the keypoint count before any skip decision that reads the values.
    if "keypoints" in ann:
        if wholebody:
            chunks = []
            for part, (lo, hi) in parts.items():
                name = _WHOLEBODY_FIELDS[part]
                value = require(ann, name, where, source)
                chunks.append(as_floats(value, 3 * (hi - lo), name, where, source))
            kpts = np.concatenate(chunks).reshape(k, 3)
        else:
            raw = as_floats(ann["keypoints"], None, "keypoints", where, source)
            if raw.size != 3 * k:
                raise DatasetError(
                    f"{source}: {where} field 'keypoints' has {raw.size} values; the {dataset} "
                    f"skeleton has {k} keypoints, so {3 * k} values (x, y, v) are expected. "
                    "Fix: read the file with the reader of the dataset it belongs to."
                )
            kpts = raw.reshape(k, 3)
    if "bbox" not in ann:
        summary.skip(SKIP_NO_BBOX)
        return None
    raw_box = as_floats(ann["bbox"], 4, "bbox", where, source)
    area = ann.get("area")
    box = clean_bbox([float(v) for v in raw_box], width, height)
    if box is None or (area is not None and not area > 0):
        summary.skip(SKIP_BAD_BBOX)
        return None
    if "keypoints" not in ann:
        summary.skip(SKIP_NO_KPT_FIELD)
        return None
    if wholebody:
        if max(ann["keypoints"]) == 0:
            summary.skip(SKIP_NO_BODY_KPTS)
            return None
    elif max(ann["keypoints"]) == 0 or ann.get("num_keypoints", -1) == 0:
        summary.skip(SKIP_NO_KPTS)
        return None
    if dataset in _PER_INSTANCE_CATEGORY:
        category_id = int(require(ann, "category_id", where, source))
    else:
        category_id = int(ann.get("category_id", 1))

    keypoints = np.zeros((k, 3), dtype=np.float32)
    keypoints[:, :2] = kpts[:, :2]
    keypoints[:, 2] = (kpts[:, 2] > 0) if wholebody else np.minimum(1, kpts[:, 2])
    center, scale = box_to_center_scale(box, aspect_ratio, padding)
    extras: dict[str, Any] = {"iscrowd": 0}
    if "num_keypoints" in ann:
        extras["num_keypoints"] = int(ann["num_keypoints"])
    if wholebody:
        # The file has no body_valid; the body is labelled if the instance is kept at all.
        extras["part_valid"] = {"body": True} | {
            p: bool(ann.get(f"{p}_valid", False)) for p in ("foot", "face", "lefthand", "righthand")
        }
        extras["part_boxes"] = {
            p: tuple(float(v) for v in ann[f"{p}_box"])
            for p in ("face", "lefthand", "righthand")
            if f"{p}_box" in ann
        }
    return Instance(
        dataset=dataset,
        image_file=image_file,
        image_id=image_id,
        ann_id=ann["id"],
        category_id=category_id,
        bbox=box,
        center=center,
        scale=scale,
        keypoints=keypoints,
        bbox_score=1.0,
        area=float(area) if area is not None else box[2] * box[3],
        extras=extras,
    )


def read_coco_detections(
    det_file: str | os.PathLike[str],
    ann_file: str | os.PathLike[str],
    img_prefix: str | os.PathLike[str],
    dataset: str = "coco",
    *,
    det_bbox_thr: float = 0.0,
    check_images: bool = True,
    aspect_ratio: float = DEFAULT_ASPECT_RATIO,
    padding: float = 1.25,
    show_progress: bool | None = None,
) -> tuple[InstanceTable, ReadSummary]:
    """Person boxes of a COCO detection-results file (``use_gt_bbox=False`` evaluation).

    The official ``_load_coco_person_detection_results``: boxes in file order; only
    ``category_id == 1``; kept when ``score >= det_bbox_thr``; the raw box (not cleaned) gives
    centre/scale; ``keypoints`` [K, 3] zeros; ``bbox_score`` = score; ``ann_id`` None. The GT
    ``ann_file`` maps image ids to file names (an id it lacks is an error, as upstream).
    """
    source = Path(det_file)
    k = get_skeleton(dataset).num_keypoints
    gt = load_json(ann_file, f"{dataset} annotation")
    images, _ = _index_images(gt, Path(ann_file))
    dets = load_json(source, "detection results")
    if not isinstance(dets, list) or not dets:
        raise DatasetError(
            f"{source}: expected a non-empty JSON list of detections "
            "({image_id, category_id, bbox, score}). Fix: use a COCO detection-results file."
        )
    summary = ReadSummary(dataset=dataset, source=str(source), unit="detection", read=len(dets))
    summary.notes.append(f"det_bbox_thr = {det_bbox_thr}")
    check = ImageChecker(check_images, source)
    columns = (
        read_detections_columns(
            dets,
            images,
            dataset=dataset,
            num_keypoints=k,
            img_prefix=str(img_prefix),
            det_bbox_thr=det_bbox_thr,
            aspect_ratio=aspect_ratio,
            padding=padding,
        )
        if COLUMN_PATH
        else None
    )
    if columns is not None:
        for code, count in columns.skipped:
            summary.skip(SKIP_NOT_PERSON if code == NOT_PERSON else SKIP_LOW_SCORE, count)
        table = columns.table
        for i, j in columns.first_records if check_images else ():
            check(table.image_files[j], table.image_ids[j], f"detection [{i}]")
        summary.kept = len(table)
        summary.images = columns.images
        summary.check()
        return table, summary
    prefix = os.path.abspath(img_prefix)
    instances: list[Instance] = []
    for i, det in progress(
        enumerate(dets), len(dets), f"reading {dataset} detections", show_progress
    ):
        where = f"detection [{i}]"
        category_id = require(det, "category_id", where, source)
        image_id = require(det, "image_id", where, source)
        box = as_floats(require(det, "bbox", where, source), None, "bbox", where, source)
        score = float(as_floats(require(det, "score", where, source), 1, "score", where, source)[0])
        if box.size < 4:
            raise DatasetError(f"{source}: {where} field 'bbox' has {box.size} < 4 values.")
        if category_id != 1:
            summary.skip(SKIP_NOT_PERSON)
            continue
        if image_id not in images:
            raise DatasetError(
                f"{source}: {where} field 'image_id' = {image_id!r} is not an image of "
                f"{ann_file}. Fix: pair the detections with the annotation file they were made on."
            )
        if score < det_bbox_thr:
            summary.skip(SKIP_LOW_SCORE)
            continue
        if box[2] < 0 or box[3] < 0 or not (box[2] > 0 or box[3] > 0):
            # A negative size is malformed and a 0×0 box has no crop. A box of zero width
            # (or height) alone is valid: the official _xywh2cs widens it to the aspect ratio.
            raise DatasetError(
                f"{source}: {where} field 'bbox' = {box[:4].tolist()} has a negative size "
                "or is 0×0 (w, h <= 0). Fix: drop such boxes from the detection file (or raise "
                f"det_bbox_thr above their score {score})."
            )
        image_file = os.path.join(prefix, images[image_id]["file_name"])
        check(image_file, image_id, where)
        bbox = (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
        center, scale = box_to_center_scale(bbox, aspect_ratio, padding)
        instances.append(
            Instance(
                dataset=dataset,
                image_file=image_file,
                image_id=image_id,
                ann_id=None,
                category_id=1,
                bbox=bbox,
                center=center,
                scale=scale,
                keypoints=np.zeros((k, 3), dtype=np.float32),
                bbox_score=score,
                area=bbox[2] * bbox[3],
                extras={"det_index": i},
            )
        )
    summary.kept = len(instances)
    summary.images = len({inst.image_id for inst in instances})
    summary.check()
    return InstanceTable.from_instances(instances, dataset, k), summary


def read_coco(
    ann_file: str | os.PathLike[str], img_prefix: str | os.PathLike[str], **kwargs: Any
) -> tuple[InstanceTable, ReadSummary]:
    """COCO person keypoints (17): :func:`read_coco_keypoints` with ``dataset="coco"``."""
    return read_coco_keypoints(ann_file, img_prefix, "coco", **kwargs)


def read_aic(
    ann_file: str | os.PathLike[str], img_prefix: str | os.PathLike[str], **kwargs: Any
) -> tuple[InstanceTable, ReadSummary]:
    """AI Challenger in COCO format (14; no ``area``/``iscrowd`` fields): ``dataset="aic"``."""
    return read_coco_keypoints(ann_file, img_prefix, "aic", **kwargs)


def read_ap10k(
    ann_file: str | os.PathLike[str], img_prefix: str | os.PathLike[str], **kwargs: Any
) -> tuple[InstanceTable, ReadSummary]:
    """AP-10K (17, 54 categories; ``category_id`` required per instance): ``dataset="ap10k"``."""
    return read_coco_keypoints(ann_file, img_prefix, "ap10k", **kwargs)


def read_apt36k(
    ann_file: str | os.PathLike[str], img_prefix: str | os.PathLike[str], **kwargs: Any
) -> tuple[InstanceTable, ReadSummary]:
    """APT-36K (AP-10K format and loader upstream): ``dataset="apt36k"``."""
    return read_coco_keypoints(ann_file, img_prefix, "apt36k", **kwargs)


def read_ochuman(
    ann_file: str | os.PathLike[str], img_prefix: str | os.PathLike[str], **kwargs: Any
) -> tuple[InstanceTable, ReadSummary]:
    """OCHuman in COCO format (17, GT boxes): ``dataset="ochuman"``."""
    return read_coco_keypoints(ann_file, img_prefix, "ochuman", **kwargs)


def read_pw3d(
    ann_file: str | os.PathLike[str], img_prefix: str | os.PathLike[str], **kwargs: Any
) -> tuple[InstanceTable, ReadSummary]:
    """3DPW as written by PoseBH ``tools/dataset/preprocess_3dpw.py`` (24 SMPL joints).

    That file is COCO format: ``keypoints`` = projected SMPL joints with v = 1 inside the image
    and in front of the camera, ``num_keypoints``, ``iscrowd`` 0, ``category_id`` 1, no
    ``area``; image ``file_name`` = ``<sequence>/<frame file>``.
    """
    return read_coco_keypoints(ann_file, img_prefix, "pw3d", **kwargs)


def read_coco_wholebody(
    ann_file: str | os.PathLike[str], img_prefix: str | os.PathLike[str], **kwargs: Any
) -> tuple[InstanceTable, ReadSummary]:
    """COCO-WholeBody v1.0 (133 = body 17 | foot 6 | face 68 | left hand 21 | right hand 21)."""
    return read_coco_keypoints(ann_file, img_prefix, "coco_wholebody", **kwargs)
