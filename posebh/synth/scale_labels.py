"""The labels of the scale root (:mod:`posebh.synth.scale_root`): COCO-val-like persons
and their keypoint annotations, the COCO-WholeBody part fields added to them, and a person
detection-results list like the official ``COCO_val2017_detections_AP_H_56_person.json``.

Everything is NumPy arrays drawn from the caller's generator (deterministic from its seed);
images are 640×480.  Shapes: N persons, 17 COCO keypoints ``[N, 17, 3]`` (x, y, v).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "HEIGHT",
    "LIMBS",
    "WIDTH",
    "People",
    "ScaleSize",
    "annotations",
    "coco_file",
    "detections",
    "image_ids",
    "image_records",
    "train_people",
    "val_people",
    "wholebody",
]

WIDTH, HEIGHT = 640, 480


@dataclass(frozen=True)
class ScaleSize:
    """The counts of one size of the root."""

    val_images: int
    val_labelled: int  # persons with ≥ 1 labelled keypoint
    val_labelled_images: int  # images holding them
    val_unlabelled: int  # persons without keypoints (a few of them crowds)
    val_unlabelled_only_images: int  # images holding unlabelled persons only
    val_crowd: int
    detections: int
    train_images: int
    train_persons: int
    wholebody_train_persons: int
    synthpose_preset: str


# COCO keypoints in box-relative coordinates of a standing, facing person.
_TEMPLATE = np.array(
    [
        (0.50, 0.08), (0.55, 0.06), (0.45, 0.06), (0.60, 0.08), (0.40, 0.08),
        (0.68, 0.22), (0.32, 0.22), (0.78, 0.38), (0.22, 0.38), (0.82, 0.52), (0.18, 0.52),
        (0.62, 0.55), (0.38, 0.55), (0.62, 0.75), (0.38, 0.75), (0.62, 0.95), (0.38, 0.95),
    ]
)  # fmt: skip
LIMBS = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4),
)  # fmt: skip
_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
_CATEGORIES = [
    {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(_KEYPOINT_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in LIMBS],
    }
]


# ------------------------------------------------------------------------------------------
# Ground truth
# ------------------------------------------------------------------------------------------


@dataclass
class People:
    """Persons of one split as arrays: owner image index, box [N, 4], keypoints [N, 17, 3],
    crowd flag, area."""

    owner: np.ndarray
    box: np.ndarray
    kpts: np.ndarray
    crowd: np.ndarray
    area: np.ndarray


def image_ids(rng: np.random.Generator, n: int, span: int) -> np.ndarray:
    """``n`` unique COCO-like ids (ascending, as the files list them)."""
    return np.sort(rng.choice(np.arange(1, span + 1), n, replace=False))


def _people(
    rng: np.random.Generator,
    owner: np.ndarray,
    labelled: np.ndarray,
    crowd: np.ndarray,
) -> People:
    """Boxes and keypoints of persons in 640×480 images; unlabelled ones are smaller and
    have all-zero keypoints (as COCO's), crowds are groups of people (big boxes)."""
    n = len(owner)
    lo = np.where(labelled, np.log(0.15), np.log(0.05))
    hi = np.where(labelled, np.log(0.98), np.log(0.35))
    h = HEIGHT * np.exp(rng.uniform(lo, hi))
    w = np.minimum(h * rng.uniform(0.3, 0.7, n), WIDTH - 1.0)
    w = np.where(crowd, WIDTH * rng.uniform(0.3, 0.8, n), w)
    h = np.where(crowd, HEIGHT * rng.uniform(0.2, 0.5, n), h)
    x = rng.uniform(0.0, 1.0, n) * (WIDTH - w)
    y = rng.uniform(0.0, 1.0, n) * (HEIGHT - h)
    box = np.round(np.stack([x, y, w, h], axis=1), 2)
    # Keypoints: the template with per-person jitter, integer pixels inside the image.
    rel = _TEMPLATE[None] + rng.normal(0.0, 0.03, (n, 17, 2))
    xy = np.floor(box[:, None, :2] + np.clip(rel, 0.0, 1.0) * box[:, None, 2:])
    xy = np.clip(xy, 0, [WIDTH - 1, HEIGHT - 1])
    keep = rng.uniform(0.0, 1.0, (n, 17)) < rng.uniform(0.35, 1.0, (n, 1))
    keep[np.arange(n), rng.integers(0, 17, n)] = True  # at least one labelled keypoint
    vis = np.where(rng.uniform(0.0, 1.0, (n, 17)) < 0.8, 2, 1) * keep
    vis[~labelled] = 0
    kpts = np.concatenate([xy * (vis[..., None] > 0), vis[..., None]], axis=2).astype(np.int64)
    area = np.round(box[:, 2] * box[:, 3] * rng.uniform(0.45, 0.7, n), 2)
    return People(owner=owner, box=box, kpts=kpts, crowd=crowd, area=area)


def _spread(rng: np.random.Generator, total: int, bins: int) -> np.ndarray:
    """``total`` items over ``bins`` (each ≥ 1), skewed like persons per COCO image (most
    hold one or two, a few over a dozen)."""
    weights = rng.exponential(1.0, bins)
    counts = np.ones(bins, dtype=np.int64)
    counts += rng.multinomial(total - bins, weights / weights.sum())
    return counts


def val_people(rng: np.random.Generator, s: ScaleSize) -> People:
    # The first image holds labelled people (as COCO val's first image, 000000000139, does),
    # so that a --max-instances cap of a few boxes has ground truth to score against.
    person_images = rng.permutation(s.val_images)
    first = int(np.flatnonzero(person_images == 0)[0])
    person_images[[0, first]] = person_images[[first, 0]]
    lab_imgs = person_images[: s.val_labelled_images]
    extra = person_images[
        s.val_labelled_images : s.val_labelled_images + s.val_unlabelled_only_images
    ]
    lab_owner = np.repeat(lab_imgs, _spread(rng, s.val_labelled, len(lab_imgs)))
    # Unlabelled persons: one in each image of their own, the rest beside labelled ones.
    rest = s.val_unlabelled - len(extra)
    unl_owner = np.concatenate([extra, rng.choice(np.concatenate([lab_imgs, extra]), rest)])
    owner = np.concatenate([lab_owner, unl_owner])
    labelled = np.arange(len(owner)) < len(lab_owner)
    crowd = np.zeros(len(owner), dtype=bool)
    crowd[len(lab_owner) + rng.choice(len(unl_owner), s.val_crowd, replace=False)] = True
    people = _people(rng, owner, labelled, crowd)
    order = np.argsort(owner, kind="stable")  # annotations grouped by image, as COCO val's
    return People(*(getattr(people, f)[order] for f in ("owner", "box", "kpts", "crowd", "area")))


def _rle_of_box(box: np.ndarray) -> dict[str, Any]:
    """Uncompressed column-major RLE of the box's pixels (COCO's crowd segmentation)."""
    x0, y0 = int(box[0]), int(box[1])
    x1 = min(WIDTH, int(np.ceil(box[0] + box[2])))
    y1 = min(HEIGHT, int(np.ceil(box[1] + box[3])))
    bh = y1 - y0
    counts = [x0 * HEIGHT + y0]
    for _ in range(x0, x1):
        counts += [bh, HEIGHT - bh]
    counts[-1] = WIDTH * HEIGHT - sum(counts[:-1])  # below the box, then the columns after
    return {"counts": counts, "size": [HEIGHT, WIDTH]}


def _polygon(box: np.ndarray) -> list[list[float]]:
    """An octagon inscribed in the box."""
    x, y, w, h = (float(v) for v in box)
    pts = [(0.3, 0), (0.7, 0), (1, 0.3), (1, 0.7), (0.7, 1), (0.3, 1), (0, 0.7), (0, 0.3)]
    return [[round(c, 2) for px, py in pts for c in (x + px * w, y + py * h)]]


def annotations(people: People, ids: np.ndarray, first_id: int) -> list[dict[str, Any]]:
    out = []
    for j in range(len(people.owner)):
        crowd = bool(people.crowd[j])
        kp = people.kpts[j]
        out.append(
            {
                "segmentation": _rle_of_box(people.box[j]) if crowd else _polygon(people.box[j]),
                "num_keypoints": int(np.count_nonzero(kp[:, 2])),
                "area": float(people.area[j]),
                "iscrowd": int(crowd),
                "keypoints": kp.reshape(-1).tolist(),
                "image_id": int(ids[people.owner[j]]),
                "bbox": people.box[j].tolist(),
                "category_id": 1,
                "id": first_id + j,
            }
        )
    return out


def image_records(ids: np.ndarray, folder: str) -> list[dict[str, Any]]:
    return [
        {
            "license": 1,
            "file_name": f"{i:012d}.jpg",
            "coco_url": f"http://images.cocodataset.org/{folder}/{i:012d}.jpg",
            "height": HEIGHT,
            "width": WIDTH,
            "id": i,
        }
        for i in ids.tolist()
    ]


def coco_file(images: list[dict[str, Any]], anns: list[dict[str, Any]], what: str) -> dict:
    return {
        "info": {"description": f"posebh scale root: {what} (synthetic, COCO-size)"},
        "licenses": [{"id": 1, "name": "synthetic", "url": ""}],
        "images": images,
        "annotations": anns,
        "categories": _CATEGORIES,
    }


def train_people(rng: np.random.Generator, s: ScaleSize) -> People:
    """Train persons: ~48% of the images hold people (as COCO train2017), 1% crowds."""
    holders = rng.choice(s.train_images, int(0.48 * s.train_images), replace=False)
    owner = np.sort(rng.choice(holders, s.train_persons))
    crowd = rng.uniform(0.0, 1.0, s.train_persons) < 0.01
    labelled = (rng.uniform(0.0, 1.0, s.train_persons) < 0.9) & ~crowd
    return _people(rng, owner, labelled, crowd)


# ------------------------------------------------------------------------------------------
# COCO-WholeBody: feet, face and hands added near the body keypoints
# ------------------------------------------------------------------------------------------


def _part(
    rng: np.random.Generator, anchor: np.ndarray, n: int, radius: float, spread: float = 1.0
) -> np.ndarray:
    """[n, 3] keypoints on a ring around ``anchor`` (x, y, v), integer pixels, v = 2."""
    angles = np.linspace(0.0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi)
    r = radius * rng.uniform(0.5, 1.0, n) * spread
    xy = anchor[:2] + np.stack([np.cos(angles), np.sin(angles)], axis=1) * r[:, None]
    xy = np.clip(np.floor(xy), 0, [WIDTH - 1, HEIGHT - 1])
    return np.concatenate([xy, np.full((n, 1), 2.0)], axis=1)


def _part_box(k: np.ndarray) -> list[float]:
    xy = k[k[:, 2] > 0, :2]
    lo, hi = xy.min(0), xy.max(0)
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def wholebody(rng: np.random.Generator, ann: dict[str, Any]) -> dict[str, Any]:
    """``ann`` (COCO) with the COCO-WholeBody v1.0 part fields."""
    body = np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)
    width = ann["bbox"][2]
    parts: dict[str, np.ndarray] = {
        "foot": np.zeros((6, 3)),
        "face": np.zeros((68, 3)),
        "lefthand": np.zeros((21, 3)),
        "righthand": np.zeros((21, 3)),
    }
    if body[0, 2] > 0 and width >= 40:
        parts["face"] = _part(rng, body[0], 68, 0.12 * width)
    for hand, wrist in (("lefthand", 9), ("righthand", 10)):
        if body[wrist, 2] > 0 and width >= 60:
            parts[hand] = _part(rng, body[wrist], 21, 0.08 * width)
    for side, ankle in ((0, 15), (3, 16)):
        if body[ankle, 2] > 0:
            parts["foot"][side : side + 3] = _part(rng, body[ankle], 3, 0.06 * width)
    out = dict(ann)
    for name, field in (("foot", "foot_kpts"), ("face", "face_kpts")):
        out[field] = parts[name].astype(np.int64).reshape(-1).tolist()
    for name in ("lefthand", "righthand"):
        out[f"{name}_kpts"] = parts[name].astype(np.int64).reshape(-1).tolist()
    for name, k in parts.items():
        valid = bool(np.any(k[:, 2] > 0))
        out[f"{name}_valid"] = valid
        if name != "foot":
            out[f"{name}_box"] = _part_box(k) if valid else [0.0, 0.0, 0.0, 0.0]
    return out


# ------------------------------------------------------------------------------------------
# Detections
# ------------------------------------------------------------------------------------------


def detections(
    rng: np.random.Generator, people: People, ids: np.ndarray, total: int
) -> list[dict[str, Any]]:
    """``total`` person boxes: per GT person (crowds too) one or two jittered boxes with high
    scores (small people found less often), the rest low-score clutter spread over every
    image; image by image (ascending id), scores descending."""
    n_img = len(ids)
    found = rng.uniform(0.0, 1.0, len(people.owner)) < np.where(people.box[:, 3] < 60, 0.7, 0.97)
    dup = rng.uniform(0.0, 1.0, len(people.owner)) < 0.15
    src = np.concatenate([np.flatnonzero(found), np.flatnonzero(found & dup)])
    if len(src) > total:
        raise ValueError(f"{len(src)} GT-matched boxes exceed the {total} detections asked for")
    b = people.box[src]
    jitter = np.exp(rng.normal(0.0, 0.06, (len(src), 2)))
    wh = b[:, 2:] * jitter
    c = b[:, :2] + b[:, 2:] / 2 + rng.normal(0.0, 0.04, (len(src), 2)) * b[:, 2:]
    near = np.concatenate([c - wh / 2, wh], axis=1)
    small = people.box[src, 3] < 60
    is_dup = np.arange(len(src)) >= np.count_nonzero(found)
    near_score = rng.beta(8, 1.5, len(src)) * np.where(small, 0.6, 1.0) * np.where(is_dup, 0.5, 1)
    # Clutter: what a 56-AP detector adds at low scores, in every image.
    m = total - len(src)
    clutter_owner = rng.multinomial(m, np.full(n_img, 1.0 / n_img))
    clutter_owner = np.repeat(np.arange(n_img), clutter_owner)
    cw = WIDTH * np.exp(rng.uniform(np.log(0.03), np.log(0.6), m))
    ch = np.minimum(cw * rng.uniform(1.0, 3.0, m), HEIGHT * 0.95)
    cxy = rng.uniform(0.0, 1.0, (m, 2)) * ([WIDTH, HEIGHT] - np.stack([cw, ch], axis=1))
    clutter = np.concatenate([cxy, np.stack([cw, ch], axis=1)], axis=1)
    clutter_score = 0.3 * rng.beta(1.0, 4.0, m)

    owner = np.concatenate([people.owner[src], clutter_owner])
    boxes = np.concatenate([near, clutter])
    # Inside the image, at least a pixel wide, rounded like the real file.
    boxes[:, :2] = np.clip(boxes[:, :2], 0.0, [WIDTH - 2.0, HEIGHT - 2.0])
    boxes[:, 2:] = np.maximum(np.minimum(boxes[:, 2:], [WIDTH, HEIGHT] - boxes[:, :2]), 1.0)
    boxes = np.round(boxes, 3)
    scores = np.clip(np.concatenate([near_score, clutter_score]), 1e-4, 1.0)
    scores = np.round(scores, 8)
    scores[scores <= 0] = 1e-8
    order = np.lexsort((-scores, owner))
    return [
        {"image_id": int(ids[o]), "category_id": 1, "bbox": bb, "score": float(sc)}
        for o, bb, sc in zip(
            owner[order].tolist(), boxes[order].tolist(), scores[order].tolist(), strict=True
        )
    ]
