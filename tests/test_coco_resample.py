"""COCO-style AP/AR re-accumulated on resampled image multisets (posebh.evaluation.coco_resample)
against pycocotools itself: the identity resample gives its ``stats`` bit for bit, and any
multiset gives the stats of pycocotools run on the dataset with the images duplicated."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posebh.evaluation import STAT_NAMES, oks_eval, wholebody_eval
from posebh.evaluation.coco_resample import CocoMatches, oks_resampler, wholebody_resampler
from posebh.evaluation.simulate import COCO_VAL_SIZE, keypoint_problem
from posebh.skeletons import get_skeleton

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
    by_id = {img["id"]: img for img in gt["images"]}
    images, anns, out = [], [], []
    for i, old in enumerate(ids):
        for c in range(counts[i]):
            images.append({**by_id[old], "id": new_ids[old, c]})
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
    (ours,) = matches.stats()
    np.testing.assert_array_equal(ours, np.asarray(ev.stats))
    np.testing.assert_array_equal(matches.stats(np.ones(60, dtype=int))[0], ours)
    precision, recall = matches.accumulate()
    np.testing.assert_array_equal(precision[0], ev.eval["precision"][..., 0])
    np.testing.assert_array_equal(recall[0], ev.eval["recall"][..., 0])


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
@pytest.mark.parametrize("at_once", [True, False])
def test_multiset_equals_pycocotools_on_duplicated_images(
    seed: int, at_once: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways of locating the recall thresholds: all rows compared at once, row by row."""
    if not at_once:
        monkeypatch.setattr("posebh.evaluation.coco_resample._COMPARE_AT_ONCE", 0)
    gt, dets = _problem(40, seed)
    matches = CocoMatches.from_cocoeval(_cocoeval(gt, dets))
    counts = np.random.default_rng(seed).multinomial(40, np.full(40, 1 / 40), size=3)
    batch = matches.stats(counts)  # three multisets at once
    for row, c in zip(batch, counts, strict=True):
        dup = _cocoeval(*_duplicated(gt, dets, c))
        np.testing.assert_allclose(row, np.asarray(dup.stats), rtol=0, atol=1e-12)
    precision, recall = matches.accumulate(counts[-1:])
    np.testing.assert_allclose(precision[0], dup.eval["precision"][..., 0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(recall[0], dup.eval["recall"][..., 0], rtol=0, atol=1e-12)


def test_empty_and_degenerate_multisets() -> None:
    gt, dets = _problem(30, 7)
    matches = CocoMatches.from_cocoeval(_cocoeval(gt, dets))
    assert np.all(matches.stats(np.zeros(30, dtype=int)) == -1)  # nothing to score
    with pytest.raises(ValueError, match=r"\[B, 30\] non-negative"):
        matches.stats(np.full(29, 1))
    with pytest.raises(ValueError, match="non-negative"):
        matches.stats(np.full(30, -1))


# ------------------------------------------------------------------------------------------
# Resamplers of oks_eval / wholebody_eval: identity = the full-set code, multisets = the
# full-set code on the duplicated dataset
# ------------------------------------------------------------------------------------------


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def _crowdpose(examples: Path) -> tuple[dict, list[dict], np.ndarray]:
    sigmas = get_skeleton("coco").sigmas_array()[5:]
    gt = _load(examples / "example_crowdpose_val.json")
    return gt, _load(examples / "example_crowdpose_preds.json"), np.r_[sigmas, 0.079, 0.079]


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)


def _multisets(num: int, seed: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).multinomial(num, np.full(num, 1 / num), size=size)


def _as_nan(stats: dict, names) -> np.ndarray:
    return np.array([np.nan if stats[n] == -1 else stats[n] for n in names])


@pytest.mark.parametrize("case", ["coco", "coco_no_area", "crowdpose"])
def test_oks_resampler_identity_and_multisets(shared_dir: Path, case: str) -> None:
    examples = shared_dir / "data" / "xtcocoapi_examples"
    if case == "crowdpose":
        gt, preds, sigmas = _crowdpose(examples)
        kw = {"sigmas": sigmas, "use_area": False, "iou_type": "keypoints_crowd"}
    else:
        gt = _load(examples / "example_coco_val.json")
        preds = _load(examples / "example_coco_preds.json")
        kw = {"sigmas": SIGMAS, "use_area": case == "coco"}
    stats, r = oks_resampler(gt, preds, **kw)
    assert stats == oks_eval(gt, preds, **kw)  # the full-set value is oks_eval's own
    assert r.units == tuple(sorted(img["id"] for img in gt["images"]))
    _assert_same(r.full, np.array([stats[n] for n in r.names]))
    _assert_same(r.values(np.ones((1, r.num_units), dtype=int))[0], _as_nan(stats, r.names))
    counts = _multisets(r.num_units, seed=1, size=2)
    for row, c in zip(r.values(counts), counts, strict=True):
        dup = oks_eval(*_duplicated(gt, preds, c), **kw)
        _assert_same(row, _as_nan(dup, r.names))


def test_wholebody_resampler_identity_and_multisets(shared_dir: Path) -> None:
    examples = shared_dir / "data" / "xtcocoapi_examples"
    gt = _load(examples / "example_wholebody_val.json")
    preds = _load(examples / "example_wholebody_preds.json")
    stats, r = wholebody_resampler(gt, preds)
    assert stats == wholebody_eval(gt, preds)
    assert r.names[:2] == ("body/AP", "body/AP50") and len(r.names) == 10 * len(stats)

    def flat(s: dict) -> np.ndarray:
        return np.concatenate([_as_nan(s[p], STAT_NAMES) for p in stats])

    _assert_same(r.values(np.ones((1, r.num_units), dtype=int))[0], flat(stats))
    (counts,) = _multisets(r.num_units, seed=2, size=1)
    _assert_same(r.values(counts[None])[0], flat(wholebody_eval(*_duplicated(gt, preds, counts))))


@pytest.mark.slow
def test_identity_on_a_coco_val_size_set() -> None:
    """5,000 images, ~6,350 persons, ~104k detections: the identity resample is pycocotools."""
    num_images, persons, detections = COCO_VAL_SIZE
    gt, dets = keypoint_problem(num_images, persons_per_image=persons,
                                detections_per_image=detections, seed=0)  # fmt: skip
    assert abs(len(dets) - 104125) < 2000 and abs(len(gt["annotations"]) - 6352) < 300
    ev = _cocoeval(gt, dets)
    matches = CocoMatches.from_cocoeval(ev)
    np.testing.assert_allclose(matches.stats()[0], ev.stats, rtol=0, atol=1e-12)


def test_several_categories_ap10k(fixtures_dir: Path) -> None:
    """AP-10K keeps one category per species: pycocotools averages over them."""
    gt = _load(fixtures_dir / "ap10k" / "test_ap10k.json")
    rng = np.random.default_rng(0)
    preds = []
    for a in gt["annotations"]:
        k = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        k[:, :2] += rng.normal(0, 6.0, (k.shape[0], 2))
        k[:, 2] = 1.0
        preds.append({"image_id": a["image_id"], "category_id": a["category_id"],
                      "keypoints": k.ravel().tolist(), "score": float(rng.random())})  # fmt: skip
    assert len({a["category_id"] for a in gt["annotations"]}) > 1
    sigmas = get_skeleton("ap10k").sigmas_array()
    stats, r = oks_resampler(gt, preds, sigmas=sigmas)
    _assert_same(r.values(np.ones((1, r.num_units), dtype=int))[0], _as_nan(stats, r.names))
    for c in _multisets(r.num_units, seed=4, size=2):
        dup = oks_eval(*_duplicated(gt, preds, c), sigmas=sigmas)
        _assert_same(r.values(c[None])[0], _as_nan(dup, r.names))
