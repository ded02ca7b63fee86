"""COCO-size keypoint and detection files with COCO-like fields, for reader/evaluation scale tests.

:func:`write_coco_keypoints_file` writes a ``person_keypoints_*.json``-shaped file (``info``,
``licenses``, ``images``, ``annotations``, ``categories``) and
:func:`write_coco_detections_file` a person detection-results list over such a file's images.
The values are random but COCO-like: boxes inside 640×480-ish images rounded to 2 decimals,
17 integer keypoints inside the box with a realistic mix of v = 0 (x = y = 0), 1 and 2, some
annotations without any labelled keypoint, a few ``iscrowd`` ones (with an uncompressed-RLE
``segmentation`` as COCO has), a short polygon ``segmentation`` otherwise, ``area`` below the
box area; annotations in shuffled order (as COCO's are not grouped by image). Deterministic from
``seed`` (NumPy's PCG64) and fast: the whole 150,000-person file is built with NumPy and written
with orjson. Nothing here reads the files: the readers under test are independent of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson

__all__ = [
    "COCO_TRAIN_IMAGES",
    "COCO_TRAIN_PERSONS",
    "COCO_VAL_DETECTIONS",
    "COCO_VAL_IMAGES",
    "write_coco_detections_file",
    "write_coco_keypoints_file",
]

#: COCO train2017: images in the file and person annotations with keypoints.
COCO_TRAIN_IMAGES, COCO_TRAIN_PERSONS = 118_000, 150_000
#: COCO val2017: images, and boxes in the official person detection file (AP_H_56).
COCO_VAL_IMAGES, COCO_VAL_DETECTIONS = 5_000, 104_125

# Common COCO image sizes (width, height).
_SIZES = np.array([(640, 480), (640, 427), (480, 640), (640, 426), (500, 375), (427, 640)])
_NUM_KEYPOINTS = 17
_KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip
_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
    [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]  # fmt: skip


def _images(rng: np.random.Generator, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ids (unique, increasing like COCO's file) and (width, height) per image."""
    ids = np.sort(rng.choice(np.arange(1, 5 * num_images + 10), num_images, replace=False))
    sizes = _SIZES[rng.integers(0, len(_SIZES), num_images)]
    return ids, sizes


def _image_records(ids: np.ndarray, sizes: np.ndarray) -> list[dict[str, Any]]:
    return [
        {
            "license": 1,
            "file_name": f"{i:012d}.jpg",
            "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg",
            "height": h,
            "width": w,
            "date_captured": "2013-11-14 16:28:13",
            "flickr_url": "http://farm4.staticflickr.com/0/0.jpg",
            "id": i,
        }
        for i, (w, h) in zip(ids.tolist(), sizes.tolist(), strict=True)
    ]


def _boxes(rng: np.random.Generator, wh: np.ndarray) -> np.ndarray:
    """[N, 4] (x, y, w, h) boxes inside images of size ``wh`` [N, 2], rounded to 2 decimals."""
    n = len(wh)
    size = wh * rng.uniform(0.05, 0.9, (n, 2))
    origin = (wh - size) * rng.uniform(0.0, 1.0, (n, 2))
    return np.round(np.concatenate([origin, size], axis=1), 2)


def write_coco_keypoints_file(
    path: str | os.PathLike[str],
    num_images: int = COCO_TRAIN_IMAGES,
    num_persons: int = COCO_TRAIN_PERSONS,
    seed: int = 0,
    *,
    crowd_fraction: float = 0.02,
    unlabelled_fraction: float = 0.1,
) -> Path:
    """Write a COCO person-keypoints file of ``num_images`` images and ``num_persons``
    annotations (category 1) to ``path``; returns the path.

    Persons go to a random ~55% of the images (as in COCO train, where most person images hold
    one to a few people). ``crowd_fraction`` of them are ``iscrowd`` 1 and
    ``unlabelled_fraction`` have no labelled keypoint (``num_keypoints`` 0, all zeros).
    """
    rng = np.random.default_rng(seed)
    ids, sizes = _images(rng, num_images)
    with_people = rng.choice(num_images, max(1, int(0.55 * num_images)), replace=False)
    owner = with_people[rng.integers(0, len(with_people), num_persons)]
    wh = sizes[owner].astype(np.float64)
    boxes = _boxes(rng, wh)
    # Keypoints: integer pixels inside the box; v = 0 (x = y = 0), 1 (occluded) or 2.
    k = _NUM_KEYPOINTS
    rel = rng.uniform(0.0, 1.0, (num_persons, k, 2))
    xy = np.floor(boxes[:, None, :2] + rel * boxes[:, None, 2:])
    vis = rng.choice(np.array([0, 1, 2]), (num_persons, k), p=[0.35, 0.1, 0.55])
    unlabelled = rng.uniform(0.0, 1.0, num_persons) < unlabelled_fraction
    vis[unlabelled] = 0
    xy[vis == 0] = 0
    keypoints = np.concatenate([xy, vis[..., None]], axis=2).astype(np.int64).reshape(-1, 3 * k)
    num_kpts = (vis > 0).sum(axis=1)
    crowd = rng.uniform(0.0, 1.0, num_persons) < crowd_fraction
    area = np.round(boxes[:, 2] * boxes[:, 3] * rng.uniform(0.4, 0.8, num_persons), 4)
    # Polygon: 6 points on the box's inscribed ellipse.
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    centre = boxes[:, None, :2] + boxes[:, None, 2:] / 2
    poly = centre + boxes[:, None, 2:] / 2 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    poly = np.round(poly, 2).reshape(num_persons, -1)
    ann_ids = np.sort(rng.choice(np.arange(1, 20 * num_persons + 10), num_persons, replace=False))
    order = rng.permutation(num_persons)
    img_ids = ids[owner]

    annotations = []
    for j in order.tolist():
        h, w = int(wh[j, 1]), int(wh[j, 0])
        annotations.append(
            {
                "segmentation": {"counts": [0, 8, w * h - 8], "size": [h, w]}
                if crowd[j]
                else [poly[j].tolist()],
                "num_keypoints": int(num_kpts[j]),
                "area": float(area[j]),
                "iscrowd": int(crowd[j]),
                "keypoints": keypoints[j].tolist(),
                "image_id": int(img_ids[j]),
                "bbox": boxes[j].tolist(),
                "category_id": 1,
                "id": int(ann_ids[j]),
            }
        )
    data = {
        "info": {"description": f"posebh synthetic COCO-size keypoints (seed {seed})"},
        "licenses": [{"url": "http://creativecommons.org/licenses/by/2.0/", "id": 1}],
        "images": _image_records(ids, sizes),
        "annotations": annotations,
        "categories": [
            {
                "supercategory": "person",
                "id": 1,
                "name": "person",
                "keypoints": _KEYPOINT_NAMES,
                "skeleton": _SKELETON,
            }
        ],
    }
    out = Path(path)
    out.write_bytes(orjson.dumps(data))
    return out


def write_coco_detections_file(
    path: str | os.PathLike[str],
    image_ids: list[int],
    image_sizes: list[tuple[int, int]],
    num_boxes: int = COCO_VAL_DETECTIONS,
    seed: int = 0,
) -> Path:
    """Write a COCO detection-results list of ``num_boxes`` person boxes (category 1, scores
    in (0, 1], 3 decimals in the box like the AP_H_56 file) over ``image_ids`` of sizes
    ``image_sizes`` [(width, height)], about equally many per image; returns the path."""
    rng = np.random.default_rng(seed)
    owner = np.sort(rng.integers(0, len(image_ids), num_boxes))
    wh = np.asarray(image_sizes, dtype=np.float64)[owner]
    boxes = np.round(_boxes(rng, wh), 3)
    scores = np.round(rng.uniform(0.0, 1.0, num_boxes), 8)
    ids = np.asarray(image_ids)[owner]
    dets = [
        {"image_id": int(i), "category_id": 1, "bbox": b, "score": s}
        for i, b, s in zip(ids.tolist(), boxes.tolist(), scores.tolist(), strict=True)
    ]
    out = Path(path)
    out.write_bytes(orjson.dumps(dets))
    return out
