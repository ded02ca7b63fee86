"""posebh export: a tiny random checkpoint exported to ONNX and run in ONNX Runtime against the
PyTorch model it came from (the multi-dataset model routed through the dataset's expert, not
the export's own single-dataset cut), at batch sizes other than the export's example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="posebh export needs the export extra: onnx")
ort = pytest.importorskip("onnxruntime", reason="posebh export needs the export extra: onnxruntime")

from posebh.checkpoint import to_official  # noqa: E402
from posebh.cli import main  # noqa: E402
from posebh.models import build_model  # noqa: E402

# A non-preset width (64): the official file carries no record, so --num-heads is needed.
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
AIC = 1  # expert and head index of aic (14 keypoints) in the official dataset order


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_model("posebh_vit_small", **TINY).eval()
    # Freshly initialised heads give heatmaps of ~1e-6, under any tolerance; scale each final
    # 1×1 conv (linear in its weight and bias) so heatmaps have unit spread, as trained ones do.
    probe = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        for d, head in enumerate(model.heads):
            spread = model(probe, d).heatmaps[d].std()
            head.final_layer.weight /= spread
            head.final_layer.bias /= spread
    path = tmp_path_factory.mktemp("export") / "tiny_official.pth"
    torch.save({"state_dict": to_official(model)}, path)
    return model, path


def _reference(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images), AIC).heatmaps[AIC].numpy()


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_export_matches_pytorch_at_two_batch_sizes(tiny, tmp_path, capsys, exporter) -> None:
    if exporter == "dynamo":
        pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
    model, ckpt = tiny
    out = tmp_path / "aic.onnx"
    argv = ["export", str(ckpt), str(out), "--dataset", "aic", "--num-heads", "4"]
    assert main([*argv, "--exporter", exporter]) == 0
    printed = capsys.readouterr().out
    assert "batch 1" in printed and "batch 3" in printed and "exporter:" in printed
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    dynamo = "True" if exporter == "dynamo" else "False"
    assert props["posebh.exporter"].startswith(f"torch.onnx.export(dynamo={dynamo})")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["heatmaps"]
    rng = np.random.default_rng(7)
    for batch in (1, 3):
        images = rng.standard_normal((batch, 3, 256, 192)).astype(np.float32)
        (got,) = session.run(None, {"images": images})
        want = _reference(model, images)
        assert got.shape == want.shape == (batch, 14, 64, 48)
        assert np.abs(want).max() > 1.0  # the tolerance below is 1e-4 of the signal or less
        assert np.abs(got - want).max() <= 1e-4


def test_with_decode_gives_the_argmax_of_the_heatmaps(tiny, tmp_path) -> None:
    model, ckpt = tiny
    out = tmp_path / "aic_decode.onnx"
    argv = ["export", str(ckpt), str(out), "--dataset", "aic", "--num-heads", "4"]
    assert main([*argv, "--with-decode"]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(3).standard_normal((3, 3, 256, 192)).astype(np.float32)
    heatmaps, keypoints, scores = session.run(
        ["heatmaps", "keypoints", "scores"], {"images": images}
    )
    want = _reference(model, images)
    assert np.abs(want).max() > 1.0
    assert np.abs(heatmaps - want).max() <= 1e-4
    assert keypoints.shape == (3, 14, 2) and scores.shape == (3, 14)
    for b in range(3):
        for k in range(14):
            row, col = np.unravel_index(np.argmax(heatmaps[b, k]), heatmaps[b, k].shape)
            assert tuple(keypoints[b, k]) == (col, row)
            assert scores[b, k] == heatmaps[b, k, row, col]


def test_unknown_dataset_is_named(tiny, tmp_path, capsys) -> None:
    _, ckpt = tiny
    argv = ["export", str(ckpt), str(tmp_path / "x.onnx"), "--dataset", "horses"]
    assert main([*argv, "--num-heads", "4"]) == 2
    err = capsys.readouterr().err
    assert "--dataset 'horses'" in err and "coco" in err
    assert not (tmp_path / "x.onnx").exists()


def test_non_preset_width_asks_for_num_heads(tiny, tmp_path, capsys) -> None:
    _, ckpt = tiny
    assert main(["export", str(ckpt), str(tmp_path / "x.onnx"), "--dataset", "coco"]) == 2
    err = capsys.readouterr().err
    assert "--num-heads" in err
    assert not (tmp_path / "x.onnx").exists()


def test_fp16_export_runs_in_half_precision(tiny, tmp_path, capsys) -> None:
    _, ckpt = tiny
    out = tmp_path / "aic16.onnx"
    argv = ["export", str(ckpt), str(out), "--dataset", "aic", "--num-heads", "4", "--fp16"]
    assert main(argv) == 0
    assert "fp16" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["posebh.precision"] == "fp16"


def test_a_failed_self_check_fails_the_command(tiny, tmp_path, capsys, monkeypatch) -> None:
    import posebh.export

    # ONNX Runtime and PyTorch differ by ~1e-6 here, so a zero bound must trip the check.
    monkeypatch.setattr(posebh.export, "FP32_TOLERANCE", 0.0)
    _, ckpt = tiny
    argv = ["export", str(ckpt), str(tmp_path / "x.onnx"), "--dataset", "aic", "--num-heads", "4"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ONNX Runtime heatmaps differ from PyTorch" in err and "at batch 1" in err


def test_a_split_checkpoint_exports_and_its_keypoint_count_is_checked(tiny, tmp_path, capsys):
    from posebh.checkpoint import read_checkpoint, split_official

    model, ckpt = tiny
    split = tmp_path / "aic_only.pth"
    torch.save({"state_dict": split_official(read_checkpoint(ckpt)["state_dict"], "aic")}, split)
    out = tmp_path / "aic_only.onnx"
    assert main(["export", str(split), str(out), "--dataset", "aic", "--num-heads", "4"]) == 0
    images = np.random.default_rng(5).standard_normal((3, 3, 256, 192)).astype(np.float32)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": images})
    assert np.abs(got - _reference(model, images)).max() <= 1e-4
    argv = ["export", str(split), str(tmp_path / "x.onnx"), "--dataset", "coco"]
    assert main([*argv, "--num-heads", "4"]) == 2
    assert "14 keypoints, --dataset 'coco' has 17" in capsys.readouterr().err
