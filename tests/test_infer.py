"""``posebh infer``: own images + boxes → the keypoints ``posebh eval`` gives the same boxes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posebh.checkpoint import to_official
from posebh.cli import main
from posebh.models import build_model

TINY = dict(
    embed_dim=32, depth=1, num_heads=2, part_features=8, head_filters=16,
    proto_channels=8, proto_dim=8, drop_path_rate=0.0,
)  # fmt: skip
COMMON = ["--dataset", "coco", "--num-heads", "2", "--workers", "0", "--no-progress",
          "--batch-size", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random multi-dataset model saved in the official naming, as releases are."""
    torch.manual_seed(0)
    model = build_model("posebh_vit_small", **TINY).eval()
    path = tmp_path_factory.mktemp("ckpt") / "tiny_official.pth"
    torch.save({"state_dict": to_official(model), "meta": {}}, path)
    return path


@pytest.fixture(scope="module")
def coco(fixtures_dir: Path) -> Path:
    return fixtures_dir / "coco"


@pytest.fixture(scope="module")
def gt_boxes(coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's GT boxes as a detection-results file (score 1)."""
    anns = json.loads((coco / "test_coco.json").read_text())["annotations"]
    dets = [
        {"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 1.0} for a in anns
    ]
    path = tmp_path_factory.mktemp("dets") / "gt_dets.json"
    path.write_text(json.dumps(dets))
    return path


@pytest.fixture(scope="module")
def eval_records(coco: Path, checkpoint: Path, gt_boxes: Path, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("eval")
    argv = ["eval", "--ann-file", str(coco / "test_coco.json"), "--img-prefix", str(coco),
            "--det-file", str(gt_boxes), "--checkpoint", str(checkpoint), *COMMON,
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    return json.loads((out / "predictions.json").read_text())


def _infer(images: str | Path, checkpoint: Path, out: Path, *extra: str) -> list[dict]:
    argv = ["infer", str(images), "--checkpoint", str(checkpoint), *COMMON, "--out", str(out)]
    assert main([*argv, *extra]) == 0
    return json.loads((out / "keypoints.json").read_text())


def _key(record: dict) -> tuple:
    return record["image_id"], tuple(record["keypoints"]), record["score"]


def test_infer_gives_eval_keypoints_bit_for_bit(
    coco: Path, checkpoint: Path, gt_boxes: Path, eval_records: list[dict], tmp_path: Path
) -> None:
    """Same boxes, checkpoint, protocol and batches as ``posebh eval --det-file``: the same
    floats, compared exactly (same instances in the same order through the same predict on
    the same CPU, so nothing may differ, not even the last bit).

    eval's predictions.json is after rescoring and OKS-NMS; ``infer --nms`` applies the same
    post-processing, so its records are eval's records (as a multiset: the order within the
    file follows the grouping). Plain ``infer`` keeps every box: eval's records are a subset
    of its keypoints, and it has one record per detection."""
    with_nms = _infer(coco, checkpoint, tmp_path / "nms", "--boxes", str(gt_boxes), "--nms")
    assert sorted(map(_key, with_nms)) == sorted(map(_key, eval_records))
    every = _infer(coco, checkpoint, tmp_path / "all", "--boxes", str(gt_boxes))
    dets = json.loads(gt_boxes.read_text())
    assert len(every) == len(dets) and len(eval_records) <= len(every)
    per_box = {(r["image_id"], tuple(r["keypoints"])) for r in every}
    assert {(r["image_id"], tuple(r["keypoints"])) for r in eval_records} <= per_box
    # Each record carries its box and the file it came from.
    assert sorted(tuple(r["bbox"]) for r in every) == sorted(tuple(d["bbox"]) for d in dets)
    first = every[0]
    assert first["file_name"] == f"{first['image_id']:012d}.jpg" and first["category_id"] == 1
    assert len(first["keypoints"]) == 17 * 3


def test_images_json_maps_ids_to_file_names(
    coco: Path, checkpoint: Path, gt_boxes: Path, tmp_path: Path
) -> None:
    """Renamed files are matched through --images-json (id → file_name), as the stem rule
    cannot; the keypoints stay the same."""
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    images = json.loads((coco / "test_coco.json").read_text())["images"]
    for im in images:
        shutil.copy(coco / im["file_name"], renamed / f"photo_{im['id']}.jpg")
    index = tmp_path / "images.json"
    index.write_text(json.dumps({"images": [
        {"id": im["id"], "file_name": f"photo_{im['id']}.jpg"} for im in images
    ]}))  # fmt: skip
    got = _infer(renamed, checkpoint, tmp_path / "a", "--boxes", str(gt_boxes),
                 "--images-json", str(index))  # fmt: skip
    ref = _infer(coco, checkpoint, tmp_path / "b", "--boxes", str(gt_boxes))
    assert sorted(map(_key, got)) == sorted(map(_key, ref))
    assert all(r["file_name"] == f"photo_{r['image_id']}.jpg" for r in got)


def test_unmatched_box_image_is_a_clear_error(
    coco: Path, checkpoint: Path, gt_boxes: Path, tmp_path: Path, capsys
) -> None:
    one = coco / "000000000785.jpg"
    argv = ["infer", str(one), "--checkpoint", str(checkpoint), *COMMON,
            "--boxes", str(gt_boxes), "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "gt_dets.json: detection [1] field 'image_id' = 40083" in err
    assert "matches none of the 1 input images" in err and "--images-json" in err
    assert not (tmp_path / "keypoints.json").exists()
    # With --images-json the other listed images' boxes are skipped, not an error; an id the
    # list lacks still is one.
    index = coco / "test_coco.json"
    got = _infer(one, checkpoint, tmp_path / "one", "--boxes", str(gt_boxes),
                 "--images-json", str(index))  # fmt: skip
    assert [r["image_id"] for r in got] == [785]
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps([{"image_id": 5, "category_id": 1, "bbox": [0, 0, 9, 9],
                                  "score": 1.0}]))  # fmt: skip
    argv = [*argv[:-4], "--boxes", str(stray), "--images-json", str(index), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "stray.json: detection [0] field 'image_id' = 5 matches none" in capsys.readouterr().err


def test_whole_image_boxes_on_folder_glob_grey_and_16_bit_png(
    coco: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """Without --boxes each image is one box; a folder, a glob, 8-bit grey and 16-bit grey
    PNGs (read as the evaluation reads them) all give finite keypoints, and --draw writes one
    overlay per image."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 48), dtype=np.uint8), mode="L").save(
        folder / "grey.png"
    )
    deep = rng.integers(0, 65536, (40, 80), dtype=np.uint16)
    Image.fromarray(deep).save(folder / "deep16.png")
    with Image.open(folder / "deep16.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit PNG
    shutil.copy(coco / "000000000785.jpg", folder / "000000000785.jpg")
    recs = _infer(folder, checkpoint, tmp_path / "folder", "--draw")
    assert sorted(r["file_name"] for r in recs) == ["000000000785.jpg", "deep16.png", "grey.png"]
    for r in recs:
        assert np.isfinite(r["keypoints"]).all() and len(r["keypoints"]) == 51
    boxes = {r["file_name"]: r["bbox"] for r in recs}
    assert boxes["deep16.png"] == [0.0, 0.0, 80.0, 40.0]
    assert boxes["grey.png"] == [0.0, 0.0, 48.0, 64.0]
    overlays = sorted(p.name for p in (tmp_path / "folder" / "overlays").iterdir())
    assert overlays == ["000000000785.png", "deep16.png", "grey.png"]
    pngs = _infer(str(folder / "*.png"), checkpoint, tmp_path / "glob")
    assert sorted(r["file_name"] for r in pngs) == ["deep16.png", "grey.png"]
    # Not compared with the folder run's values: other batches (2 boxes, not 3) may change
    # the last bits of the matmuls, and a random model's flat heatmaps can then move an argmax.
    assert all(np.isfinite(r["keypoints"]).all() for r in pngs)


def test_exif_rotated_jpeg_gets_the_rotated_whole_image_box(
    checkpoint: Path, tmp_path: Path
) -> None:
    """An EXIF orientation 6 (90° rotation) JPEG stored 80 wide × 40 high is read upright,
    40 × 80, as the evaluation reads it: the whole-image box is the upright image's."""
    exif = Image.Exif()
    exif[0x0112] = 6
    pixels = np.random.default_rng(1).integers(0, 256, (40, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif)
    (rec,) = _infer(tmp_path / "rotated.jpg", checkpoint, tmp_path / "out")
    assert rec["bbox"] == [0.0, 0.0, 40.0, 80.0] and rec["image_id"] == "rotated"
    assert np.isfinite(rec["keypoints"]).all()
