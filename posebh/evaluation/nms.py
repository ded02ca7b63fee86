"""OKS similarity between predictions, OKS-NMS, soft OKS-NMS and the top-down rescoring.

Shapes first: an *instance* is a mapping with ``keypoints`` ``[K, 3]`` (or flat ``3K``) holding
``(x, y, score)`` rows, ``area`` (a scalar, the OKS scale; for top-down results
``prod(scale·200)`` of the padded box) and ``score`` (a scalar). ``sigmas`` is ``(K,)``;
``None`` means the COCO sigmas.

These reproduce ``mmpose/core/post_processing/nms.py`` and the rescoring loop of the 0.x
top-down ``evaluate`` (PROTOCOL.md §3, §7), including:

* ``vis_thr`` keeps only the keypoints whose **detection** visibility exceeds it: the official
  ``list(vg > vis_thr) and list(vd > vis_thr)`` evaluates to the second list;
* OKS values are float32 (the official ``ious`` array) and compared in float32;
* instances are visited in ``argsort(scores)[::-1]`` order (ties: reversed quicksort order);
* the rescoring accumulates keypoint scores in float64 and compares them with ``vis_thr`` in
  float64, as NumPy 1.x did with float32 scalars and Python numbers.

Nothing here mutates its inputs (the official rescoring overwrites ``score`` in place).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from posebh.skeletons import get_skeleton

__all__ = ["oks_iou", "oks_nms", "rescore_and_nms", "soft_oks_nms"]

Instance = Mapping[str, Any]


def _sigmas(sigmas: Any) -> np.ndarray:
    if sigmas is None:
        return get_skeleton("coco").sigmas_array()
    return np.asarray(sigmas, dtype=np.float64).reshape(-1)


def _as_float(a: Any) -> np.ndarray:
    arr = np.asarray(a)
    return arr if arr.dtype.kind == "f" else arr.astype(np.float64)  # kind "f": np.floating


def oks_iou(
    g: Any,
    d: Any,
    area_g: float,
    area_d: Any,
    sigmas: Any = None,
    vis_thr: float | None = None,
) -> np.ndarray:
    """OKS of one prediction ``g`` against each of ``d``.

    Args:
        g: ``[K, 3]`` or flat ``(3K,)`` keypoints ``(x, y, score)``.
        d: ``[N, K, 3]`` or ``[N, 3K]``.
        area_g: scale of ``g``; ``area_d``: ``(N,)`` scales of ``d``.
        sigmas: ``(K,)``; ``None`` = COCO.
        vis_thr: if given, only keypoints whose score in ``d`` exceeds it count (0 if none).

    Returns:
        float32 ``(N,)``: ``mean_j exp(-d_j² / (2σ_j)² / ((a_g + a_d)/2 + eps) / 2)``.
    """
    g = _as_float(g).reshape(-1)
    d = _as_float(d)
    d = d.reshape(d.shape[0], -1) if d.size else d.reshape(0, g.size)
    area_d = np.asarray(area_d).reshape(-1)
    variances = (_sigmas(sigmas) * 2) ** 2
    if g.size != 3 * variances.size or d.shape[1] != g.size:
        raise ValueError(
            f"keypoint sizes {g.size} and {d.shape[1]} do not match {variances.size} sigmas x 3"
        )
    if vis_thr is None:
        return _oks_rows(g[None], d, area_g, area_d, variances)[0]
    xg, yg = g[0::3], g[1::3]
    ious = np.zeros(d.shape[0], dtype=np.float32)
    for n in range(d.shape[0]):
        dx = d[n, 0::3] - xg
        dy = d[n, 1::3] - yg
        e = (dx**2 + dy**2) / variances / ((area_g + area_d[n]) / 2 + np.spacing(1)) / 2
        e = e[d[n, 2::3] > vis_thr]
        ious[n] = np.sum(np.exp(-e)) / len(e) if e.size else 0.0
    return ious


#: Rows of the OKS matrix computed at once: bounds the [rows, N, K] temporaries (~32 MB).
_ROW_ELEMENTS = 1 << 22


def _oks_rows(g: np.ndarray, d: np.ndarray, area_g: Any, area_d: Any, variances: np.ndarray):
    """OKS of each row of ``g`` [M, 3K] against each row of ``d`` [N, 3K]: float32 [M, N].

    The per-pair arithmetic is the official loop's, elementwise and in the same order (so the
    same IEEE results); the K-term sum runs along the contiguous last axis, which NumPy sums
    per row exactly as it sums a 1-D array (pairwise), so no value changes.
    """
    m, n, k = g.shape[0], d.shape[0], variances.size
    out = np.empty((m, n), dtype=np.float32)
    if m == 0 or n == 0:
        return out
    xg, yg = g[:, None, 0::3], g[:, None, 1::3]
    xd, yd = d[None, :, 0::3], d[None, :, 1::3]
    # A scalar area_g stays a scalar, so NumPy promotes it exactly as the official loop did.
    scalar_g = np.ndim(area_g) == 0
    step = max(1, _ROW_ELEMENTS // max(1, n * k))
    for lo in range(0, m, step):
        hi = min(m, lo + step)
        dx = xd - xg[lo:hi]
        dy = yd - yg[lo:hi]
        a_g = area_g if scalar_g else np.asarray(area_g)[lo:hi, None]
        denom = ((a_g + area_d[None, :]) / 2 + np.spacing(1))[..., None]
        e = (dx**2 + dy**2) / variances / denom / 2
        out[lo:hi] = np.sum(np.ascontiguousarray(np.exp(-e)), axis=-1) / k
    return out


def _oks_matrix(kpts: np.ndarray, areas: np.ndarray, sigmas: Any) -> np.ndarray:
    """``M[i, j]`` = ``oks_iou(kpts[i], kpts[j:j+1], areas[i], areas[j:j+1], sigmas)[0]``."""
    variances = (_sigmas(sigmas) * 2) ** 2
    if kpts.shape[1] != 3 * variances.size:
        raise ValueError(
            f"keypoint size {kpts.shape[1]} does not match {variances.size} sigmas x 3"
        )
    return _oks_rows(kpts, kpts, areas, areas, variances)


def _stack(instances: Sequence[Instance]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.array([inst["score"] for inst in instances])
    kpts = np.array([_as_float(inst["keypoints"]).reshape(-1) for inst in instances])
    areas = np.array([inst["area"] for inst in instances])
    return scores, kpts, areas


def oks_nms(
    instances: Sequence[Instance],
    thr: float,
    sigmas: Any = None,
    vis_thr: float | None = None,
) -> list[int]:
    """Greedy OKS-NMS: indices of the kept instances, highest score first.

    A candidate is dropped when its OKS with an already kept instance exceeds ``thr``
    (kept while ``OKS <= thr``).
    """
    if len(instances) == 0:
        return []
    scores, kpts, areas = _stack(instances)
    order = scores.argsort()[::-1]
    if vis_thr is None:  # the evaluation's NMS: every pair of the image at once
        return _greedy(order.tolist(), (_oks_matrix(kpts, areas, sigmas) <= thr).tolist())
    keep: list[int] = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        ovr = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas, vis_thr)
        order = order[np.where(ovr <= thr)[0] + 1]
    return keep


def _greedy(order: list[int], compatible: list[list[bool]]) -> list[int]:
    """The NMS loop on plain lists: keep the head of ``order``, drop every later candidate
    ``j`` with ``not compatible[head][j]`` (``compatible`` = OKS <= thr), repeat."""
    keep: list[int] = []
    while order:
        i = order[0]
        keep.append(i)
        row = compatible[i]
        order = [j for j in order[1:] if row[j]]
    return keep


def _overlaps(kpts: np.ndarray, areas: np.ndarray, sigmas: Any, vis_thr: float | None):
    """``overlap(i, js)`` = ``oks_iou(kpts[i], kpts[js], areas[i], areas[js], ...)``.

    Without ``vis_thr`` the OKS is symmetric and every pair of an image is computed in one
    vectorised pass; with it, the per-pair loop of :func:`oks_iou`.
    """
    if vis_thr is None:
        matrix = _oks_matrix(kpts, areas, sigmas)
        return lambda i, js: matrix[i, js]
    return lambda i, js: oks_iou(kpts[i], kpts[js], areas[i], areas[js], sigmas, vis_thr)


def soft_oks_nms(
    instances: Sequence[Instance],
    thr: float,
    sigmas: Any = None,
    vis_thr: float | None = None,
    max_dets: int = 20,
) -> list[int]:
    """Soft OKS-NMS (Gaussian): indices of at most ``max_dets`` instances in visiting order.

    After each pick the remaining scores are multiplied by ``exp(-OKS² / thr)`` and re-sorted;
    nothing is dropped except by the ``max_dets`` cap.
    """
    if len(instances) == 0:
        return []
    scores, kpts, areas = _stack(instances)
    order = scores.argsort()[::-1]
    scores = scores[order]
    overlap = _overlaps(kpts, areas, sigmas, vis_thr)
    keep: list[int] = []
    while order.size > 0 and len(keep) < max_dets:
        i = order[0]
        ovr = overlap(i, order[1:])
        order = order[1:]
        scores = scores[1:] * np.exp(-(ovr**2) / thr)
        tmp = scores.argsort()[::-1]
        order = order[tmp]
        scores = scores[tmp]
        keep.append(int(i))
    return keep


def _rescored_image(insts: Sequence[Instance], vis_thr: float) -> list[dict[str, Any]]:
    """:func:`_rescored` of each instance, vectorised over the image when every keypoint
    array is float32/float64 of one size (the values are the loop's: the column loop adds
    the scores in the official order, in float64, and adding +0.0 for a skipped keypoint
    leaves a sum that starts at +0.0 unchanged)."""
    if not isinstance(vis_thr, (int, float)):  # a NumPy float32 would compare in float32
        return [_rescored(inst, vis_thr) for inst in insts]
    kpts = [_as_float(inst["keypoints"]) for inst in insts]
    if not kpts or any(k.dtype not in _EXACT_SCORE_DTYPES or k.size != kpts[0].size for k in kpts):
        return [_rescored(inst, vis_thr) for inst in insts]
    scores = np.stack([k.reshape(-1, 3)[:, 2] for k in kpts]).astype(np.float64)
    passed = scores > vis_thr
    total = np.zeros(len(insts))
    for column, passes in zip(scores.T, passed.T, strict=True):
        total += np.where(passes, column, 0.0)
    valid = passed.sum(axis=1)
    kpt_score = np.divide(total, valid, out=np.zeros_like(total), where=valid > 0)
    box_score = np.array([float(inst["score"]) for inst in insts], dtype=np.float64)
    out = []
    for inst, score in zip(insts, (kpt_score * box_score).tolist(), strict=True):
        rescored = dict(inst)
        rescored["score"] = score
        out.append(rescored)
    return out


_EXACT_SCORE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _rescored(inst: Instance, vis_thr: float) -> dict[str, Any]:
    kpt_scores = _as_float(inst["keypoints"]).reshape(-1, 3)[:, 2]
    total, valid = 0.0, 0
    for s in kpt_scores.tolist():  # Python floats: float64, in the official order
        if s > vis_thr:
            total += s
            valid += 1
    kpt_score = total / valid if valid else 0.0
    out = dict(inst)
    out["score"] = kpt_score * float(inst["score"])
    return out


def rescore_and_nms(
    instances_per_image: Mapping[Hashable, Sequence[Instance]] | Sequence[Sequence[Instance]],
    sigmas: Any,
    vis_thr: float = 0.2,
    oks_thr: float = 0.9,
    soft: bool = False,
    *,
    use_nms: bool = True,
) -> Any:
    """The 0.x top-down post-processing before COCOeval (PROTOCOL.md §3).

    Per instance: ``score = box score × mean(keypoint scores > vis_thr)`` (0 if none passes),
    the box score being the instance's incoming ``score``. Then, per image, ``oks_nms`` (or
    ``soft_oks_nms`` with ``soft=True``) with ``oks_thr`` and ``sigmas`` — without ``vis_thr``,
    which the official code does not pass to the NMS.

    Args:
        instances_per_image: ``{image_id: [instance, ...]}`` or a list of per-image lists.
        sigmas: ``(K,)`` dataset sigmas (``None`` = COCO).

    Returns:
        The same container type, each image's kept instances as new dicts (with the rescored
        ``score``) in NMS keep order; inputs are not modified.
    """

    def one(img_insts: Sequence[Instance]) -> list[dict[str, Any]]:
        rescored = _rescored_image(img_insts, vis_thr)
        if not use_nms:
            return rescored
        nms = soft_oks_nms if soft else oks_nms
        return [rescored[k] for k in nms(rescored, oks_thr, sigmas=sigmas)]

    if isinstance(instances_per_image, Mapping):
        return {img: one(insts) for img, insts in instances_per_image.items()}
    return [one(insts) for insts in instances_per_image]
