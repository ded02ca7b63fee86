"""Reader for MPII in the HRNet JSON list format, with the 0.x centre/scale conventions.

Input: a JSON list of {"image", "center" [2], "scale" (÷200), "joints" [16][2] (1-based MATLAB
pixels), "joints_vis" [16]}. Output ``Instance.keypoints`` [16, 3] float32.

The official 0.x ``TopDownMpiiDataset._get_db`` (PROTOCOL.md §4), verified against
``uyoung-jeong/PoseBH`` ``mmpose/datasets/datasets/top_down/topdown_mpii_dataset.py``:

* scale = (s, s) — square, **no aspect-ratio fix** (the affine warp implies the height);
* if centre x != −1: centre y += 15·s and scale ×= 1.25;
* centre −= 1 and joints −= 1 (1-based → 0-based); visibility = ``joints_vis``.

(Upstream zeroes the joints in test mode because PCKh reads GT from ``mpii_gt_val.mat``; this
reader always keeps them.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from posebh.skeletons import get_skeleton

from .base import (
    DatasetError,
    ImageChecker,
    Instance,
    ReadSummary,
    as_floats,
    load_json,
    progress,
    require,
)

__all__ = ["load_mpii_gt", "mpii_gt_file", "read_mpii"]


def mpii_gt_file(ann_file: str | os.PathLike[str]) -> Path:
    """The ``.mat`` the official PCKh evaluation reads for ``ann_file`` (same folder).

    ``mpii_gt_val.mat``; PoseBH additions: an ``ann_file`` containing ``_fold`` selects
    ``mpii_gt_val_fold{c}.mat`` with c the 6th character from the end of the path (the fold
    digit of ``..._fold{c}.json``), one containing ``_multiocc`` selects
    ``mpii_gt_val_multiocc.mat``.
    """
    path = str(ann_file)
    folder = Path(path).parent
    if "_fold" in path:
        return folder / f"mpii_gt_val_fold{path[-6]}.mat"
    if "_multiocc" in path:
        return folder / "mpii_gt_val_multiocc.mat"
    return folder / "mpii_gt_val.mat"


#: The variables of ``mpii_gt_val.mat`` and their shapes, N the number of val records.
_GT_SHAPES = {"pos_gt_src": (16, 2, None), "jnt_missing": (16, None), "headboxes_src": (2, 2, None)}


def load_mpii_gt(gt_mat: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Arrays of ``mpii_gt_val.mat``: ``pos_gt_src`` [16, 2, N], ``jnt_missing`` [16, N],
    ``headboxes_src`` [2, 2, N] and ``dataset_joints``. Needs scipy (``scipy.io.loadmat``).

    ``DatasetError`` (naming the file, the variable and the fix) if the file is not a MATLAB
    file, is truncated, lacks a variable or its arrays disagree on N.
    """
    path = Path(gt_mat)
    if not path.is_file():
        raise DatasetError(
            f"MPII GT file not found: {path}. Fix: put mpii_gt_val.mat (from the HRNet / mmpose "
            "MPII annotations) next to the JSON annotation file."
        )
    try:
        from scipy.io import loadmat
    except ImportError as e:  # pragma: no cover - scipy is a declared dependency
        raise DatasetError(f"reading {path} needs scipy. Fix: pip install scipy.") from e
    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises many types (ValueError, TypeError, OSError, ...)
        raise DatasetError(
            f"{path} is not a readable MATLAB file ({type(e).__name__}: {e}); it is probably "
            "truncated or corrupt. Fix: re-download it."
        ) from e
    out = {}
    for key in ("pos_gt_src", "jnt_missing", "headboxes_src", "dataset_joints"):
        if key not in mat:
            raise DatasetError(
                f"{path} has no variable '{key}'. Fix: use the official mpii_gt_val.mat "
                "(a truncated copy can also lose variables: re-download it)."
            )
        out[key] = np.asarray(mat[key])
    n = out["pos_gt_src"].shape[-1] if out["pos_gt_src"].ndim == 3 else None
    for key, shape in _GT_SHAPES.items():
        want = tuple(n if d is None else d for d in shape)
        if out[key].shape != want:
            raise DatasetError(
                f"{path}: variable '{key}' has shape {out[key].shape}, expected "
                f"{tuple('N' if d is None else d for d in shape)} with the same N for "
                f"pos_gt_src, jnt_missing and headboxes_src (pos_gt_src gives N={n}). "
                "Fix: use the official mpii_gt_val.mat; re-download it if it was cut."
            )
    return out


def read_mpii(
    ann_file: str | os.PathLike[str],
    img_prefix: str | os.PathLike[str],
    *,
    gt_mat: str | os.PathLike[str] | None = None,
    check_images: bool = True,
    show_progress: bool | None = None,
) -> tuple[list[Instance], ReadSummary]:
    """MPII records → instances (one per record, in file order; nothing is skipped).

    ``ann_id`` and ``extras["index"]`` are the record's list index (the order PCKh matches
    against the ``.mat``); ``image_id`` is the image file name; ``bbox`` is the crop box
    implied by the final centre/scale (MPII has no box), ``area`` its w·h; ``extras`` also
    holds the raw JSON ``center`` and ``scale``. If ``gt_mat`` exists its head boxes are
    attached as ``extras["headbox"]`` ((x1, y1), (x2, y2)); otherwise its path is recorded in
    the summary (``eval_files``) with a note.
    """
    source = Path(ann_file)
    skeleton = get_skeleton("mpii")
    k = skeleton.num_keypoints
    records = load_json(source, "mpii annotation")
    if not isinstance(records, list):
        raise DatasetError(
            f"{source}: expected a JSON list of records (HRNet MPII format), got a "
            f"{type(records).__name__}. Fix: use mpii_train.json / mpii_val.json."
        )
    summary = ReadSummary(dataset="mpii", source=str(source), unit="record", read=len(records))
    headboxes = None
    if gt_mat is not None:
        summary.eval_files["gt_mat"] = str(gt_mat)
        if Path(gt_mat).is_file():
            headboxes = load_mpii_gt(gt_mat)["headboxes_src"]
            if headboxes.ndim != 3 or headboxes.shape[2] != len(records):
                raise DatasetError(
                    f"{gt_mat}: 'headboxes_src' has shape {headboxes.shape}, expected "
                    f"(2, 2, {len(records)}) for the {len(records)} records of {source}. "
                    "Fix: pair the .mat with the annotation file it was made for."
                )
        else:
            summary.notes.append(f"gt_mat {gt_mat} not found: PCKh cannot be evaluated")

    check = ImageChecker(check_images, source)
    prefix = os.path.abspath(img_prefix)
    instances: list[Instance] = []
    for i, rec in progress(enumerate(records), len(records), "reading mpii", show_progress):
        where = f"record [{i}]"
        image = require(rec, "image", where, source)
        where = f"record [{i}] (image {image})"
        raw_center = as_floats(require(rec, "center", where, source), 2, "center", where, source)
        raw_scale = as_floats(require(rec, "scale", where, source), 1, "scale", where, source)
        joints = as_floats(require(rec, "joints", where, source), None, "joints", where, source)
        vis = as_floats(
            require(rec, "joints_vis", where, source), None, "joints_vis", where, source
        )
        if joints.size != 2 * k or vis.size != k:
            raise DatasetError(
                f"{source}: {where} has {joints.size // 2} 'joints' / {vis.size} 'joints_vis'; "
                f"the mpii skeleton has {k}. Fix: use an MPII annotation file (16 joints)."
            )

        if not raw_scale[0] > 0:
            raise DatasetError(
                f"{source}: {where} field 'scale' = {raw_scale[0]} is not positive: the crop "
                "box would be empty. Fix: repair the record (scale = person height / 200) or "
                "remove it."
            )
        center = raw_center.astype(np.float32)
        scale = np.array([raw_scale[0], raw_scale[0]], dtype=np.float32)
        if center[0] != -1:
            center[1] = center[1] + 15 * scale[1]
            scale = scale * 1.25
        center = center - 1
        keypoints = np.zeros((k, 3), dtype=np.float32)
        keypoints[:, :2] = joints.reshape(k, 2) - 1
        keypoints[:, 2] = vis

        image_file = os.path.join(prefix, image)
        check(image_file, image, where)
        w, h = float(scale[0]) * 200.0, float(scale[1]) * 200.0
        bbox = (float(center[0]) - w / 2, float(center[1]) - h / 2, w, h)
        extras: dict[str, Any] = {
            "index": i,
            "raw_center": (float(raw_center[0]), float(raw_center[1])),
            "raw_scale": float(raw_scale[0]),
        }
        if headboxes is not None:
            hb = headboxes[:, :, i]
            extras["headbox"] = (
                (float(hb[0, 0]), float(hb[0, 1])),
                (float(hb[1, 0]), float(hb[1, 1])),
            )
        instances.append(
            Instance(
                dataset="mpii",
                image_file=image_file,
                image_id=image,
                ann_id=i,
                category_id=1,
                bbox=bbox,
                center=center,
                scale=scale.astype(np.float32, copy=False),
                keypoints=keypoints,
                bbox_score=1.0,
                area=w * h,
                extras=extras,
            )
        )
    summary.kept = len(instances)
    summary.images = len({inst.image_id for inst in instances})
    summary.check()
    return instances, summary
