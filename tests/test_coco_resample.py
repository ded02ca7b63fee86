"""COCO-style AP/AR re-accumulated on resampled image multisets (posebh.evaluation.coco_resample)
against pycocotools itself: the identity resample gives its ``stats`` bit for bit, and any
multiset gives the stats of pycocotools run on the dataset with the images duplicated."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posebh.evaluation.coco_resample import CocoMatches

SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                   .89, .89]) / 10.0  # COCO's 17 keypoint sigmas (pycocotools)  # fmt: skip


def _problem(num_images: int, seed: int) -> tuple[dict, list[dict]]:
    """Random persons (0–4 per image, some crowd, some without keypoints) and noisy detections
    with distinct scores, plus false positives: every branch of the matching."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(num_images):
        images.append({"id": i + 1, "width": 640, "height": 480})
        for _ in range(rng.integers(0, 5)):
            w, h = rng.uniform(20, 300, 2)
            x, y = rng.uniform(0, 300, 2)
            kp = np.stack([x + rng.uniform(0, w, 17), y + rng.uniform(0, h, 17),
                           rng.choice([0, 1, 2], 17, p=[0.2, 0.3, 0.5])], 1)  # fmt: skip
            kp[kp[:, 2] == 0, :2] = 0
            crowd = int(rng.random() < 0.05)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1,
                         "bbox": [x, y, w, h], "area": w * h * 0.6, "iscrowd": crowd,
                         "num_keypoints": int((kp[:, 2] > 0).sum()),
                         "keypoints": kp.ravel().tolist()})  # fmt: skip
            if rng.random() < 0.85:
                noisy = kp.copy()
                noisy[:, :2] += rng.normal(0, rng.uniform(1, 25), (17, 2))
                noisy[:, 2] = 1
                dets.append({"image_id": i + 1, "category_id": 1,
                             "keypoints": noisy.ravel().tolist(),
                             "score": float(rng.random())})  # fmt: skip
        for _ in range(rng.integers(0, 3)):  # false positives
            pts = np.stack([rng.uniform(0, 640, 17), rng.uniform(0, 480, 17), np.ones(17)], 1)
            dets.append({"image_id": i + 1, "category_id": 1, "keypoints": pts.ravel().tolist(),
                         "score": float(rng.random())})  # fmt: skip
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "person", "supercategory": "person"}]}  # fmt: skip
    return gt, dets


def _cocoeval(gt: dict, dets: list[dict]) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets) if dets else COCO()
        ev = COCOeval(coco_gt, coco_dt, "keypoints")
        ev.params.kpt_oks_sigmas = SIGMAS
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _duplicated(gt: dict, dets: list[dict], counts: np.ndarray) -> tuple[dict, list[dict]]:
    """Image i (pycocotools' i-th id) ``counts[i]`` times, copies under ids sorting after i."""
    ids = sorted(img["id"] for img in gt["images"])
    new_ids = {(old, c): old * 1000 + c for old in ids for c in range(1000)}
    images, anns, out = [], [], []
    for i, old in enumerate(ids):
        for c in range(counts[i]):
            images.append({"id": new_ids[old, c], "width": 640, "height": 480})
            for a in gt["annotations"]:
                if a["image_id"] == old:
                    anns.append({**a, "id": len(anns) + 1, "image_id": new_ids[old, c]})
            out += [{**d, "image_id": new_ids[old, c]} for d in dets if d["image_id"] == old]
    return {**gt, "images": images, "annotations": anns}, out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identity_resample_is_pycocotools_bit_for_bit(seed: int) -> None:
    gt, dets = _problem(60, seed)
    ev = _cocoeval(gt, dets)
    matches = CocoMatches.from_cocoeval(ev)
    ours = matches.stats()
    np.testing.assert_array_equal(ours, np.asarray(ev.stats))
    np.testing.assert_array_equal(matches.stats(np.ones(60, dtype=int)), ours)
    precision, recall = matches.accumulate()
    np.testing.assert_array_equal(precision, ev.eval["precision"][:, :, 0, :, 0])
    np.testing.assert_array_equal(recall, ev.eval["recall"][:, 0, :, 0])


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_multiset_equals_pycocotools_on_duplicated_images(seed: int) -> None:
    gt, dets = _problem(40, seed)
    matches = CocoMatches.from_cocoeval(_cocoeval(gt, dets))
    counts = np.random.default_rng(seed).multinomial(40, np.full(40, 1 / 40))
    dup_gt, dup_dets = _duplicated(gt, dets, counts)
    expected = np.asarray(_cocoeval(dup_gt, dup_dets).stats)
    np.testing.assert_allclose(matches.stats(counts), expected, rtol=0, atol=1e-12)


def test_empty_and_degenerate_multisets() -> None:
    gt, dets = _problem(30, 7)
    matches = CocoMatches.from_cocoeval(_cocoeval(gt, dets))
    assert np.all(matches.stats(np.zeros(30, dtype=int)) == -1)  # nothing to score
    with pytest.raises(ValueError, match="30 non-negative"):
        matches.stats(np.full(29, 1))
    with pytest.raises(ValueError, match="non-negative"):
        matches.stats(np.full(30, -1))
