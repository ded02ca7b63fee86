"""Coordinate metrics: PCK, AUC, EPE, NME, heatmap PCK and MPJPE.

Shapes first: ``pred`` and ``gt`` are ``[N, K, C]`` (``C = 2`` for image coordinates
``(x, y)``, 3 for MPJPE), ``mask`` is a boolean ``[N, K]`` (True = evaluate this keypoint),
``norm_factor`` is ``[N, C]`` (per-instance, per-axis) unless stated otherwise, heatmaps are
``[N, K, H, W]``.

Semantics are those of ``mmpose/core/evaluation/top_down_eval.py`` (0.x) and
``mmpose.evaluation.functional`` (1.x) as summarised in PROTOCOL.md §7:

* distances are float32 (the official ``distances`` buffer) and compared with ``thr`` in
  float32; a masked or normalised-out entry is ``-1``;
* an instance with a **zero** anywhere in its ``norm_factor`` row is masked out entirely,
  while negative entries are replaced by 1e6 (so they do not mask). The official
  ``_calc_distances`` performs that replacement on the caller's array; these functions compute
  the same values on a copy and never modify their arguments.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from posebh.decode import get_max_preds
from posebh.evaluation.bootstrap import Resampler
from posebh.evaluation.resample_means import (
    image_sums,
    image_units,
    instance_counts,
    masked_row_mean,
    repeated_index,
    weighted_sum,
)

__all__ = [
    "MPJPE_NAMES",
    "auc",
    "calc_distances",
    "epe",
    "heatmap_argmax",
    "heatmap_pck",
    "mpjpe",
    "mpjpe_resampler",
    "nme",
    "nme_resampler",
    "pck_accuracy",
    "pck_auc_epe_resampler",
]


def calc_distances(pred: Any, gt: Any, mask: Any, norm_factor: Any) -> np.ndarray:
    """Normalised distances, float32 ``[K, N]`` (note: transposed), ``-1`` where invalid.

    ``‖(pred − gt) / norm‖₂`` with x and y normalised separately.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    n, k, _ = pred.shape
    valid = np.array(mask, dtype=bool, copy=True).reshape(n, k)
    norm = np.array(norm_factor, copy=True)
    valid[np.where((norm == 0).sum(1))[0], :] = False
    distances = np.full((n, k), -1, dtype=np.float32)
    norm[np.where(norm <= 0)] = 1e6
    distances[valid] = np.linalg.norm(((pred - gt) / norm[:, None, :])[valid], axis=-1)
    return distances.T


def _distance_acc(distances: np.ndarray, thr: float) -> float:
    valid = distances != -1
    num_valid = valid.sum()
    if num_valid > 0:
        return float((distances[valid] < thr).sum() / num_valid)
    return -1.0


def pck_accuracy(
    pred: Any, gt: Any, mask: Any, thr: float, norm_factor: Any
) -> tuple[np.ndarray, float, int]:
    """PCK: per-keypoint share of valid normalised distances ``< thr``.

    Args:
        pred, gt: ``[N, K, 2]``; mask: ``[N, K]``; norm_factor: ``[N, 2]``.

    Returns:
        ``(acc, avg, cnt)``: ``acc`` float64 ``(K,)`` (``-1`` for a keypoint without a valid
        entry), ``avg`` the mean over keypoints with ``acc >= 0`` (0 if none), ``cnt`` their
        number.
    """
    distances = calc_distances(pred, gt, mask, norm_factor)
    acc = np.array([_distance_acc(d, thr) for d in distances], dtype=np.float64)
    valid_acc = acc[acc >= 0]
    cnt = len(valid_acc)
    avg = float(valid_acc.mean()) if cnt > 0 else 0.0
    return acc, avg, cnt


def auc(pred: Any, gt: Any, mask: Any, norm_factor: float, num_thrs: int = 20) -> float:
    """Area under the PCK curve at thresholds ``i / num_thrs``, ``i = 0 … num_thrs − 1``.

    ``norm_factor`` is one scalar (pixels) for both axes and all instances; a perfect
    prediction scores ``(num_thrs − 1) / num_thrs``.
    """
    nor = _auc_norm(np.asarray(pred).shape[0], norm_factor)
    result = 0.0
    for i in range(num_thrs):
        _, avg, _ = pck_accuracy(pred, gt, mask, 1.0 * i / num_thrs, nor)
        result += 1.0 / num_thrs * avg
    return result


def _auc_norm(n: int, norm_factor: float) -> np.ndarray:
    return np.tile(np.array([[norm_factor, norm_factor]]), (n, 1))


def _mean_valid(distances: np.ndarray) -> float:
    valid = distances[distances != -1]
    # float32 sum, then a float64 division (NumPy 1.x: float32 scalar / Python int).
    return float(valid.sum()) / max(1, len(valid))


def epe(pred: Any, gt: Any, mask: Any) -> float:
    """End-point error: mean Euclidean distance (pixels) over the masked ``[N, K]`` entries."""
    pred = np.asarray(pred)
    return _mean_valid(calc_distances(pred, gt, mask, _unit_norm(pred)))


def _unit_norm(pred: np.ndarray) -> np.ndarray:
    return np.ones((pred.shape[0], pred.shape[2]), dtype=np.float32)


def nme(pred: Any, gt: Any, mask: Any, norm_factor: Any) -> float:
    """Normalised mean error: mean of the valid normalised distances (``norm_factor [N, 2]``)."""
    return _mean_valid(calc_distances(pred, gt, mask, norm_factor))


def heatmap_argmax(heatmaps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max locations ``[N, K, 2]`` float32 ``(x, y)`` and maxima ``[N, K, 1]``.

    ``x = idx mod W``, ``y = idx div W``; a location whose maximum is ``<= 0`` is ``(-1, -1)``
    (:func:`posebh.decode.get_max_preds`, the one arg-max reference, on an array).
    """
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {heatmaps.shape}")
    return get_max_preds(heatmaps)


def heatmap_pck(
    output: Any, target: Any, mask: Any, thr: float = 0.05, normalize: Any = None
) -> tuple[np.ndarray, float, int]:
    """PCK between the arg-max locations of ``output`` and ``target`` heatmaps ``[N, K, H, W]``.

    ``normalize`` ``[N, 2]`` defaults to ``[[H, W]]`` per instance — the official (H, W) order,
    although the coordinates are ``(x, y)``; pass ``[[W, H]]`` for the axis-consistent variant.
    Returns ``(acc (K,), avg, cnt)`` as :func:`pck_accuracy` (``K = 0``: empty, 0.0, 0).
    """
    output = np.asarray(output)
    n, k, h, w = output.shape
    if k == 0:
        return np.zeros(0), 0.0, 0
    if normalize is None:
        normalize = np.tile(np.array([[h, w]]), (n, 1))
    pred, _ = heatmap_argmax(output)
    gt, _ = heatmap_argmax(target)
    return pck_accuracy(pred, gt, mask, thr, normalize)


def _similarity_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-instance Umeyama fit of ``pred`` onto ``gt`` (scale, proper rotation, translation).

    ``pred``, ``gt`` ``[N, K, C]``; returns the transformed ``pred``. All K joints are used.
    """
    mu1 = pred.mean(axis=1, keepdims=True)
    mu2 = gt.mean(axis=1, keepdims=True)
    x1 = pred - mu1
    x2 = gt - mu2
    var1 = np.sum(x1**2, axis=(1, 2))
    cov = np.einsum("nkc,nkd->ncd", x1, x2)  # [N, C, C] = X1ᵀ-layout · X2
    u, _, vh = np.linalg.svd(cov)
    v = np.swapaxes(vh, 1, 2)
    z = np.broadcast_to(np.eye(cov.shape[1]), cov.shape).copy()
    z[:, -1, -1] *= np.sign(np.linalg.det(u @ np.swapaxes(v, 1, 2)))
    rot = v @ z @ np.swapaxes(u, 1, 2)  # maps centred pred onto centred gt
    scale = np.trace(rot @ cov, axis1=1, axis2=2) / var1
    trans = mu2 - scale[:, None, None] * (mu1 @ np.swapaxes(rot, 1, 2))
    return scale[:, None, None] * (pred @ np.swapaxes(rot, 1, 2)) + trans


def mpjpe(pred: Any, gt: Any, mask: Any, alignment: str = "none") -> float:
    """Mean per-joint position error over the masked ``[N, K]`` entries.

    Args:
        pred, gt: ``[N, K, C]``; mask: ``[N, K]``.
        alignment: ``"none"``; ``"scale"`` (pred × ⟨pred, gt⟩/⟨pred, pred⟩ per instance);
            ``"procrustes"`` (per-instance similarity transform, Umeyama, on all K joints
            regardless of the mask — PA-MPJPE).

    Raises:
        ValueError: unknown ``alignment`` or an all-False mask.
    """
    errors, mask = _joint_errors(pred, gt, mask, alignment)
    return float(errors[mask].mean())


def _joint_errors(pred: Any, gt: Any, mask: Any, alignment: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint errors ``[N, K]`` after the per-instance alignment, and the boolean mask."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 3 or mask.shape != pred.shape[:2]:
        raise ValueError(f"shapes pred {pred.shape}, gt {gt.shape}, mask {mask.shape} differ")
    if not mask.any():
        raise ValueError("mpjpe: the mask selects no joint")
    if alignment == "procrustes":
        pred = _similarity_align(pred, gt)
    elif alignment == "scale":
        factor = np.einsum("nkc,nkc->n", pred, gt) / np.einsum("nkc,nkc->n", pred, pred)
        pred = pred * factor[:, None, None]
    elif alignment != "none":
        raise ValueError(f"alignment must be 'none', 'scale' or 'procrustes', got {alignment!r}")
    return np.linalg.norm(pred - gt, ord=2, axis=-1), mask


# ------------------------------------------------------------------------------------------
# Per-image bootstrap (posebh.evaluation.bootstrap): each instance weighted by the count of its
# image; a resample equals the full-set function on the instances repeated in place
# (posebh.evaluation.resample_means).
# ------------------------------------------------------------------------------------------


def _pck_indicators(distances: np.ndarray, thrs: list[float]) -> np.ndarray:
    """``[N, K · (1 + T)]``: valid entries, then the valid entries ``< thr`` per threshold
    (``_distance_acc``'s comparison: float32 distances against the caller's ``thr``)."""
    valid = distances != -1
    return np.concatenate([valid.T, *[(valid & (distances < t)).T for t in thrs]], axis=1)


def _resampled_pck(num_valid: np.ndarray, num_hits: np.ndarray) -> np.ndarray:
    """``pck_accuracy``'s ``avg`` per resample from the per-keypoint counts over copies
    ``[B, K]`` (exact integers): the same float64 division as ``_distance_acc``, the mean
    over keypoints with a valid copy, 0.0 when there is none."""
    has_valid = num_valid > 0
    acc = np.zeros_like(num_valid)
    np.divide(num_hits, num_valid, out=acc, where=has_valid)
    return np.nan_to_num(masked_row_mean(acc, has_valid), nan=0.0)


def _resampled_mean_valid(distances: np.ndarray, copies: np.ndarray) -> np.ndarray:
    """``_mean_valid`` per resample, on the duplicated distances themselves: its float32 sum
    rounds by summation order, so no weighted shortcut would give the same bits."""
    return np.array([_mean_valid(distances[:, repeated_index(row)]) for row in copies])


def pck_auc_epe_resampler(
    pred: Any,
    gt: Any,
    mask: Any,
    norm: Any,
    image_ids: Any,
    *,
    pck_thr: float = 0.2,
    auc_norm: float = 30.0,
    auc_num_thrs: int = 20,
) -> Resampler:
    """``"PCK"``, ``"AUC"``, ``"EPE"`` (``posebh.evaluate``'s ``pck_auc_epe``) on resampled
    image multisets.

    Args:
        pred, gt: ``[N, K, 2]``; mask: ``[N, K]``; norm: ``[N, 2]`` the PCK normaliser
            (``posebh.evaluate``: ``max(w, h)`` of the joint box, for both axes).
        image_ids: ``[N]`` the image of each instance; the units are the sorted unique ids.
        pck_thr, auc_norm, auc_num_thrs: :func:`pck_accuracy`'s ``thr``, :func:`auc`'s
            ``norm_factor`` and ``num_thrs``.

    ``full`` is :func:`pck_accuracy`'s ``avg``, :func:`auc` and :func:`epe` themselves.
    """
    pred = np.asarray(pred)
    units, inverse = image_units(image_ids, pred.shape[0], "pck_auc_epe_resampler")
    _, pck, _ = pck_accuracy(pred, gt, mask, pck_thr, norm)
    full = np.array(
        [pck, auc(pred, gt, mask, auc_norm, num_thrs=auc_num_thrs), epe(pred, gt, mask)],
        dtype=np.float64,
    )
    auc_thrs = [1.0 * i / auc_num_thrs for i in range(auc_num_thrs)]  # auc's thresholds
    pck_part = _pck_indicators(calc_distances(pred, gt, mask, norm), [pck_thr])
    auc_distances = calc_distances(pred, gt, mask, _auc_norm(pred.shape[0], auc_norm))
    auc_part = _pck_indicators(auc_distances, auc_thrs)
    per_image = image_sums(np.concatenate([pck_part, auc_part], 1), inverse, len(units))
    epe_distances = calc_distances(pred, gt, mask, _unit_norm(pred))
    k = pred.shape[1]

    def values(counts: np.ndarray) -> np.ndarray:
        sums = weighted_sum(counts, per_image).reshape(len(counts), 3 + auc_num_thrs, k)
        area = np.zeros(len(counts))
        for i in range(auc_num_thrs):  # auc's own loop: the same sum in the same order
            area += 1.0 / auc_num_thrs * _resampled_pck(sums[:, 2], sums[:, 3 + i])
        copies = instance_counts(counts, inverse, len(units))
        epe_values = _resampled_mean_valid(epe_distances, copies)
        return np.stack([_resampled_pck(sums[:, 0], sums[:, 1]), area, epe_values], axis=1)

    return Resampler(units, ("PCK", "AUC", "EPE"), full, values)


def nme_resampler(pred: Any, gt: Any, mask: Any, norm_factor: Any, image_ids: Any) -> Resampler:
    """``"NME"`` (:func:`nme`) on resampled image multisets; arguments as :func:`nme`, plus
    ``image_ids [N]`` the image of each instance."""
    pred = np.asarray(pred)
    units, inverse = image_units(image_ids, pred.shape[0], "nme_resampler")
    full = np.array([nme(pred, gt, mask, norm_factor)], dtype=np.float64)
    distances = calc_distances(pred, gt, mask, norm_factor)

    def values(counts: np.ndarray) -> np.ndarray:
        copies = instance_counts(counts, inverse, len(units))
        return _resampled_mean_valid(distances, copies)[:, None]

    return Resampler(units, ("NME",), full, values)


#: Metric name of each :func:`mpjpe` alignment.
MPJPE_NAMES = {"none": "MPJPE", "scale": "N-MPJPE", "procrustes": "PA-MPJPE"}


def mpjpe_resampler(
    pred: Any,
    gt: Any,
    mask: Any,
    image_ids: Any,
    alignment: str | tuple[str, ...] = "none",
) -> Resampler:
    """:func:`mpjpe` under one or several alignments (names :data:`MPJPE_NAMES`) on resampled
    image multisets; ``image_ids [N]`` the image of each instance.

    The alignment is per instance, so it is computed once on the full set; a resample is
    :func:`mpjpe`'s mean over the duplicated instances' joint errors (the same float64 sum in
    the same order). NaN where a resample has no masked joint.
    """
    alignments = (alignment,) if isinstance(alignment, str) else tuple(alignment)
    pred = np.asarray(pred)
    units, inverse = image_units(image_ids, pred.shape[0], "mpjpe_resampler")
    errors = [_joint_errors(pred, gt, mask, a) for a in alignments]
    full = np.array([float(e[m].mean()) for e, m in errors], dtype=np.float64)

    def values(counts: np.ndarray) -> np.ndarray:
        copies = instance_counts(counts, inverse, len(units))
        out = np.empty((len(copies), len(alignments)))
        for b, row in enumerate(copies):
            index = repeated_index(row)
            for j, (joint_errors, joint_mask) in enumerate(errors):
                selected = joint_errors[index][joint_mask[index]]
                out[b, j] = selected.mean() if selected.size else np.nan
        return out

    names = tuple(MPJPE_NAMES[a] for a in alignments)
    return Resampler(units, names, full, values)
