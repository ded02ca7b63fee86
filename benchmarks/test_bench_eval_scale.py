"""Evaluation at COCO-val scale without the network: the crop pipeline in boxes/s, and the
OKS-NMS + rescoring of 104,125 boxes.

``test_bench_eval_pipeline`` — a COCO-val-like set written to tmp: ``POSEBH_BENCH_EVAL_IMAGES``
(default 100; smoke 3) 640×480 JPEGs with about 21 person boxes each (the detection file's
104,125 / 5,000), listed image by image. Backends, each producing the batches of 32
normalised 256×192 crops a network would get:

- ``reference``: an mmpose-0.x-style per-box pipeline written here on OpenCV —
  ``cv2.imread`` + ``cv2.cvtColor`` + UDP matrix + ``cv2.warpAffine`` + normalise, per box;
- ``per_box``: posebh's per-box loader (``group_by_image=False``), in-process;
- ``grouped``: posebh's evaluation loader (each image decoded once), in-process;
- ``grouped_workers``: the same with the default DataLoader workers (all cores).

``extra_info``: ``boxes_per_s``, ``ratio_vs_reference`` (reference min time / this min time,
same session; target ≥ 5 for ``grouped``, issue 15) and, on ``grouped``, the per-step costs
(``decode_ms_per_image``, ``crop_ms_per_box``, ``normalise_ms_per_box`` and the OpenCV
reference's ``cv2_decode_ms`` / ``cv2_warp_ms``) that say where the time goes.

``test_bench_eval_nms`` — 104,125 synthetic top-down predictions over 5,000 images (smoke: 520
over 25): detections clustered on 1–7 persons per image, tied scores. ``reference`` is the
official per-pair loop (mmpose 0.x ``oks_iou`` / ``oks_nms`` and the rescoring loop, written
here); ``posebh`` is ``rescore_and_nms``. Both keep the same boxes with the same scores.

With ``--benchmark-disable`` (CI smoke) everything runs once on the small sizes and is checked.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from posebh.datasets import Instance
from posebh.evaluate import _batches
from posebh.evaluation import rescore_and_nms
from posebh.pipeline import TopDownDataset, load_image, per_dataset_pipeline
from posebh.skeletons import get_skeleton
from posebh.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize_image, top_down_affine

cv2 = pytest.importorskip("cv2", reason="the per-box reference is OpenCV (dev extra)")

BOXES_PER_IMAGE = 104_125 / 5_000
IMAGE_W, IMAGE_H = 640, 480
CROP_W, CROP_H = 192, 256
BATCH = 32
FULL_IMAGES = int(os.environ.get("POSEBH_BENCH_EVAL_IMAGES", "100"))
SMOKE_IMAGES = 3


# ------------------------------------------------------------------------------------------
# A COCO-val-like image set
# ------------------------------------------------------------------------------------------


def _photo(rng: np.random.Generator) -> np.ndarray:
    """A 640×480 BGR image with photo-like statistics: smooth regions, edges and grain."""
    low = rng.uniform(0, 255, (12, 16, 3)).astype(np.float32)
    img = cv2.resize(low, (IMAGE_W, IMAGE_H), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(5, 15))):
        x, y = (int(v) for v in rng.integers(0, [IMAGE_W, IMAGE_H]))
        w, h = (int(v) for v in rng.integers(20, 200, 2))
        img[y : y + h, x : x + w] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _box_instance(path: str, image_id: int, rng: np.random.Generator) -> Instance:
    """A detection box as the readers give it (mmpose ``_xywh2cs``: aspect 3:4, ×1.25)."""
    w = float(rng.uniform(20, 300))
    h = float(min(IMAGE_H - 1, w * rng.uniform(1.2, 3.0)))
    x = float(rng.uniform(0, IMAGE_W - w))
    y = float(rng.uniform(0, IMAGE_H - h))
    cw, ch = w, h
    if cw > CROP_W / CROP_H * ch:
        ch = cw * CROP_H / CROP_W
    else:
        cw = ch * CROP_W / CROP_H
    return Instance(
        dataset="coco",
        image_file=path,
        image_id=image_id,
        ann_id=None,
        category_id=1,
        bbox=(x, y, w, h),
        center=np.array([x + w / 2, y + h / 2], dtype=np.float32),
        scale=np.array([cw / 200 * 1.25, ch / 200 * 1.25], dtype=np.float32),
        keypoints=np.zeros((17, 3), dtype=np.float32),
        bbox_score=float(rng.uniform(0.3, 1.0)),
        area=w * h,
    )


def _image_set(folder: Path, num_images: int) -> list[Instance]:
    rng = np.random.default_rng(0)
    counts = rng.poisson(BOXES_PER_IMAGE - 1, num_images) + 1
    instances = []
    for image_id, n in enumerate(counts.tolist()):
        path = folder / f"{image_id:012d}.jpg"
        cv2.imwrite(str(path), _photo(rng), [cv2.IMWRITE_JPEG_QUALITY, 90])
        instances += [_box_instance(str(path), image_id, rng) for _ in range(n)]
    return instances


_SETS: dict[int, list[Instance]] = {}


@pytest.fixture
def image_set(benchmark, tmp_path_factory: pytest.TempPathFactory) -> list[Instance]:
    n = SMOKE_IMAGES if benchmark.disabled else FULL_IMAGES
    if n not in _SETS:
        _SETS[n] = _image_set(tmp_path_factory.mktemp("eval_scale"), n)
    return _SETS[n]


# ------------------------------------------------------------------------------------------
# The mmpose-0.x-style per-box reference on OpenCV
# ------------------------------------------------------------------------------------------

_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_STD = np.array(IMAGENET_STD, dtype=np.float32)


def _udp_matrix(center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """mmpose's ``get_warp_matrix`` at rotation 0 (the evaluation crop)."""
    size_input, size_dst = center * 2.0, np.array([CROP_W - 1.0, CROP_H - 1.0])
    size_target = scale * 200.0
    sx, sy = size_dst[0] / size_target[0], size_dst[1] / size_target[1]
    return np.array(
        [
            [sx, 0.0, sx * (-0.5 * size_input[0] + 0.5 * size_target[0])],
            [0.0, sy, sy * (-0.5 * size_input[1] + 0.5 * size_target[1])],
        ],
        dtype=np.float32,
    )


def _cv2_sample(inst: Instance) -> torch.Tensor:
    img = cv2.cvtColor(cv2.imread(inst.image_file, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    crop = cv2.warpAffine(
        img, _udp_matrix(inst.center, inst.scale), (CROP_W, CROP_H), flags=cv2.INTER_LINEAR
    )
    chw = ((crop.astype(np.float32) / 255.0 - _MEAN) / _STD).transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(chw))


def _reference_batches(instances: list[Instance]):
    for lo in range(0, len(instances), BATCH):
        yield torch.stack([_cv2_sample(inst) for inst in instances[lo : lo + BATCH]])


# ------------------------------------------------------------------------------------------
# Pipeline throughput
# ------------------------------------------------------------------------------------------


def _posebh_batches(instances: list[Instance], grouped: bool, workers: int | None):
    from posebh.evaluate import default_num_workers

    data = TopDownDataset(instances, "coco", per_dataset_pipeline("coco", train=False))
    n = default_num_workers() if workers is None else workers
    return (b["img"] for b in _batches(data, BATCH, n, grouped, pin_memory=False))


BACKENDS: dict[str, Any] = {
    "reference": lambda insts: _reference_batches(insts),
    "per_box": lambda insts: _posebh_batches(insts, grouped=False, workers=0),
    "grouped": lambda insts: _posebh_batches(insts, grouped=True, workers=0),
    "grouped_workers": lambda insts: _posebh_batches(insts, grouped=True, workers=None),
}
_REFERENCE_S: dict[int, float] = {}


def _consume(batches) -> int:
    return sum(int(b.shape[0]) for b in batches)


def _min_s(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _step_costs(instances: list[Instance]) -> dict[str, float]:
    """Per-step costs on the first images (ms): where a box's time goes."""
    paths = sorted({inst.image_file for inst in instances})[:3]
    boxes = [inst for inst in instances if inst.image_file in paths]
    zero = np.zeros((17, 3), np.float32)
    image = load_image(paths[0])
    crop = top_down_affine(
        image, zero, zero, boxes[0].center, boxes[0].scale, 0.0, (CROP_W, CROP_H), True
    )[0]
    bgr = cv2.imread(paths[0], cv2.IMREAD_COLOR)
    matrix = _udp_matrix(boxes[0].center, boxes[0].scale)

    def each(fn, items) -> float:
        return _min_s(lambda: [fn(x) for x in items], 3) / len(items) * 1e3

    return {
        "decode_ms_per_image": each(load_image, paths),
        "crop_ms_per_box": each(
            lambda b: top_down_affine(
                image, zero, zero, b.center, b.scale, 0.0, (CROP_W, CROP_H), True
            ),
            boxes,
        ),
        "normalise_ms_per_box": each(normalize_image, [crop] * 8),
        "cv2_decode_ms": each(
            lambda p: cv2.cvtColor(cv2.imread(p, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), paths
        ),
        "cv2_warp_ms": each(
            lambda _: cv2.warpAffine(bgr, matrix, (CROP_W, CROP_H), flags=cv2.INTER_LINEAR),
            boxes,
        ),
    }


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_bench_eval_pipeline(benchmark, image_set: list[Instance], backend: str) -> None:
    instances = image_set
    run = BACKENDS[backend]
    rounds = 1 if benchmark.disabled or backend == "per_box" else 2
    count = benchmark.pedantic(lambda: _consume(run(instances)), rounds=rounds, iterations=1)
    assert count == len(instances)
    # The reference computes the same crops (up to the JPEG decoder and OpenCV versions).
    first = next(iter(run(instances[:4])))
    reference = next(_reference_batches(instances[:4]))
    assert first.shape == reference.shape == (4, 3, CROP_H, CROP_W)
    assert float((first - reference).abs().mean()) < 0.05
    if benchmark.disabled or not benchmark.stats:
        return
    seconds = benchmark.stats.stats.min
    key = len(instances)
    if key not in _REFERENCE_S:
        ref = BACKENDS["reference"]
        _REFERENCE_S[key] = (
            seconds if backend == "reference" else _min_s(lambda: _consume(ref(instances)), 2)
        )
    info: dict[str, Any] = {
        "case": "coco_val_like",
        "backend": backend,
        "boxes": len(instances),
        "images": len({inst.image_file for inst in instances}),
        "boxes_per_s": len(instances) / seconds,
        "instances_per_s": len(instances) / seconds,
        "ratio_vs_reference": _REFERENCE_S[key] / seconds,
        "threads": torch.get_num_threads(),
    }
    if backend == "grouped":
        info["target_ratio"] = 5.0
        info.update(_step_costs(instances))
    benchmark.extra_info.update(info)


# ------------------------------------------------------------------------------------------
# OKS-NMS + rescoring at 104,125 boxes
# ------------------------------------------------------------------------------------------


def synthetic_predictions(num_images: int, num_boxes: int, seed: int = 0) -> list[dict]:
    """Top-down predictions as predict() gives them: per image 1–7 persons, each detected
    by several boxes (tight, loose and stray keypoint jitter), scores with ties."""
    rng = np.random.default_rng(seed)
    k = 17
    counts = rng.multinomial(num_boxes - num_images, np.full(num_images, 1 / num_images)) + 1
    preds: list[dict] = []
    for image_id, n in enumerate(counts.tolist()):
        persons = int(rng.integers(1, 8))
        centre = rng.uniform([50, 50], [590, 430], (persons, 2))
        size = rng.uniform(30, 300, persons)
        pose = centre[:, None] + rng.normal(0, 0.25, (persons, k, 2)) * size[:, None, None]
        owner = rng.integers(0, persons, n)
        spread = size[owner] * rng.choice([0.01, 0.05, 0.2], n)
        kpts = np.empty((n, k, 3), np.float32)
        kpts[..., :2] = pose[owner] + rng.normal(0, 1, (n, k, 2)) * spread[:, None, None]
        kpts[..., 2] = rng.uniform(0, 1, (n, k))
        score = np.round(rng.uniform(0.05, 1.0, n), 2)
        area = (size[owner] * rng.uniform(0.9, 1.3, n)) ** 2 * 0.75
        for i in range(n):
            preds.append(
                {
                    "keypoints": kpts[i],
                    "area": float(area[i]),
                    "score": float(score[i]),
                    "image_id": image_id,
                    "index": len(preds),
                }
            )
    return preds


def _official_oks_iou(g, d, a_g, a_d, sigmas):
    """mmpose 0.x ``oks_iou`` (no vis_thr): one loop iteration per candidate."""
    variances = (sigmas * 2) ** 2
    xg, yg = g[0::3], g[1::3]
    ious = np.zeros(len(d), dtype=np.float32)
    for n_d in range(len(d)):
        dx, dy = d[n_d, 0::3] - xg, d[n_d, 1::3] - yg
        e = (dx**2 + dy**2) / variances / ((a_g + a_d[n_d]) / 2 + np.spacing(1)) / 2
        ious[n_d] = np.sum(np.exp(-e)) / len(e)
    return ious


def _official_rescore_and_nms(per_image: dict, sigmas: np.ndarray, vis_thr=0.2, oks_thr=0.9):
    """mmpose 0.x top-down ``evaluate``: rescoring loop, then ``oks_nms`` per image."""
    out = {}
    for image_id, img_kpts in per_image.items():
        rescored = []
        for p in img_kpts:
            total, valid = 0.0, 0
            for s in np.asarray(p["keypoints"])[:, 2].tolist():
                if s > vis_thr:
                    total, valid = total + s, valid + 1
            rescored.append({**p, "score": (total / valid if valid else 0.0) * p["score"]})
        scores = np.array([p["score"] for p in rescored])
        kpts = np.array([np.asarray(p["keypoints"]).reshape(-1) for p in rescored])
        areas = np.array([p["area"] for p in rescored])
        order = scores.argsort()[::-1]
        keep = []
        while order.size > 0:
            i = order[0]
            keep.append(i)
            ovr = _official_oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas)
            order = order[np.where(ovr <= oks_thr)[0] + 1]
        out[image_id] = [rescored[i] for i in keep]
    return out


_NMS: dict[str, Any] = {}


@pytest.mark.parametrize("backend", ["reference", "posebh"])
def test_bench_eval_nms(benchmark, backend: str) -> None:
    num_images, num_boxes = (25, 520) if benchmark.disabled else (5_000, 104_125)
    key = (num_images, num_boxes)
    if _NMS.get("key") != key:
        per_image: dict[Any, list[dict]] = defaultdict(list)
        for p in synthetic_predictions(num_images, num_boxes):
            per_image[p["image_id"]].append(p)
        _NMS.clear()
        _NMS.update(key=key, per_image=dict(per_image))
    per_image = _NMS["per_image"]
    sigmas = get_skeleton("coco").sigmas_array()
    if backend == "reference":
        run = lambda: _official_rescore_and_nms(per_image, sigmas)  # noqa: E731
    else:
        run = lambda: rescore_and_nms(per_image, sigmas, vis_thr=0.2, oks_thr=0.9)  # noqa: E731
    rounds = 1 if benchmark.disabled or backend == "reference" else 3
    kept = benchmark.pedantic(run, rounds=rounds, iterations=1)
    summary = {img: [(p["index"], p["score"]) for p in ps] for img, ps in kept.items()}
    if "kept" not in _NMS:
        _NMS["kept"] = summary
    assert summary == _NMS["kept"]  # both backends: the same boxes, the same scores
    assert 0 < sum(map(len, summary.values())) < num_boxes
    if benchmark.disabled or not benchmark.stats:
        return
    seconds = benchmark.stats.stats.min
    if backend == "reference":
        _NMS["reference_s"] = seconds
    info = {
        "case": "oks_nms_104k",
        "backend": backend,
        "boxes": num_boxes,
        "images": num_images,
        "kept": sum(map(len, summary.values())),
        "seconds": seconds,
    }
    if "reference_s" in _NMS:
        info["ratio_vs_reference"] = _NMS["reference_s"] / seconds
    benchmark.extra_info.update(info)
