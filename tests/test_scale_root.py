"""The generated COCO-size data root (``posebh.synth.scale_root``, at its ``small`` size), the
``--max-instances`` cap of evaluation and of the reproduce harness, random-weight release
files in the official format, and real mode end to end on the root."""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from posebh.checkpoint import infer_arch, load_model, read_checkpoint
from posebh.cli import main as cli_main
from posebh.datasets import default_spec, read_dataset
from posebh.evaluate import compute_metrics, default_protocol, evaluate
from posebh.reproduce.tables import load_table
from posebh.synth.scale_root import (
    DET_FILE,
    MANIFEST,
    SIZES,
    TRAIN_GT,
    VAL_GT,
    VAL_IMAGES,
    WB_VAL_GT,
    write_scale_root,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("scale_root")
    write_scale_root(path, "small", seed=0, progress=False)
    return path


def _load(path: Path):
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------
# The root
# ------------------------------------------------------------------------------------------


def test_counts_and_layout(root: Path) -> None:
    s = SIZES["small"]
    gt = _load(root / VAL_GT)
    assert len(gt["images"]) == s.val_images
    assert all((img["width"], img["height"]) == (640, 480) for img in gt["images"])
    labelled = [a for a in gt["annotations"] if any(a["keypoints"][2::3])]
    assert len(labelled) == s.val_labelled
    assert len({a["image_id"] for a in labelled}) == s.val_labelled_images
    assert len(gt["annotations"]) == s.val_labelled + s.val_unlabelled
    assert sum(a["iscrowd"] for a in gt["annotations"]) == s.val_crowd
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        assert min(x, y) >= 0 and x + w <= 640 and y + h <= 480 and min(w, h) > 0
        v = a["keypoints"][2::3]
        assert set(v) <= {0, 1, 2} and len(v) == 17
        assert a["num_keypoints"] == sum(1 for t in v if t > 0)
        assert a["category_id"] == 1 and a["area"] > 0 and a["segmentation"]
    # The val images exist, decode at 640×480, one per GT image.
    files = sorted((root / VAL_IMAGES).glob("*.jpg"))
    assert [f.name for f in files] == sorted(img["file_name"] for img in gt["images"])
    from PIL import Image

    with Image.open(files[0]) as img:
        assert (img.format, img.size, img.mode) == ("JPEG", (640, 480), "RGB")
    train = _load(root / TRAIN_GT)
    assert len(train["annotations"]) == s.train_persons
    assert len(train["images"]) == s.train_images
    assert not (root / "coco" / "train2017").exists()  # train images are not written


def test_detections_like_the_official_file(root: Path) -> None:
    dets = _load(root / DET_FILE)
    gt = _load(root / VAL_GT)
    assert len(dets) == SIZES["small"].detections
    ids = [d["image_id"] for d in dets]
    assert set(ids) <= {img["id"] for img in gt["images"]}
    assert ids == sorted(ids)  # image by image
    for i in range(1, len(dets)):
        if ids[i] == ids[i - 1]:
            assert dets[i]["score"] <= dets[i - 1]["score"]
    assert all(0 < d["score"] <= 1 and d["category_id"] == 1 for d in dets)
    assert all(d["bbox"][2] > 0 and d["bbox"][3] > 0 for d in dets)
    # ~21 per image, and the first image holds labelled people.
    per_image = Counter(ids)
    assert min(per_image.values()) >= 1
    first = gt["images"][0]["id"]
    assert ids[0] == first
    assert any(a["image_id"] == first and a["num_keypoints"] for a in gt["annotations"])


def test_every_table1_row_reads(root: Path) -> None:
    """Every Table 1 row's spec reads from the root (COCO at its size, the others linked
    from SynthPose), and pycocotools loads the COCO files."""
    from pycocotools.coco import COCO

    for row in load_table("table1").rows:
        spec = default_spec(row.dataset, row.split, root, use_gt_bbox=row.use_gt_bbox)
        instances, _ = read_dataset(spec)
        assert instances, row.label
    for rel in (VAL_GT, TRAIN_GT, WB_VAL_GT):
        COCO(str(root / rel))


def test_cached_and_regenerated(root: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (root / VAL_GT, root / DET_FILE)}
    manifest = write_scale_root(root, "small", seed=0, progress=False)
    assert manifest == _load(root / MANIFEST)
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten
    assert manifest["counts"]["detections"] == SIZES["small"].detections
    # A damaged file is noticed and the root rewritten, byte for byte the same.
    original = (root / DET_FILE).read_bytes()
    (root / DET_FILE).write_bytes(original[:100])
    write_scale_root(root, "small", seed=0, progress=False)
    assert (root / DET_FILE).read_bytes() == original


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="size must be one of"):
        write_scale_root(Path("unused"), "huge")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# --max-instances in evaluate()
# ------------------------------------------------------------------------------------------


def test_cap_scores_the_kept_images_only(root: Path) -> None:
    """GT as predictions, capped at the instances of the first images: AP 1 over those
    images (it would be far below 1 if the rest of the split's GT were still scored)."""
    spec = default_spec("coco", "val", root, use_gt_bbox=True)
    instances, _ = read_dataset(spec)
    per_image = Counter(i.image_id for i in instances)
    first_two = [img for img in dict.fromkeys(i.image_id for i in instances)][:2]
    n = sum(per_image[i] for i in first_two)
    result = evaluate(None, spec, gt_as_prediction=True, max_instances=n, log=None)
    assert result.metrics["AP"] == 1.0
    assert result.meta["instances"] == n
    assert result.meta["instances_total"] == len(instances)
    assert result.meta["max_instances"] == n
    assert f"instances evaluated {n} of {len(instances)}" in result.meta["subset"]
    assert result.metrics["meta"]["num_gt"] == sum(
        1 for a in _load(root / VAL_GT)["annotations"] if a["image_id"] in first_two
    )
    # The same predictions against the whole split's GT: the cap's restriction matters.
    from posebh.evaluate import ground_truth_predictions

    preds = ground_truth_predictions(instances[:n])
    whole, _ = compute_metrics(preds, instances[:n], spec, default_protocol("coco"))
    assert whole["AP"] < 0.5
    # No cap: the meta says so.
    full = evaluate(None, spec, gt_as_prediction=True, log=None)
    assert full.meta["subset"] is None and full.meta["max_instances"] is None


def test_cap_mid_image_counts_the_missed_people(root: Path) -> None:
    """A cap that cuts an image leaves its other GT people unmatched: recall is the kept
    share of the kept images' labelled people."""
    spec = default_spec("coco", "val", root, use_gt_bbox=True)
    instances, _ = read_dataset(spec)
    first = instances[0].image_id
    in_first = sum(1 for i in instances if i.image_id == first)
    assert in_first >= 2, "the first image needs two people for this test"
    result = evaluate(None, spec, gt_as_prediction=True, max_instances=1, log=None)
    assert result.metrics["AR"] == pytest.approx(1 / in_first)


def test_cap_mpii_and_floor(root: Path) -> None:
    result = evaluate(
        None, "mpii", data_root=root, gt_as_prediction=True, max_instances=3, log=None
    )
    assert result.metrics["meta"]["num_instances"] == 3
    assert result.metrics["PCKh"] == pytest.approx(100.0)
    floor = evaluate(
        None,
        default_spec("coco", "val", root),
        mean_pose_from=default_spec("coco", "train", root),
        max_instances=5,
        log=None,
    )
    assert floor.meta["instances"] == 5
    assert floor.meta["instances_total"] == SIZES["small"].detections
    with pytest.raises(ValueError, match="max_instances"):
        evaluate(None, "mpii", data_root=root, gt_as_prediction=True, max_instances=0, log=None)


def test_cli_rejects_a_bad_cap(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["reproduce", "table1", "--data-root", "d", "--weights", "w", "--max-instances", "0"]
    rc = cli_main(argv)
    assert rc == 2
    assert "--max-instances must be ≥ 1" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# Random-weight releases and real mode on the root (ViT-B on the CPU: slow)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from posebh.reproduce.random_weights import write_random_releases

    path = tmp_path_factory.mktemp("weights")
    write_random_releases(path, ("vitpose+_base.pth", "posebh_base.pth"), seed=0)
    return path


def _pattern(keys) -> set[str]:
    """Key names with the block index folded (depth is the only difference from ViT-B)."""
    return {re.sub(r"^backbone\.blocks\.\d+\.", "backbone.blocks.N.", k) for k in keys}


@pytest.mark.slow
def test_random_releases_are_official_files(weights: Path, golden_dir: Path) -> None:
    """The key names are the official release's (those of the golden suite's model, written
    by the official code, which has every tensor of a release but the cluster bank), the
    shapes those of ViT-B with six experts and heads, and load_model builds them."""
    golden = torch.load(golden_dir / "suite" / "backbone_heads.pt", weights_only=True)
    official = _pattern(golden["state_dict"])
    cluster = "proto_head.cluster_prototype.prototypes"
    for file, proto in (("vitpose+_base.pth", False), ("posebh_base.pth", True)):
        state = read_checkpoint(weights / file)
        assert set(state) == {"state_dict", "meta"}
        keys = _pattern(state["state_dict"])
        expected = official if proto else {k for k in official if not k.startswith("proto_head.")}
        assert keys - {cluster} == expected
        assert (cluster in keys) == proto
        arch = infer_arch(state)
        assert (arch["embed_dim"], arch["depth"], arch["num_heads"]) == (768, 12, 12)
        assert (arch["num_experts"], arch["part_features"]) == (6, 192)
        assert arch["num_keypoints"] == (17, 14, 16, 17, 17, 133)
        assert arch["proto_head"] == proto
        if proto:
            assert (arch["num_prototypes"], arch["num_clusters"]) == (3, 96)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing dropped, nothing missing
            model = load_model(state)
        assert model.config.num_experts == 6
        sd = state["state_dict"]
        block = "backbone.blocks.0.mlp.experts.0.weight"
        assert torch.equal(model.backbone.state_dict()[block[len("backbone.") :]], sd[block])
    # Seeded: the same seed gives the same tensors, another seed others.
    from posebh.reproduce.random_weights import random_release

    a = read_checkpoint(weights / "vitpose+_base.pth")["state_dict"]
    b = random_release("vitpose+_base.pth", seed=1)["state_dict"]
    assert not torch.equal(a["backbone.pos_embed"], b["backbone.pos_embed"])
    c = random_release("vitpose+_base.pth", seed=0)["state_dict"]
    assert all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
def test_real_mode_end_to_end(root: Path, weights: Path, tmp_path: Path) -> None:
    """``posebh reproduce table1 --data-root ROOT --weights W --max-instances 2`` on the real
    path: every row of the PoseBH-B column evaluated, the cap in every report."""
    out = tmp_path / "run"
    rc = cli_main(
        [
            "reproduce", "table1", "--data-root", str(root), "--weights", str(weights),
            "--models", "posebh_b", "--max-instances", "2", "--no-plots", "--no-progress",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 1  # random weights: every cell is outside its tolerance
    report = _load(out / "results.json")
    assert report["max_instances"] == 2 and report["comparable_with_published"] is False
    assert report["checkpoints"]["posebh_b"]["multi_dataset"] is True
    cells = report["cells"]
    assert {c["row"] for c in cells} == {r.label for r in load_table("table1").rows}
    for c in cells:
        assert c["status"] == "fail", c
        assert c["instances"] == 2 and c["instances_total"] >= 2, c
        assert f"instances evaluated 2 of {c['instances_total']}" in c["note"]
        meta = _load(Path(c["eval_dir"]) / "metrics.json")["meta"]
        assert meta["max_instances"] == 2 and meta["instances"] == 2
        assert len(_load(Path(c["eval_dir"]) / "predictions.json")) <= 2
    coco = next(c for c in cells if c["dataset"] == "coco")
    assert coco["instances_total"] == SIZES["small"].detections
    scored = [f for f in report["floors"] if f["value"] is not None]
    assert {f["row"] for f in scored} == {c["row"] for c in cells}
    assert all(np.isfinite(f["value"]) and "instances evaluated" in f["source"] for f in scored)
    md = (out / "results.md").read_text()
    assert "CAPPED (--max-instances 2)" in md
