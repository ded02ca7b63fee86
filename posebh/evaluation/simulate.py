"""Generated COCO keypoint evaluation problems of a chosen size, for the bootstrap's tests, its
benchmark (a COCO-val-size set) and its coverage check.

A problem is a ground truth (COCO keypoint annotation dict) and a detection list (COCO keypoint
results). Persons get 17 keypoints inside a box, a share unlabelled; some are crowd, some have
no labelled keypoint (pycocotools ignores both); a detection of a person is its keypoints with
Gaussian noise of a per-detection scale (so OKS varies across the thresholds) and a score that
tends to be higher for lower noise; false positives are scattered points with lower scores.
Scores are distinct (a continuous draw), as those of real models are.

COCO val2017 for scale (person_keypoints_val2017.json and the detection file of the ViTPose
README): 5,000 images, 6,352 persons with keypoints, 104,125 detections.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["COCO_VAL_SIZE", "keypoint_detections", "keypoint_problem"]

#: (images, persons per image on average, detections per image on average) of COCO val2017.
COCO_VAL_SIZE = (5000, 6352 / 5000, 104125 / 5000)


def keypoint_problem(
    num_images: int,
    *,
    persons_per_image: float = 1.3,
    detections_per_image: float = 3.0,
    noise_px: tuple[float, float] = (1.0, 25.0),
    seed: int = 0,
    image_size: tuple[int, int] = (640, 480),
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A ground truth and detections: Poisson persons per image (5 % crowd), each detected with
    probability 0.85, then false positives until the image holds Poisson(detections_per_image)
    detections on average."""
    rng = np.random.default_rng(seed)
    width, height = image_size
    num_persons = rng.poisson(persons_per_image, num_images)
    images = [{"id": i + 1, "width": width, "height": height} for i in range(num_images)]
    total = int(num_persons.sum())
    image_of = np.repeat(np.arange(num_images), num_persons)
    wh = rng.uniform(20, 300, (total, 2))
    xy = rng.uniform(0, [width - 20, height - 20], (total, 2))
    pts = xy[:, None, :] + rng.uniform(0, 1, (total, 17, 2)) * wh[:, None, :]
    vis = rng.choice([0, 1, 2], (total, 17), p=[0.2, 0.3, 0.5])
    pts[vis == 0] = 0.0
    crowd = rng.random(total) < 0.05
    anns = []
    for p in range(total):
        kp = np.concatenate([pts[p], vis[p][:, None]], axis=1)
        anns.append({
            "id": p + 1, "image_id": int(image_of[p]) + 1, "category_id": 1,
            "bbox": [float(xy[p, 0]), float(xy[p, 1]), float(wh[p, 0]), float(wh[p, 1])],
            "area": float(wh[p, 0] * wh[p, 1] * 0.6), "iscrowd": int(crowd[p]),
            "num_keypoints": int((vis[p] > 0).sum()), "keypoints": kp.ravel().tolist(),
        })  # fmt: skip
    fp_per_image = max(detections_per_image - 0.85 * persons_per_image, 0.0)
    image_ids = np.arange(1, num_images + 1)
    dets = _detections(rng, pts, image_of, image_ids, fp_per_image=fp_per_image,
                       noise_px=noise_px, image_size=image_size)  # fmt: skip
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}  # fmt: skip
    return gt, dets


def keypoint_detections(
    gt: dict[str, Any],
    *,
    detections_per_image: float = 3.0,
    noise_px: tuple[float, float] = (1.0, 25.0),
    seed: int = 0,
    image_size: tuple[int, int] = (640, 480),
) -> list[dict[str, Any]]:
    """Another detection list on the ground truth ``gt`` of :func:`keypoint_problem`, drawn as
    that function draws its own (another model on the same images: a paired comparison)."""
    images = gt["images"]
    position = {img["id"]: i for i, img in enumerate(images)}
    anns = gt["annotations"]
    pts = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), -1, 3)
    image_of = np.array([position[a["image_id"]] for a in anns], dtype=np.int64)
    persons_per_image = len(anns) / max(len(images), 1)
    fp_per_image = max(detections_per_image - 0.85 * persons_per_image, 0.0)
    image_ids = np.array([img["id"] for img in images], dtype=np.int64)
    return _detections(np.random.default_rng(seed), pts[:, :, :2], image_of, image_ids,
                       fp_per_image=fp_per_image, noise_px=noise_px,
                       image_size=image_size)  # fmt: skip


def _detections(
    rng: np.random.Generator,
    pts: np.ndarray,
    image_of: np.ndarray,
    image_ids: np.ndarray,
    *,
    fp_per_image: float,
    noise_px: tuple[float, float],
    image_size: tuple[int, int],
) -> list[dict[str, Any]]:
    """Each person (keypoints ``pts`` [P, 17, 2] in image ``image_of`` [P]) detected with
    probability 0.85 under Gaussian noise of a per-detection scale, its score higher for lower
    noise; then Poisson(``fp_per_image``) scattered false positives per image."""
    width, height = image_size
    total = len(pts)
    detected = rng.random(total) < 0.85
    sigma = rng.uniform(*noise_px, total)
    noisy = pts + rng.normal(0, 1, (total, 17, 2)) * sigma[:, None, None]
    score = np.clip(1.0 - sigma / noise_px[1] * 0.6 + rng.normal(0, 0.15, total), 0.01, 1.0)
    dets = []
    for p in np.flatnonzero(detected):
        kp = np.concatenate([noisy[p], np.ones((17, 1))], axis=1)
        dets.append({"image_id": int(image_ids[image_of[p]]), "category_id": 1,
                     "keypoints": kp.ravel().tolist(), "score": float(score[p])})  # fmt: skip
    per_image_fp = rng.poisson(fp_per_image, image_ids.size)
    fp_image = np.repeat(np.arange(image_ids.size), per_image_fp)
    fp_pts = rng.uniform(0, [width, height], (fp_image.size, 17, 2))
    fp_score = rng.uniform(0.0, 0.6, fp_image.size)
    for j in range(fp_image.size):
        kp = np.concatenate([fp_pts[j], np.ones((17, 1))], axis=1)
        dets.append({"image_id": int(image_ids[fp_image[j]]), "category_id": 1,
                     "keypoints": kp.ravel().tolist(), "score": float(fp_score[j])})  # fmt: skip
    return dets
