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
    return arr if np.issubdtype(arr.dtype, np.floating) else arr.astype(np.float64)


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
    xg, yg = g[0::3], g[1::3]
    ious = np.zeros(d.shape[0], dtype=np.float32)
    for n in range(d.shape[0]):
        dx = d[n, 0::3] - xg
        dy = d[n, 1::3] - yg
        e = (dx**2 + dy**2) / variances / ((area_g + area_d[n]) / 2 + np.spacing(1)) / 2
        if vis_thr is not None:
            e = e[d[n, 2::3] > vis_thr]
        ious[n] = np.sum(np.exp(-e)) / len(e) if e.size else 0.0
    return ious


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
    keep: list[int] = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        ovr = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas, vis_thr)
        order = order[np.where(ovr <= thr)[0] + 1]
    return keep


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
    keep: list[int] = []
    while order.size > 0 and len(keep) < max_dets:
        i = order[0]
        ovr = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas, vis_thr)
        order = order[1:]
        scores = scores[1:] * np.exp(-(ovr**2) / thr)
        tmp = scores.argsort()[::-1]
        order = order[tmp]
        scores = scores[tmp]
        keep.append(int(i))
    return keep


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
        rescored = [_rescored(inst, vis_thr) for inst in img_insts]
        if not use_nms:
            return rescored
        nms = soft_oks_nms if soft else oks_nms
        return [rescored[k] for k in nms(rescored, oks_thr, sigmas=sigmas)]

    if isinstance(instances_per_image, Mapping):
        return {img: one(insts) for img, insts in instances_per_image.items()}
    return [one(insts) for insts in instances_per_image]
