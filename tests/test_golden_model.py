"""Golden parity: official checkpoints (official key names, strict) reproduce every recorded
output of the official PoseBH modules (float32, CPU).

Tolerances: the golden README measured float32-vs-float64 differences of ≤ 3.8e-6 on the
features and ≤ 2e-6 on heatmaps; it suggests atol 1e-5 (features, heatmaps, embeddings) and
2e-6 for prototype heatmaps.  Our attention uses a fused kernel (different summation order),
which stays well inside that.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from posebh.checkpoint import load_model
from posebh.decode import flip_back

COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
HEAD_NAMES = ["keypoint_head"] + [f"associate_keypoint_heads.{i}" for i in range(5)]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str) -> None:
    assert actual.shape == expected.shape, what
    err = (actual - expected).abs().max().item()
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol}"


@pytest.fixture(scope="module")
def tiny(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "official_tiny_model.pt", weights_only=True)


@pytest.fixture(scope="module")
def suite(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "suite" / "backbone_heads.pt", weights_only=True)


@pytest.fixture(scope="module")
def tiny_model(tiny: dict):
    return load_model(tiny["state_dict"], num_heads=tiny["config"]["num_heads"]).eval()


@pytest.fixture(scope="module")
def suite_model(suite: dict):
    return load_model(suite["state_dict"], num_heads=4).eval()


def test_tiny_model_architecture_inferred(tiny: dict, tiny_model) -> None:
    cfg, ref = tiny_model.config, tiny["config"]
    assert cfg.img_size == tuple(ref["img_size"]) and cfg.patch_size == ref["patch_size"]
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads) == (
        ref["embed_dim"],
        ref["depth"],
        ref["num_heads"],
    )
    assert (cfg.num_experts, cfg.part_features) == (ref["num_expert"], ref["part_features"])
    assert cfg.num_keypoints == tuple(ref["num_keypoints"])
    assert cfg.head_filters == ref["head_deconv_filters"]
    assert (cfg.proto_channels, cfg.proto_dim, cfg.num_prototypes) == (
        ref["proto_channels"],
        ref["proto_out_channels"],
        ref["num_in_class_proto"],
    )


def test_tiny_model_forward(tiny: dict, tiny_model) -> None:
    with torch.no_grad():
        out = tiny_model(tiny["images"], tiny["dataset_idx"])
        flipped = tiny_model.backbone(tiny["images"].flip(3), tiny["dataset_idx"])
        all_maps = tiny_model.prototype_heatmaps(out.embeddings)
        aic_maps = tiny_model.prototype_heatmaps(out.embeddings, 1)
    assert_close(out.features, tiny["features"], 1e-5, "features")
    assert_close(flipped, tiny["features_flipped_input"], 1e-5, "features of flipped input")
    assert len(out.heatmaps) == 6
    for d, (ours, ref) in enumerate(zip(out.heatmaps, tiny["heatmaps"], strict=True)):
        assert_close(ours, ref, 1e-5, f"heatmap head {d}")
    assert_close(out.embeddings, tiny["embeddings"], 1e-5, "prototype embeddings")
    assert_close(all_maps[..., ::4, ::4], tiny["prototype_heatmaps_all_sub4"], 2e-6, "proto all")
    assert_close(aic_maps[..., ::4, ::4], tiny["prototype_heatmaps_aic_sub4"], 2e-6, "proto aic")


def test_suite_model_forward(suite: dict, suite_model) -> None:
    images = (suite["img_uint8"].float() - 128) / 64
    with torch.no_grad():
        out = suite_model(images, suite["dataset_idx"])
        kpt_class = suite_model.prototype_heatmaps(out.embeddings)
    assert_close(out.features, suite["backbone_features"], 1e-5, "features")
    for d, name in enumerate(HEAD_NAMES[:5]):
        assert_close(out.heatmaps[d], suite["heatmaps"][name], 1e-5, name)
    assert_close(
        out.heatmaps[5][:, :, ::3, ::3],
        suite["heatmaps_sub3"]["associate_keypoint_heads.4"],
        1e-5,
        "wholebody head",
    )
    assert_close(out.embeddings, suite["proto_embedding"], 1e-5, "prototype embedding")
    assert_close(kpt_class[:, :, ::3, ::3], suite["kpt_class_sub3"][-1], 2e-6, "kpt_class")


def test_suite_flip_path(suite: dict, suite_model) -> None:
    images = (suite["img_uint8"].float() - 128) / 64
    with torch.no_grad():
        flipped = suite_model(images.flip(3), suite["dataset_idx"], heads=[0])
    flip = suite["flip"]
    assert_close(flipped.features, flip["backbone_features_flipped"], 1e-5, "flipped features")
    assert_close(
        flip_back(flipped.heatmaps[0], COCO_FLIP),
        flip["keypoint_head_flipped_back"],
        1e-5,
        "flipped-back COCO heatmaps",
    )


def test_prototype_heatmaps_per_dataset_are_exact_slices(suite: dict, suite_model) -> None:
    """Official: inference for dataset d equals channels start_d:start_d+K_d of d = -1."""
    images = (suite["img_uint8"].float() - 128) / 64
    with torch.no_grad():
        emb = suite_model(images[:2], suite["dataset_idx"][:2]).embeddings
        all_maps = suite_model.prototype_heatmaps(emb)
    start = 0
    for d, k in enumerate((17, 14, 16, 17, 17, 133)):
        assert torch.equal(suite_model.prototype_heatmaps(emb, d), all_maps[:, start : start + k])
        start += k
