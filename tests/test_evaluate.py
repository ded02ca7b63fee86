"""The evaluation entry point end to end on the real fixtures: readers → pipeline → model →
decode → rescoring/NMS → metric, through ``posebh.evaluate`` and ``posebh eval``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from posebh.checkpoint import to_official
from posebh.cli import main
from posebh.datasets import DatasetSpec
from posebh.decode import flip_back, keypoints_from_heatmaps
from posebh.evaluate import default_protocol, evaluate, predict
from posebh.models import build_model
from posebh.pipeline import TopDownDataset, per_dataset_pipeline

TINY = dict(
    embed_dim=32, depth=1, num_heads=2, part_features=8, head_filters=16,
    proto_channels=8, proto_dim=8, drop_path_rate=0.0,
)  # fmt: skip
STATS = ("AP", "AP50", "AP75", "AR", "AR50", "AR75")


def spec(fixtures: Path, name: str) -> DatasetSpec:
    f = fixtures
    table = {
        "coco": ("coco/test_coco.json", "coco"),
        "aic": ("aic/test_aic.json", "aic"),
        "ap10k": ("ap10k/test_ap10k.json", "ap10k"),
        "ochuman": ("ochuman/test_ochuman.json", "ochuman"),
        "coco_wholebody": ("coco/test_coco_wholebody.json", "coco"),
    }
    if name == "interhand2d":
        d = f / "interhand2.6m"
        return DatasetSpec(
            "interhand2d",
            str(d / "test_interhand2.6m_data.json"),
            str(d),
            camera_file=str(d / "test_interhand2.6m_camera.json"),
            joint_file=str(d / "test_interhand2.6m_joint_3d.json"),
        )
    ann, img = table[name]
    return DatasetSpec(name, str(f / ann), str(f / img))


@pytest.mark.parametrize("name", ["coco", "aic", "ap10k", "ochuman"])
def test_ground_truth_as_prediction_scores_ap_1(fixtures_dir: Path, name: str) -> None:
    result = evaluate(None, spec(fixtures_dir, name), gt_as_prediction=True, log=None)
    for stat in STATS:
        # pycocotools' precision is tp / (tp + fp + eps): one GT per range gives 1 − 2e-16.
        assert result.metrics[stat] == pytest.approx(1.0, abs=1e-12), (name, stat)
    assert result.meta["protocol"]["use_area"] is (name != "aic")
    assert result.meta["versions"]["pycocotools"]


def test_ground_truth_as_prediction_every_wholebody_part(fixtures_dir: Path) -> None:
    result = evaluate(None, spec(fixtures_dir, "coco_wholebody"), gt_as_prediction=True, log=None)
    assert set(result.metrics) == {"body", "foot", "face", "lefthand", "righthand", "wholebody"}
    for part, stats in result.metrics.items():
        assert stats["AP"] == pytest.approx(1.0, abs=1e-12), part
        assert stats["AR"] == pytest.approx(1.0, abs=1e-12), part


def test_ground_truth_as_prediction_interhand(fixtures_dir: Path) -> None:
    result = evaluate(None, spec(fixtures_dir, "interhand2d"), gt_as_prediction=True, log=None)
    assert result.meta["instances"] == 6
    assert result.metrics["PCK"] == 1.0
    assert result.metrics["EPE"] == 0.0
    # thresholds i/20 for i < 20 include 0, where nothing is "< 0": 19/20.
    assert result.metrics["AUC"] == pytest.approx(0.95)


def test_perturbed_ground_truth_lowers_ap(fixtures_dir: Path) -> None:
    """The same path with the keypoints moved must score below 1: the metric is live."""
    from posebh.evaluate import compute_metrics, ground_truth_predictions

    s = spec(fixtures_dir, "coco")
    from posebh.datasets import read_dataset

    instances, _ = read_dataset(s)
    preds = ground_truth_predictions(instances)
    rng = np.random.default_rng(0)
    for p in preds:
        p["keypoints"][:, :2] += rng.normal(0, 8.0, size=p["keypoints"][:, :2].shape)
    metrics, _ = compute_metrics(preds, instances, s, default_protocol("coco"))
    assert 0.0 < metrics["AP"] < 0.95


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("posebh_vit_small", **TINY).eval()


def test_random_model_end_to_end_writes_reports(
    fixtures_dir: Path, tiny_model, tmp_path: Path
) -> None:
    s = spec(fixtures_dir, "coco")
    det = DatasetSpec(
        "coco", s.ann_file, s.img_prefix,
        det_file=str(fixtures_dir / "coco/test_coco_det_AP_H_56.json"),
        use_gt_bbox=False, det_bbox_thr=0.3,
    )  # fmt: skip
    result = evaluate(tiny_model, det, batch_size=16, out_dir=tmp_path, log=None, progress=False)
    assert result.meta["instances"] == 33  # detections with score ≥ 0.3
    assert result.meta["boxes"] == "detections"
    assert result.meta["box_file"].endswith("test_coco_det_AP_H_56.json")
    assert all(-1.0 <= result.metrics[k] <= 1.0 for k in STATS)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"]["AP"] == result.metrics["AP"]
    assert saved["meta"]["protocol"]["use_udp"] is True  # COCO evaluates with UDP
    assert saved["meta"]["versions"]["torch"] == torch.__version__
    assert "| AP" in (tmp_path / "metrics.md").read_text()
    preds = json.loads((tmp_path / "predictions.json").read_text())
    assert preds and len(preds[0]["keypoints"]) == 51


def test_predict_matches_a_hand_assembled_flip_test(fixtures_dir: Path, tiny_model) -> None:
    """predict() = crop → model → flip_back (+shift) average → decode at the crop's box."""
    from posebh.datasets import read_dataset

    instances, _ = read_dataset(spec(fixtures_dir, "ap10k"))
    proto = default_protocol("ap10k")
    assert proto.shift_heatmap and not proto.use_udp
    out = predict(tiny_model, instances, proto, batch_size=2, progress=False)
    data = TopDownDataset(
        instances, "ap10k", per_dataset_pipeline("ap10k", train=False, max_num_joints=None), 3
    )
    sample = data[1]
    img = sample["img"][None]
    with torch.no_grad():
        hm = tiny_model(img, torch.tensor([3])).heatmaps[3]
        hf = tiny_model(img.flip(3), torch.tensor([3])).heatmaps[3]
    merged = 0.5 * (hm + flip_back(hf, data.skeleton.flip_indices, shift=True))
    meta = sample["meta"]
    preds, maxvals = keypoints_from_heatmaps(
        merged.numpy(), meta["center"][None], meta["scale"][None], post_process="default"
    )
    np.testing.assert_allclose(out[1]["keypoints"][:, :2], preds[0], atol=1e-3)
    np.testing.assert_allclose(out[1]["keypoints"][:, 2], maxvals[0, :, 0], atol=1e-6)
    assert out[1]["area"] == pytest.approx(float(np.prod(meta["scale"] * 200)))


def test_head_and_dataset_mismatch_is_explained(fixtures_dir: Path, tiny_model) -> None:
    from posebh.datasets import read_dataset

    instances, _ = read_dataset(spec(fixtures_dir, "coco"))
    with pytest.raises(ValueError, match="predicts 14 keypoints; coco has 17"):
        predict(tiny_model, instances, default_protocol("coco"), head=1, progress=False)
    with pytest.raises(ValueError, match="needs a model"):
        evaluate(None, spec(fixtures_dir, "coco"), log=None)


def test_mpii_without_head_boxes_is_explained(fixtures_dir: Path) -> None:
    s = DatasetSpec("mpii", str(fixtures_dir / "mpii/test_mpii.json"), str(fixtures_dir / "mpii"))
    with pytest.raises(FileNotFoundError, match=r"mpii_gt_val\.mat"):
        evaluate(None, s, gt_as_prediction=True, log=None)


def test_cli_eval_with_official_checkpoint(fixtures_dir: Path, tiny_model, tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.pth"
    torch.save({"state_dict": to_official(tiny_model), "meta": {}}, ckpt)
    out = tmp_path / "out"
    argv = [
        "eval", "--dataset", "coco",
        "--ann-file", str(fixtures_dir / "coco/test_coco.json"),
        "--img-prefix", str(fixtures_dir / "coco"),
        "--checkpoint", str(ckpt), "--num-heads", "2", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["meta"]["checkpoint"] == str(ckpt)
    assert saved["meta"]["instances"] == 12
    assert saved["meta"]["model_config"]["embed_dim"] == 32


def test_cli_eval_ground_truth_mode(fixtures_dir: Path, tmp_path: Path) -> None:
    argv = [
        "eval", "--dataset", "aic",
        "--ann-file", str(fixtures_dir / "aic/test_aic.json"),
        "--gt-as-prediction", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["metrics"]["AP"] == pytest.approx(1.0, abs=1e-12)
    assert saved["meta"]["protocol"]["use_area"] is False


def test_reduced_input_size_model(fixtures_dir: Path) -> None:
    """A model trained at 128×96 is evaluated on 128×96 crops (its own input size)."""
    torch.manual_seed(0)
    small = build_model("posebh_vit_small", **TINY, img_size=(128, 96)).eval()
    assert small.config.heatmap_size == (32, 24)
    result = evaluate(small, spec(fixtures_dir, "ochuman"), log=None, progress=False)
    assert result.meta["instances"] == 5
    assert -1.0 <= result.metrics["AP"] <= 1.0


def test_decode_backends_agree_through_predict(fixtures_dir: Path, tiny_model) -> None:
    """The fused decode (auto: the C++ op here) and the NumPy reference give the same
    keypoints through the whole evaluation path."""
    from posebh.datasets import read_dataset

    instances, _ = read_dataset(spec(fixtures_dir, "coco"))
    proto = default_protocol("coco")
    fused = predict(tiny_model, instances, proto, progress=False, decode_backend="auto")
    ref = predict(tiny_model, instances, proto, progress=False, decode_backend="torch")
    for a, b in zip(fused, ref, strict=True):
        np.testing.assert_allclose(a["keypoints"][:, :2], b["keypoints"][:, :2], atol=1e-3)
        np.testing.assert_allclose(a["keypoints"][:, 2], b["keypoints"][:, 2], atol=1e-6)


# ------------------------------------------------------------------------------------------
# The no-model floor: the reference split's mean pose in every box
# ------------------------------------------------------------------------------------------


def test_mean_pose_matches_a_plain_loop(fixtures_dir: Path) -> None:
    from posebh.datasets import read_dataset
    from posebh.evaluate import mean_pose

    instances, _ = read_dataset(spec(fixtures_dir, "coco"))
    offsets, frequency = mean_pose(instances)
    for k in range(17):
        sx = sy = 0.0
        n = 0
        for inst in instances:
            x, y, v = (float(t) for t in inst.keypoints[k])
            if v > 0:
                w, h = float(inst.scale[0]) * 200.0, float(inst.scale[1]) * 200.0
                sx += (x - float(inst.center[0])) / w
                sy += (y - float(inst.center[1])) / h
                n += 1
        assert frequency[k] == pytest.approx(n / len(instances))
        expected = (sx / n, sy / n) if n else (0.0, 0.0)
        assert offsets[k] == pytest.approx(expected, abs=1e-9), k


def test_mean_pose_floor_of_one_instance_on_itself_is_exact(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    """Reference = evaluated = one person: the floor must put every labelled keypoint back
    where it was (AP 1); on the whole file it cannot (AP < 1): the path is live."""
    src = json.loads((fixtures_dir / "coco/test_coco.json").read_text())
    ann = next(a for a in src["annotations"] if a["num_keypoints"] == 15)
    one = dict(
        src,
        images=[i for i in src["images"] if i["id"] == ann["image_id"]],
        annotations=[ann],
    )
    path = tmp_path / "one.json"
    path.write_text(json.dumps(one))
    single = DatasetSpec("coco", str(path), str(fixtures_dir / "coco"))
    result = evaluate(None, single, mean_pose_from=single, log=None, progress=False)
    assert result.metrics["AP"] == pytest.approx(1.0, abs=1e-12)
    assert result.meta["mean_pose_reference"]["instances"] == 1
    assert result.meta["predictions_from"].startswith("mean pose")

    whole = spec(fixtures_dir, "coco")
    result = evaluate(None, whole, mean_pose_from=whole, log=None, progress=False)
    assert 0.0 <= result.metrics["AP"] < 0.5
    assert result.meta["mean_pose_reference"]["instances"] == 12  # the two unlabelled left out


def test_mean_pose_floor_rejects_a_model_and_a_foreign_skeleton(fixtures_dir: Path) -> None:
    from posebh.datasets import read_dataset
    from posebh.evaluate import mean_pose_predictions

    coco = spec(fixtures_dir, "coco")
    with pytest.raises(ValueError, match="at most one"):
        evaluate(None, coco, mean_pose_from=coco, gt_as_prediction=True, log=None)
    with pytest.raises(ValueError, match="replaces the model"):
        evaluate(torch.nn.Identity(), coco, mean_pose_from=coco, log=None)
    animals, _ = read_dataset(spec(fixtures_dir, "ap10k"))
    people, _ = read_dataset(spec(fixtures_dir, "aic"))
    with pytest.raises(ValueError, match="share a skeleton"):
        mean_pose_predictions(people, animals)


def test_cli_eval_mean_pose_floor(fixtures_dir: Path, tmp_path: Path) -> None:
    ann = str(fixtures_dir / "aic/test_aic.json")
    argv = [
        "eval", "--dataset", "aic", "--ann-file", ann,
        "--mean-pose-floor", ann, "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["meta"]["mean_pose_reference"]["annotation_file"] == ann
    assert 0.0 <= saved["metrics"]["AP"] < 1.0
    assert saved["meta"]["checkpoint"].startswith("none: mean pose")
