"""Official checkpoints: key maps, architecture inference, strict loading, the official split
and prototype-removal tools, the transformers naming, and the errors bad files give.

The golden state dicts (``official_tiny_model.pt``, ``suite/backbone_heads.pt``) are tiny
``TopDownMoEProto`` models in official naming; ``suite/model_split.pt`` records what the
official ``tools/model_split.py`` made of the second one.
"""

from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path

import pytest
import torch

from posebh.checkpoint import (
    DATASET_ORDERS,
    CheckpointError,
    from_hf,
    infer_arch,
    load_model,
    official_to_posebh,
    read_state_dict,
    remove_prototypes,
    split_official,
    to_hf,
    to_official,
)

KPTS = (17, 14, 16, 17, 17, 133)
# The tiny models' width is no preset, so num_heads must be given (README: 4 heads).
TINY = {"num_heads": 4}


@pytest.fixture(scope="module")
def tiny(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "official_tiny_model.pt", weights_only=True)


@pytest.fixture(scope="module")
def suite(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "suite" / "backbone_heads.pt", weights_only=True)


@pytest.fixture(scope="module")
def splits(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "suite" / "model_split.pt", weights_only=True)["splits"]


@pytest.fixture(params=["tiny", "suite"])
def golden_sd(request: pytest.FixtureRequest) -> dict[str, torch.Tensor]:
    return request.getfixturevalue(request.param)["state_dict"]


def suite_images(suite: dict) -> torch.Tensor:
    return (suite["img_uint8"].float() - 128) / 64


def assert_same_state(a: dict, b: dict) -> None:
    """Same keys in the same order, bit-identical tensors."""
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


# ------------------------------------------------------------------------------------------
# Reading and key maps
# ------------------------------------------------------------------------------------------


def test_read_state_dict_unwraps_and_strips_ddp_prefix(tiny: dict) -> None:
    sd = tiny["state_dict"]
    assert_same_state(read_state_dict({"state_dict": sd, "meta": {"epoch": 3}}), sd)
    assert_same_state(read_state_dict({f"module.{k}": v for k, v in sd.items()}), sd)
    assert_same_state(read_state_dict(sd), sd)


def test_key_map_round_trip(golden_sd: dict) -> None:
    ours = official_to_posebh(golden_sd)
    assert "heads.0.final_layer.weight" in ours and "keypoint_head.final_layer.weight" not in ours
    assert (
        ours["heads.5.final_layer.weight"]
        is golden_sd["associate_keypoint_heads.4.final_layer.weight"]
    )
    assert ours["keypoint_prototypes.prototypes"].shape == (214, 3, 16)
    assert "proto_head.neck.downsample.0.weight" in ours
    assert_same_state(to_official(ours), golden_sd)


def test_key_map_cluster_prototypes() -> None:
    sd = {"proto_head.cluster_prototype.prototypes": torch.zeros(96, 3, 16)}
    assert list(official_to_posebh(sd)) == ["cluster_prototypes.prototypes"]
    assert list(to_official(official_to_posebh(sd))) == list(sd)


def test_key_maps_reject_foreign_keys(tiny: dict) -> None:
    with pytest.raises(CheckpointError, match=r"neck\.weight"):
        official_to_posebh({**tiny["state_dict"], "neck.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="already in official naming"):
        to_official(tiny["state_dict"])


# ------------------------------------------------------------------------------------------
# Architecture inference
# ------------------------------------------------------------------------------------------


def test_infer_arch_matches_the_recorded_config(tiny: dict) -> None:
    cfg = tiny["config"]
    arch = infer_arch(tiny, **TINY)
    assert arch["img_size"] == tuple(cfg["img_size"])
    assert arch["patch_size"] == cfg["patch_size"]
    assert arch["embed_dim"] == cfg["embed_dim"]
    assert arch["depth"] == cfg["depth"]
    assert arch["num_heads"] == cfg["num_heads"]
    assert arch["mlp_ratio"] == cfg["mlp_ratio"]
    assert arch["qkv_bias"] is cfg["qkv_bias"]
    assert arch["num_experts"] == cfg["num_expert"]
    assert arch["part_features"] == cfg["part_features"]
    assert arch["head_filters"] == cfg["head_deconv_filters"]
    assert arch["head_kernel"] == cfg["head_deconv_kernel"]
    assert arch["num_deconv"] == 2
    assert arch["num_keypoints"] == tuple(cfg["num_keypoints"])
    assert arch["proto_head"] is True
    assert arch["proto_channels"] == cfg["proto_channels"]
    assert arch["proto_dim"] == cfg["proto_out_channels"]
    assert arch["num_prototypes"] == cfg["num_in_class_proto"]
    assert arch["proto_keypoints"] == KPTS
    assert arch["num_clusters"] == 0


def test_infer_arch_suite_readme_architecture(suite: dict) -> None:
    # suite/README §1: ViTMoE(embed 64, depth 2, heads 4, mlp 4, 6 experts, part 16), heads of
    # 2 deconvs × 32 filters (k4), prototype head channels 16, 16-d embedding, 3 prototypes.
    arch = infer_arch(suite["state_dict"], **TINY)
    expected = dict(
        img_size=(256, 192),
        patch_size=16,
        embed_dim=64,
        depth=2,
        num_heads=4,
        mlp_ratio=4.0,
        qkv_bias=True,
        num_experts=6,
        part_features=16,
        num_keypoints=KPTS,
        head_filters=32,
        head_kernel=4,
        num_deconv=2,
        proto_head=True,
        proto_channels=16,
        proto_dim=16,
        num_prototypes=3,
        proto_keypoints=KPTS,
        num_clusters=0,
    )
    assert {k: arch[k] for k in expected} == expected


def test_infer_arch_num_heads_from_preset_width(tiny: dict) -> None:
    with pytest.raises(CheckpointError, match="num_heads"):
        infer_arch(tiny)
    # A preset width takes its head count from the table: a ViTPose-S-shaped state dict
    # (shapes only, on the meta device) has 12 heads.
    shapes = {
        "backbone.pos_embed": (1, 193, 384),
        "backbone.patch_embed.proj.weight": (384, 3, 16, 16),
        "backbone.blocks.0.attn.qkv.bias": (3 * 384,),
        "backbone.blocks.0.mlp.fc1.weight": (1536, 384),
        "backbone.blocks.0.mlp.fc2.weight": (384, 1536),
        "keypoint_head.deconv_layers.0.weight": (384, 256, 4, 4),
        "keypoint_head.deconv_layers.3.weight": (256, 256, 4, 4),
        "keypoint_head.final_layer.weight": (17, 256, 1, 1),
    }
    arch = infer_arch({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    assert (arch["num_heads"], arch["num_experts"], arch["num_keypoints"]) == (12, 0, (17,))
    assert (arch["proto_head"], arch["head_filters"]) == (False, 256)


def test_infer_arch_cluster_prototypes_and_img_size(tiny: dict) -> None:
    sd = dict(tiny["state_dict"])
    sd["proto_head.cluster_prototype.prototypes"] = torch.zeros(96, 3, 16)
    sd["backbone.pos_embed"] = torch.zeros(1, 1 + 24 * 18, 64)  # the 384×288 grid
    arch = infer_arch(sd, **TINY)
    assert arch["num_clusters"] == 96
    assert arch["img_size"] == (384, 288)
    sd["backbone.pos_embed"] = torch.zeros(1, 1 + 7 * 5, 64)  # no 4:3 grid
    with pytest.raises(CheckpointError, match="img_size"):
        infer_arch(sd, **TINY)
    assert infer_arch(sd, img_size=(112, 80), **TINY)["img_size"] == (112, 80)


# ------------------------------------------------------------------------------------------
# Loading into the model
# ------------------------------------------------------------------------------------------


def test_load_model_strict_and_round_trip(golden_sd: dict) -> None:
    model = load_model({"state_dict": golden_sd, "meta": {}}, **TINY)
    assert not model.training
    assert model.config.num_keypoints == KPTS and model.config.num_experts == 6
    assert_same_state(to_official(model), golden_sd)
    # A PoseBH state dict saved by this package loads too.
    again = load_model(model.state_dict(), **TINY)
    assert_same_state(to_official(again), golden_sd)


def test_load_model_forward_parity(tiny: dict) -> None:
    model = load_model(tiny["state_dict"], **TINY)
    with torch.no_grad():
        out = model(tiny["images"], tiny["dataset_idx"])
    torch.testing.assert_close(out.features, tiny["features"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.heatmaps[5], tiny["heatmaps"][5], atol=1e-5, rtol=0)


def test_load_model_from_file(tiny: dict, tmp_path: Path) -> None:
    path = tmp_path / "posebh_tiny.pth"
    torch.save({"state_dict": tiny["state_dict"], "meta": {"epoch": 1}}, path)
    assert_same_state(to_official(load_model(path, **TINY)), tiny["state_dict"])
    assert_same_state(to_official(load_model(str(path), **TINY)), tiny["state_dict"])


def test_load_model_cluster_prototypes(tiny: dict) -> None:
    pytest.importorskip("posebh.cps")
    sd = dict(tiny["state_dict"])
    sd["proto_head.cluster_prototype.prototypes"] = torch.nn.functional.normalize(
        torch.randn(96, 3, 16), dim=-1
    )
    model = load_model(sd, **TINY)
    assert model.config.num_clusters == 96
    assert_same_state(to_official(model), sd)


# ------------------------------------------------------------------------------------------
# The official split (tools/model_split.py) and prototype removal (tools/remove_proto.py)
# ------------------------------------------------------------------------------------------


def _is_quirk_extra(key: str, keep_proto: bool) -> bool:
    """Tensors the official split leaves behind and split_official does not."""
    return (
        ".mlp.experts." in key
        or key.startswith("associate_keypoint_heads.")
        or (key.startswith("proto_head.") and not keep_proto)
    )


@pytest.mark.parametrize("name", DATASET_ORDERS["human_animal"])
@pytest.mark.parametrize("keep_proto", [False, True])
def test_split_official_keys_match_the_official_split(
    suite: dict, splits: dict, name: str, keep_proto: bool
) -> None:
    ours = split_official(suite["state_dict"], name, keep_prototype_head=keep_proto)
    official = splits[name]["keys"]
    assert list(ours) == [k for k in official if not _is_quirk_extra(k, keep_proto)]
    for k, v in ours.items():
        assert list(v.shape) == list(splits[name]["shapes"][k]), k
    # fc2 gains expert d's rows, keypoint_head becomes head d, everything else is the source.
    src, index = suite["state_dict"], DATASET_ORDERS["human_animal"].index(name)
    head = "keypoint_head." if index == 0 else f"associate_keypoint_heads.{index - 1}."
    for k, v in ours.items():
        if ".mlp.fc2." in k:
            ref = torch.cat([src[k], src[k.replace(".fc2.", f".experts.{index}.")]])
        elif k.startswith("keypoint_head."):
            ref = src[head + k[len("keypoint_head.") :]]
        else:
            ref = src[k]
        assert torch.equal(v, ref), k
    # The index names the same split.
    assert_same_state(
        split_official(suite["state_dict"], index, keep_prototype_head=keep_proto), ours
    )


@pytest.mark.parametrize("name", ["coco", "wholebody"])
def test_split_official_tensors_and_plain_vit_parity(suite: dict, splits: dict, name: str) -> None:
    rec, src = splits[name], suite["state_dict"]
    ours = split_official(src, name)
    changed = rec["changed_tensors"]
    for k, v in changed.items():
        assert torch.equal(ours[k], v), k
    for k in ours.keys() - changed.keys():
        assert torch.equal(ours[k], src[k]), k
    # Loaded as a plain-ViT single-head model it reproduces the official ViT on the split.
    model = load_model(ours, **TINY)
    cfg = model.config
    assert (cfg.num_experts, cfg.num_keypoints, cfg.proto_head) == (
        0,
        (ours["keypoint_head.final_layer.weight"].shape[0],),
        False,
    )
    with torch.no_grad():
        out = model(suite_images(suite))
    torch.testing.assert_close(out.features, rec["vit_features"], atol=1e-5, rtol=0)
    # Image 0 was routed to coco (0) and image 3 to wholebody (5) in the MoE run, so the
    # split's head output on that image is the MoE head output there.
    if name == "coco":
        ref, got = suite["heatmaps"]["keypoint_head"][0], out.heatmaps[0][0]
    else:
        ref = suite["heatmaps_sub3"]["associate_keypoint_heads.4"][3]
        got = out.heatmaps[0][3, :, ::3, ::3]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def _official_split_output(suite: dict, splits: dict, name: str) -> dict:
    """The state dict the official script wrote, rebuilt from model_split.pt."""
    rec, src = splits[name], suite["state_dict"]
    return {k: rec["changed_tensors"].get(k, src.get(k)) for k in rec["keys"]}


@pytest.mark.parametrize("name", ["coco", "wholebody"])
def test_load_model_split_file_drops_leftovers_loudly(suite: dict, splits: dict, name: str) -> None:
    official = _official_split_output(suite, splits, name)
    with pytest.warns(UserWarning, match="model_split") as record:
        model = load_model(official, **TINY)
    n_dropped = 24 + (70 if name == "coco" else 0)  # experts (+ coco's associate heads)
    assert any(f"dropped {n_dropped} tensors" in str(w.message) for w in record)
    cfg = model.config
    assert cfg.num_experts == 0 and len(cfg.num_keypoints) == 1
    # The prototype head the split kept loads, with the 6-dataset class blocks.
    assert cfg.proto_head and cfg.proto_keypoints == KPTS
    with torch.no_grad():
        features = model(suite_images(suite)).features
    torch.testing.assert_close(features, splits[name]["vit_features"], atol=1e-5, rtol=0)
    # Same tensors as split_official with the prototype head kept.
    assert_same_state(
        to_official(model), split_official(suite["state_dict"], name, keep_prototype_head=True)
    )
    with pytest.raises(CheckpointError, match=r"model_split\.py"):
        load_model(official, split_quirks="error", **TINY)


def test_load_model_dataset_argument(suite: dict) -> None:
    model = load_model(suite["state_dict"], dataset="mpii", **TINY)
    assert model.config.num_keypoints == (16,) and model.config.num_experts == 0
    expected = split_official(suite["state_dict"], "mpii", keep_prototype_head=True)
    assert_same_state(to_official(model), expected)


def test_split_official_errors(suite: dict) -> None:
    split = split_official(suite["state_dict"], "coco")
    with pytest.raises(CheckpointError, match="already a single-dataset plain ViT"):
        split_official(split, "coco")
    with pytest.raises(CheckpointError, match="out of range"):
        split_official(suite["state_dict"], 6)
    with pytest.raises(ValueError, match="unknown dataset"):
        split_official(suite["state_dict"], "crowdpose")


def test_remove_prototypes(tiny: dict) -> None:
    sd = tiny["state_dict"]
    out = remove_prototypes({"state_dict": sd, "meta": {}})
    assert list(out) == [k for k in sd if k != "proto_head.kpt_prototype.prototypes"]
    assert all(out[k] is sd[k] for k in out)
    ours = official_to_posebh(sd)
    assert "keypoint_prototypes.prototypes" not in remove_prototypes(ours)
    with_clusters = {**sd, "proto_head.cluster_prototype.prototypes": torch.zeros(8, 3, 16)}
    assert "proto_head.cluster_prototype.prototypes" in remove_prototypes(with_clusters)
    assert "proto_head.cluster_prototype.prototypes" not in remove_prototypes(
        with_clusters, clusters=True
    )
    with pytest.warns(UserWarning, match="no prototype tensors"):
        remove_prototypes(out)
    # The transfer recipes start from such a file: strict loading names the gap, non-strict
    # loading keeps fresh prototypes and says so.
    with pytest.raises(CheckpointError, match=r"kpt_prototype\.prototypes.*\n.*strict=False"):
        load_model(out, **TINY)
    with pytest.warns(UserWarning, match="non-strict"):
        model = load_model(out, strict=False, **TINY)
    assert torch.equal(model.heads[0].final_layer.weight, sd["keypoint_head.final_layer.weight"])


# ------------------------------------------------------------------------------------------
# transformers VitPose naming
# ------------------------------------------------------------------------------------------


def test_to_hf_names(tiny: dict) -> None:
    sd = tiny["state_dict"]
    hf = to_hf(sd)
    qkv = sd["backbone.blocks.1.attn.qkv.weight"]
    for i, part in enumerate(("query", "key", "value")):
        got = hf[f"backbone.encoder.layer.1.attention.attention.{part}.weight"]
        assert torch.equal(got, qkv[64 * i : 64 * (i + 1)])
    layer = "backbone.encoder.layer."
    names = {
        "backbone.embeddings.patch_embeddings.projection.bias": "backbone.patch_embed.proj.bias",
        "backbone.embeddings.position_embeddings": "backbone.pos_embed",
        f"{layer}0.layernorm_before.bias": "backbone.blocks.0.norm1.bias",
        f"{layer}0.layernorm_after.weight": "backbone.blocks.0.norm2.weight",
        f"{layer}0.attention.output.dense.weight": "backbone.blocks.0.attn.proj.weight",
        f"{layer}0.mlp.fc2.weight": "backbone.blocks.0.mlp.fc2.weight",
        f"{layer}1.mlp.experts.5.bias": "backbone.blocks.1.mlp.experts.5.bias",
        "backbone.layernorm.weight": "backbone.last_norm.weight",
        "head.deconv1.weight": "keypoint_head.deconv_layers.0.weight",
        "head.batchnorm1.running_mean": "keypoint_head.deconv_layers.1.running_mean",
        "head.deconv2.weight": "keypoint_head.deconv_layers.3.weight",
        "head.batchnorm2.num_batches_tracked": "keypoint_head.deconv_layers.4.num_batches_tracked",
        "head.conv.bias": "keypoint_head.final_layer.bias",
        "associate_heads.4.conv.weight": "associate_keypoint_heads.4.final_layer.weight",
        "associate_heads.0.batchnorm2.weight": "associate_keypoint_heads.0.deconv_layers.4.weight",
        "proto_head.kpt_prototype.prototypes": "proto_head.kpt_prototype.prototypes",
    }
    for hf_key, official_key in names.items():
        assert hf[hf_key] is sd[official_key], hf_key
    # Without the extras: exactly the keys of transformers' VitPoseForPoseEstimation.
    bare = to_hf(sd, extra_heads=False, prototype_head=False)
    assert all(re.match(r"^(backbone\.(embeddings|encoder|layernorm)|head)\.", k) for k in bare)
    n_qkv = 2 * 2  # weight and bias per block
    assert len(bare) == sum(k.startswith(("backbone.", "keypoint_head.")) for k in sd) + 2 * n_qkv


def test_hf_round_trip(golden_sd: dict) -> None:
    assert_same_state(from_hf(to_hf(golden_sd)), golden_sd)
    # From the model and from posebh naming alike.
    ours = official_to_posebh(golden_sd)
    assert_same_state(from_hf(to_hf(ours)), golden_sd)


def test_from_hf_errors(tiny: dict) -> None:
    hf = to_hf(tiny["state_dict"])
    del hf["backbone.encoder.layer.0.attention.attention.key.bias"]
    with pytest.raises(CheckpointError, match="incomplete"):
        from_hf(hf)
    with pytest.raises(CheckpointError, match=r"vit\.embeddings\.cls_token"):
        from_hf({**to_hf(tiny["state_dict"]), "vit.embeddings.cls_token": torch.zeros(1)})


# ------------------------------------------------------------------------------------------
# Bad checkpoints
# ------------------------------------------------------------------------------------------


def test_renamed_key_is_reported(tiny: dict) -> None:
    sd = dict(tiny["state_dict"])
    sd["backbone.blocks.0.norm_1.weight"] = sd.pop("backbone.blocks.0.norm1.weight")
    with pytest.raises(CheckpointError) as err:
        load_model(sd, **TINY)
    msg = str(err.value)
    assert "missing in the checkpoint (1): backbone.blocks.0.norm1.weight" in msg
    assert "unexpected in the checkpoint (1): backbone.blocks.0.norm_1.weight" in msg


def test_wrong_shape_is_reported(tiny: dict) -> None:
    sd = dict(tiny["state_dict"])
    sd["backbone.blocks.1.attn.proj.weight"] = torch.zeros(64, 63)
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            "shape mismatch for backbone.blocks.1.attn.proj.weight: checkpoint [64, 63] vs model "
            "[64, 64]"
        ),
    ):
        load_model(sd, **TINY)
    # Non-strict loading skips it with a warning and keeps the rest.
    with pytest.warns(UserWarning, match="shape mismatch"):
        model = load_model(sd, strict=False, **TINY)
    assert torch.equal(model.backbone.pos_embed, sd["backbone.pos_embed"])


def test_long_key_lists_are_truncated(tiny: dict) -> None:
    # 8 norm and 12 prototype-deconv tensors renamed: 20 missing and 20 unexpected keys.
    renamed = {
        (
            k.replace("norm", "nrm").replace("deconv_layers", "deconvs")
            if ".norm" in k or k.startswith("proto_head.deconv_layers")
            else k
        ): v
        for k, v in tiny["state_dict"].items()
    }
    with pytest.raises(CheckpointError, match=r"missing in the checkpoint \(20\): .*and 8 more"):
        load_model(renamed, **TINY)


def test_split_checkpoint_loaded_as_multi_head_is_explained(suite: dict) -> None:
    split = split_official(suite["state_dict"], "coco")
    with pytest.raises(CheckpointError, match="split single-dataset checkpoint"):
        load_model(split, num_keypoints=KPTS, **TINY)


def test_experts_against_plain_model_are_explained(tiny: dict) -> None:
    with pytest.raises(CheckpointError, match="expert tensors present"):
        load_model(tiny["state_dict"], num_experts=0, **TINY)
    with pytest.raises(CheckpointError, match="built without one"):
        load_model(tiny["state_dict"], proto_head=False, **TINY)


def test_truncated_file(tiny: dict, tmp_path: Path) -> None:
    path = tmp_path / "cut.pth"
    torch.save({"state_dict": tiny["state_dict"]}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth.*truncated or corrupt"):
        load_model(path, **TINY)
    path.write_bytes(b"not a checkpoint at all" * 4)
    with pytest.raises(CheckpointError, match=r"cut\.pth.*truncated or corrupt"):
        load_model(path, **TINY)


class _Custom:  # a class the weights-only unpickler may not build
    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize(
    "payload",
    [functools.partial(print, "pwned"), _Custom()],
    ids=["partial", "custom_class"],
)
def test_pickle_that_needs_code_is_refused(tiny: dict, tmp_path: Path, payload: object) -> None:
    path = tmp_path / "code.pth"
    torch.save({"state_dict": {"backbone.pos_embed": torch.zeros(1)}, "meta": payload}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, **TINY)
    msg = str(err.value)
    assert "code.pth" in msg and "refusing to load" in msg
    assert "weights_only=True" in msg and "torch.save({'state_dict'" in msg
    assert "partial" in msg or "_Custom" in msg


def test_non_tensor_entries(tiny: dict) -> None:
    with pytest.raises(CheckpointError, match="not tensors"):
        read_state_dict({**tiny["state_dict"], "epoch": 3})


def test_unused_cls_token_is_dropped_loudly(tiny: dict) -> None:
    sd = {"backbone.cls_token": torch.zeros(1, 1, 64), **tiny["state_dict"]}
    with pytest.warns(UserWarning, match=r"dropped 1 tensors.*backbone\.cls_token"):
        model = load_model(sd, **TINY)
    assert_same_state(to_official(model), tiny["state_dict"])


def test_nothing_dropped_silently(tiny: dict) -> None:
    # A clean checkpoint loads without warnings (the split policy must not fire).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(tiny["state_dict"], **TINY)
