"""From a rendered figure to keypoints in any compatible skeleton's own definition.

Shapes: :func:`skeleton_keypoints` returns [K, 3] float64 ``(x, y, v)`` in the skeleton's
order: pixel coordinates rounded to 2 decimals (the precision written to every file) and the
COCO visibility convention, v = 2 visible, 1 labelled but occluded, 0 not labelled (then x = y
= 0). A keypoint is *labelled* when its landmark projects inside the image and, for surface
landmarks (eyes, ears, nose, face contour), faces the camera — the rule a human annotator
applies. COCO-WholeBody additionally labels the face and each hand only when that part is
*valid* (:func:`wholebody_parts`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from posebh.skeletons import get_skeleton

from .animal import ANIMAL_SKELETON_NODES, animal_tree
from .human import HUMAN_SKELETON_NODES, human_tree
from .interhand import hand_tree, interhand_nodes
from .scene import Figure

__all__ = [
    "COMPATIBLE",
    "WHOLEBODY_FIELDS",
    "labelled_keypoints",
    "node_indices",
    "skeleton_keypoints",
    "wholebody_parts",
]

#: Skeletons annotatable on each kind of figure.
COMPATIBLE: dict[str, tuple[str, ...]] = {
    "human": ("coco", "aic", "mpii", "coco_wholebody", "pw3d", "ochuman"),
    "quadruped": ("ap10k", "apt36k"),
    "hand": ("interhand2d",),
}
#: COCO-WholeBody file field of each part, in skeleton order.
WHOLEBODY_FIELDS = {
    "body": "keypoints",
    "foot": "foot_kpts",
    "face": "face_kpts",
    "lefthand": "lefthand_kpts",
    "righthand": "righthand_kpts",
}
#: Part validity thresholds (see :func:`wholebody_parts`).
FACE_MIN_LABELLED, FACE_MIN_SIDE_PX = 34, 8.0
HAND_MIN_LABELLED, HAND_MIN_VISIBLE, HAND_MIN_SIDE_PX = 11, 3, 6.0


def node_indices(fig: Figure, skeleton: str) -> np.ndarray:
    """Indices [K] of the figure's model nodes that define ``skeleton``'s keypoints."""
    name = get_skeleton(skeleton).name
    if name not in COMPATIBLE[fig.kind]:
        raise ValueError(f"a {fig.kind} figure cannot be annotated with the {name} skeleton")
    if fig.kind == "human":
        return human_tree().idx(HUMAN_SKELETON_NODES[name])
    if fig.kind == "quadruped":
        return animal_tree().idx(ANIMAL_SKELETON_NODES[name])
    side = "r" if fig.extra["hand"] == "right" else "l"
    return hand_tree(side).idx(interhand_nodes(side))


def labelled_keypoints(fig: Figure, skeleton: str) -> np.ndarray:
    """[K, 3] (x, y, v) of ``fig`` in ``skeleton``'s definition, before any WholeBody part
    masking."""
    idx = node_indices(fig, skeleton)
    labelled = fig.inside[idx] & fig.front[idx]
    out = np.zeros((len(idx), 3))
    out[:, :2] = np.round(fig.uv[idx], 2)
    out[:, 2] = np.where(fig.visible[idx], 2, 1)
    out[~labelled] = 0.0
    return out


def skeleton_keypoints(fig: Figure, skeleton: str) -> np.ndarray:
    """[K, 3] (x, y, v) of ``fig`` in ``skeleton``'s definition (module docstring)."""
    out = labelled_keypoints(fig, skeleton)
    if get_skeleton(skeleton).name == "coco_wholebody":
        parts = wholebody_parts(fig, out)
        for part, (lo, hi) in get_skeleton("coco_wholebody").parts.items():
            if part != "body" and not parts["valid"][part]:
                out[lo:hi] = 0.0
    return out


def _box(kpts: np.ndarray) -> tuple[float, float, float, float]:
    pts = kpts[kpts[:, 2] > 0, :2]
    if not pts.size:
        return (0.0, 0.0, 0.0, 0.0)
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    return (
        round(float(x0), 2),
        round(float(y0), 2),
        round(float(x1 - x0), 2),
        round(float(y1 - y0), 2),
    )


def wholebody_parts(fig: Figure, kpts: np.ndarray) -> dict[str, Any]:
    """Validity flags and boxes of the WholeBody parts of ``fig`` ([133, 3] labelled keypoints
    before part masking).

    * foot valid: any foot keypoint labelled;
    * face valid: ≥ 34 of the 68 landmarks labelled and a face box of ≥ 8 px on its shorter
      side (annotators skip tiny or turned-away faces);
    * hand valid: ≥ 11 of 21 keypoints labelled, ≥ 3 visible, and a box of ≥ 6 px on its
      longer side.

    Returns ``{"valid": {part: bool}, "boxes": {"face"|"lefthand"|"righthand": (x, y, w, h)}}``
    (a zero box for an invalid part, as in the real files).
    """
    parts = get_skeleton("coco_wholebody").parts
    valid: dict[str, bool] = {"body": True}
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for part, (lo, hi) in parts.items():
        if part == "body":
            continue
        k = kpts[lo:hi]
        lab = int(np.count_nonzero(k[:, 2] > 0))
        vis = int(np.count_nonzero(k[:, 2] > 1))
        box = _box(k)
        if part == "foot":
            ok = lab > 0
        elif part == "face":
            ok = lab >= FACE_MIN_LABELLED and min(box[2], box[3]) >= FACE_MIN_SIDE_PX
        else:
            ok = (
                lab >= HAND_MIN_LABELLED
                and vis >= HAND_MIN_VISIBLE
                and max(box[2], box[3]) >= HAND_MIN_SIDE_PX
            )
        valid[part] = bool(ok)
        if part != "foot":
            boxes[part] = box if ok else (0.0, 0.0, 0.0, 0.0)
    return {"valid": valid, "boxes": boxes}
