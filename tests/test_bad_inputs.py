"""Bad inputs: each is refused with an error naming the file, the record and the field (and
the fix), or — where the official reader accepts it — handled as the official reader does,
asserted by value.

Bad files are built in ``tmp_path`` from the real fixtures (``../shared/data``). Expected
values are written out here by hand (array rotations, palette look-ups, the COCOeval
precision/recall arithmetic), independently of the code under test.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from posebh.datasets import (
    DatasetError,
    DatasetSpec,
    read_coco,
    read_coco_detections,
    read_coco_wholebody,
    read_interhand2d,
    read_mpii,
)
from posebh.datasets.base import as_floats
from posebh.datasets.mpii import load_mpii_gt
from posebh.evaluate import (
    compute_metrics,
    default_protocol,
    evaluate,
    ground_truth_predictions,
)
from posebh.evaluation import oks_eval, pckh
from posebh.evaluation.mpii import MPII_MAT_JOINTS
from posebh.pipeline import TopDownDataset, load_image, per_dataset_pipeline
from posebh.transforms import top_down_affine


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))  # allow_nan: NaN / Infinity are written as such
    return path


def _results_from(anns: list[dict[str, Any]], score: float = 1.0) -> list[dict[str, Any]]:
    """Perfect COCO results for ``anns``: their keypoints, every keypoint scored 1."""
    out = []
    for ann in anns:
        k = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
        k[:, 2] = 1.0
        out.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "keypoints": k.ravel().tolist(),
                "score": score,
            }
        )
    return out


@pytest.fixture
def coco_gt(fixtures_dir: Path) -> dict[str, Any]:
    return _json(fixtures_dir / "coco" / "test_coco.json")


# --------------------------------------------------------------------------------------------
# 1. MPII mpii_gt_val.mat: wrong record count, inconsistent or truncated
# --------------------------------------------------------------------------------------------


def _save_mat(path: Path, n: int, n_pos: int | None = None) -> Path:
    scipy_io = pytest.importorskip("scipy.io")
    heads = np.zeros((2, 2, n))
    heads[1] = 10.0
    scipy_io.savemat(
        path,
        {
            "headboxes_src": heads,
            "pos_gt_src": np.zeros((16, 2, n if n_pos is None else n_pos)),
            "jnt_missing": np.zeros((16, n)),
            "dataset_joints": np.array([MPII_MAT_JOINTS], dtype=object),  # a 1×16 cell
        },
    )
    return path


def test_mpii_mat_record_count_differs_from_annotation_file(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    mpii = fixtures_dir / "mpii"
    mat = _save_mat(tmp_path / "mpii_gt_val.mat", 6)  # test_mpii.json has 5 records
    with pytest.raises(DatasetError) as e:
        read_mpii(mpii / "test_mpii.json", mpii, gt_mat=mat)
    msg = str(e.value)
    assert "mpii_gt_val.mat" in msg and "'headboxes_src'" in msg and "test_mpii.json" in msg
    assert "(2, 2, 5)" in msg and "Fix" in msg
    # At evaluation: 5 predictions against a 6-record .mat.
    with pytest.raises(ValueError) as e:
        pckh(np.zeros((5, 16, 2)), mat)
    msg = str(e.value)
    assert "mpii_gt_val.mat" in msg and "6 MPII instances" in msg and "5 predictions" in msg
    assert "Fix" in msg


def test_mpii_mat_variables_disagree_on_count(tmp_path: Path) -> None:
    mat = _save_mat(tmp_path / "mpii_gt_val.mat", 5, n_pos=4)
    with pytest.raises(DatasetError) as e:
        load_mpii_gt(mat)
    msg = str(e.value)
    assert "mpii_gt_val.mat" in msg and "'jnt_missing'" in msg and "N=4" in msg


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, -100, -1])
def test_mpii_mat_truncated(fixtures_dir: Path, tmp_path: Path, keep: float) -> None:
    data = _save_mat(tmp_path / "full.mat", 5).read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    mat = tmp_path / "mpii_gt_val.mat"
    mat.write_bytes(data[:cut])
    mpii = fixtures_dir / "mpii"
    for call in (
        lambda: read_mpii(mpii / "test_mpii.json", mpii, gt_mat=mat),
        lambda: pckh(np.zeros((5, 16, 2)), mat),
    ):
        with pytest.raises(DatasetError) as e:
            call()
        assert str(mat) in str(e.value) and "re-download" in str(e.value)


def test_mpii_scale_must_be_positive(fixtures_dir: Path, tmp_path: Path) -> None:
    mpii = fixtures_dir / "mpii"
    for value in (0.0, -1.5):
        raw = _json(mpii / "test_mpii.json")
        raw[3]["scale"] = value
        with pytest.raises(DatasetError) as e:
            read_mpii(_write(tmp_path / "m.json", raw), mpii)
        msg = str(e.value)
        assert "m.json" in msg and "record [3]" in msg and "'scale'" in msg and "Fix" in msg


# --------------------------------------------------------------------------------------------
# 2. Images: grey, palette, RGBA, 16-bit grey and EXIF orientation (the official reader is
#    OpenCV IMREAD_COLOR via mmcv 'color', which applies the EXIF orientation)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def real_rgb(fixtures_dir: Path) -> np.ndarray:
    """A 40×30 RGB patch of a real COCO image (decoded without any orientation handling)."""
    with Image.open(fixtures_dir / "coco" / "000000000785.jpg") as im:
        return np.asarray(im.convert("RGB"))[100:140, 300:330].copy()


def test_grey_image_gives_three_equal_channels(real_rgb: np.ndarray, tmp_path: Path) -> None:
    grey = real_rgb[..., 1].copy()
    for name in ("g.png", "g.bmp"):
        Image.fromarray(grey, "L").save(tmp_path / name)
        out = load_image(tmp_path / name)
        assert out.shape == (*grey.shape, 3) and out.dtype == np.uint8
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], grey)


def test_sixteen_bit_grey_keeps_the_high_byte(tmp_path: Path) -> None:
    values = (np.arange(12, dtype=np.uint16) * 5000 + 255).reshape(3, 4)
    Image.fromarray(values).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    expected = (values // 256).astype(np.uint8)  # OpenCV's 16 → 8 bit conversion
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], expected)


def test_palette_image_gives_its_palette_colours(real_rgb: np.ndarray, tmp_path: Path) -> None:
    pal = Image.fromarray(real_rgb).quantize(colors=8)
    pal.save(tmp_path / "p.png")
    index = np.asarray(pal)
    palette = np.array(pal.getpalette()[: 3 * 8], dtype=np.uint8).reshape(8, 3)
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), palette[index])


def test_rgba_image_drops_alpha_without_compositing(real_rgb: np.ndarray, tmp_path: Path) -> None:
    alpha = np.zeros(real_rgb.shape[:2], dtype=np.uint8)
    alpha[:, ::2] = 255
    Image.fromarray(np.dstack([real_rgb, alpha]), "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), real_rgb)


# EXIF orientation → the array the viewer shows, from the stored one (EXIF 2.3 tag 0x0112).
_ORIENTED = {
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    6: lambda a: np.rot90(a, -1),  # stored rotated 90° counter-clockwise: turn clockwise
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(_ORIENTED))
@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_exif_orientation_is_applied(
    real_rgb: np.ndarray, tmp_path: Path, orientation: int, ext: str
) -> None:
    im = Image.fromarray(real_rgb)
    exif = im.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.{ext}"
    extra = {"quality": 100, "subsampling": 0} if ext == "jpg" else {}
    im.save(path, exif=exif.tobytes(), **extra)
    with Image.open(path) as stored:  # the stored pixels (lossy for JPEG), not reoriented
        raw = np.asarray(stored.convert("RGB"))
    out = load_image(path)
    expected = _ORIENTED[orientation](raw)
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out, expected)
    if orientation in (6, 8):
        assert out.shape[:2] == real_rgb.shape[1::-1]


# --------------------------------------------------------------------------------------------
# 3. Empty files, empty sets, empty result lists
# --------------------------------------------------------------------------------------------


def test_zero_byte_files(fixtures_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    coco = fixtures_dir / "coco"
    for call in (
        lambda: read_coco(empty, coco),
        lambda: read_mpii(empty, fixtures_dir / "mpii"),
        lambda: read_coco_detections(empty, coco / "test_coco.json", coco),
    ):
        with pytest.raises(DatasetError, match=r"empty\.json is empty \(0 bytes\).*Fix"):
            call()
    with pytest.raises(ValueError, match=r"empty\.json: annotation file is empty.*Fix"):
        oks_eval(empty, [], sigmas="coco")
    with pytest.raises(ValueError, match=r"empty\.json: results file is empty.*Fix"):
        oks_eval(coco / "test_coco.json", empty, sigmas="coco")


def test_file_without_images_or_annotations_is_an_empty_set(
    coco_gt: dict[str, Any], fixtures_dir: Path, tmp_path: Path
) -> None:
    coco = fixtures_dir / "coco"
    results = _results_from(coco_gt["annotations"])
    for key in ("annotations", "images"):
        empty = {"annotations": []} if key == "annotations" else {"images": [], "annotations": []}
        ann_file = _write(tmp_path / f"no_{key}.json", dict(coco_gt, **empty))
        instances, summary = read_coco(ann_file, coco)
        assert instances == [] and summary.read == summary.kept == 0
        assert any(f"'{key}' list is empty" in note for note in summary.notes)
        # ... which cannot be evaluated: the error carries the summary and its note.
        with pytest.raises(ValueError) as e:
            evaluate(
                None, DatasetSpec("coco", str(ann_file), str(coco)), gt_as_prediction=True, log=None
            )
        msg = str(e.value)
        assert f"no_{key}.json" in msg and "no instances" in msg and "list is empty" in msg
        with pytest.raises(ValueError) as e:
            oks_eval(ann_file, results, sigmas="coco")
        msg = str(e.value)
        assert f"no_{key}.json" in msg and "'annotations' is empty" in msg and "Fix" in msg


def test_empty_result_list_is_refused(
    coco_gt: dict[str, Any], fixtures_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"results list is empty.*Fix"):
        oks_eval(coco_gt, [], sigmas="coco")
    res = _write(tmp_path / "res.json", [])
    with pytest.raises(ValueError, match=r"res\.json: the results list is empty"):
        oks_eval(fixtures_dir / "coco" / "test_coco.json", res, sigmas="coco")


def test_compute_metrics_needs_one_prediction_per_instance(fixtures_dir: Path) -> None:
    mpii = fixtures_dir / "mpii"
    instances, _ = read_mpii(mpii / "test_mpii.json", mpii)
    spec = DatasetSpec("mpii", str(mpii / "test_mpii.json"), str(mpii))
    coco = fixtures_dir / "coco"
    coco_instances, _ = read_coco(coco / "test_coco.json", coco)
    coco_spec = DatasetSpec("coco", str(coco / "test_coco.json"), str(coco))
    cases = [
        ([], instances, spec, "0 predictions for 5"),
        (ground_truth_predictions(instances)[:4], instances, spec, "4 predictions for 5"),
        ([], coco_instances, coco_spec, f"0 predictions for {len(coco_instances)}"),
    ]
    for predictions, insts, sp, counts in cases:
        with pytest.raises(ValueError) as e:
            compute_metrics(predictions, insts, sp, default_protocol(sp.name))
        assert Path(sp.ann_file).name in str(e.value) and counts in str(e.value)
        assert "Fix" in str(e.value)


# --------------------------------------------------------------------------------------------
# 4. Duplicate ids
# --------------------------------------------------------------------------------------------


def test_duplicate_ids_in_a_coco_file(
    coco_gt: dict[str, Any], fixtures_dir: Path, tmp_path: Path
) -> None:
    coco = fixtures_dir / "coco"
    dup_image = json.loads(json.dumps(coco_gt))
    dup_image["images"].append(dict(dup_image["images"][1]))
    dup_ann = json.loads(json.dumps(coco_gt))
    dup_ann["annotations"][5]["id"] = dup_ann["annotations"][2]["id"]
    cases = [
        (dup_image, "images[4]", "40083"),
        (dup_ann, "annotations[5]", str(coco_gt["annotations"][2]["id"])),
    ]
    for data, where, rid in cases:
        path = _write(tmp_path / "dup.json", data)
        with pytest.raises(DatasetError) as e:
            read_coco(path, coco)
        assert "dup.json" in str(e.value) and where in str(e.value) and rid in str(e.value)
        with pytest.raises(ValueError) as e:
            oks_eval(path, _results_from(coco_gt["annotations"]), sigmas="coco")
        msg = str(e.value)
        assert "dup.json" in msg and where in msg and f"repeats id {rid}" in msg and "Fix" in msg


def test_duplicate_image_id_in_interhand(fixtures_dir: Path, tmp_path: Path) -> None:
    d = fixtures_dir / "interhand2.6m"
    data = _json(d / "test_interhand2.6m_data.json")
    data["images"][2]["id"] = data["images"][0]["id"]
    with pytest.raises(DatasetError) as e:
        read_interhand2d(
            _write(tmp_path / "ih.json", data),
            d / "test_interhand2.6m_camera.json",
            d / "test_interhand2.6m_joint_3d.json",
            d,
        )
    assert "ih.json" in str(e.value) and "images[2]" in str(e.value)
    assert str(data["images"][0]["id"]) in str(e.value)


def test_duplicate_predictions_count_as_false_positives(coco_gt: dict[str, Any]) -> None:
    """Valid input, as officially: each record is a detection; a second copy of a matched
    detection finds no free GT and is a false positive (NMS removes such copies upstream)."""
    anns = [a for a in coco_gt["annotations"] if a["id"] in (198196, 230195)]
    gt = dict(coco_gt, images=[i for i in coco_gt["images"] if i["id"] == 40083], annotations=anns)

    [a], [b] = _results_from(anns[:1], 0.9), _results_from(anns[1:], 0.8)
    assert oks_eval(gt, [a, b], sigmas="coco")["AP"] == 1.0
    stats = oks_eval(gt, [a, dict(a), b], sigmas="coco")
    # Ranked A (TP), A' (FP), B (TP): recall 1/2, 1/2, 1; precision 1, 1/2, 2/3, interpolated
    # to 1 for the 51 recall thresholds 0..0.50 and 2/3 for the 50 from 0.51 to 1.
    assert stats["AP"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    assert stats["AR"] == 1.0 and stats["meta"]["num_results"] == 3


def test_duplicate_detection_boxes_are_kept(fixtures_dir: Path, tmp_path: Path) -> None:
    coco = fixtures_dir / "coco"
    det = {"image_id": 785, "category_id": 1, "bbox": [280.0, 44.0, 218.0, 346.0], "score": 0.9}
    dets = _write(tmp_path / "dets.json", [det, dict(det)])
    instances, summary = read_coco_detections(dets, coco / "test_coco.json", coco)
    assert summary.kept == 2 and instances[0].bbox == instances[1].bbox


# --------------------------------------------------------------------------------------------
# 5. NaN / inf in ground truth keypoints and boxes, and in detection boxes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "index", "value"),
    [("keypoints", 4, float("nan")), ("keypoints", 30, float("-inf")), ("bbox", 2, float("inf"))],
)
def test_non_finite_ground_truth(
    coco_gt: dict[str, Any],
    fixtures_dir: Path,
    tmp_path: Path,
    field: str,
    index: int,
    value: float,
) -> None:
    results = _results_from(coco_gt["annotations"])  # finite: only the GT is bad
    coco_gt["annotations"][6][field][index] = value
    path = _write(tmp_path / "nan.json", coco_gt)
    with pytest.raises(DatasetError) as e:
        read_coco(path, fixtures_dir / "coco")
    msg = str(e.value)
    ann_id = coco_gt["annotations"][6]["id"]
    assert "nan.json" in msg and f"annotations[6] (id={ann_id})" in msg
    assert f"field '{field}'" in msg and f"position {index}" in msg and "Fix" in msg
    if field == "keypoints":  # the evaluator refuses it too
        with pytest.raises(ValueError, match=r"nan\.json: annotation 6.*'keypoints'.*NaN.*Fix"):
            oks_eval(path, results, sigmas="coco")


def test_non_finite_wholebody_part(fixtures_dir: Path, tmp_path: Path) -> None:
    data = _json(fixtures_dir / "coco" / "test_coco_wholebody.json")
    data["annotations"][0]["face_kpts"][7] = float("nan")
    with pytest.raises(DatasetError, match=r"wb\.json: annotations\[0\].*'face_kpts'.*position 7"):
        read_coco_wholebody(_write(tmp_path / "wb.json", data), fixtures_dir / "coco")


def test_non_finite_mpii_and_interhand(fixtures_dir: Path, tmp_path: Path) -> None:
    mpii = fixtures_dir / "mpii"
    raw = _json(mpii / "test_mpii.json")
    raw[2]["joints"][5][1] = float("nan")
    with pytest.raises(DatasetError, match=r"m\.json: record \[2\].*'joints'.*position 11"):
        read_mpii(_write(tmp_path / "m.json", raw), mpii)
    d = fixtures_dir / "interhand2.6m"
    joints = _json(d / "test_interhand2.6m_joint_3d.json")
    capture = next(iter(joints))
    frame = next(iter(joints[capture]))
    joints[capture][frame]["world_coord"][3][0] = float("inf")
    with pytest.raises(DatasetError, match=r"j\.json: capture .* field 'world_coord'.*position 9"):
        read_interhand2d(
            d / "test_interhand2.6m_data.json",
            d / "test_interhand2.6m_camera.json",
            _write(tmp_path / "j.json", joints),
            d,
        )


def test_as_floats_accepts_huge_finite_values_and_locates_nan() -> None:
    arr = as_floats([1e308, 1e308, -1e308], 3, "keypoints", "annotations[0]", "x.json")
    assert arr.tolist() == [1e308, 1e308, -1e308]
    with pytest.raises(DatasetError, match=r"x\.json: annotations\[0\] field 'k'.*position 1"):
        as_floats([1.0, float("nan"), 2.0], 3, "k", "annotations[0]", "x.json")


@pytest.mark.parametrize(("field", "value"), [("bbox", float("nan")), ("score", float("nan"))])
def test_non_finite_detection(fixtures_dir: Path, tmp_path: Path, field: str, value: float) -> None:
    coco = fixtures_dir / "coco"
    dets = _json(coco / "test_coco_det_AP_H_56.json")
    if field == "bbox":
        dets[7]["bbox"][1] = value
    else:
        dets[7]["score"] = value
    with pytest.raises(DatasetError) as e:
        read_coco_detections(_write(tmp_path / "d.json", dets), coco / "test_coco.json", coco)
    msg = str(e.value)
    assert "d.json" in msg and "detection [7]" in msg and f"'{field}'" in msg and "Fix" in msg


# --------------------------------------------------------------------------------------------
# 6. Zero / negative box size reaching the crop
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wh", [(0.0, 0.0), (50.0, -1.0), (-30.0, 80.0), (-30.0, -80.0)])
def test_empty_detection_box(fixtures_dir: Path, tmp_path: Path, wh: tuple[float, float]) -> None:
    coco = fixtures_dir / "coco"
    dets = _json(coco / "test_coco_det_AP_H_56.json")
    dets[3]["bbox"][2:4] = list(wh)
    dets[3]["score"] = 0.95
    path = _write(tmp_path / "d.json", dets)
    with pytest.raises(DatasetError) as e:
        read_coco_detections(path, coco / "test_coco.json", coco)
    msg = str(e.value)
    assert "d.json" in msg and "detection [3]" in msg and "'bbox'" in msg and "<= 0" in msg
    assert "Fix" in msg
    # Below the score threshold the box never reaches a crop: dropped as before.
    dets[3]["score"] = 0.01
    _, summary = read_coco_detections(
        _write(tmp_path / "d.json", dets), coco / "test_coco.json", coco, det_bbox_thr=0.3
    )
    assert summary.kept == 33


@pytest.mark.parametrize("wh", [(0.0, 100.0), (60.0, 0.0)])
def test_detection_box_of_zero_width_or_height_is_kept(
    fixtures_dir: Path, tmp_path: Path, wh: tuple[float, float]
) -> None:
    # The official _xywh2cs widens a line-shaped box to the 3:4 aspect ratio and pads it by
    # 1.25; the crop is well defined, so the box is read as upstream reads it.
    coco = fixtures_dir / "coco"
    dets = _json(coco / "test_coco_det_AP_H_56.json")
    _, unchanged = read_coco_detections(
        _write(tmp_path / "d.json", dets), coco / "test_coco.json", coco
    )
    dets[3]["bbox"][2:4] = list(wh)
    dets[3]["score"] = 0.95
    instances, summary = read_coco_detections(
        _write(tmp_path / "d.json", dets), coco / "test_coco.json", coco
    )
    assert summary.kept == unchanged.kept  # nothing dropped
    w, h = wh
    w, h = (h * 0.75, h) if w < 0.75 * h else (w, w / 0.75)
    (inst,) = [i for i in instances if i.bbox[2:] == (float(wh[0]), float(wh[1]))]
    np.testing.assert_allclose(inst.scale, [w / 200 * 1.25, h / 200 * 1.25], rtol=1e-6)


@pytest.mark.parametrize(
    ("center", "scale"),
    [((100.0, 80.0), (0.0, 0.0)), ((100.0, 80.0), (-0.5, -0.6)), ((np.nan, 80.0), (0.5, 0.6))],
)
@pytest.mark.parametrize("use_udp", [True, False])
def test_crop_refuses_empty_or_nan_box(
    center: tuple[float, float], scale: tuple[float, float], use_udp: bool
) -> None:
    image = np.zeros((120, 160, 3), np.uint8)
    joints = np.zeros((17, 3), np.float32)
    with pytest.raises(ValueError, match=r"crop box center .* scale .*Fix"):
        top_down_affine(
            image,
            joints,
            np.ones_like(joints),
            np.array(center, np.float32),
            np.array(scale, np.float32),
            0.0,
            use_udp=use_udp,
        )


def test_dataset_item_with_empty_box(fixtures_dir: Path) -> None:
    coco = fixtures_dir / "coco"
    instances, _ = read_coco(coco / "test_coco.json", coco)
    inst = dataclasses.replace(instances[0], scale=np.zeros(2, np.float32))
    ds = TopDownDataset([inst], "coco", per_dataset_pipeline("coco", train=False))
    with pytest.raises(ValueError, match=r"crop box .*scale \[0\.0, 0\.0\]"):
        ds[0]
