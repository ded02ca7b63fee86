"""Checkpoint formats: ``.safetensors`` files and transformers model folders (config.json +
model.safetensors, sharded or not), read by every entry point and written by
``posebh convert``; transformers' own loader as the independent reference when installed."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import safetensors.torch
import torch

from posebh.checkpoint import (
    CheckpointError,
    load_model,
    read_checkpoint,
    read_state_dict,
    to_official,
)
from posebh.cli import main
from posebh.models import PoseBH, PoseBHConfig

TINY = {"num_heads": 4}  # the golden tiny model's width is no preset (README: 4 heads)


@pytest.fixture(scope="module")
def tiny(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "official_tiny_model.pt", weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    """Same keys in the same order, bit-identical tensors."""
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def random_model(
    num_experts: int, seed: int = 0, proto_head: bool = False, decoder: str = "classic"
) -> PoseBH:
    """A small random ViTPose with the transformers classic decoder (256 filters), or the
    simple decoder (ViTPose-*-simple)."""
    config = PoseBHConfig(
        decoder=decoder,
        img_size=(64, 48),
        embed_dim=64,
        depth=2,
        num_heads=4,
        num_experts=num_experts,
        part_features=16,
        num_keypoints=(17,) * max(num_experts, 1),
        proto_head=proto_head,
        drop_path_rate=0.0,
    )
    torch.manual_seed(seed)
    model = PoseBH(config).eval()
    with torch.no_grad():  # non-trivial norms, so a mixed-up tensor shows in the heatmaps
        for name, t in model.state_dict().items():
            if t.is_floating_point() and ("norm" in name or "bias" in name):
                t.copy_(torch.randn_like(t) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
    return model


def heatmaps(model: torch.nn.Module, images: torch.Tensor, dataset: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model(images, dataset).heatmaps[dataset]


def test_pth_to_safetensors_loads_bit_identical(tiny: dict, tmp_path: Path) -> None:
    pth = tmp_path / "tiny.pth"
    torch.save({"state_dict": tiny["state_dict"]}, pth)
    out = tmp_path / "tiny.safetensors"
    assert main(["convert", str(pth), str(out), "--to", "safetensors"]) == 0
    assert_same_state(read_state_dict(out), tiny["state_dict"])
    a, b = load_model(pth, **TINY), load_model(out, **TINY)
    assert_same_state(to_official(b), tiny["state_dict"])
    with torch.no_grad():
        ha = a(tiny["images"], tiny["dataset_idx"]).heatmaps
        hb = b(tiny["images"], tiny["dataset_idx"]).heatmaps
    assert all(torch.equal(x, y) for x, y in zip(ha, hb, strict=True))


def test_safetensors_keeps_the_architecture_record(tmp_path: Path) -> None:
    """A posebh model.pth carries its record; as safetensors metadata it survives, so a
    non-preset width loads without num_heads."""
    from posebh.checkpoint import model_record

    model = random_model(2)
    model = PoseBH(dataclasses.replace(model.config, num_heads=2)).eval()
    pth = tmp_path / "model.pth"
    torch.save(
        {"state_dict": to_official(model), "meta": {"model_config": model_record(model)}}, pth
    )
    out = tmp_path / "model.safetensors"
    assert main(["convert", str(pth), str(out)]) == 0
    assert load_model(out).config == model.config


def test_hf_folder_round_trip_is_bit_identical(tmp_path: Path) -> None:
    """A 2-dataset model with a prototype head and a non-preset width → transformers folder
    → posebh: every tensor back bit for bit (the second head and the prototype head from
    posebh_extra.safetensors), the attention heads from config.json."""
    model = random_model(2, proto_head=True)
    model = PoseBH(dataclasses.replace(model.config, num_heads=2)).eval()
    state = to_official(model)
    pth = tmp_path / "m.pth"
    torch.save({"state_dict": state}, pth)
    folder = tmp_path / "hf"
    assert main(["convert", str(pth), str(folder), "--to", "hf", "--num-heads", "2"]) == 0
    config = json.loads((folder / "config.json").read_text())
    assert config["backbone_config"]["num_attention_heads"] == 2
    assert (folder / "posebh_extra.safetensors").is_file()
    loaded = load_model(folder)  # no num_heads: config.json says
    assert loaded.config == model.config
    assert_same_state(to_official(loaded), state)
    back = tmp_path / "back.pth"
    assert main(["convert", str(folder), str(back)]) == 0
    converted = read_state_dict(back)  # in safetensors' (sorted) order: compare by key
    assert_same_state(dict(sorted(converted.items())), dict(sorted(state.items())))
    images = torch.randn(2, 3, 64, 48)
    for dataset in (0, 1):
        assert torch.equal(heatmaps(loaded, images, dataset), heatmaps(model, images, dataset))


def test_sharded_folder(tmp_path: Path) -> None:
    model = random_model(0)
    folder = tmp_path / "hf"
    src = tmp_path / "m.pth"
    torch.save({"state_dict": to_official(model)}, src)
    assert main(["convert", str(src), str(folder), "--to", "hf", "--num-heads", "4"]) == 0
    tensors = safetensors.torch.load_file(folder / "model.safetensors")
    keys = list(tensors)
    shards = {
        "model-00001-of-00002.safetensors": keys[::2],
        "model-00002-of-00002.safetensors": keys[1::2],
    }
    for shard, names in shards.items():
        safetensors.torch.save_file({k: tensors[k] for k in names}, folder / shard)
    (folder / "model.safetensors").unlink()
    index = {"weight_map": {k: s for s, names in shards.items() for k in names}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert_same_state(to_official(load_model(folder)), to_official(model))
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        CheckpointError,
        match=r"00002-of-00002\.safetensors: missing shard named by .*safetensors\.index\.json",
    ):
        load_model(folder)


def test_folder_without_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        CheckpointError, match=r"a folder without weights: none of model\.safetensors"
    ):
        read_checkpoint(tmp_path)
    assert main(["info", str(tmp_path)]) == 2
    assert "folder without weights" in capsys.readouterr().err


def test_config_contradicting_the_weights(tmp_path: Path) -> None:
    model = random_model(2)
    src = tmp_path / "m.pth"
    torch.save({"state_dict": to_official(model)}, src)
    folder = tmp_path / "hf"
    assert main(["convert", str(src), str(folder), "--to", "hf", "--num-heads", "4"]) == 0
    config = json.loads((folder / "config.json").read_text())
    config["backbone_config"]["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_model(folder)
    text = str(err.value)
    assert "config.json contradicts the weights" in text
    assert "backbone_config.num_hidden_layers: config.json 3, weights 2" in text
    assert "Fix: set backbone_config.num_hidden_layers in config.json" in text


def test_non_preset_width_names_the_flag(
    tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file(dict(tiny["state_dict"]), path)
    assert main(["info", str(path)]) == 2
    assert "--num-heads" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="--num-heads"):
        load_model(path)
    assert main(["info", str(path), "--num-heads", "4"]) == 0


def test_corrupt_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_checkpoint(path)


def import_transformers() -> ModuleType:
    """transformers, imported while this repository's root is off ``sys.path``: its
    ``kernels/`` folder would shadow the PyPI ``kernels`` package transformers imports."""
    transformers = pytest.importorskip(
        "transformers", reason="transformers is an optional test dependency (not installed)"
    )
    root = Path(__file__).resolve().parents[1]
    saved_path, saved_module = sys.path[:], sys.modules.pop("kernels", None)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != root]
    try:
        importlib.import_module("transformers.integrations.hub_kernels")
        importlib.import_module("transformers.models.vitpose.modeling_vitpose")
    finally:
        sys.path[:] = saved_path
        sys.modules.pop("kernels", None)
        if saved_module is not None:
            sys.modules["kernels"] = saved_module
    return transformers


def test_simple_decoder_folder_round_trip(tmp_path: Path) -> None:
    """A ViTPose-simple model written as a model folder comes back as a simple-decoder model
    with bit-identical tensors and heatmaps (config.json says use_simple_decoder)."""
    model = random_model(0, decoder="simple")
    src = tmp_path / "s.pth"
    torch.save({"state_dict": to_official(model)}, src)
    folder = tmp_path / "hf"
    assert main(["convert", str(src), str(folder), "--to", "hf", "--num-heads", "4"]) == 0
    assert json.loads((folder / "config.json").read_text())["use_simple_decoder"] is True
    back = load_model(folder)
    assert back.config.decoder == "simple"
    assert_same_state(to_official(back), to_official(model))
    images = torch.randn(2, 3, 64, 48)
    assert torch.equal(heatmaps(back, images), heatmaps(model, images))


@pytest.mark.parametrize(("num_experts", "decoder"), [(0, "classic"), (2, "classic"),
                                                      (0, "simple")])  # fmt: skip
def test_transformers_loads_the_folder_strictly(
    num_experts: int, decoder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """transformers' own loader is the reference: no missing / unexpected keys, and its
    heatmaps equal posebh's within 1e-5 (a tiny random model, with and without experts,
    classic and simple decoder)."""
    transformers = import_transformers()
    monkeypatch.setenv("USE_HUB_KERNELS", "0")  # no Hub kernel downloads (and see above)
    model = random_model(num_experts, decoder=decoder)
    src = tmp_path / "m.pth"
    torch.save({"state_dict": to_official(model)}, src)
    folder = tmp_path / "hf"
    assert main(["convert", str(src), str(folder), "--to", "hf", "--num-heads", "4"]) == 0
    hf, info = transformers.VitPoseForPoseEstimation.from_pretrained(
        folder, output_loading_info=True
    )
    assert not any(info.values()), info  # no missing / unexpected / mismatched keys
    hf.eval()
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 48)
    ours = heatmaps(model, images, dataset=0)  # transformers' one head: the first dataset's
    index = {"dataset_index": torch.zeros(2, dtype=torch.long)} if num_experts else {}
    with torch.no_grad():
        theirs = hf(pixel_values=images, **index).heatmaps
    delta = (theirs - ours).abs().max().item()
    print(f"max |heatmap diff| posebh vs transformers, {num_experts} experts, {decoder}: "
          f"{delta:.2e}")  # fmt: skip
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
