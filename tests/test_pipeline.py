"""The top-down data pipeline (posebh.pipeline): per-dataset settings, samples, determinism,
collation, and a real COCO fixture image read through ``posebh.datasets``.

Shape vocabulary: img [3, 256, 192], target [K, 64, 48], target_weight [K, 1]; batches add N.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from posebh.codecs import generate_target
from posebh.datasets import Instance, InstanceTable, read_coco
from posebh.pipeline import (
    ImageLoadError,
    TopDownDataset,
    TopDownPipeline,
    image_runs,
    load_image,
    multi_dataset_collate,
    per_dataset_pipeline,
)
from posebh.skeletons import get_skeleton
from posebh.transforms import normalize_image, top_down_affine

# A pipeline with every random step switched off except what a test turns on.
STILL = dict(
    flip_prob=0.0,
    half_body=False,
    scale_factor=0.0,
    rot_prob=0.0,
    center_jitter_prob=0.0,
    max_num_joints=None,
)


@pytest.fixture(scope="module")
def coco_instances(fixtures_dir: Path) -> list[Instance]:
    root = fixtures_dir / "coco"
    instances, summary = read_coco(root / "test_coco.json", root)
    assert summary.kept == len(instances) >= 10
    return instances


@pytest.fixture(scope="module")
def image_785(fixtures_dir: Path) -> np.ndarray:
    return load_image(fixtures_dir / "coco" / "000000000785.jpg")


def _785(instances: list[Instance]) -> Instance:
    return next(i for i in instances if i.image_id == 785)


# ---------------------------------------------------------------------------------------------
# Per-dataset settings (PROTOCOL.md §6, mdt/vitb_posebh.py)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "udp", "encoding", "half_body", "jitter"),
    [
        ("coco", True, "UDP", True, 0.3),
        ("mpii", True, "UDP", False, 0.0),
        ("aic", False, "MSRA", True, 0.3),
        ("ap10k", False, "MSRA", True, 0.3),
        ("apt36k", False, "MSRA", True, 0.3),
        ("coco_wholebody", False, "MSRA", True, 0.3),
    ],
)
def test_train_pipelines(
    name: str, udp: bool, encoding: str, half_body: bool, jitter: float
) -> None:
    p = per_dataset_pipeline(name)
    assert (p.use_udp, p.encoding, p.half_body, p.center_jitter_prob) == (
        udp,
        encoding,
        half_body,
        jitter,
    )
    assert p.train and p.targets and p.sigma == 2.0 and p.max_num_joints == 133
    assert (p.flip_prob, p.prob_half_body, p.num_joints_half_body) == (0.5, 0.3, 8)
    assert (p.rot_factor, p.scale_factor, p.rot_prob) == (40.0, 0.5, 0.6)
    assert p.image_size == (192, 256) and p.heatmap_size == (48, 64)
    assert p.mean == (0.485, 0.456, 0.406) and p.std == (0.229, 0.224, 0.225)


@pytest.mark.parametrize(
    ("name", "udp"),
    [
        ("coco", True),
        ("mpii", True),
        ("mdt_val", True),
        ("aic", False),
        ("ap10k", False),
        ("apt36k", False),
        ("coco_wholebody", False),
        ("ochuman", False),
        ("interhand2d", False),
        ("pw3d", False),
    ],
)
def test_eval_pipelines(name: str, udp: bool) -> None:
    p = per_dataset_pipeline(name, train=False)
    assert p.use_udp is udp and not p.train and not p.targets


def test_pipeline_errors() -> None:
    with pytest.raises(ValueError, match="training"):
        per_dataset_pipeline("ochuman", train=True)
    with pytest.raises(ValueError, match="unknown"):
        per_dataset_pipeline("crowdhuman", train=False)
    with pytest.raises(ValueError, match="flip_prob"):
        TopDownPipeline(flip_prob=1.5)
    assert per_dataset_pipeline("coco", sigma=3.0).sigma == 3.0
    assert not per_dataset_pipeline("coco").evaluation().train


# ---------------------------------------------------------------------------------------------
# Samples on the real fixture
# ---------------------------------------------------------------------------------------------


def test_eval_sample_is_the_official_crop(
    coco_instances: list[Instance], image_785: np.ndarray
) -> None:
    inst = _785(coco_instances)
    ds = TopDownDataset([inst], "coco", per_dataset_pipeline("coco", train=False))
    item = ds[0]
    assert set(item) == {"img", "dataset_idx", "meta"}
    assert item["img"].shape == (3, 256, 192) and item["img"].dtype == torch.float32
    crop, _, _ = top_down_affine(
        image_785,
        np.zeros((17, 3), np.float32),
        np.zeros((17, 3), np.float32),
        inst.center,
        inst.scale,
        0.0,
        use_udp=True,
    )
    assert torch.equal(item["img"], normalize_image(crop))
    meta = item["meta"]
    np.testing.assert_array_equal(meta["center"], inst.center)
    np.testing.assert_array_equal(meta["scale"], inst.scale)
    assert meta["rotation"] == 0.0 and not meta["flipped"] and meta["image_id"] == 785
    assert meta["flip_indices"] == get_skeleton("coco").flip_indices
    assert item["dataset_idx"] == 0 and meta["bbox_score"] == inst.bbox_score


def test_train_sample_shapes_and_targets(coco_instances: list[Instance]) -> None:
    ds = TopDownDataset(coco_instances, "coco", per_dataset_pipeline("coco"), seed=1)
    for index in range(len(ds)):
        item = ds[index]
        assert item["img"].shape == (3, 256, 192)
        assert item["target"].shape == (133, 64, 48)
        assert item["target_weight"].shape == (133, 1)
        assert not item["target"][17:].any() and not item["target_weight"][17:].any()
        meta = item["meta"]
        # The target is the UDP Gaussian of the meta joints (crop pixels).
        target, weight = generate_target(
            meta["joints_3d"], meta["joints_3d_visible"], encoding="UDP"
        )
        assert np.array_equal(item["target"][:17].numpy(), target)
        assert np.array_equal(item["target_weight"][:17].numpy(), weight)
        # Visible joints that land on the heatmap peak there (within a pixel).
        stride = np.array([191 / 47, 255 / 63])
        for k in np.flatnonzero(weight[:, 0] > 0):
            hm = target[k]
            xy = meta["joints_3d"][k, :2] / stride
            if (xy >= 0).all() and (xy <= [47, 63]).all():
                y, x = np.unravel_index(np.argmax(hm), hm.shape)
                assert abs(x - xy[0]) <= 1 and abs(y - xy[1]) <= 1


def test_plain_msra_sample_for_aic_style_data(coco_instances: list[Instance]) -> None:
    # An AIC-like instance (14 joints) on the fixture image: plain crop, MSRA target, index 1.
    inst = _785(coco_instances)
    aic = dataclasses.replace(inst, dataset="aic", keypoints=np.array(inst.keypoints[:14]))
    ds = TopDownDataset([aic], "aic", per_dataset_pipeline("aic", **STILL))
    item = ds[0]
    assert item["dataset_idx"] == 1 and item["target"].shape == (14, 64, 48)
    joints = item["meta"]["joints_3d"]
    target, _ = generate_target(joints, item["meta"]["joints_3d_visible"], encoding="MSRA")
    assert np.array_equal(item["target"].numpy(), target)


def test_determinism_per_seed_epoch_index(coco_instances: list[Instance]) -> None:
    pipe = per_dataset_pipeline("coco")
    a = TopDownDataset(coco_instances, "coco", pipe, seed=5)
    b = TopDownDataset(coco_instances, "coco", pipe, seed=5)
    order_a = [a[i] for i in (3, 1, 2)]
    order_b = [b[i] for i in (2, 3, 1)]
    for x, y in zip(order_a, [order_b[1], order_b[2], order_b[0]], strict=True):
        assert torch.equal(x["img"], y["img"]) and torch.equal(x["target"], y["target"])
        assert x["meta"]["rotation"] == y["meta"]["rotation"]

    def fingerprint(ds: TopDownDataset) -> list[tuple[bool, float, float]]:
        out = []
        for i in range(len(ds)):
            m = ds[i]["meta"]
            out.append((m["flipped"], m["rotation"], float(m["scale"][0])))
        return out

    base = fingerprint(a)
    a.set_epoch(1)
    assert fingerprint(a) != base
    assert fingerprint(TopDownDataset(coco_instances, "coco", pipe, seed=6)) != base
    a.set_epoch(0)
    assert fingerprint(a) == base


def test_global_rng_is_untouched(coco_instances: list[Instance]) -> None:
    state = np.random.get_state()[1].copy()
    torch_state = torch.random.get_rng_state().clone()
    ds = TopDownDataset(coco_instances[:2], "coco", per_dataset_pipeline("coco"))
    ds[0], ds[1]
    assert np.array_equal(np.random.get_state()[1], state)
    assert torch.equal(torch.random.get_rng_state(), torch_state)


def test_flip_mirrors_crop_and_swaps_joints(coco_instances: list[Instance]) -> None:
    inst = _785(coco_instances)
    plain = TopDownDataset(
        [inst], "coco", per_dataset_pipeline("coco", warp_method="float", **STILL)
    )[0]
    flipped = TopDownDataset(
        [inst],
        "coco",
        per_dataset_pipeline("coco", warp_method="float", **{**STILL, "flip_prob": 1.0}),
    )[0]
    assert flipped["meta"]["flipped"] and not plain["meta"]["flipped"]
    width = 640  # 000000000785.jpg is 640 × 425
    assert flipped["meta"]["center"][0] == pytest.approx(width - 1 - inst.center[0])
    # UDP crops of mirrored inputs are mirrored (up to rounding ties).
    diff = (flipped["img"] - plain["img"].flip(-1)).abs().max()
    assert diff <= 1.0 / 255 / 0.224 + 1e-6
    flip = get_skeleton("coco").flip_indices
    jp, jf = plain["meta"]["joints_3d"], flipped["meta"]["joints_3d"]
    vis = plain["meta"]["joints_3d_visible"][:, 0] > 0
    for k in range(17):
        if vis[flip[k]]:
            assert jf[k, 0] == pytest.approx(191 - jp[flip[k], 0], abs=1e-3)
            assert jf[k, 1] == pytest.approx(jp[flip[k], 1], abs=1e-3)
    # The targets follow: channel k of the flipped sample mirrors channel flip[k].
    t_plain, t_flip = plain["target"], flipped["target"]
    for k in range(17):
        assert torch.allclose(t_flip[k], t_plain[flip[k]].flip(-1), atol=1e-5)


def test_half_body_step(coco_instances: list[Instance]) -> None:
    inst = _785(coco_instances)  # 17 visible joints
    item = TopDownDataset(
        [inst],
        "coco",
        per_dataset_pipeline("coco", **{**STILL, "half_body": True, "prob_half_body": 1.0}),
    )[0]
    assert item["meta"]["half_body"]
    assert (item["meta"]["scale"] < inst.scale).all()
    # MPII has no half-body step whatever the probability.
    assert not per_dataset_pipeline("mpii").half_body


def test_center_jitter_is_fixed_across_epochs_by_default(coco_instances: list[Instance]) -> None:
    inst = _785(coco_instances)
    pipe = per_dataset_pipeline("coco", **{**STILL, "center_jitter_prob": 1.0})
    ds = TopDownDataset([inst], "coco", pipe, seed=2)
    c0 = ds[0]["meta"]["center"]
    ds.set_epoch(3)
    c3 = ds[0]["meta"]["center"]
    np.testing.assert_array_equal(c0, c3)
    shift = c0 - inst.center
    assert (shift != 0).all()
    assert (np.abs(shift) <= 0.2 * np.array(inst.bbox[2:4]) + 1e-4).all()
    per_epoch = TopDownDataset(
        [inst], "coco", dataclasses.replace(pipe, center_jitter_per_epoch=True), seed=2
    )
    a = per_epoch[0]["meta"]["center"]
    per_epoch.set_epoch(3)
    assert not np.array_equal(a, per_epoch[0]["meta"]["center"])


def test_scale_rotation_statistics(coco_instances: list[Instance]) -> None:
    inst = _785(coco_instances)
    pipe = per_dataset_pipeline("coco", **{**STILL, "scale_factor": 0.5, "rot_prob": 0.6})
    ds = TopDownDataset([inst] * 1, "coco", pipe, seed=0)
    rots, scales = [], []
    for epoch in range(60):
        ds.set_epoch(epoch)
        rng_meta = ds.augment(ds._initial(np.zeros((425, 640, 3), np.uint8), inst), inst, 0)
        rots.append(rng_meta.rotation)
        scales.append(rng_meta.scale[0] / inst.scale[0])
    assert 0 < sum(r == 0 for r in rots) < 60
    assert all(abs(r) <= 80 for r in rots)
    assert min(scales) >= 0.5 - 1e-6 and max(scales) <= 1.5 + 1e-6


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_missing_image_names_file_and_instance(coco_instances: list[Instance]) -> None:
    inst = dataclasses.replace(_785(coco_instances), image_file="/nonexistent/000.jpg")
    ds = TopDownDataset([inst], "coco", per_dataset_pipeline("coco", train=False))
    with pytest.raises(ImageLoadError, match=r"/nonexistent/000\.jpg.*instance 0.*442619"):
        ds[0]


def test_corrupt_image(tmp_path: Path, coco_instances: list[Instance]) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    inst = dataclasses.replace(_785(coco_instances), image_file="bad.jpg")
    ds = TopDownDataset(
        [inst], "coco", per_dataset_pipeline("coco", train=False), image_root=tmp_path
    )
    with pytest.raises(ImageLoadError, match=r"bad\.jpg"):
        ds[0]


def test_keypoint_count_must_match_skeleton(coco_instances: list[Instance]) -> None:
    with pytest.raises(ValueError, match="14"):
        TopDownDataset(coco_instances[:1], "aic", per_dataset_pipeline("aic"))
    with pytest.raises(IndexError):
        TopDownDataset(coco_instances[:1], "coco", per_dataset_pipeline("coco"))[1]


def test_a_reader_table_stays_columnar(coco_instances) -> None:
    table = coco_instances
    assert isinstance(table, InstanceTable)
    pipeline = per_dataset_pipeline("coco", train=False, max_num_joints=None)
    columnar = TopDownDataset(table, "coco", pipeline)
    listed = TopDownDataset(list(table), "coco", pipeline)
    assert columnar.instances is table and isinstance(listed.instances, list)
    # The same runs of same-image instances (read from the columns) and the same items.
    assert image_runs(columnar) == image_runs(listed)
    for i in (0, len(table) // 2, len(table) - 1):
        assert torch.equal(columnar[i]["img"], listed[i]["img"])
        assert columnar[i]["meta"]["image_file"] == listed[i]["meta"]["image_file"]


# ---------------------------------------------------------------------------------------------
# Collation
# ---------------------------------------------------------------------------------------------


def _fake_sample(k: int, idx: int) -> dict[str, object]:
    return {
        "img": torch.full((3, 256, 192), float(idx)),
        "target": torch.rand(k, 64, 48),
        "target_weight": torch.ones(k, 1),
        "dataset_idx": idx,
        "meta": {"num_joints": k, "index": idx},
    }


def test_collate_pads_to_133() -> None:
    samples = [_fake_sample(17, 0), _fake_sample(14, 1), _fake_sample(133, 5)]
    batch = multi_dataset_collate(samples)
    assert batch["img"].shape == (3, 3, 256, 192)
    assert batch["target"].shape == (3, 133, 64, 48)
    assert batch["target_weight"].shape == (3, 133, 1)
    assert batch["dataset_idx"].dtype == torch.int64
    assert batch["dataset_idx"].tolist() == [0, 1, 5]
    assert batch["num_joints"].tolist() == [17, 14, 133]
    assert torch.equal(batch["target"][1, :14], samples[1]["target"])  # type: ignore[arg-type]
    assert not batch["target"][1, 14:].any() and not batch["target_weight"][1, 14:].any()
    assert batch["target_weight"][0, :17].all()
    assert [m["index"] for m in batch["img_metas"]] == [0, 1, 5]


def test_collate_errors_and_eval_batches() -> None:
    with pytest.raises(ValueError, match="max_num_joints"):
        multi_dataset_collate([_fake_sample(20, 0)], max_num_joints=17)
    mixed = [_fake_sample(17, 0), {"img": torch.zeros(3, 256, 192), "dataset_idx": 0}]
    with pytest.raises(ValueError, match="mixes"):
        multi_dataset_collate(mixed)
    batch = multi_dataset_collate([{"img": torch.zeros(3, 256, 192), "dataset_idx": 2, "meta": {}}])
    assert "target" not in batch and batch["dataset_idx"].tolist() == [2]
    assert multi_dataset_collate([_fake_sample(5, 0)], max_num_joints=None)["target"].shape[1] == 5


def test_dataloader_end_to_end(coco_instances: list[Instance]) -> None:
    ds = TopDownDataset(coco_instances[:4], "coco", per_dataset_pipeline("coco"), seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=multi_dataset_collate)
    batches = list(loader)
    assert len(batches) == 2
    assert batches[0]["target"].shape == (2, 133, 64, 48)
    assert torch.equal(batches[1]["img"][0], ds[2]["img"])
