"""MPII PCKh (the HRNet / mmpose 0.x ``TopDownMpiiDataset.evaluate`` protocol, PROTOCOL.md §4).

Shapes first. Predictions are ``pred [N, 16, ≥2]`` in MPII joint order, 0-based pixel
coordinates (the decoder's output; 1 is added, as officially). The ground truth is the content
of ``mpii_gt_val.mat``, in its own (MATLAB, 1-based, joint-major) layout:

* ``pos_gt_src`` ``[16, 2, N]`` joint coordinates;
* ``headboxes_src`` ``[2, 2, N]``: ``[corner, (x, y), n]`` head box corners;
* ``jnt_missing`` ``[16, N]``: 1 where the joint is not annotated;
* ``dataset_joints`` (optional) the 16 short names (``rank``, ``rkne``, …, ``lwri``) used to
  locate joints; without it the standard MPII order is assumed.

Metric: head size = ``‖headbox[1] − headbox[0]‖₂ · 0.6``; a visible joint is correct when its
error / head size is ``<= thr`` (0.x; ``inclusive=False`` gives the 1.x ``<``); per-joint
PCKh = 100·correct/visible; ``PCKh`` is the count-weighted mean over the 14 joints other than
pelvis (6) and thorax (7); ``PCKh@0.1`` the same at threshold ``arange(0, 0.51, 0.01)[10]``,
whose per-joint values are stored as float32 as in the official ``pckAll``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from posebh.datasets.mpii import load_mpii_gt  # the one reader of mpii_gt_val.mat
from posebh.evaluation._meta import result_meta
from posebh.evaluation.bootstrap import Resampler
from posebh.evaluation.resample_means import image_sums, image_units, weighted_sum

__all__ = [
    "MPII_MAT_JOINTS",
    "PCKH_GROUPS",
    "PCKH_NAMES",
    "load_mpii_gt",
    "mpii_gt_arrays",
    "pckh",
    "pckh_resampler",
]

#: Joint short names of ``mpii_gt_val.mat`` ``dataset_joints``, in MPII order.
MPII_MAT_JOINTS = (
    "rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
    "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri",
)  # fmt: skip

#: Reported groups: name -> the short names averaged (each with weight 1/2, Head alone).
PCKH_GROUPS: Mapping[str, tuple[str, ...]] = {
    "Head": ("head",),
    "Shoulder": ("lsho", "rsho"),
    "Elbow": ("lelb", "relb"),
    "Wrist": ("lwri", "rwri"),
    "Hip": ("lhip", "rhip"),
    "Knee": ("lkne", "rkne"),
    "Ankle": ("lank", "rank"),
}

_SC_BIAS = 0.6


def _joint_names(raw: Any, source: str) -> list[str]:
    """16 joint names from a list of strings or loadmat's nested cell/char arrays."""
    names = []
    for x in np.asarray(raw, dtype=object).reshape(-1):
        while isinstance(x, np.ndarray):
            x = x.reshape(-1)[0] if x.size else ""
        names.append(str(x).strip())
    if sorted(names) != sorted(MPII_MAT_JOINTS):
        raise ValueError(
            f"{source}: 'dataset_joints' {names} are not the 16 MPII joint names. Fix: use the "
            "official mpii_gt_val.mat."
        )
    return names


def mpii_gt_arrays(joints: Any, headboxes: Any, visible: Any) -> dict[str, np.ndarray]:
    """The ``.mat`` layout from sample-major arrays.

    Args:
        joints: ``[N, 16, 2]`` GT joints in the ``.mat`` convention (1-based pixels).
        headboxes: ``[N, 2, 2]`` head box ``[corner, (x, y)]``.
        visible: ``[N, 16]`` truthy where the joint is annotated.
    """
    joints = np.asarray(joints, dtype=np.float64)
    headboxes = np.asarray(headboxes, dtype=np.float64)
    visible = np.asarray(visible).astype(bool)
    return {
        "pos_gt_src": np.transpose(joints, (1, 2, 0)),
        "headboxes_src": np.transpose(headboxes, (1, 2, 0)),
        "jnt_missing": (~visible).T.astype(np.uint8),
    }


@dataclass(frozen=True)
class _ScaledErrors:
    """Per-instance PCKh inputs: ``scaled [16, N]`` = error / head size (× visibility, so 0
    for a missing joint) and ``visible [16, N]`` (float 0/1), as ``pckh`` computes them."""

    source: str
    num_instances: int
    joint_index: dict[str, int]  # MPII short name -> row of the arrays
    scaled: np.ndarray
    visible: np.ndarray


def _scaled_errors(pred: Any, gt: str | os.PathLike | Mapping[str, Any]) -> _ScaledErrors:
    """Check ``pred`` against the ground truth and compute the scaled errors (one place for
    :func:`pckh` and :func:`pckh_resampler`)."""
    source = "<arrays>"
    if isinstance(gt, (str, os.PathLike)):
        source = os.fspath(gt)
        gt = load_mpii_gt(gt)
    pos_gt = np.asarray(gt["pos_gt_src"], dtype=np.float64)
    headboxes = np.asarray(gt["headboxes_src"], dtype=np.float64)
    jnt_missing = np.asarray(gt["jnt_missing"], dtype=np.float64)
    raw_names = gt.get("dataset_joints")
    names = list(MPII_MAT_JOINTS) if raw_names is None else _joint_names(raw_names, source)
    pred = np.asarray(pred)
    n = pos_gt.shape[2] if pos_gt.ndim == 3 else -1
    if pred.ndim == 3 and pred.shape[1:2] == (16,) and n >= 0 and pred.shape[0] != n:
        raise ValueError(
            f"pckh: {source} holds {n} MPII instances but {pred.shape[0]} predictions were "
            "given. Fix: predict every record of the annotation file the .mat was made for "
            "(mpii_val.json for mpii_gt_val.mat), in file order."
        )
    if (
        pos_gt.shape != (16, 2, n)
        or headboxes.shape != (2, 2, n)
        or jnt_missing.shape != (16, n)
        or pred.shape[:2] != (n, 16)
        or pred.shape[2] < 2
    ):
        raise ValueError(
            f"pckh: shapes pred {pred.shape}, pos_gt_src {pos_gt.shape}, headboxes_src "
            f"{headboxes.shape}, jnt_missing {jnt_missing.shape} do not describe 16 joints"
        )
    idx = {name: names.index(name) for name in MPII_MAT_JOINTS}

    pos_pred = np.transpose(pred[..., :2] + 1.0, [1, 2, 0])
    jnt_visible = 1 - jnt_missing
    uv_err = np.linalg.norm(pos_pred - pos_gt, axis=1)
    headsizes = np.linalg.norm(headboxes[1, :, :] - headboxes[0, :, :], axis=0) * _SC_BIAS
    scale = headsizes * np.ones((len(uv_err), 1), dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = uv_err / scale * jnt_visible
    return _ScaledErrors(source, int(n), idx, scaled, jnt_visible)


def _hits(scaled: np.ndarray, t: float, inclusive: bool) -> np.ndarray:
    return (scaled <= t) if inclusive else (scaled < t)


#: The low threshold, as the official ``pckAll`` indexes it.
_THR_LOW = np.arange(0, 0.5 + 0.01, 0.01)[10]


def pckh(
    pred: Any,
    gt: str | os.PathLike | Mapping[str, Any],
    *,
    thr: float = 0.5,
    inclusive: bool = True,
) -> dict[str, Any]:
    """MPII PCKh@thr and PCKh@0.1 with the per-group table.

    Args:
        pred: ``[N, 16, ≥2]`` 0-based predictions, in the ``.mat`` sample order.
        gt: path to ``mpii_gt_val.mat`` or a mapping with its arrays (module docstring).
        thr: the main threshold (0.5).
        inclusive: ``True`` counts ``err/head <= thr`` (0.x), ``False`` ``< thr`` (1.x).

    Returns:
        ``{"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "PCKh", "PCKh@0.1":
        float (percent), "per_joint": [16], "per_joint_count": [16], "meta": dict}``. A joint
        with no visible instance has per-joint PCKh NaN, as officially.
    """
    return _pckh_of(_scaled_errors(pred, gt), thr, inclusive)


def _pckh_of(errors: _ScaledErrors, thr: float, inclusive: bool) -> dict[str, Any]:
    idx = errors.joint_index
    scaled, jnt_visible = errors.scaled, errors.visible
    with np.errstate(divide="ignore", invalid="ignore"):
        jnt_count = np.sum(jnt_visible, axis=1)

        def pck_at(t: float) -> np.ndarray:
            return 100.0 * np.sum(_hits(scaled, t, inclusive) * jnt_visible, axis=1) / jnt_count

        per_joint = pck_at(thr)
        thr01 = _THR_LOW
        per_joint01 = pck_at(thr01).astype(np.float32)

    masked = np.zeros(16, dtype=bool)
    masked[[idx["pelv"], idx["thor"]]] = True
    count = np.ma.array(jnt_count, mask=masked)
    ratio = count / np.sum(count).astype(np.float64)
    out: dict[str, Any] = {}
    for group, members in PCKH_GROUPS.items():
        vals = [per_joint[idx[m]] for m in members]
        out[group] = float(vals[0] if len(vals) == 1 else 0.5 * (vals[0] + vals[1]))
    out["PCKh"] = float(np.sum(np.ma.array(per_joint, mask=masked) * ratio))
    out["PCKh@0.1"] = float(np.sum(np.ma.array(per_joint01, mask=masked) * ratio))
    out["per_joint"] = [float(v) for v in per_joint]
    out["per_joint_count"] = [int(c) for c in jnt_count]
    source = errors.source
    out["meta"] = result_meta(
        "mpii_pckh",
        extra_libraries=("scipy",) if source != "<arrays>" else (),
        gt=source,
        thr=thr,
        thr_low=float(thr01),
        inclusive=inclusive,
        sc_bias=_SC_BIAS,
        excluded_from_mean=["pelv", "thor"],
        num_instances=errors.num_instances,
        pred_plus_one=True,
    )
    return out


#: Flat metric names of :func:`pckh_resampler`, in order.
PCKH_NAMES = (*PCKH_GROUPS, "PCKh", "PCKh@0.1")


def pckh_resampler(
    pred: Any,
    gt: str | os.PathLike | Mapping[str, Any],
    image_ids: Any,
    *,
    thr: float = 0.5,
    inclusive: bool = True,
) -> Resampler:
    """:func:`pckh` on resampled image multisets (:mod:`posebh.evaluation.bootstrap`).

    Args:
        pred, gt, thr, inclusive: as :func:`pckh`.
        image_ids: ``[N]`` the image of each instance (``.mat`` sample order, as ``pred``);
            the units are the sorted unique ids.

    ``full`` is :func:`pckh` itself; ``values(counts)`` weights each instance by its image's
    count and repeats pckh's arithmetic (per-joint hits and visible counts as exact integer
    sums, the count-weighted mean without pelvis and thorax, the float32 per-joint values at
    0.1). A joint with no visible copy is NaN, and so is a mean over it, as in :func:`pckh`.
    """
    errors = _scaled_errors(pred, gt)
    summary = _pckh_of(errors, thr, inclusive)
    full = np.array([summary[name] for name in PCKH_NAMES], dtype=np.float64)
    units, inverse = image_units(image_ids, errors.num_instances, "pckh_resampler")
    idx = errors.joint_index
    visible = errors.visible.T  # [N, 16]
    hits = _hits(errors.scaled, thr, inclusive).T * visible
    hits_low = _hits(errors.scaled, _THR_LOW, inclusive).T * visible
    per_image = image_sums(np.concatenate([visible, hits, hits_low], 1), inverse, len(units))
    kept = np.ones(16, dtype=bool)
    kept[[idx["pelv"], idx["thor"]]] = False
    groups = [[idx[m] for m in members] for members in PCKH_GROUPS.values()]

    def values(counts: np.ndarray) -> np.ndarray:
        jnt_count, num_hits, num_hits_low = np.split(weighted_sum(counts, per_image), 3, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            per_joint = 100.0 * num_hits / jnt_count
            per_joint01 = (100.0 * num_hits_low / jnt_count).astype(np.float32)
            total = np.where(kept, jnt_count, 0.0).sum(axis=1)
            ratio = jnt_count / total[:, None]
            # pckh's masked sum: masked joints contribute 0, everything masked gives NaN
            mean = np.where(kept, per_joint * ratio, 0.0).sum(axis=1)
            mean01 = np.where(kept, per_joint01 * ratio, 0.0).sum(axis=1)
        mean[total == 0] = np.nan
        mean01[total == 0] = np.nan
        columns = [
            per_joint[:, g[0]] if len(g) == 1 else 0.5 * (per_joint[:, g[0]] + per_joint[:, g[1]])
            for g in groups
        ]
        return np.stack([*columns, mean, mean01], axis=1)

    return Resampler(units, PCKH_NAMES, full, values)
