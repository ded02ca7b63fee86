"""Self-describing checkpoints: the architecture record posebh writes, what ``load_model``
makes of it (and of files without one), its contradictions, and fp16 weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from posebh.checkpoint import (
    MODEL_RECORD_KEY,
    TRAIN_CHECKPOINT_FORMAT,
    CheckpointError,
    load_model,
    model_record,
    read_checkpoint,
    save_atomically,
    to_official,
)
from posebh.models import build_model
from posebh.training import get_preset, load_init

#: Non-default everywhere the tensors cannot tell (heads of a non-preset width, compat, a
#: 5:4 input, drop path) and where they can (a 3-head layout, 2 deconvs of kernel 3, M = 2).
ODD = dict(
    img_size=(80, 64), embed_dim=48, depth=2, num_heads=3, mlp_ratio=2.0, num_experts=3,
    part_features=12, num_keypoints=(5, 7, 4), head_filters=8, head_kernel=3,
    proto_channels=8, proto_dim=6, num_prototypes=2, num_clusters=4, compat="official",
    drop_path_rate=0.05,
)  # fmt: skip


def _odd_model() -> torch.nn.Module:
    torch.manual_seed(3)
    model = build_model("posebh_vit_small", **ODD)
    with torch.no_grad():  # BatchNorm statistics that are not the defaults
        for name, buf in model.named_buffers():
            if "running" in name:
                buf.uniform_(0.5, 1.5)
    return model.eval()


def _trainer_checkpoint(model: torch.nn.Module, record: bool = True) -> dict:
    ckpt = {
        "format": TRAIN_CHECKPOINT_FORMAT,
        "config": {"model": "posebh_vit_small", "model_overrides": {}},
        "model": model.state_dict(),
    }
    if record:
        ckpt[MODEL_RECORD_KEY] = model_record(model, preset="posebh_vit_small")
    return ckpt


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_trained_format_round_trips_to_the_same_model_and_config(tmp_path: Path) -> None:
    model = _odd_model()
    save_atomically(_trainer_checkpoint(model), tmp_path / "final.pth")
    meta = {"posebh_train": {}, MODEL_RECORD_KEY: model_record(model)}
    save_atomically({"state_dict": to_official(model), "meta": meta}, tmp_path / "model.pth")
    for name in ("final.pth", "model.pth"):
        loaded = load_model(tmp_path / name)
        assert loaded.config == model.config, name  # compat, num_heads, img_size included
        _same(loaded, model)
        x = torch.randn(2, 3, *ODD["img_size"])
        with torch.no_grad():
            a, b = loaded(x, 1), model(x, 1)
        for ha, hb in zip(a.heatmaps, b.heatmaps, strict=True):
            assert torch.equal(ha, hb)


def test_record_holds_the_bank_installed_after_building() -> None:
    model = build_model("posebh_vit_small", **{**ODD, "num_clusters": 0})
    assert model_record(model)["config"]["num_clusters"] == 0
    model.cluster_prototypes = _odd_model().cluster_prototypes  # what CPS init does
    record = model_record(model)
    assert record["config"]["num_clusters"] == 4
    assert record["heatmap_size"] == [20, 16]


def test_old_posebh_files_without_a_record_load_as_before(tmp_path: Path) -> None:
    """Files written before the record: the heads and compat of the recipe, the rest from
    the shapes (drop_path_rate from the width table, as infer_arch always did)."""
    model = _odd_model()
    old = _trainer_checkpoint(model, record=False)
    old["config"]["model_overrides"] = {"num_heads": 3, "compat": "official"}
    torch.save(old, tmp_path / "final.pth")
    loaded = load_model(tmp_path / "final.pth", img_size=ODD["img_size"])
    _same(loaded, model)
    assert loaded.config.num_heads == 3 and loaded.config.compat == "official"
    assert loaded.config.drop_path_rate == 0.0  # 48 is no preset width
    assert loaded.config.num_clusters == 4  # from the bank's shape
    # model.pth of an older run: meta.posebh_train.num_heads
    meta = {"posebh_train": {"num_heads": 3}}
    torch.save({"state_dict": to_official(model), "meta": meta}, tmp_path / "model.pth")
    loaded = load_model(tmp_path / "model.pth", img_size=ODD["img_size"])
    _same(loaded, model)
    assert loaded.config.num_heads == 3 and loaded.config.compat == "paper"


def test_arguments_override_the_record(tmp_path: Path) -> None:
    model = _odd_model()
    loaded = load_model(_trainer_checkpoint(model), num_heads=6, compat="paper")
    assert loaded.config.num_heads == 6 and loaded.config.compat == "paper"
    _same(loaded, model)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("num_keypoints", [5, 7, 3], "num_keypoints: record (5, 7, 3), tensors (5, 7, 4)"),
        ("embed_dim", 64, "embed_dim: record 64, tensors 48"),
        ("img_size", [64, 48], "img_size: record (64, 48), tensors '20 patch positions'"),
        ("num_experts", 0, "num_experts: record 0, tensors 3"),
    ],
)
def test_a_record_that_contradicts_the_tensors_is_refused(
    tmp_path: Path, field: str, value: object, says: str
) -> None:
    model = _odd_model()
    ckpt = _trainer_checkpoint(model)
    ckpt[MODEL_RECORD_KEY]["config"][field] = value
    if field == "num_experts":
        ckpt[MODEL_RECORD_KEY]["config"]["part_features"] = 0
    if field == "img_size":
        ckpt[MODEL_RECORD_KEY]["heatmap_size"] = [16, 12]
    path = tmp_path / "edited.pth"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert str(path) in msg and says in msg, msg
    assert f"ckpt['{MODEL_RECORD_KEY}']" in msg and f"load_model(path, {field}=...)" in msg
    # The fix it names works: without the record the file loads by shape inference.
    del ckpt[MODEL_RECORD_KEY]
    ckpt["config"]["model_overrides"] = {"num_heads": 3}
    _same(load_model(ckpt, img_size=ODD["img_size"]), model)


def test_an_unreadable_record_names_the_field(tmp_path: Path) -> None:
    ckpt = _trainer_checkpoint(_odd_model())
    ckpt[MODEL_RECORD_KEY]["config"]["heads_count"] = 3
    torch.save(ckpt, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match=r"x\.pth.*\['heads_count'\].*remove the"):
        load_model(tmp_path / "x.pth")


def test_dataset_split_of_a_recorded_file_keeps_what_the_shapes_cannot_tell() -> None:
    model = _odd_model()
    single = load_model(_trainer_checkpoint(model), dataset=1)
    assert single.config.num_keypoints == (7,) and single.config.num_experts == 0
    assert single.config.num_heads == 3 and single.config.compat == "official"
    assert single.config.img_size == (80, 64)  # 5:4, which shape inference cannot tell
    assert single.config.proto_keypoints == (5, 7, 4)
    assert torch.equal(single.heads[0].final_layer.weight, model.heads[1].final_layer.weight)


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pth: no such file"):
        load_model(tmp_path / "nope.pth")
    # A folder is read as a transformers model folder (issue 18): without weights it says so.
    with pytest.raises(CheckpointError, match="a folder without weights"):
        read_checkpoint(tmp_path)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_are_cast_to_the_fp32_model(
    dtype: torch.dtype, tmp_path: Path
) -> None:
    """A half-precision state dict (e.g. saved after model.half()) loads by casting: every
    floating tensor equals the half tensor's fp32 value; integer buffers are untouched."""
    model = _odd_model()
    half = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    ckpt = {**_trainer_checkpoint(model), "model": half}
    loaded = load_model(ckpt)
    for k, v in loaded.state_dict().items():
        assert v.dtype == model.state_dict()[k].dtype, k
        expected = half[k].float() if half[k].is_floating_point() else half[k]
        assert torch.equal(v, expected), k
    # --init casts the same way (a non-strict load into the recipe's model).
    target = build_model("posebh_vit_small", **ODD)
    config = dataclasses.replace(get_preset("posebh_tiny_synth"), init_remove_prototypes=False)
    torch.save({"state_dict": half}, tmp_path / "half.pth")
    notes = load_init(target, tmp_path / "half.pth", config)
    total = len(target.state_dict())
    assert f"loaded {total - 1}/{total} tensors" in notes  # all but the cluster bank
    for k, v in target.state_dict().items():
        if k != "cluster_prototypes.prototypes":
            assert torch.equal(v, half[k].float() if half[k].is_floating_point() else half[k]), k
