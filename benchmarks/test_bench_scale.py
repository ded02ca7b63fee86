"""The CPU data path at COCO size: training and evaluation pipelines, OKS-NMS, COCOeval and a
whole ``posebh eval``, against references measured in the same run. The annotation readers
at the same size are in ``test_bench_readers.py`` (marked ``scale`` too, so
``posebh bench -k scale`` runs both).

Data: a generated data root in the official COCO layout (:mod:`posebh.synth.scale_root`):
5,000 val images at 640×480, the 104,125-box detection file and its GT, a 150,000-person train
file. Timed runs (``posebh bench -k scale``) use the ``full`` root, cached under
``$POSEBH_SCALE_ROOT`` (default ``~/.cache/posebh/scale``; about 10 min to generate on two
cores, once); the smoke run (``--benchmark-disable``, CI) uses the ``small`` one.
``POSEBH_SCALE_SIZE=full|small`` overrides the choice.

References (written for the benchmark, sharing no code with posebh): pycocotools' ``COCO()``
and ``COCOeval``, an mmpose-0.x-style pipeline on OpenCV (``mmpose0x_reference.py``) and the
official per-pair OKS-NMS loop.
Every pipeline comparison runs on one core (``torch`` and OpenCV pinned to one thread): the
throughputs are "per core".
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2", reason="the references need opencv-python-headless (dev extra)")
import mmpose0x_reference as reference  # noqa: E402  (after the importorskip)

from posebh.datasets import read_coco_detections, read_coco_keypoints  # noqa: E402
from posebh.evaluation import rescore_and_nms  # noqa: E402
from posebh.pipeline import (  # noqa: E402
    ImageRunDataset,
    TopDownDataset,
    load_image,
    per_dataset_pipeline,
)
from posebh.skeletons import get_skeleton  # noqa: E402
from posebh.synth import scale_root  # noqa: E402
from posebh.transforms import normalize_image, top_down_affine  # noqa: E402

pytestmark = pytest.mark.scale

#: Samples / boxes per timed round (full, small).
TRAIN_SAMPLES = {"full": 600, "small": 24}
EVAL_BOXES = {"full": 3000, "small": 120}


@dataclass(frozen=True)
class ScaleRoot:
    path: Path
    size: str
    manifest: dict

    def file(self, relative: str) -> str:
        return str(self.path / relative)


@pytest.fixture(scope="module")
def scale(request: pytest.FixtureRequest) -> ScaleRoot:
    disabled = bool(request.config.getoption("benchmark_disable", default=False))
    size = os.environ.get("POSEBH_SCALE_SIZE") or ("small" if disabled else "full")
    base = Path(os.environ.get("POSEBH_SCALE_ROOT", Path.home() / ".cache" / "posebh" / "scale"))
    root = base / f"{size}-seed0"
    manifest = scale_root.write_scale_root(root, size, seed=0, progress=False)
    return ScaleRoot(root, size, manifest)


@pytest.fixture
def one_core():
    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)


def _rounds(benchmark, timed: int) -> int:
    return 1 if benchmark.disabled else timed


# ------------------------------------------------------------------------------------------
# Training pipeline, per core
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def val_instances(scale: ScaleRoot):
    instances, _ = read_coco_keypoints(
        scale.file(scale_root.VAL_GT), scale.file(scale_root.VAL_IMAGES)
    )
    return [inst for inst in instances if inst.keypoints[:, 2].sum() > 0]


@pytest.mark.parametrize("backend", ["reference", "posebh"])
def test_bench_train_pipeline(benchmark, scale, val_instances, one_core, backend: str) -> None:
    instances = val_instances[: TRAIN_SAMPLES[scale.size]]
    if backend == "reference":
        rng = np.random.default_rng(0)

        def run() -> list:
            return [
                reference.train_sample(i.image_file, i.keypoints, i.center, i.scale, rng)
                for i in instances
            ]
    else:
        data = TopDownDataset(instances, "coco", per_dataset_pipeline("coco"), seed=0)

        def run() -> list:
            return [data[i] for i in range(len(data))]

    samples = benchmark.pedantic(run, rounds=_rounds(benchmark, 5), iterations=1)
    assert len(samples) == len(instances)
    assert samples[0]["img"].shape == (3, 256, 192) and samples[0]["target"].shape[0] == 133
    assert all(bool(s["target_weight"].sum() > 0) for s in samples[:8])
    benchmark.extra_info.update(case="train_pipeline", backend=backend)
    if not benchmark.disabled and benchmark.stats:
        benchmark.extra_info["instances_per_s"] = len(instances) / benchmark.stats.stats.min


# ------------------------------------------------------------------------------------------
# Evaluation pipeline (no network), per core: every box of the first images of the
# detection file
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def det_instances(scale: ScaleRoot, all_detections):
    return all_detections[: EVAL_BOXES[scale.size]]


@pytest.mark.parametrize("backend", ["reference", "posebh"])
def test_bench_eval_pipeline(benchmark, scale, det_instances, one_core, backend: str) -> None:
    instances = det_instances
    if backend == "reference":

        def run() -> list:
            return [reference.eval_sample(i.image_file, i.center, i.scale) for i in instances]
    else:
        pipeline = per_dataset_pipeline("coco", train=False, max_num_joints=None)
        runs = ImageRunDataset(TopDownDataset(instances, "coco", pipeline))

        def run() -> list:
            return [s["img"] for r in range(len(runs)) for s in runs[r]]

    crops = benchmark.pedantic(run, rounds=_rounds(benchmark, 5), iterations=1)
    assert len(crops) == len(instances)
    benchmark.extra_info.update(case="eval_pipeline", backend=backend)
    if not benchmark.disabled and benchmark.stats:
        benchmark.extra_info["instances_per_s"] = len(instances) / benchmark.stats.stats.min


def test_eval_crops_match_the_opencv_reference(scale, det_instances) -> None:
    """Not a timing: the posebh evaluation crop with OpenCV ≥ 4.11 arithmetic ("float") is
    the reference's ``cv2.warpAffine`` crop up to OpenCV's rounding ties — at most one grey
    level on at most 0.1 % of the values (posebh.ops.warp documents the ties)."""
    if tuple(int(v) for v in cv2.__version__.split(".")[:2]) < (4, 11):
        pytest.skip(f"OpenCV {cv2.__version__} predates the float warp arithmetic (4.11)")
    instances = det_instances[:40]
    pipeline = per_dataset_pipeline("coco", train=False, max_num_joints=None, warp_method="float")
    data = TopDownDataset(instances, "coco", pipeline)
    differing = total = 0
    for i, inst in enumerate(instances):
        ref = reference.eval_crop(inst.image_file, inst.center, inst.scale)
        crop = top_down_affine(
            load_image(inst.image_file), np.zeros((17, 3), np.float32),
            np.zeros((17, 3), np.float32), inst.center, inst.scale, 0.0, use_udp=True,
            warp_method="float",
        )[0]  # fmt: skip
        diff = np.abs(crop.astype(np.int16) - ref.astype(np.int16))
        assert diff.max() <= 1, f"box {i} of {inst.image_file}"
        differing, total = differing + int((diff > 0).sum()), total + diff.size
        # The dataset's item is this crop, normalised.
        assert torch.equal(data[i]["img"], normalize_image(crop))
    assert differing <= 0.001 * total, f"{differing} of {total} values differ"


# ------------------------------------------------------------------------------------------
# COCOeval and the whole `posebh eval` (stub network)
# ------------------------------------------------------------------------------------------


def _results_for(instances, seed: int = 0) -> list[dict]:
    """Keypoint results near each box (what a weak model gives): x, y in the box, score."""
    rng = np.random.default_rng(seed)
    out = []
    for inst in instances:
        x, y, w, h = inst.bbox
        k = np.empty((17, 3))
        k[:, 0] = x + rng.random(17) * w
        k[:, 1] = y + rng.random(17) * h
        k[:, 2] = rng.random(17)
        out.append(
            {
                "image_id": inst.image_id,
                "category_id": 1,
                "keypoints": k.reshape(-1).round(2).tolist(),
                "score": float(inst.bbox_score),
            }
        )
    return out


@pytest.fixture(scope="module")
def all_detections(scale: ScaleRoot):
    instances, _ = read_coco_detections(
        scale.file(scale_root.DET_FILE),
        scale.file(scale_root.VAL_GT),
        scale.file(scale_root.VAL_IMAGES),
        check_images=False,
    )
    return instances


@pytest.mark.parametrize("backend", ["reference", "posebh"])
def test_bench_cocoeval(benchmark, scale, all_detections, tmp_path, backend: str) -> None:
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from posebh.evaluation import oks_eval

    gt_file = scale.file(scale_root.VAL_GT)
    results = _results_for(all_detections)
    sigmas = get_skeleton("coco").sigmas
    if backend == "reference":

        def run() -> float:
            with contextlib.redirect_stdout(io.StringIO()):
                gt = COCO(gt_file)
                dt = gt.loadRes(results)
                ev = COCOeval(gt, dt, "keypoints")
                ev.params.kpt_oks_sigmas = np.asarray(sigmas)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            return float(ev.stats[0])
    else:

        def run() -> float:
            return float(oks_eval(gt_file, results, sigmas=sigmas)["AP"])

    ap = benchmark.pedantic(run, rounds=_rounds(benchmark, 2), iterations=1)
    assert 0.0 <= ap <= 1.0
    benchmark.extra_info.update(case="cocoeval", backend=backend, results=len(results))


def test_bench_posebh_eval(benchmark, scale: ScaleRoot, tmp_path: Path) -> None:
    """``posebh eval`` end to end on the val set with the detection boxes, a stub network
    standing in for the model: read, crop, (stub), flip-test decode, rescoring, OKS-NMS,
    COCOeval and the result files; DataLoader workers as by default."""
    from test_bench_eval import StubHeads

    from posebh.datasets import default_spec
    from posebh.evaluate import evaluate

    spec = default_spec("coco", "val", scale.path, use_gt_bbox=False)

    def run():
        return evaluate(StubHeads(), spec, out_dir=tmp_path / "eval", progress=False, log=None)

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    boxes = result.meta["instances"]
    assert boxes == scale.manifest["counts"]["detections"]
    assert 0.0 <= result.metrics["AP"] <= 1.0
    assert (tmp_path / "eval" / "predictions.json").is_file()
    benchmark.extra_info.update(case="posebh_eval", backend="posebh", boxes=boxes)
    if not benchmark.disabled and benchmark.stats:
        benchmark.extra_info["instances_per_s"] = boxes / benchmark.stats.stats.min


# ------------------------------------------------------------------------------------------
# OKS-NMS + rescoring at 104,125 boxes (5,000 images; smoke: 520 over 25): detections clustered
# on 1–7 persons per image, tied scores. ``reference`` is the official per-pair loop (mmpose
# 0.x ``oks_iou`` / ``oks_nms`` and the rescoring loop, written here); ``posebh`` is
# ``rescore_and_nms``. Both must keep the same boxes with the same scores.
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
def test_bench_oks_nms(benchmark, backend: str) -> None:
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
        "case": "oks_nms",
        "backend": backend,
        "boxes": num_boxes,
        "images": num_images,
        "kept": sum(map(len, summary.values())),
        "seconds": seconds,
    }
    if "reference_s" in _NMS:
        info["ratio_vs_reference"] = _NMS["reference_s"] / seconds
    benchmark.extra_info.update(info)
