"""Column-at-a-time path of the COCO readers (``posebh.datasets.coco``) for well-formed files.

The per-record readers in :mod:`posebh.datasets.coco` define the semantics and every error
message. This module reads the common case — every record well typed (int ids, lists of the
right length of finite numbers, ...) — with NumPy over whole columns and returns ``None`` as
soon as anything is not that case (a missing or odd field, a duplicate id, a value an error
would name); the caller then runs the per-record reader on the same bytes, which raises the
exact error or reads the odd-but-valid file as it always did. Nothing here raises a
``DatasetError``. Float arithmetic is the per-record arithmetic, element-wise in float64 in the
same order (IEEE results are the same bits), cast to float32 at the same points.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import chain, repeat
from operator import eq, is_not
from typing import Any

import numpy as np

from .chunked_json import InvalidPiece, split_array
from .table import InstanceTable

__all__ = [
    "BAD_BBOX",
    "CROWD",
    "KEPT",
    "LOW_SCORE",
    "NOT_PERSON",
    "NO_BBOX",
    "NO_KPTS",
    "NO_KPT_FIELD",
    "ORPHAN",
    "ColumnRead",
    "box_to_center_scale_columns",
    "clean_bbox_columns",
    "read_detections_columns",
    "read_keypoints_columns",
]

# Outcome of one annotation (the skip reasons of posebh.datasets.coco, by code).
KEPT, ORPHAN, CROWD, NO_BBOX, BAD_BBOX, NO_KPT_FIELD, NO_KPTS = range(7)

_MISSING: Any = object()
_EXACT_INT = 2**53  # ints below this are exact in float64


class _NotSimple(Exception):
    """The file needs the per-record reader."""


@dataclass
class ColumnRead:
    """What :func:`read_keypoints_columns` / :func:`read_detections_columns` read.

    ``skipped``: (outcome code, count) in the order the per-record reader first meets each
    reason; ``first_records``: per image of ``table.image_files``, (file index, id) of its first
    kept record (what the image check names; for detections (box index, image index in the
    table), in file order); ``images``: images with a kept record.
    """

    table: InstanceTable
    skipped: list[tuple[int, int]]
    first_records: list[tuple[int, Any]]
    images: int
    num_images: int
    num_records: int


def _ints(values: list[Any]) -> np.ndarray:
    """Python ints (not bool) as int64; anything else is not simple."""
    if not values:
        return np.zeros(0, np.int64)
    if set(map(type, values)) != {int}:
        raise _NotSimple
    try:
        arr = np.array(values)
    except (OverflowError, ValueError):
        raise _NotSimple from None
    if arr.dtype != np.int64:
        raise _NotSimple
    return arr


def _numbers(rows: list[Any], width: int) -> np.ndarray:
    """[n, width] float64 from n lists of ``width`` JSON numbers (ints, floats or bools: what
    ``np.asarray(row, float64)`` reads to the same values and Python's ``max`` compares)."""
    if not rows:
        return np.zeros((0, width), np.float64)
    try:
        arr = np.array(rows)
    except (OverflowError, ValueError, TypeError):
        raise _NotSimple from None
    if arr.shape != (len(rows), width) or arr.dtype.kind not in "biuf":
        raise _NotSimple
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise _NotSimple
    return arr


def _sizes(values: list[Any]) -> np.ndarray:
    """Image widths/heights (ints exact in float64, or floats) as float64."""
    try:
        arr = np.array(values)
    except (OverflowError, ValueError, TypeError):
        raise _NotSimple from None
    if arr.dtype.kind not in "biuf" or arr.ndim != 1:
        raise _NotSimple
    if arr.dtype.kind != "f" and np.abs(arr.astype(np.float64)).max(initial=0) >= _EXACT_INT:
        raise _NotSimple
    return arr.astype(np.float64)


def clean_bbox_columns(
    boxes: np.ndarray, width: np.ndarray, height: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~posebh.datasets.base.clean_bbox` of [N, 4] boxes on images [N] (float64):
    (cleaned boxes [N, 4], kept [N] bool). ``max(0, v)`` is ``v`` when ``v > 0``, else 0."""
    x, y, w, h = boxes.T
    x1 = np.where(x > 0, x, 0.0)
    y1 = np.where(y > 0, y, 0.0)
    wm, hm = w - 1, h - 1
    xr = x1 + np.where(wm > 0, wm, 0.0)
    yb = y1 + np.where(hm > 0, hm, 0.0)
    x2 = np.where(xr < width - 1, xr, width - 1)
    y2 = np.where(yb < height - 1, yb, height - 1)
    kept = (x2 > x1) & (y2 > y1)
    return np.stack([x1, y1, x2 - x1, y2 - y1], axis=1), kept


def box_to_center_scale_columns(
    boxes: np.ndarray, aspect_ratio: float, padding: float
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~posebh.datasets.base.box_to_center_scale` of [N, 4] float64 boxes:
    (centers [N, 2], scales [N, 2]) float32, the same operations in the same order."""
    x, y, w, h = boxes.T
    center = np.stack([x + w * 0.5, y + h * 0.5], axis=1).astype(np.float32)
    wider = w > aspect_ratio * h
    narrower = w < aspect_ratio * h
    h_fixed = np.where(wider, w * 1.0 / aspect_ratio, h)
    w_fixed = np.where(~wider & narrower, h * aspect_ratio, w)
    scale = np.stack([w_fixed / 200.0, h_fixed / 200.0], axis=1).astype(np.float32)
    scale = scale * padding
    return center, scale.astype(np.float32, copy=False)


def _present(values: list[Any]) -> np.ndarray:
    """[n] bool: which values are not the missing-field marker."""
    return np.fromiter(map(is_not, values, repeat(_MISSING)), bool, count=len(values))


def _join(prefix: str, name: str) -> str:
    """``os.path.join(prefix, name)`` for an absolute ``prefix`` (inline on POSIX: it runs
    once per image)."""
    if os.sep != "/" or name.startswith("/"):
        return os.path.join(prefix, name)
    return prefix + name if prefix.endswith("/") else prefix + "/" + name


def _plain_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


# ---------------------------------------------------------------------------------------------
# Keypoint files
# ---------------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    """One chunk's annotations: per record (file order) and per kept record."""

    ids: np.ndarray
    image_pos: np.ndarray  # -1: orphan
    outcome: np.ndarray
    kept_ids: np.ndarray
    categories: np.ndarray
    boxes: np.ndarray
    centers: np.ndarray
    scales: np.ndarray
    areas: np.ndarray
    keypoints: np.ndarray
    num_keypoints: list[Any]
    part_valid: list[dict[str, bool]] | None
    part_boxes: list[dict[str, tuple[float, ...]]] | None


def read_keypoints_columns(
    raw: bytes,
    *,
    dataset: str,
    num_keypoints: int,
    parts: dict[str, tuple[int, int]],
    part_fields: dict[str, str],
    wholebody: bool,
    per_instance_category: bool,
    img_prefix: str,
    aspect_ratio: float,
    padding: float,
) -> ColumnRead | None:
    """The instances of a COCO keypoint file's bytes ``raw`` as the per-record reader keeps
    them, or ``None`` if the file needs that reader (see the module docstring)."""
    if not (_plain_number(aspect_ratio) and _plain_number(padding)):
        return None
    split = split_array(raw, "annotations")
    if split is None:
        return None
    doc, chunks, _ = split
    try:
        images = _images(doc)
        del doc
        read = [
            _keypoint_chunk(
                anns,
                images,
                num_keypoints=num_keypoints,
                parts=parts,
                part_fields=part_fields,
                wholebody=wholebody,
                per_instance_category=per_instance_category,
                aspect_ratio=aspect_ratio,
                padding=padding,
            )
            for anns in chunks
        ]
    except (_NotSimple, InvalidPiece):
        return None
    ids = np.concatenate([c.ids for c in read]) if read else np.zeros(0, np.int64)
    if np.unique(ids).size != ids.size:
        return None
    return _assemble(read, images, dataset, num_keypoints, img_prefix, wholebody)


@dataclass
class _Images:
    ids: list[int]
    names: list[str]
    width: np.ndarray
    height: np.ndarray
    sorted_ids: np.ndarray
    order: np.ndarray  # sorted_ids = ids[order]

    def positions(self, image_ids: np.ndarray) -> np.ndarray:
        """File positions of ``image_ids`` in 'images' (-1 where absent)."""
        if not len(self.sorted_ids):
            return np.full(len(image_ids), -1, np.int64)
        at = np.searchsorted(self.sorted_ids, image_ids).clip(0, len(self.sorted_ids) - 1)
        found = self.sorted_ids[at] == image_ids
        return np.where(found, self.order[at], -1)


def _images(doc: dict[str, Any]) -> _Images:
    records = doc.get("images", _MISSING)
    if type(records) is not list or not set(map(type, records)) <= {dict}:
        raise _NotSimple
    ids = [r.get("id", _MISSING) for r in records]
    names = [r.get("file_name", _MISSING) for r in records]
    if not set(map(type, names)) <= {str}:
        raise _NotSimple
    width = _sizes([r.get("width", _MISSING) for r in records])
    height = _sizes([r.get("height", _MISSING) for r in records])
    id_arr = _ints(ids)
    order = np.argsort(id_arr, kind="stable")
    sorted_ids = id_arr[order]
    if len(sorted_ids) > 1 and not (np.diff(sorted_ids) > 0).all():
        raise _NotSimple  # a repeated image id: the per-record reader names it
    return _Images(ids, names, width, height, sorted_ids, order)


def _keypoint_chunk(
    anns: list[Any],
    images: _Images,
    *,
    num_keypoints: int,
    parts: dict[str, tuple[int, int]],
    part_fields: dict[str, str],
    wholebody: bool,
    per_instance_category: bool,
    aspect_ratio: float,
    padding: float,
) -> _Chunk:
    if set(map(type, anns)) != {dict}:
        raise _NotSimple
    k = num_keypoints
    n = len(anns)
    ids = _ints([a.get("id", _MISSING) for a in anns])
    image_pos = images.positions(_ints([a.get("image_id", _MISSING) for a in anns]))
    crowd = np.fromiter(map(bool, [a.get("iscrowd", 0) for a in anns]), bool, count=n)
    body = [a.get("keypoints", _MISSING) for a in anns]
    has_kp = _present(body)
    kp_rows = np.flatnonzero(has_kp)
    if wholebody:
        chunks = []
        for part, (lo, hi) in parts.items():
            values = [anns[i].get(part_fields[part], _MISSING) for i in kp_rows.tolist()]
            chunks.append(_numbers(values, 3 * (hi - lo)))
        kpts = np.concatenate(chunks, axis=1) if chunks else np.zeros((0, 3 * k))
        # The body (the first part, field 'keypoints') alone decides.
        label_max = chunks[0].max(axis=1)
    else:
        kpts = _numbers([body[i] for i in kp_rows.tolist()], 3 * k)
        label_max = kpts.max(axis=1)
    kpts = kpts.reshape(-1, k, 3)
    boxes_raw = [a.get("bbox", _MISSING) for a in anns]
    has_bbox = _present(boxes_raw)
    box_rows = np.flatnonzero(has_bbox)
    boxes_in = _numbers([boxes_raw[i] for i in box_rows.tolist()], 4)
    area_raw = [a.get("area") for a in anns]
    area = _area_column(area_raw)
    area_ok = np.isnan(area) | (area > 0)

    # The per-record decision chain, in the per-record reader's order.
    outcome = np.full(n, KEPT, np.int8)
    box = np.zeros((n, 4), np.float64)
    box_ok = np.zeros(n, bool)
    pos = image_pos[box_rows]
    # Orphans (position -1) read the appended 0: their outcome is ORPHAN whatever the box.
    cleaned, ok = clean_bbox_columns(
        boxes_in, np.append(images.width, 0.0)[pos], np.append(images.height, 0.0)[pos]
    )
    box[box_rows] = cleaned
    box_ok[box_rows] = ok
    no_labels = np.zeros(n, bool)
    no_labels[kp_rows] = label_max == 0
    nk_raw = [a.get("num_keypoints", _MISSING) for a in anns]
    nk_present = [v for v in nk_raw if v is not _MISSING]
    nk_zero = np.zeros(n, bool)
    nk_zero[[i for i, v in enumerate(nk_raw) if v is not _MISSING]] = _ints(nk_present) == 0
    if not wholebody:
        no_labels |= nk_zero
    rest = image_pos >= 0
    outcome[~rest] = ORPHAN
    outcome[rest & crowd] = CROWD
    rest &= ~crowd
    outcome[rest & ~has_bbox] = NO_BBOX
    rest &= has_bbox
    outcome[rest & ~(box_ok & area_ok)] = BAD_BBOX
    rest &= box_ok & area_ok
    outcome[rest & ~has_kp] = NO_KPT_FIELD
    rest &= has_kp
    outcome[rest & no_labels] = NO_KPTS
    rest &= ~no_labels
    kept = np.flatnonzero(rest)

    kept_list = kept.tolist()
    if per_instance_category:
        cats = [anns[i].get("category_id", _MISSING) for i in kept_list]
    else:
        cats = [anns[i].get("category_id", 1) for i in kept_list]
    categories = _ints(cats)
    kp_index = np.cumsum(has_kp) - 1  # row of record i in kpts
    kk = kpts[kp_index[kept]]
    keypoints = np.zeros((len(kept), k, 3), np.float32)
    keypoints[:, :, :2] = kk[:, :, :2]
    keypoints[:, :, 2] = (kk[:, :, 2] > 0) if wholebody else np.minimum(1, kk[:, :, 2])
    kept_box = box[kept]
    kept_area = np.where(np.isnan(area[kept]), kept_box[:, 2] * kept_box[:, 3], area[kept])
    num_kpts = [None if nk_raw[i] is _MISSING else nk_raw[i] for i in kept_list]
    centers, scales = box_to_center_scale_columns(kept_box, aspect_ratio, padding)
    part_valid = part_boxes = None
    if wholebody:
        part_valid, part_boxes = _wholebody_extras([anns[i] for i in kept_list])
    return _Chunk(
        ids=ids,
        image_pos=image_pos,
        outcome=outcome,
        kept_ids=ids[kept],
        categories=categories,
        boxes=kept_box,
        centers=centers,
        scales=scales,
        areas=kept_area,
        keypoints=keypoints,
        num_keypoints=num_kpts,
        part_valid=part_valid,
        part_boxes=part_boxes,
    )


def _area_column(values: list[Any]) -> np.ndarray:
    """'area' values as float64, NaN where absent (None); other types are not simple."""
    if not set(map(type, values)) <= {int, float, type(None)}:
        raise _NotSimple
    # NumPy reads None as NaN and an int as float(int) does.
    return np.array(values, np.float64).reshape(-1)


def _wholebody_extras(
    anns: list[dict[str, Any]],
) -> tuple[list[dict[str, bool]], list[dict[str, tuple[float, ...]]]]:
    valid, boxes = [], []
    try:
        for ann in anns:
            valid.append(
                {"body": True}
                | {
                    p: bool(ann.get(f"{p}_valid", False))
                    for p in ("foot", "face", "lefthand", "righthand")
                }
            )
            boxes.append(
                {
                    p: tuple(float(v) for v in ann[f"{p}_box"])
                    for p in ("face", "lefthand", "righthand")
                    if f"{p}_box" in ann
                }
            )
    except (TypeError, ValueError, OverflowError):
        raise _NotSimple from None
    return valid, boxes


def _assemble(
    read: list[_Chunk],
    images: _Images,
    dataset: str,
    k: int,
    img_prefix: str,
    wholebody: bool,
) -> ColumnRead:
    outcome = np.concatenate([c.outcome for c in read]) if read else np.zeros(0, np.int8)
    image_pos = np.concatenate([c.image_pos for c in read]) if read else np.zeros(0, np.int64)
    # Output order: images in file order, each image's annotations in file order.
    listed = np.flatnonzero(outcome != ORPHAN)
    order = listed[np.argsort(image_pos[listed], kind="stable")]
    skipped: list[tuple[int, int]] = []
    n_orphan = int((outcome == ORPHAN).sum())
    if n_orphan:
        skipped.append((ORPHAN, n_orphan))
    ordered = outcome[order]
    codes = [int(c) for c in np.unique(ordered) if c != KEPT]
    for code in sorted(codes, key=lambda c: int(np.argmax(ordered == c))):
        skipped.append((code, int((ordered == code).sum())))

    kept_file = np.flatnonzero(outcome == KEPT)  # file order
    rank = np.argsort(image_pos[kept_file], kind="stable")  # kept rows in output order
    kept_pos = image_pos[kept_file][rank]
    unique_pos, first, image_index = np.unique(kept_pos, return_index=True, return_inverse=True)

    def cat(name: str, empty: np.ndarray) -> np.ndarray:
        parts = [getattr(c, name) for c in read]
        return (np.concatenate(parts) if parts else empty)[rank]

    def cat_list(name: str) -> list[Any]:
        values = list(chain.from_iterable(getattr(c, name) for c in read))
        return [values[i] for i in rank.tolist()]

    ann_ids = cat("kept_ids", np.zeros(0, np.int64))
    prefix = os.path.abspath(img_prefix)
    first_records = list(zip(kept_file[rank[first]].tolist(), ann_ids[first].tolist(), strict=True))
    extras_columns: dict[str, list[Any]] = {"num_keypoints": cat_list("num_keypoints")}
    if wholebody:
        extras_columns["part_valid"] = cat_list("part_valid")
        extras_columns["part_boxes"] = cat_list("part_boxes")
    boxes = cat("boxes", np.zeros((0, 4)))
    table = InstanceTable(
        dataset=dataset,
        image_files=[_join(prefix, images.names[j]) for j in unique_pos.tolist()],
        image_ids=[images.ids[j] for j in unique_pos.tolist()],
        image_index=image_index.reshape(-1),
        ann_ids=ann_ids,
        category_ids=cat("categories", np.zeros(0, np.int64)),
        bboxes=boxes,
        centers=cat("centers", np.zeros((0, 2), np.float32)),
        scales=cat("scales", np.zeros((0, 2), np.float32)),
        keypoints=cat("keypoints", np.zeros((0, k, 3), np.float32)),
        bbox_scores=np.ones(len(boxes)),
        areas=cat("areas", np.zeros(0)),
        extras_constant={"iscrowd": 0},
        extras_columns=extras_columns,
    )
    return ColumnRead(table, skipped, first_records, len(unique_pos), len(images.ids), len(outcome))


# ---------------------------------------------------------------------------------------------
# Detection files
# ---------------------------------------------------------------------------------------------

NOT_PERSON, LOW_SCORE = 7, 8


def read_detections_columns(
    dets: list[Any],
    images: dict[Any, dict[str, Any]],
    *,
    dataset: str,
    num_keypoints: int,
    img_prefix: str,
    det_bbox_thr: float,
    aspect_ratio: float,
    padding: float,
) -> ColumnRead | None:
    """The boxes of a parsed detection-results list as the per-record reader keeps them (GT
    ``images`` by id), or ``None`` if the list needs that reader (any record it would refuse,
    boxes of more than 4 values, non-int image ids, ...)."""
    if not all(map(_plain_number, (aspect_ratio, padding, det_bbox_thr))):
        return None
    if set(map(type, dets)) != {dict}:
        return None
    fields = [
        [d.get(key, _MISSING) for d in dets] for key in ("category_id", "image_id", "bbox", "score")
    ]
    if any(_MISSING in column for column in fields):
        return None
    categories, image_ids, boxes_raw, scores_raw = fields
    n = len(dets)
    try:
        boxes = _numbers(boxes_raw, 4)
        if not set(map(type, scores_raw)) <= {int, float}:
            raise _NotSimple
        scores = np.array(scores_raw, np.float64)
        if not np.isfinite(scores).all():  # json reads NaN / Infinity: the error names it
            raise _NotSimple
        person = np.fromiter(map(eq, categories, repeat(1)), bool, count=n)
        person_rows = np.flatnonzero(person)
        ids = _ints([image_ids[i] for i in person_rows.tolist()])
    except _NotSimple:
        return None
    if any(images.get(i, _MISSING) is _MISSING for i in set(ids.tolist())):
        return None  # an image the GT lacks: the per-record reader names it
    outcome = np.full(n, KEPT, np.int8)
    outcome[~person] = NOT_PERSON
    low = person & (scores < det_bbox_thr)
    outcome[low] = LOW_SCORE
    kept = np.flatnonzero(outcome == KEPT)
    w, h = boxes[kept, 2], boxes[kept, 3]
    if ((w < 0) | (h < 0) | ~((w > 0) | (h > 0))).any():
        return None  # a box of negative size or 0×0: the per-record reader names it
    skipped = [
        (code, int((outcome == code).sum()))
        for code in sorted(
            {NOT_PERSON, LOW_SCORE} & set(outcome.tolist()),
            key=lambda c: int(np.argmax(outcome == c)),
        )
    ]
    kept_ids = np.array([image_ids[i] for i in kept.tolist()], np.int64)
    unique_ids, first, image_index = np.unique(kept_ids, return_index=True, return_inverse=True)
    prefix = os.path.abspath(img_prefix)
    names = [images[i]["file_name"] for i in unique_ids.tolist()]
    if not set(map(type, names)) <= {str}:
        return None
    kept_boxes = boxes[kept]
    centers, scales = box_to_center_scale_columns(kept_boxes, aspect_ratio, padding)
    table = InstanceTable(
        dataset=dataset,
        image_files=[_join(prefix, name) for name in names],
        image_ids=unique_ids.tolist(),
        image_index=image_index.reshape(-1),
        ann_ids=[None] * len(kept),
        category_ids=np.ones(len(kept), np.int64),
        bboxes=kept_boxes,
        centers=centers,
        scales=scales,
        keypoints=np.broadcast_to(
            np.zeros((1, num_keypoints, 3), np.float32), (len(kept), num_keypoints, 3)
        ),
        bbox_scores=scores[kept],
        areas=w * h,
        extras_columns={"det_index": kept.tolist()},
    )
    # The image check runs in file order: each image at its first kept box.
    by_first = np.argsort(first, kind="stable")
    first_records = [(int(kept[first[j]]), j) for j in by_first.tolist()]
    return ColumnRead(table, skipped, first_records, len(unique_ids), len(images), n)
