"""Reader for InterHand2.6M (2-D): data + camera + joint_3d JSONs → single-hand instances.

Shapes: ``world_coord`` [42, 3] mm per (capture, frame), joints 0-20 the right hand and 21-41
the left hand (wrist last in each); output ``Instance.keypoints`` [21, 3] float32.

The official 0.x ``InterHand2DDataset._get_db`` (mmpose 0.x, as stored in
``open-mmlab/mmpose`` / ViTPose forks ``mmpose/datasets/datasets/hand/interhand2d_dataset.py``):

* images in file order, each with its **first** annotation only;
* camera ``campos`` T [3], ``camrot`` R [3, 3], ``focal`` f [2], ``princpt`` c [2] of
  ``cameras[str(capture)][..][camera]``; world ``X`` of ``joints[str(capture)][str(frame_idx)]``;
  X_cam = R (X − T); u = X_cam.x / (X_cam.z + 1e-8) · f_x + c_x, v likewise (float32);
* ``joint_valid`` [42] → [2, 21]; root gating: each hand's validity × its wrist validity;
* a hand becomes an instance when more than 11 of its 21 joints are valid;
* box = tight box of the valid joints (started from (W, H, 0, 0) as upstream); centre/scale
  with padding **1.5**; visibility = min(1, joint_valid).
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
    load_json,
    progress,
    require,
)

__all__ = ["HANDS", "project_world_to_pixel", "read_interhand2d"]

#: Hand of each half of the 42 joints, in order.
HANDS = ("right", "left")

#: Upstream keeps a hand when more than this many of its joints are valid.
MIN_VALID_EXCLUSIVE = 11

SKIP_ROOT = "hand wrist (root) invalid, so all its joints are invalid"
SKIP_FEW = f"<= {MIN_VALID_EXCLUSIVE} valid joints after root gating"
SKIP_NO_ANN = "image without annotation"


def project_world_to_pixel(
    world: np.ndarray,
    campos: np.ndarray,
    camrot: np.ndarray,
    focal: np.ndarray,
    princpt: np.ndarray,
) -> np.ndarray:
    """World joints [N, 3] → pixel (u, v) [N, 2], float32 as upstream.

    X_cam = R (X − T); u = X_cam.x / (X_cam.z + 1e-8) · f_x + c_x; v likewise.
    """
    world = np.asarray(world, dtype=np.float32)
    cam = (
        np.asarray(camrot, np.float32) @ (world.T - np.asarray(campos, np.float32).reshape(3, 1))
    ).T
    f = np.asarray(focal, np.float32)
    c = np.asarray(princpt, np.float32)
    u = cam[:, 0] / (cam[:, 2] + 1e-8) * f[0] + c[0]
    v = cam[:, 1] / (cam[:, 2] + 1e-8) * f[1] + c[1]
    return np.stack([u, v], axis=1).astype(np.float32, copy=False)


def _camera(cameras: Any, capture: str, camera: str, source: Path, where: str) -> list[np.ndarray]:
    """(campos [3], camrot [3, 3], focal [2], princpt [2]) of one camera, or DatasetError."""
    if not isinstance(cameras, dict) or capture not in cameras:
        raise DatasetError(
            f"{source}: has no capture '{capture}' (needed by {where}). Fix: use the camera file "
            "of the same split as the data file."
        )
    out = []
    for key, n in (("campos", 3), ("camrot", 9), ("focal", 2), ("princpt", 2)):
        table = require(cameras[capture], key, f"capture '{capture}'", source)
        if not isinstance(table, dict) or camera not in table:
            raise DatasetError(
                f"{source}: capture '{capture}' field '{key}' has no camera '{camera}' (needed "
                f"by {where}). Fix: use the camera file of the same split as the data file."
            )
        arr = as_floats(table[camera], n, f"{key}.{camera}", f"capture '{capture}'", source)
        out.append(arr.astype(np.float32).reshape(3, 3) if key == "camrot" else arr)
    return out


def read_interhand2d(
    ann_file: str | os.PathLike[str],
    camera_file: str | os.PathLike[str],
    joint_file: str | os.PathLike[str],
    img_prefix: str | os.PathLike[str],
    *,
    check_images: bool = True,
    aspect_ratio: float = DEFAULT_ASPECT_RATIO,
    padding: float = 1.5,
    show_progress: bool | None = None,
) -> tuple[list[Instance], ReadSummary]:
    """InterHand2.6M data/camera/joint_3d JSONs → one instance per kept hand.

    The summary counts hands (2 per image). ``extras``: ``hand`` ("right"/"left"),
    ``hand_index`` (0/1), ``hand_type`` and ``hand_type_valid`` (the annotation's),
    ``joint_valid`` [21] uint8 (after root gating; equal to the visibility column),
    ``root_valid``, ``capture``, ``camera``, ``frame_idx``. ``bbox`` is the tight joint box
    that PCK normalises by (max of w, h).
    """
    source = Path(ann_file)
    k = get_skeleton("interhand2d").num_keypoints
    data = load_json(source, "InterHand2.6M data")
    cameras = load_json(camera_file, "InterHand2.6M camera")
    joints = load_json(joint_file, "InterHand2.6M joint_3d")
    images = require(data, "images", "the top-level object", source)
    anns = require(data, "annotations", "the top-level object", source)
    if not isinstance(images, list) or not isinstance(anns, list):
        raise DatasetError(f"{source}: 'images' and 'annotations' must be lists (COCO format).")
    by_image: dict[Any, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for i, ann in enumerate(anns):
        by_image[require(ann, "image_id", f"annotations[{i}]", source)].append((i, ann))

    summary = ReadSummary(
        dataset="interhand2d", source=str(source), unit="hand", read=2 * len(images)
    )
    extra_anns = sum(max(0, len(v) - 1) for v in by_image.values())
    if extra_anns:
        summary.notes.append(
            f"{extra_anns} annotations ignored: only each image's first annotation is used, "
            "as upstream"
        )
    image_ids: set[Any] = set()
    for j, img in enumerate(images):
        img_id = require(img, "id", f"images[{j}]", source)
        if img_id in image_ids:
            # Both records would take the image's first annotation: the hands would count twice.
            raise DatasetError(
                f"{source}: images[{j}] repeats image id {img_id!r}. Fix: image ids must be "
                "unique; use the official InterHand2.6M data file."
            )
        image_ids.add(img_id)
    orphans = sum(len(v) for key, v in by_image.items() if key not in image_ids)
    if orphans:
        summary.notes.append(f"{orphans} annotations refer to no image and were ignored")

    check = ImageChecker(check_images, source)
    prefix = os.path.abspath(img_prefix)
    instances: list[Instance] = []
    images_with_instances = 0
    for j, img in progress(enumerate(images), len(images), "reading interhand2d", show_progress):
        img_id = img["id"]
        where_img = f"images[{j}] (id={img_id})"
        if not by_image.get(img_id):
            summary.skip(SKIP_NO_ANN, 2)
            continue
        i, ann = by_image[img_id][0]
        where = f"annotations[{i}] (id={ann.get('id')}, image_id={img_id})"
        capture = str(require(img, "capture", where_img, source))
        camera = str(require(img, "camera", where_img, source))
        frame = str(require(img, "frame_idx", where_img, source))
        file_name = require(img, "file_name", where_img, source)
        width = require(img, "width", where_img, source)
        height = require(img, "height", where_img, source)

        campos, camrot, focal, princpt = _camera(
            cameras, capture, camera, Path(camera_file), where_img
        )
        if (
            not isinstance(joints, dict)
            or capture not in joints
            or not isinstance(joints[capture], dict)
            or frame not in joints[capture]
        ):
            raise DatasetError(
                f"{joint_file}: has no capture '{capture}' frame '{frame}' (needed by "
                f"{where_img}). Fix: use the joint_3d file of the same split as the data file."
            )
        world = as_floats(
            require(
                joints[capture][frame],
                "world_coord",
                f"capture '{capture}' frame '{frame}'",
                joint_file,
            ),
            2 * 3 * k,
            "world_coord",
            f"capture '{capture}' frame '{frame}'",
            joint_file,
        ).reshape(2 * k, 3)
        joint_valid = (
            as_floats(
                require(ann, "joint_valid", where, source), 2 * k, "joint_valid", where, source
            )
            .astype(np.float32)
            .reshape(2, k)
        )
        pixels = project_world_to_pixel(world, campos, camrot, focal, princpt).reshape(2, k, 2)

        image_file = os.path.join(prefix, file_name)
        n_before = len(instances)
        for hand in range(2):
            root_valid = bool(joint_valid[hand, -1])
            valid = joint_valid[hand] * joint_valid[hand, -1]
            if np.sum(valid) <= MIN_VALID_EXCLUSIVE:
                summary.skip(SKIP_FEW if root_valid else SKIP_ROOT)
                continue
            check(image_file, img_id, where)
            keypoints = np.zeros((k, 3), dtype=np.float32)
            keypoints[:, :2] = pixels[hand]
            keypoints[:, 2] = np.minimum(1, valid)
            bbox = _tight_box(keypoints, width, height)
            center, scale = box_to_center_scale(bbox, aspect_ratio, padding)
            instances.append(
                Instance(
                    dataset="interhand2d",
                    image_file=image_file,
                    image_id=img_id,
                    ann_id=ann.get("id"),
                    category_id=int(ann.get("category_id", 1)),
                    bbox=bbox,
                    center=center,
                    scale=scale,
                    keypoints=keypoints,
                    bbox_score=1.0,
                    area=bbox[2] * bbox[3],
                    extras={
                        "hand": HANDS[hand],
                        "hand_index": hand,
                        "hand_type": ann.get("hand_type"),
                        "hand_type_valid": ann.get("hand_type_valid"),
                        "joint_valid": (valid > 0).astype(np.uint8),
                        "root_valid": root_valid,
                        "capture": capture,
                        "camera": camera,
                        "frame_idx": frame,
                    },
                )
            )
        images_with_instances += len(instances) > n_before
    summary.kept = len(instances)
    summary.images = images_with_instances
    summary.check()
    return instances, summary


def _tight_box(
    keypoints: np.ndarray, width: float, height: float
) -> tuple[float, float, float, float]:
    """Upstream's tight box of the visible joints: start at (W, H, 0, 0), min/max, then w, h.

    keypoints [K, 3] float32; the extents are float32 as upstream (joint coordinates are).
    """
    vis = keypoints[:, 2] > 0
    xs, ys = keypoints[vis, 0], keypoints[vis, 1]
    x1 = min(np.float32(width), xs.min())
    y1 = min(np.float32(height), ys.min())
    x2 = max(np.float32(0), xs.max())
    y2 = max(np.float32(0), ys.max())
    return (float(x1), float(y1), float(np.float32(x2 - x1)), float(np.float32(y2 - y1)))
