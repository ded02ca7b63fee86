"""Evaluation that decodes each image once (boxes grouped by image, DataLoader workers) gives
the per-box path's predictions bit for bit; the fast OKS-NMS / rescoring keeps the indices and
scores of a plain-loop reference.

The per-box path (``group_by_image=False``, in-process) is the reference: it is the loader the
evaluation used before grouping, one decode per box, and stays reachable for debugging.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import posebh.evaluate as evaluate_module
import posebh.evaluation.predict as predict_module
import posebh.pipeline as pipeline_module
from posebh.datasets import DatasetSpec, Instance, default_spec, read_dataset
from posebh.evaluate import compute_metrics, default_protocol, evaluate, predict
from posebh.evaluation import oks_nms, rescore_and_nms, soft_oks_nms
from posebh.models import build_model
from posebh.pipeline import ImageRunDataset, TopDownDataset, image_runs, per_dataset_pipeline
from posebh.skeletons import get_skeleton
from posebh.synth import generate

TINY = dict(
    embed_dim=32, depth=1, num_heads=2, part_features=8, head_filters=16,
    proto_channels=8, proto_dim=8, drop_path_rate=0.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("posebh_vit_small", **TINY).eval()


class ConvStub(torch.nn.Module):
    """Quacks like PoseBH for predict(): one random 4×4 / stride-4 convolution from the crop to
    17 heatmaps of 64×48 — a real CPU convolution (whose bits may depend on the batch), at a
    fraction of the tiny model's cost."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 17, kernel_size=4, stride=4)
        self.heads = torch.nn.ModuleList([torch.nn.Identity()])
        self.heads[0].num_keypoints = 17
        self.backbone = torch.nn.Module()
        self.backbone.num_experts = 0

    def forward(self, images: torch.Tensor, dataset_idx=None, *, heads=None):
        return SimpleNamespace(heatmaps=[self.conv(images)])


@pytest.fixture(scope="module")
def stub_model() -> torch.nn.Module:
    return ConvStub().eval()


@pytest.fixture(scope="module")
def coco_det(fixtures_dir: Path) -> tuple[DatasetSpec, list[Instance]]:
    """The COCO fixture's detection file: 33 boxes (score >= 0.3) over 4 images, listed
    image by image."""
    folder = fixtures_dir / "coco"
    spec = DatasetSpec(
        "coco", str(folder / "test_coco.json"), str(folder),
        det_file=str(folder / "test_coco_det_AP_H_56.json"), use_gt_bbox=False, det_bbox_thr=0.3,
    )  # fmt: skip
    instances, _ = read_dataset(spec)
    return spec, instances


@pytest.fixture(scope="module")
def synth_det(tmp_path_factory: pytest.TempPathFactory) -> tuple[DatasetSpec, list[Instance]]:
    """SynthPose (tiny preset, COCO group only): the val detection file, 14 boxes / 4 images."""
    out = tmp_path_factory.mktemp("synth")
    generate(out, "tiny", seed=0, progress=False, groups=["coco"])
    spec = default_spec("coco", "val", out, use_gt_bbox=False)
    instances, _ = read_dataset(spec)
    return spec, instances


def _as_json(predictions: list[dict[str, Any]]) -> bytes:
    """Every field, every array value and dtype, as bytes."""

    def field(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.tolist()}
        return v

    rows = [{k: field(v) for k, v in sorted(p.items())} for p in predictions]
    return json.dumps(rows).encode()


def _reference(model, instances, protocol, batch_size: int, **kw: Any) -> list[dict[str, Any]]:
    return predict(
        model, instances, protocol, batch_size=batch_size, num_workers=0,
        group_by_image=False, progress=False, **kw,
    )  # fmt: skip


def _interleaved(instances: list[Instance]) -> list[Instance]:
    """The instances with each image's boxes spread out (no two consecutive on one image
    where avoidable): image runs are cut into many pieces."""
    by_image: dict[str, list[Instance]] = {}
    for inst in instances:
        by_image.setdefault(inst.image_file, []).append(inst)
    queues = list(by_image.values())
    out: list[Instance] = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


# ------------------------------------------------------------------------------------------
# Grouped == per box, bit for bit
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch_size", "num_workers", "interleave"),
    [(5, 0, False), (7, 2, False), (64, 0, False), (4, 2, True), (3, 0, True)],
)
def test_grouped_predictions_are_the_per_box_bytes_on_the_fixture(
    coco_det, stub_model, batch_size: int, num_workers: int, interleave: bool
) -> None:
    _, instances = coco_det
    if interleave:
        instances = _interleaved(instances)
    data = TopDownDataset(instances, "coco", per_dataset_pipeline("coco", train=False))
    runs = image_runs(data)
    images = len({inst.image_file for inst in instances})
    # The fixture lists boxes image by image; interleaving splits every image into pieces.
    assert images == 4 and (len(runs) > 2 * images if interleave else len(runs) == images)
    # Batches that cut runs in the middle (5, 7, 4, 3 boxes) and one batch for all (64).
    assert any(r.start % batch_size or r.stop % batch_size for r in runs)
    proto = default_protocol("coco")
    ref = _reference(stub_model, instances, proto, batch_size)
    got = predict(
        stub_model, instances, proto, batch_size=batch_size, num_workers=num_workers,
        progress=False,
    )  # fmt: skip
    assert len(got) == len(instances) == 33
    assert _as_json(got) == _as_json(ref)


def test_grouped_predictions_of_the_tiny_posebh_are_the_per_box_bytes(coco_det, tiny_model) -> None:
    """The real (random-init, tiny) PoseBH, workers on, batches cutting every image's run."""
    _, instances = coco_det
    proto = default_protocol("coco")
    ref = _reference(tiny_model, instances, proto, 7)
    got = predict(tiny_model, instances, proto, batch_size=7, num_workers=2, progress=False)
    assert _as_json(got) == _as_json(ref)


@pytest.mark.parametrize(("batch_size", "num_workers"), [(3, 0), (5, 2)])
def test_grouped_predictions_are_the_per_box_bytes_on_synthpose(
    synth_det, stub_model, batch_size: int, num_workers: int
) -> None:
    _, instances = synth_det
    assert len(instances) == 14 and len(image_runs(_coco_dataset(instances))) == 4
    proto = default_protocol("coco")
    for order in (instances, _interleaved(instances)):
        ref = _reference(stub_model, order, proto, batch_size)
        got = predict(
            stub_model, order, proto, batch_size=batch_size, num_workers=num_workers,
            progress=False,
        )  # fmt: skip
        assert _as_json(got) == _as_json(ref)


def test_grouped_heatmap_oracle_is_the_per_box_bytes(synth_det) -> None:
    """The oracle path renders targets from each crop: grouped samples carry the same ones."""
    _, instances = synth_det
    proto = default_protocol("coco")
    ref = _reference(None, instances, proto, 4, heatmap_oracle=True)
    got = predict(None, instances, proto, batch_size=4, progress=False, heatmap_oracle=True)
    assert _as_json(got) == _as_json(ref)


def test_evaluate_writes_the_per_box_predictions_json(coco_det, stub_model, tmp_path: Path) -> None:
    """``predictions.json`` of the default (grouped, automatic workers) evaluation is the file
    the per-box predictions give through the same rescoring, NMS and writer."""
    spec, instances = coco_det
    proto = default_protocol("coco")
    evaluate(stub_model, spec, batch_size=6, out_dir=tmp_path, log=None, progress=False)
    per_box = _reference(stub_model, instances, proto, 6)
    _, records = compute_metrics(per_box, instances, spec, proto)
    want = json.dumps(evaluate_module._jsonable(records)).encode()
    assert (tmp_path / "predictions.json").read_bytes() == want


# ------------------------------------------------------------------------------------------
# One decode per image; the per-box path stays reachable
# ------------------------------------------------------------------------------------------


def _coco_dataset(instances: list[Instance]) -> TopDownDataset:
    return TopDownDataset(instances, "coco", per_dataset_pipeline("coco", train=False))


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    calls: Counter[str] = Counter()
    real = pipeline_module.load_image

    def counting(path):
        calls[str(path)] += 1
        return real(path)

    monkeypatch.setattr(pipeline_module, "load_image", counting)
    return calls


def test_grouped_decodes_each_image_once_per_box_decodes_per_box(
    coco_det, stub_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, instances = coco_det
    proto = default_protocol("coco")
    calls = _count_decodes(monkeypatch)
    predict(stub_model, instances, proto, batch_size=5, num_workers=0, progress=False)
    assert sorted(calls.values()) == [1, 1, 1, 1]
    calls.clear()
    predict(
        stub_model, instances, proto, batch_size=5, num_workers=0, group_by_image=False,
        progress=False,
    )  # fmt: skip
    assert sum(calls.values()) == len(instances) == 33 and len(calls) == 4


def test_per_box_path_does_not_group(coco_det, stub_model, monkeypatch: pytest.MonkeyPatch) -> None:
    _, instances = coco_det

    def refuse(*args, **kwargs):
        raise AssertionError("group_by_image=False must not build image runs")

    monkeypatch.setattr(predict_module, "ImageRunDataset", refuse)
    out = predict(
        stub_model, instances[:3], default_protocol("coco"), num_workers=0,
        group_by_image=False, progress=False,
    )  # fmt: skip
    assert [p["index"] for p in out] == [0, 1, 2]
    with pytest.raises(AssertionError, match="must not build image runs"):
        predict(stub_model, instances[:3], default_protocol("coco"), progress=False)


@pytest.mark.parametrize("train", [False, True])
def test_samples_of_equals_the_items(coco_det, train: bool) -> None:
    """Each sample cropped from the run's shared image equals the dataset's own item, in
    training too (a flip must copy, never mirror the shared image in place)."""
    _, instances = coco_det
    pipe = per_dataset_pipeline("coco", train=train, flip_prob=0.5)
    data = TopDownDataset(instances, "coco", pipe, seed=3)
    runs = ImageRunDataset(data)
    flipped = 0
    for r, run in enumerate(runs.runs):
        for index, sample in zip(run, runs[r], strict=True):
            item = data[index]
            assert sample.keys() == item.keys()
            for key in ("img", "target", "target_weight"):
                if key in item:
                    assert torch.equal(sample[key], item[key]), (index, key)
            for key, value in item["meta"].items():
                np.testing.assert_array_equal(sample["meta"][key], value, err_msg=key)
            flipped += bool(item["meta"]["flipped"])
    assert not train or 0 < flipped < len(instances)


def test_samples_of_refuses_instances_of_two_images(coco_det) -> None:
    _, instances = coco_det
    data = _coco_dataset(instances)
    first, second = image_runs(data)[:2]
    with pytest.raises(ValueError, match="pass the instances of one image"):
        data.samples_of([first.start, second.start])
    with pytest.raises(IndexError):
        data.samples_of([len(instances)])
    assert data.samples_of([]) == []


def test_image_runs_are_maximal_consecutive_runs(coco_det) -> None:
    _, instances = coco_det
    data = _coco_dataset(instances)
    runs = image_runs(data)
    assert runs[0].start == 0 and runs[-1].stop == len(instances)
    for a, b in itertools.pairwise(runs):
        assert a.stop == b.start
        assert data.image_path(instances[a.stop - 1]) != data.image_path(instances[b.start])
    for r in runs:
        assert len({data.image_path(instances[i]) for i in r}) == 1
    assert image_runs(_coco_dataset([])) == []


def test_num_workers_automatic_and_explicit(coco_det, stub_model, monkeypatch) -> None:
    monkeypatch.setattr(evaluate_module.os, "sched_getaffinity", lambda pid: set(range(64)))
    assert evaluate_module.default_num_workers() == evaluate_module.MAX_AUTO_WORKERS
    monkeypatch.setattr(evaluate_module.os, "sched_getaffinity", lambda pid: {0, 1})
    assert evaluate_module.default_num_workers() == 2
    monkeypatch.setattr(evaluate_module.os, "sched_getaffinity", lambda pid: {0})
    assert evaluate_module.default_num_workers() == 0
    _, instances = coco_det
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        predict(stub_model, instances, default_protocol("coco"), num_workers=-1, progress=False)


# ------------------------------------------------------------------------------------------
# OKS-NMS and rescoring against plain loops
# ------------------------------------------------------------------------------------------


def _loop_oks(g, d, area_g, area_d, sigmas) -> float:
    """One pair, element by element: mean_j exp(-d_j² / (2σ_j)² / ((a_g + a_d)/2 + eps) / 2),
    the terms summed as NumPy sums a 1-D array, the mean rounded to float32."""
    g = np.asarray(g).reshape(-1)
    d = np.asarray(d).reshape(-1)
    var = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    dx, dy = d[0::3] - g[0::3], d[1::3] - g[1::3]
    e = (dx**2 + dy**2) / var / ((area_g + area_d) / 2 + np.spacing(1)) / 2
    return np.float32(np.sum(np.exp(-e)) / len(e))


def _loop_nms(kpts, areas, scores, thr, sigmas) -> list[int]:
    order = list(np.argsort(scores)[::-1])
    keep = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        order = [j for j in order if _loop_oks(kpts[i], kpts[j], areas[i], areas[j], sigmas) <= thr]
    return keep


def _loop_soft_nms(kpts, areas, scores, thr, sigmas, max_dets) -> list[int]:
    order = np.argsort(scores)[::-1]
    s = np.asarray(scores)[order]
    keep = []
    while order.size and len(keep) < max_dets:
        i = order[0]
        ovr = np.array(
            [_loop_oks(kpts[i], kpts[j], areas[i], areas[j], sigmas) for j in order[1:]],
            dtype=np.float32,
        )
        order, s = order[1:], s[1:] * np.exp(-(ovr**2) / thr)
        resort = s.argsort()[::-1]
        order, s = order[resort], s[resort]
        keep.append(int(i))
    return keep


def _loop_rescore(kpts, box_score, vis_thr) -> float:
    total, valid = 0.0, 0
    for s in np.asarray(kpts).reshape(-1, 3)[:, 2].tolist():
        if s > vis_thr:
            total += s
            valid += 1
    return (total / valid if valid else 0.0) * float(box_score)


def _random_image(rng: np.random.Generator, n: int, k: int, dtype) -> list[dict[str, Any]]:
    """``n`` detections around a few persons: near-duplicates (some exact), tied scores."""
    persons = rng.uniform(0, 400, (max(1, n // 4), k, 2))
    owner = rng.integers(0, len(persons), n)
    spread = rng.choice([0.0, 0.5, 3.0, 20.0], n)[:, None, None]
    xy = persons[owner] + rng.normal(0, 1, (n, k, 2)) * spread
    kpts = np.concatenate([xy, rng.uniform(0, 1, (n, k, 1))], axis=2).astype(dtype)
    kpts[rng.random((n, k)) < 0.1, 2] = np.float32(0.2)  # exactly at float32(vis_thr)
    scores = np.round(rng.uniform(0, 1, n), 1)  # many ties
    areas = rng.choice([900.0, 2500.5, 10000.0], n)
    return [
        {"keypoints": kpts[i], "score": float(scores[i]), "area": float(areas[i]), "id": i}
        for i in range(n)
    ]


@pytest.mark.parametrize(("k", "dtype"), [(17, np.float32), (17, np.float64), (14, np.float32)])
def test_nms_and_rescoring_equal_plain_loops_on_random_images(k: int, dtype) -> None:
    rng = np.random.default_rng(k)
    sigmas = rng.uniform(0.02, 0.1, k)
    images = [_random_image(rng, int(n), k, dtype) for n in rng.integers(1, 30, 40)]
    suppressed = 0
    for insts in images:
        kpts = np.stack([p["keypoints"] for p in insts])
        areas = np.array([p["area"] for p in insts])
        scores = np.array([p["score"] for p in insts])
        for thr in (0.9, 0.5, 1.0):
            want = _loop_nms(kpts, areas, scores, thr, sigmas)
            assert oks_nms(insts, thr, sigmas) == want
            suppressed += len(insts) - len(want)
        want_soft = _loop_soft_nms(kpts, areas, scores, 0.9, sigmas, 20)
        assert soft_oks_nms(insts, 0.9, sigmas) == want_soft
    assert suppressed > 0
    # Rescoring then NMS, per image, against the loops (scores compared exactly).
    out = rescore_and_nms(images, sigmas, vis_thr=0.2, oks_thr=0.9)
    for insts, kept in zip(images, out, strict=True):
        rescored = [_loop_rescore(p["keypoints"], p["score"], 0.2) for p in insts]
        kpts = np.stack([p["keypoints"] for p in insts])
        areas = np.array([p["area"] for p in insts])
        order = _loop_nms(kpts, areas, np.array(rescored), 0.9, sigmas)
        assert [p["id"] for p in kept] == order
        for p in kept:
            got, want = p["score"], rescored[p["id"]]
            assert type(got) is float and (got == want or (math.isnan(got) and math.isnan(want)))
    plain = rescore_and_nms(images[:5], sigmas, vis_thr=0.2, use_nms=False)
    for insts, kept in zip(images[:5], plain, strict=True):
        assert [p["score"] for p in kept] == [
            _loop_rescore(p["keypoints"], p["score"], 0.2) for p in insts
        ]


def test_rescoring_of_mixed_and_integer_keypoints_equals_the_loop() -> None:
    """Images whose keypoint arrays differ in dtype or are integer lists, a NumPy float32
    vis_thr: the per-instance loop semantics hold."""
    k = get_skeleton("coco").sigmas_array()
    rng = np.random.default_rng(5)
    a = np.c_[rng.uniform(0, 50, (17, 2)), rng.uniform(0, 1, 17)].astype(np.float32)
    b = a.astype(np.float64) + 1e-9
    ints = [[int(v) for v in row] for row in (a * [1, 1, 0] + [0, 0, 1]).astype(int)]
    insts = [
        {"keypoints": a, "score": 0.7, "area": 1000.0},
        {"keypoints": b, "score": np.float32(0.6), "area": 1000.0},
        {"keypoints": ints, "score": 0.5, "area": 1000},
    ]
    for vis_thr in (0.2, np.float32(0.2), 0):
        out = rescore_and_nms([insts], k, vis_thr=vis_thr, use_nms=False)[0]
        want = [_loop_rescore(p["keypoints"], p["score"], vis_thr) for p in insts]
        assert [p["score"] for p in out] == want
