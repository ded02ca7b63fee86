"""Simple-decoder checkpoints (ViTPose-*-simple: ReLU → bilinear ×4 → 3×3 conv).

A tiny official-format simple checkpoint (random weights, built here) is recognised from its
shapes, loads strictly, and gives the heatmaps of an independent reference of the official
``TopdownHeatmapSimpleHead(num_deconv_layers=0, upsample=4, final_conv_kernel=3)`` written
with plain torch ops; official ⇄ posebh ⇄ transformers naming round-trips bit for bit; and,
where transformers is installed, its ``VitPoseForPoseEstimation(use_simple_decoder=True)``
loads our ``to_hf`` dict strictly and gives the same heatmaps.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from posebh.checkpoint import (
    MODEL_RECORD_KEY,
    CheckpointError,
    from_hf,
    infer_arch,
    load_model,
    model_record,
    official_to_posebh,
    to_hf,
    to_official,
)
from posebh.cli import main as cli_main
from posebh.models import SimpleHeatmapHead, build_model

# Width 32 is no preset, so num_heads is given; a 4×3 patch grid (the 4:3 family).
ARCH = dict(embed_dim=32, depth=2, num_heads=4, img_size=(64, 48), num_keypoints=(5,))
# ViTPose-*-simple: a plain ViT (no experts), no prototype head, the simple decoder.
SIMPLE = dict(decoder="simple", num_experts=0, proto_head=False)


def _official_simple_checkpoint() -> dict:
    """An mmcv-style ``{"state_dict", "meta"}`` of a ViTPose-simple model, random weights."""
    model = build_model("vitpose_plus_small", **SIMPLE, **ARCH)
    gen = torch.Generator().manual_seed(18)
    sd = {}
    for key, t in to_official(model).items():
        if not t.is_floating_point():
            sd[key] = t.clone()
        elif "norm" in key and key.endswith(".weight"):
            sd[key] = 1 + 0.1 * torch.randn(t.shape, generator=gen)
        else:
            sd[key] = 0.2 * torch.randn(t.shape, generator=gen)
    return {"state_dict": sd, "meta": {}}


@pytest.fixture(scope="module")
def ckpt() -> dict:
    return _official_simple_checkpoint()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 48, generator=torch.Generator().manual_seed(7))


def reference_simple_head(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
    """The official simple head: relu, bilinear ×4 (mmpose resize, align_corners=False),
    then the 3×3 conv with padding 1."""
    up = F.interpolate(F.relu(features), scale_factor=4, mode="bilinear", align_corners=False)
    return F.conv2d(up, weight, bias, stride=1, padding=1)


def test_shapes_say_simple_decoder(ckpt: dict) -> None:
    sd = ckpt["state_dict"]
    assert sorted(k for k in sd if k.startswith("keypoint_head.")) == [
        "keypoint_head.final_layer.bias",
        "keypoint_head.final_layer.weight",
    ]
    assert sd["keypoint_head.final_layer.weight"].shape == (5, 32, 3, 3)
    arch = infer_arch(sd, num_heads=4)
    assert arch["decoder"] == "simple"
    assert arch["num_deconv"] == 0
    assert arch["num_experts"] == 0 and not arch["proto_head"]
    assert arch["num_keypoints"] == (5,)
    model = load_model(ckpt, num_heads=4)
    assert isinstance(model.heads[0], SimpleHeatmapHead)
    assert model.config.heatmap_size == (16, 12)  # 4 × the 4×3 token grid


def test_heatmaps_match_independent_reference(ckpt: dict, images: torch.Tensor) -> None:
    model = load_model(ckpt, num_heads=4)
    sd = ckpt["state_dict"]
    with torch.no_grad():
        out = model(images)
        ref = reference_simple_head(
            out.features,
            sd["keypoint_head.final_layer.weight"],
            sd["keypoint_head.final_layer.bias"],
        )
    heatmaps = out.heatmaps[0]
    assert heatmaps.shape == (3, 5, 16, 12)
    assert (heatmaps - ref).abs().max().item() <= 1e-6
    # The features themselves are untouched by the head's relu (other heads share them).
    assert (out.features < 0).any()


def test_naming_round_trips_bit_identical(ckpt: dict) -> None:
    sd = ckpt["state_dict"]
    ours = official_to_posebh(sd)
    assert set(k for k in ours if k.startswith("heads.")) == {
        "heads.0.final_layer.weight",
        "heads.0.final_layer.bias",
    }
    hf = to_hf(sd, extra_heads=False, prototype_head=False)
    # transformers' VitPoseSimpleDecoder keeps its only tensors as head.conv.*.
    assert sorted(k for k in hf if k.startswith("head.")) == ["head.conv.bias", "head.conv.weight"]
    assert hf["head.conv.weight"] is sd["keypoint_head.final_layer.weight"]
    for back in (to_official(ours), from_hf(hf), from_hf(to_hf(ours))):
        assert list(back) == list(sd)
        for k, v in sd.items():
            assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    # A model loaded from the transformers naming holds the very same tensors.
    model = load_model(from_hf(hf), num_heads=4)
    for k, v in to_official(model).items():
        assert torch.equal(v, sd[k]), k


def test_record_round_trip(ckpt: dict, images: torch.Tensor) -> None:
    model = load_model(ckpt, num_heads=4)
    written = {"state_dict": to_official(model), "meta": {MODEL_RECORD_KEY: model_record(model)}}
    again = load_model(written)
    assert again.config == model.config and again.config.decoder == "simple"
    with torch.no_grad():
        assert torch.equal(again(images).heatmaps[0], model(images).heatmaps[0])


def test_bad_simple_heads_are_refused(ckpt: dict) -> None:
    sd = dict(ckpt["state_dict"])
    sd["keypoint_head.deconv_layers.0.weight"] = torch.zeros(32, 8, 4, 4)
    with pytest.raises(CheckpointError, match=r"3×3 but the head also has deconv_layers"):
        infer_arch(sd, num_heads=4)
    sd = dict(ckpt["state_dict"])
    sd["keypoint_head.final_layer.weight"] = torch.zeros(5, 16, 3, 3)
    with pytest.raises(CheckpointError, match=r"reads 16 channels but the backbone gives 32"):
        infer_arch(sd, num_heads=4)
    sd = {**ckpt["state_dict"], "proto_head.head.0.weight": torch.zeros(8, 8, 3, 3)}
    with pytest.raises(CheckpointError, match=r"proto_head.*simple-decoder"):
        infer_arch(sd, num_heads=4)


def test_config_rejects_simple_with_prototype_head() -> None:
    with pytest.raises(ValueError, match="proto_head=False"):
        build_model("posebh_vit_small", decoder="simple", num_experts=0, **ARCH)
    with pytest.raises(ValueError, match="decoder must be"):
        build_model("vitpose_plus_small", decoder="fancy", **ARCH)


def test_info_prints_decoder(ckpt: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "vitpose_tiny_simple.pth"
    torch.save(ckpt, path)
    assert cli_main(["info", str(path), "--num-heads", "4"]) == 0
    arch = json.loads(capsys.readouterr().out)["architecture"]
    assert arch["decoder"] == "simple" and arch["num_deconv"] == 0


# transformers is run in a child process started outside the repository: the repository's
# top-level kernels/ package would otherwise shadow the Hugging Face ``kernels`` package
# that transformers imports.
_HF_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation

    data = torch.load(sys.argv[1], weights_only=True)
    backbone = VitPoseBackboneConfig(
        image_size=[64, 48], patch_size=[16, 16], hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, mlp_ratio=4, qkv_bias=True, layer_norm_eps=1e-6,
        out_indices=[2],
    )
    config = VitPoseConfig(backbone_config=backbone, use_simple_decoder=True, num_labels=5)
    model = VitPoseForPoseEstimation(config).eval()
    model.load_state_dict(data["state_dict"], strict=True)
    with torch.no_grad():
        heatmaps = model(pixel_values=data["images"]).heatmaps
    torch.save({"heatmaps": heatmaps}, sys.argv[2])
    """
)


def test_transformers_simple_decoder_parity(
    ckpt: dict, images: torch.Tensor, tmp_path: Path
) -> None:
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed (an optional test dependency)")
    model = load_model(ckpt, num_heads=4)
    with torch.no_grad():
        ours = model(images).heatmaps[0]
    hf = to_hf(ckpt["state_dict"], extra_heads=False, prototype_head=False)
    torch.save({"state_dict": hf, "images": images}, tmp_path / "in.pt")
    (tmp_path / "run_hf.py").write_text(_HF_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "run_hf.py", "in.pt", "out.pt"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode and "ModuleNotFoundError" in done.stderr and "transformers" in done.stderr:
        pytest.skip(f"transformers does not import: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = torch.load(tmp_path / "out.pt", weights_only=True)["heatmaps"]
    assert theirs.shape == ours.shape
    delta = (theirs - ours).abs().max().item()
    print(f"transformers VitPoseSimpleDecoder vs posebh: max |Δ| = {delta:.3g}")
    assert delta <= 1e-5
