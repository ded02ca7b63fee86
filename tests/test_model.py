"""Model structure: presets, parameter counts, expert routing, heads, errors.

Golden parity against the official outputs lives in test_golden_model.py.
"""

from __future__ import annotations

import pytest
import torch

from posebh.models import PRESETS, PoseBHConfig, build_model

TINY = dict(
    embed_dim=64,
    depth=2,
    num_heads=4,
    part_features=16,
    head_filters=32,
    proto_channels=16,
    proto_dim=16,
    drop_path_rate=0.0,
)


def expected_backbone_params(c: int, depth: int, experts: int, part: int, grid: int = 192) -> int:
    """Count written out from the official ViTMoE layer list (independent of our modules)."""
    hidden = 4 * c
    patch = 3 * 16 * 16 * c + c
    pos = (grid + 1) * c
    per_block = (
        2 * 2 * c  # norm1, norm2
        + c * 3 * c
        + 3 * c  # qkv
        + c * c
        + c  # proj
        + c * hidden
        + hidden  # fc1
        + hidden * (c - part)
        + (c - part)  # fc2 (shared channels)
        + experts * (hidden * part + part)  # experts
    )
    return patch + pos + depth * per_block + 2 * c  # + last_norm


def expected_head_params(c: int, k: int, f: int = 256) -> int:
    deconv = c * f * 16 + f * f * 16  # bias-free transposed convs
    bn = 2 * (2 * f)  # affine BN parameters (running stats are buffers)
    return deconv + bn + f * k + k


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "size,c,depth,part",
    [
        ("small", 384, 12, 96),
        ("base", 768, 12, 192),
        ("large", 1024, 24, 256),
        ("huge", 1280, 32, 320),
    ],
)
def test_preset_parameter_counts(size: str, c: int, depth: int, part: int) -> None:
    with torch.device("meta"):
        model = build_model(f"posebh_vit_{size}")
        plain = build_model(f"vitpose_plus_{size}", num_experts=0, num_keypoints=(17,))
    assert count(model.backbone) == expected_backbone_params(c, depth, 6, part)
    heads = sum(expected_head_params(c, k) for k in (17, 14, 16, 17, 17, 133))
    assert count(model.heads) == heads
    # A split (expert merged into fc2) backbone is exactly a plain ViT of this width.
    assert count(plain.backbone) == expected_backbone_params(c, depth, 0, 0)
    assert model.keypoint_prototypes.prototypes.shape == (214, 3, 64)
    assert not any(p is model.keypoint_prototypes.prototypes for p in model.parameters())


def test_vit_base_matches_published_size() -> None:
    """ViT-B is 86M parameters (ViTPose paper); ViTPose++-B adds six 192-channel experts."""
    with torch.device("meta"):
        plain = build_model("vitpose_plus_base", num_experts=0, num_keypoints=(17,))
        moe = build_model("vitpose_plus_base")
    assert 85.5e6 < count(plain.backbone) < 86.5e6
    extra = count(moe.backbone) - count(plain.backbone)
    # six experts of 3072×192 per block, minus the 192 fc2 rows they replace.
    assert extra == 12 * (5 * (3072 * 192 + 192))


def test_forward_shapes_and_every_head_on_every_image() -> None:
    torch.manual_seed(0)
    model = build_model("posebh_vit_small", **TINY).eval()
    images = torch.randn(3, 3, 256, 192)
    out = model(images, torch.tensor([0, 3, 5]))
    assert out.features.shape == (3, 64, 16, 12)
    assert [h.shape[1] for h in out.heatmaps] == [17, 14, 16, 17, 17, 133]
    assert all(h.shape == (3, h.shape[1], 64, 48) for h in out.heatmaps)
    assert out.embeddings.shape == (3, 16, 64, 48)
    only = model(images, torch.tensor([0, 3, 5]), heads=[1])
    assert only.heatmaps[0] is None and only.heatmaps[2] is None
    torch.testing.assert_close(only.heatmaps[1], out.heatmaps[1])


def test_routing_is_per_image_and_matches_single_image_runs() -> None:
    torch.manual_seed(1)
    model = build_model("vitpose_plus_small", **TINY).eval()
    images = torch.randn(4, 3, 256, 192)
    idx = torch.tensor([2, 0, 2, 5])
    with torch.no_grad():
        batch = model.backbone(images, idx)
        for b in range(4):
            alone = model.backbone(images[b : b + 1], idx[b : b + 1])
            torch.testing.assert_close(batch[b : b + 1], alone, atol=1e-5, rtol=0)
        other = model.backbone(images, torch.tensor([1, 0, 2, 5]))
    # Only image 0 changed route, and the expert channels are the last part_features.
    assert (other[1:] - batch[1:]).abs().max() < 1e-5
    assert (other[0] - batch[0]).abs().max() > 1e-3


def test_expert_index_out_of_range_zeroes_expert_channels() -> None:
    """Official behaviour: no expert selected → the expert half of the FFN output is 0."""
    torch.manual_seed(2)
    model = build_model("vitpose_plus_small", **TINY).eval()
    block = model.backbone.blocks[0]
    x = torch.randn(2, 5, 64)
    out = block.mlp(x, torch.tensor([7, 0]))
    assert torch.count_nonzero(out[0, :, -16:]) == 0
    assert torch.count_nonzero(out[1, :, -16:]) > 0


def test_plain_vit_equals_moe_with_expert_merged_into_fc2() -> None:
    """Merging expert d's rows under fc2 gives the same network as routing through d."""
    torch.manual_seed(3)
    moe = build_model("vitpose_plus_small", **TINY).eval()
    plain = build_model("vitpose_plus_small", **{**TINY, "num_experts": 0}).eval()
    sd = {k: v for k, v in moe.state_dict().items() if ".experts." not in k}
    for i in range(2):
        p = f"backbone.blocks.{i}.mlp."
        for t in ("weight", "bias"):
            sd[p + "fc2." + t] = torch.cat(
                [sd[p + "fc2." + t], moe.state_dict()[p + f"experts.4.{t}"]]
            )
    plain.load_state_dict(sd, strict=True)
    images = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        torch.testing.assert_close(
            plain.backbone(images), moe.backbone(images, torch.tensor([4, 4])), atol=1e-5, rtol=0
        )


def test_prototype_heatmaps_dataset_slices_and_range() -> None:
    torch.manual_seed(4)
    model = build_model("posebh_vit_small", **TINY).eval()
    emb = torch.randn(2, 16, 8, 6)
    all_maps = model.prototype_heatmaps(emb)
    assert all_maps.shape == (2, 214, 8, 6)
    assert all_maps.min() >= 1e-4 and all_maps.max() <= 1 - 1e-4
    starts = [0, 17, 31, 47, 64, 81]
    for d, (s, k) in enumerate(zip(starts, (17, 14, 16, 17, 17, 133), strict=True)):
        assert torch.equal(model.prototype_heatmaps(emb, d), all_maps[:, s : s + k])


def test_errors_are_clear() -> None:
    model = build_model("vitpose_plus_small", **TINY).eval()
    with pytest.raises(ValueError, match="dataset_idx"):
        model(torch.randn(1, 3, 256, 192))
    with pytest.raises(ValueError, match="patch grid"):
        model(torch.randn(1, 3, 128, 96), torch.tensor([0]))
    with pytest.raises(ValueError, match="entries for 2 images"):
        model(torch.randn(2, 3, 256, 192), torch.tensor([0]))
    with pytest.raises(KeyError, match="posebh_vit_base"):
        build_model("posebh_vit_tiny")
    with pytest.raises(TypeError, match="unknown config fields"):
        build_model("posebh_vit_base", width=3)
    with pytest.raises(ValueError, match="compat"):
        PoseBHConfig(compat="mmpose")
    with pytest.raises(RuntimeError, match="no prototype head"):
        model.prototype_heatmaps(torch.randn(1, 64, 4, 4))


def test_presets_are_complete() -> None:
    assert set(PRESETS) == {
        f"{kind}_vit_{s}" if kind == "posebh" else f"{kind}_{s}"
        for kind in ("posebh", "vitpose_plus")
        for s in ("small", "base", "large", "huge")
    }
    assert PoseBHConfig().heatmap_size == (64, 48)
