"""The ``posebh`` command line on real (golden) checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posebh.checkpoint import load_model, read_state_dict
from posebh.cli import main, save_atomically


@pytest.fixture(scope="module")
def suite_file(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    sd = torch.load(golden_dir / "suite" / "backbone_heads.pt", weights_only=True)["state_dict"]
    path = tmp_path_factory.mktemp("ckpt") / "posebh_tiny.pth"
    torch.save({"state_dict": sd, "meta": {"epoch": 3}}, path)
    return path


def test_info_reports_inferred_architecture(suite_file: Path, capsys) -> None:
    assert main(["info", str(suite_file), "--num-heads", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tensors"] == 179
    assert report["architecture"]["embed_dim"] == 64
    assert report["architecture"]["num_keypoints"] == [17, 14, 16, 17, 17, 133]
    assert report["official_split"] is False


def test_convert_split_then_load_matches_routed_model(suite_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "mpii.pth"
    assert main(["convert", str(suite_file), str(out), "--split", "mpii"]) == 0
    split_sd = read_state_dict(out)
    assert not any(".experts." in k or k.startswith("associate_") for k in split_sd)
    single = load_model(out, num_heads=4)
    full = load_model(suite_file, num_heads=4)
    assert single.config.num_keypoints == (16,) and single.config.num_experts == 0
    images = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        a = single(images).heatmaps[0]
        b = full(images, torch.tensor([2, 2]), heads=[2]).heatmaps[2]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_convert_round_trips_through_hf_and_posebh(suite_file: Path, tmp_path: Path) -> None:
    original = read_state_dict(suite_file)
    assert main(["convert", str(suite_file), str(tmp_path / "hf.pth"), "--to", "hf"]) == 0
    assert main(["convert", str(tmp_path / "hf.pth"), str(tmp_path / "back.pth"), "--from-hf"]) == 0
    back = read_state_dict(tmp_path / "back.pth")
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)
    assert main(["convert", str(suite_file), str(tmp_path / "ours.pth"), "--to", "posebh"]) == 0
    assert "keypoint_prototypes.prototypes" in read_state_dict(tmp_path / "ours.pth")


def test_remove_prototypes(suite_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "noproto.pth"
    assert main(["convert", str(suite_file), str(out), "--remove-prototypes"]) == 0
    sd = read_state_dict(out)
    assert "proto_head.kpt_prototype.prototypes" not in sd
    assert "proto_head.head.3.weight" in sd


def test_errors_are_reported_without_traceback(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.pth" in err and "Traceback" not in err


def test_save_atomically_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "x.pth"

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_atomically({"a": Unpicklable()}, target)
    assert list(tmp_path.iterdir()) == []


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "posebh.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "convert" in out and "examples:" in out
