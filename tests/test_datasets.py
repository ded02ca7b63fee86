"""Dataset readers on the real mmpose fixtures (``../shared/data/mmpose_testdata``).

Expected values are computed here from the raw JSON with the official 0.x rules written out
by hand (PROTOCOL.md §3-§5), independently of ``posebh.datasets``.
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from posebh.datasets import (
    DATASET_NAMES,
    DatasetError,
    DatasetSpec,
    box_to_center_scale,
    check_image,
    clean_bbox,
    default_spec,
    read_aic,
    read_ap10k,
    read_coco,
    read_coco_detections,
    read_coco_keypoints,
    read_coco_wholebody,
    read_dataset,
    read_interhand2d,
    read_mpii,
    read_ochuman,
    read_pw3d,
)
from posebh.skeletons import get_skeleton

AR = 192 / 256


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _cs_by_hand(x: float, y: float, w: float, h: float, pad: float) -> tuple[list, list]:
    """The official _xywh2cs, written out: centre, aspect fix to 192/256, /200, × padding."""
    cx, cy = x + w / 2, y + h / 2
    if w > AR * h:
        h = w / AR
    else:
        w = h * AR
    return [cx, cy], [w / 200 * pad, h / 200 * pad]


# --------------------------------------------------------------------------------------------
# box → centre/scale and cleaning
# --------------------------------------------------------------------------------------------


def test_box_to_center_scale_tall_and_wide_boxes() -> None:
    # Tall box 30×100: w < 0.75·100 = 75, so w becomes 75.
    c, s = box_to_center_scale((10, 20, 30, 100))
    np.testing.assert_allclose(c, [25, 70])
    np.testing.assert_allclose(s, [75 / 200 * 1.25, 100 / 200 * 1.25])  # 0.46875, 0.625
    assert c.dtype == np.float32 and s.dtype == np.float32
    # Wide box 300×100: w > 75, so h becomes 300 / 0.75 = 400.
    c, s = box_to_center_scale((0, 0, 300, 100), padding=1.5)
    np.testing.assert_allclose(c, [150, 50])
    np.testing.assert_allclose(s, [300 / 200 * 1.5, 400 / 200 * 1.5])  # 2.25, 3.0
    # Already at the aspect ratio: unchanged apart from /200 × padding.
    _, s = box_to_center_scale((0, 0, 75, 100))
    np.testing.assert_allclose(s, [0.46875, 0.625])


def test_clean_bbox_official_rule() -> None:
    # 40×100 image, box sticking out left: x1 = 0, x2 = min(39, 0 + 49) = 39; y2 = 10 + 19.
    assert clean_bbox((-5, 10, 50, 20), 40, 100) == (0.0, 10.0, 39.0, 19.0)
    # Width 1 → x2 = x1 + max(0, 0) = x1: degenerate.
    assert clean_bbox((5, 5, 1, 20), 40, 100) is None
    # Starts right of the image: x1 = 50 > x2 = 39.
    assert clean_bbox((50, 5, 10, 20), 40, 100) is None


# --------------------------------------------------------------------------------------------
# COCO and detections
# --------------------------------------------------------------------------------------------


def test_coco_counts_and_values(fixtures_dir: Path) -> None:
    ann_file = fixtures_dir / "coco" / "test_coco.json"
    instances, summary = read_coco(ann_file, fixtures_dir / "coco")
    raw = _json(ann_file)
    assert len(raw["annotations"]) == 14
    assert len(instances) == 12
    assert (summary.read, summary.kept, summary.num_skipped) == (14, 12, 2)
    (reason,) = summary.skipped
    assert "num_keypoints" in reason
    assert {a.ann_id for a in instances} == {
        a["id"] for a in raw["annotations"] if a["num_keypoints"] > 0
    }
    text = str(summary)
    assert "14 annotations" in text and "12 kept" in text and "2 skipped" in text

    # Annotation 442619 on the 640×425 image 785, by hand.
    inst = next(a for a in instances if a.ann_id == 442619)
    ann = next(a for a in raw["annotations"] if a["id"] == 442619)
    x, y, w, h = ann["bbox"]  # 280.79, 44.73, 218.7, 346.68
    x2 = min(640 - 1, x + (w - 1))
    y2 = min(425 - 1, y + (h - 1))
    cw, ch = x2 - x, y2 - y  # 217.7, 345.68
    assert inst.bbox == pytest.approx((x, y, cw, ch))
    # Centre (280.79 + 108.85, 44.73 + 172.84); tall box → w = 0.75 · 345.68 = 259.26.
    np.testing.assert_allclose(inst.center, [389.64, 217.57], rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        inst.scale, [0.75 * 345.68 / 200 * 1.25, 345.68 / 200 * 1.25], rtol=1e-6
    )
    kp = np.array(ann["keypoints"], dtype=np.float64).reshape(17, 3)
    np.testing.assert_allclose(inst.keypoints[:, :2], kp[:, :2], atol=1e-4)
    np.testing.assert_array_equal(inst.keypoints[:, 2], np.minimum(1, kp[:, 2]))
    # Absolute, and the same file (the data root may sit behind a symlink).
    assert Path(inst.image_file).is_absolute()
    assert Path(inst.image_file).samefile(fixtures_dir / "coco" / "000000000785.jpg")
    assert inst.area == pytest.approx(ann["area"]) and inst.bbox_score == 1.0
    assert inst.keypoints.shape == (get_skeleton("coco").num_keypoints, 3)


def test_coco_detections_threshold(fixtures_dir: Path) -> None:
    det_file = fixtures_dir / "coco" / "test_coco_det_AP_H_56.json"
    ann_file = fixtures_dir / "coco" / "test_coco.json"
    dets = _json(det_file)
    assert len(dets) == 118
    instances, summary = read_coco_detections(
        det_file, ann_file, fixtures_dir / "coco", det_bbox_thr=0.3
    )
    assert (summary.read, summary.kept) == (118, 33)
    assert summary.skipped == {"score < det_bbox_thr": 85}
    assert all(inst.bbox_score >= 0.3 and inst.ann_id is None for inst in instances)
    assert all(not inst.keypoints.any() for inst in instances)
    # Kept in file order, boxes raw (not cleaned).
    kept = [d for d in dets if d["score"] >= 0.3]
    assert [inst.bbox for inst in instances] == [tuple(d["bbox"]) for d in kept]
    # First box by hand.
    c, s = _cs_by_hand(*kept[0]["bbox"], pad=1.25)
    np.testing.assert_allclose(instances[0].center, c, rtol=1e-6)
    np.testing.assert_allclose(instances[0].scale, s, rtol=1e-6)
    all_boxes, summary0 = read_coco_detections(det_file, ann_file, fixtures_dir / "coco")
    assert len(all_boxes) == 118 and summary0.num_skipped == 0


def test_coco_detections_person_only(fixtures_dir: Path, tmp_path: Path) -> None:
    box = {"image_id": 785, "bbox": [1.0, 2.0, 30.0, 40.0], "score": 0.9}
    det_file = _write(tmp_path / "d.json", [{**box, "category_id": 2}, {**box, "category_id": 1}])
    instances, summary = read_coco_detections(
        det_file, fixtures_dir / "coco" / "test_coco.json", fixtures_dir / "coco"
    )
    assert len(instances) == 1 and summary.skipped == {"category_id != 1": 1}


def test_coco_wholebody(fixtures_dir: Path) -> None:
    ann_file = fixtures_dir / "coco" / "test_coco_wholebody.json"
    instances, summary = read_coco_wholebody(ann_file, fixtures_dir / "coco")
    assert (summary.read, summary.kept, summary.num_skipped) == (14, 12, 2)
    raw = {a["id"]: a for a in _json(ann_file)["annotations"]}
    for inst in instances:
        ann = raw[inst.ann_id]
        assert inst.keypoints.shape == (133, 3)
        # Order body 17 | foot 6 | face 68 | left hand 21 | right hand 21, visibility v > 0.
        concat = np.array(
            ann["keypoints"]
            + ann["foot_kpts"]
            + ann["face_kpts"]
            + ann["lefthand_kpts"]
            + ann["righthand_kpts"],
            dtype=np.float64,
        ).reshape(133, 3)
        np.testing.assert_allclose(inst.keypoints[:, :2], concat[:, :2], atol=1e-3)
        np.testing.assert_array_equal(inst.keypoints[:, 2], concat[:, 2] > 0)
        for part in ("foot", "face", "lefthand", "righthand"):
            assert inst.extras["part_valid"][part] == bool(ann[f"{part}_valid"])
    # Same boxes, hence same centre/scale, as the COCO file of the same annotations.
    coco, _ = read_coco(fixtures_dir / "coco" / "test_coco.json", fixtures_dir / "coco")
    for a, b in zip(coco, instances, strict=True):
        assert a.ann_id == b.ann_id
        np.testing.assert_array_equal(a.center, b.center)
        np.testing.assert_array_equal(a.scale, b.scale)


def test_coco_wholebody_skip_rule_tests_body_values_only(tmp_path: Path) -> None:
    # The official WholeBody loader skips on max(body keypoints) == 0 only, not on
    # num_keypoints == 0 (which COCO's loader also tests).
    (tmp_path / "a.jpg").write_bytes(b"")
    parts = {"foot_kpts": 6, "face_kpts": 68, "lefthand_kpts": 21, "righthand_kpts": 21}
    ann = {
        "id": 1,
        "image_id": 1,
        "bbox": [10, 10, 50, 50],
        "num_keypoints": 0,
        "keypoints": [20.0, 20.0, 0.0] + [0.0] * 48,
        "iscrowd": 0,
        "category_id": 1,
    }
    ann.update({name: [0.0] * (3 * n) for name, n in parts.items()})
    hands_only = {**ann, "id": 2, "keypoints": [0.0] * 51, "lefthand_kpts": [5.0, 5.0, 2.0] * 21}
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
        "annotations": [ann, hands_only],
    }
    instances, summary = read_coco_wholebody(_write(tmp_path / "wb.json", data), tmp_path)
    assert [i.ann_id for i in instances] == [1]
    assert summary.skipped == {"no labelled body keypoints (max(keypoints) == 0)": 1}


# --------------------------------------------------------------------------------------------
# AIC, AP-10K, OCHuman, 3DPW
# --------------------------------------------------------------------------------------------


def test_aic_all_nine_kept(fixtures_dir: Path) -> None:
    ann_file = fixtures_dir / "aic" / "test_aic.json"
    instances, summary = read_aic(ann_file, fixtures_dir / "aic")
    raw = _json(ann_file)
    # Why all 9 survive: no iscrowd field (treated as 0), no area field (area rule not
    # applied), every annotation has num_keypoints > 0, and every box stays non-empty.
    assert all("iscrowd" not in a and "area" not in a for a in raw["annotations"])
    assert all(a["num_keypoints"] > 0 for a in raw["annotations"])
    assert (summary.read, summary.kept, summary.num_skipped) == (9, 9, 0)
    assert all(inst.keypoints.shape == (14, 3) for inst in instances)
    # Without 'area', the instance area is the cleaned box's w·h: bbox [279, 55, 213, 544]
    # → (212, 543).
    first = next(i for i in instances if i.ann_id == 4)
    assert first.bbox == (279.0, 55.0, 212.0, 543.0)
    assert first.area == 212.0 * 543.0
    np.testing.assert_allclose(first.center, [279 + 106, 55 + 271.5])
    np.testing.assert_allclose(first.scale, [0.75 * 543 / 200 * 1.25, 543 / 200 * 1.25])


def test_ap10k_category_per_instance(fixtures_dir: Path) -> None:
    instances, summary = read_ap10k(
        fixtures_dir / "ap10k" / "test_ap10k.json", fixtures_dir / "ap10k"
    )
    assert summary.kept == 2
    assert [i.category_id for i in instances] == [26, 1]  # images in file order


def test_ochuman(fixtures_dir: Path) -> None:
    instances, summary = read_ochuman(
        fixtures_dir / "ochuman" / "test_ochuman.json", fixtures_dir / "ochuman"
    )
    assert (summary.read, summary.kept) == (5, 5)
    # Annotation 4: box [0, 39, 601, 861] on a 602×900 image: x2 = min(601, 600) = 600,
    # y2 = min(899, 39 + 860) = 899 → (0, 39, 600, 860).
    inst = next(i for i in instances if i.ann_id == 4)
    assert inst.bbox == (0.0, 39.0, 600.0, 860.0)
    c, s = _cs_by_hand(0, 39, 600, 860, pad=1.25)
    np.testing.assert_allclose(inst.center, c)
    np.testing.assert_allclose(inst.scale, s, rtol=1e-6)


def _pw3d_file(tmp_path: Path) -> Path:
    """A 3DPW file as PoseBH's preprocess_3dpw.py writes it (no 'area'; sequence/file names)."""
    (tmp_path / "imageFiles" / "downtown_walking_00").mkdir(parents=True)
    (tmp_path / "imageFiles" / "downtown_walking_00" / "image_00000.jpg").write_bytes(b"")
    kp = []
    for j in range(24):
        kp += [100.0 + j, 200.0 + 2 * j, float(j % 2)]
    cat = {"id": 1, "name": "person", "keypoints": get_skeleton("pw3d").keypoint_names}
    return _write(
        tmp_path / "pw3d_test.json",
        {
            "images": [
                {
                    "id": 7,
                    "file_name": "downtown_walking_00/image_00000.jpg",
                    "sequence": "downtown_walking_00",
                    "width": 1080,
                    "height": 1920,
                }
            ],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 7,
                    "bbox": [90, 190, 60, 120],
                    "keypoints": kp,
                    "num_keypoints": 12,
                    "iscrowd": 0,
                    "category_id": 1,
                },
                {
                    "id": 2,
                    "image_id": 7,
                    "bbox": [90, 190, 60, 120],
                    "keypoints": [0.0] * 72,
                    "num_keypoints": 0,
                    "iscrowd": 0,
                    "category_id": 1,
                },
            ],
            "categories": [cat],
        },
    )


def test_pw3d_tmp_file(tmp_path: Path) -> None:
    ann_file = _pw3d_file(tmp_path)
    instances, summary = read_pw3d(ann_file, tmp_path / "imageFiles")
    assert (summary.read, summary.kept, summary.num_skipped) == (2, 1, 1)
    (inst,) = instances
    assert inst.keypoints.shape == (24, 3)
    assert inst.keypoints[5].tolist() == [105.0, 210.0, 1.0]
    assert inst.bbox == (90.0, 190.0, 59.0, 119.0)  # w − 1, h − 1
    assert inst.area == 59.0 * 119.0
    c, s = _cs_by_hand(90, 190, 59, 119, pad=1.25)
    np.testing.assert_allclose(inst.center, c)
    np.testing.assert_allclose(inst.scale, s, rtol=1e-6)
    assert inst.image_file.endswith("imageFiles/downtown_walking_00/image_00000.jpg")


def test_coco_skip_reasons_are_counted(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    kp = [10.0, 10.0, 2.0] + [0.0] * 48
    good = {
        "id": 1,
        "image_id": 1,
        "bbox": [-5, 10, 50, 20],
        "keypoints": kp,
        "num_keypoints": 1,
        "area": 100.0,
        "iscrowd": 0,
        "category_id": 1,
    }
    anns = [
        good,
        {**good, "id": 2, "iscrowd": 1},
        {**good, "id": 3, "area": 0},
        {**good, "id": 4, "bbox": [5, 5, 1, 20]},
        {k: v for k, v in {**good, "id": 5}.items() if k != "bbox"},
        {**good, "id": 6, "image_id": 99},
        {k: v for k, v in {**good, "id": 7}.items() if k != "keypoints"},
        {**good, "id": 8, "keypoints": [0.0] * 51},
        {**good, "id": 9, "num_keypoints": 0},  # coordinates present but none labelled
    ]
    ann_file = _write(
        tmp_path / "c.json",
        {
            "images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 100}],
            "annotations": anns,
        },
    )
    instances, summary = read_coco(ann_file, tmp_path)
    assert [i.ann_id for i in instances] == [1]
    assert summary.read == 9 and summary.num_skipped == 8
    # Two empty boxes (area 0, width 1) and two without labelled keypoints (ids 8, 9).
    assert sorted(summary.skipped.values()) == [1, 1, 1, 1, 2, 2]
    assert any("iscrowd" in r for r in summary.skipped)
    assert any("image_id" in r for r in summary.skipped)
    # Clipped box: x1 = 0, x2 = min(39, 0 + 49) = 39; y2 = 10 + 19 = 29.
    assert instances[0].bbox == (0.0, 10.0, 39.0, 19.0)
    np.testing.assert_allclose(instances[0].center, [19.5, 19.5])
    np.testing.assert_allclose(instances[0].scale, [39 / 200 * 1.25, 52 / 200 * 1.25])


# --------------------------------------------------------------------------------------------
# MPII
# --------------------------------------------------------------------------------------------


def test_mpii_conventions(fixtures_dir: Path) -> None:
    ann_file = fixtures_dir / "mpii" / "test_mpii.json"
    instances, summary = read_mpii(ann_file, fixtures_dir / "mpii")
    raw = _json(ann_file)
    assert (summary.read, summary.kept) == (5, 5) and len(raw) == 5
    for i, (inst, rec) in enumerate(zip(instances, raw, strict=True)):
        s = rec["scale"]
        # 0.x: y += 15·s, then centre −= 1; scale ×1.25, square (no aspect fix); joints −= 1.
        np.testing.assert_allclose(
            inst.center, [rec["center"][0] - 1, rec["center"][1] + 15 * s - 1], rtol=1e-6
        )
        np.testing.assert_allclose(inst.scale, [1.25 * s, 1.25 * s], rtol=1e-6)
        np.testing.assert_allclose(inst.keypoints[:, :2], np.array(rec["joints"]) - 1)
        np.testing.assert_array_equal(inst.keypoints[:, 2], rec["joints_vis"])
        assert inst.ann_id == i and inst.image_id == rec["image"]
    # First record: centre (966, 340), s = 4.718488 → (965, 340 + 70.77732 − 1).
    np.testing.assert_allclose(instances[0].center, [965.0, 409.77732], atol=1e-3)


def test_mpii_gt_mat(fixtures_dir: Path, tmp_path: Path) -> None:
    ann_file = fixtures_dir / "mpii" / "test_mpii.json"
    _, summary = read_mpii(ann_file, fixtures_dir / "mpii", gt_mat=tmp_path / "mpii_gt_val.mat")
    assert "not found" in " ".join(summary.notes)
    assert summary.eval_files["gt_mat"].endswith("mpii_gt_val.mat")
    scipy_io = pytest.importorskip("scipy.io")
    heads = np.zeros((2, 2, 5))
    heads[1] = 10.0 * (np.arange(5) + 1)
    mat = tmp_path / "mpii_gt_val.mat"
    scipy_io.savemat(
        mat,
        {
            "headboxes_src": heads,
            "pos_gt_src": np.zeros((16, 2, 5)),
            "jnt_missing": np.zeros((16, 5)),
            "dataset_joints": np.zeros((1, 16)),
        },
    )
    instances, _ = read_mpii(ann_file, fixtures_dir / "mpii", gt_mat=mat)
    assert instances[2].extras["headbox"] == ((0.0, 0.0), (30.0, 30.0))


# --------------------------------------------------------------------------------------------
# InterHand2.6M
# --------------------------------------------------------------------------------------------


def _interhand_files(fixtures_dir: Path) -> tuple[Path, Path, Path]:
    d = fixtures_dir / "interhand2.6m"
    return (
        d / "test_interhand2.6m_data.json",
        d / "test_interhand2.6m_camera.json",
        d / "test_interhand2.6m_joint_3d.json",
    )


def test_interhand_six_hands_and_projection(fixtures_dir: Path) -> None:
    data, camera, joint = _interhand_files(fixtures_dir)
    instances, summary = read_interhand2d(data, camera, joint, fixtures_dir / "interhand2.6m")
    assert len(instances) == 6
    assert (summary.read, summary.kept, summary.num_skipped) == (8, 6, 2)
    assert [(i.image_id, i.extras["hand"]) for i in instances] == [
        (326750, "right"),
        (326750, "left"),
        (286291, "right"),
        (286291, "left"),
        (680801, "left"),
        (471953, "right"),
    ]

    # Reproject the wrist (joint 20) of the right hand of image 471953 by hand.
    img = next(i for i in _json(data)["images"] if i["id"] == 471953)
    cam = _json(camera)[str(img["capture"])]
    name = img["camera"]
    t, r = cam["campos"][name], cam["camrot"][name]
    f, c = cam["focal"][name], cam["princpt"][name]
    world = _json(joint)[str(img["capture"])][str(img["frame_idx"])]["world_coord"]
    rel = [world[20][k] - t[k] for k in range(3)]
    xc = [sum(r[row][k] * rel[k] for k in range(3)) for row in range(3)]
    u = xc[0] / xc[2] * f[0] + c[0]
    v = xc[1] / xc[2] * f[1] + c[1]
    inst = instances[-1]
    np.testing.assert_allclose(inst.keypoints[20, :2], [u, v], atol=1e-3)  # ≈ (175.53, 180.95)
    assert inst.keypoints[20, 2] == 1.0

    # The left half (joints 21-41) of a right-hand image is invalid (root rule) and the tight
    # box encloses the valid joints; centre/scale with padding 1.5.
    xs, ys = inst.keypoints[:, 0], inst.keypoints[:, 1]
    x1, y1 = float(xs.min()), float(ys.min())
    w, h = float(xs.max()) - x1, float(ys.max()) - y1
    assert inst.bbox == pytest.approx((x1, y1, w, h), abs=1e-4)
    cc, ss = _cs_by_hand(x1, y1, w, h, pad=1.5)
    np.testing.assert_allclose(inst.center, cc, atol=1e-3)
    np.testing.assert_allclose(inst.scale, ss, rtol=1e-5)
    assert inst.extras["joint_valid"].tolist() == [1] * 21


def test_interhand_root_gating(fixtures_dir: Path, tmp_path: Path) -> None:
    data, camera, joint = _interhand_files(fixtures_dir)
    raw = _json(data)
    # Image 471953 (right hand): invalidate the right wrist (index 20) → the whole hand goes.
    ann = next(a for a in raw["annotations"] if a["image_id"] == 471953)
    ann["joint_valid"][20] = [0]
    # Image 326750 (two hands): invalidate 10 left joints → 11 valid left, not > 11.
    ann2 = next(a for a in raw["annotations"] if a["image_id"] == 326750)
    for j in range(21, 31):
        ann2["joint_valid"][j] = [0]
    instances, summary = read_interhand2d(
        _write(tmp_path / "d.json", raw), camera, joint, fixtures_dir / "interhand2.6m"
    )
    assert len(instances) == 4
    assert summary.num_skipped == 4 and len(summary.skipped) == 2


# --------------------------------------------------------------------------------------------
# Layout and dispatch
# --------------------------------------------------------------------------------------------


def test_default_spec_official_paths(tmp_path: Path) -> None:
    coco = default_spec("coco", "val", tmp_path)
    assert coco.ann_file == str(tmp_path / "coco/annotations/person_keypoints_val2017.json")
    assert coco.img_prefix == str(tmp_path / "coco/val2017")
    assert coco.det_file == str(
        tmp_path / "coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
    )
    assert coco.use_gt_bbox is False and coco.det_bbox_thr == 0.0
    assert default_spec("coco", "train", tmp_path).use_gt_bbox is True
    assert default_spec("aic", "val", tmp_path).ann_file.endswith("aic/annotations/aic_val.json")
    mpii = default_spec("mpii", "val", tmp_path)
    assert mpii.ann_file.endswith("mpii/annotations/mpii_val.json")
    assert mpii.gt_file == str(tmp_path / "mpii/annotations/mpii_gt_val.mat")
    assert default_spec("ap10k", "val", tmp_path).ann_file.endswith("ap10k-val-split1.json")
    assert default_spec("ap36k", "test", tmp_path).name == "apt36k"
    assert default_spec("coco_wholebody", "val", tmp_path).ann_file.endswith(
        "coco/annotations/coco_wholebody_val_v1.0.json"
    )
    assert default_spec("ochuman", "test", tmp_path).ann_file.endswith(
        "ochuman/annotations/ochuman_coco_format_test_range_0.00_1.00.json"
    )
    ih = default_spec("interhand2d", "test", tmp_path)
    assert ih.joint_file.endswith("interhand2.6m/annotations/all/InterHand2.6M_test_joint_3d.json")
    assert default_spec("pw3d", "test", tmp_path).ann_file.endswith(
        "pw3d/annotations/pw3d_test.json"
    )
    assert set(DATASET_NAMES) >= {"coco", "aic", "mpii", "ap10k", "apt36k", "coco_wholebody"}
    with pytest.raises(DatasetError, match="train"):
        default_spec("ochuman", "train", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset"):
        default_spec("nope", "val", tmp_path)


def test_read_dataset_dispatch(fixtures_dir: Path) -> None:
    coco = fixtures_dir / "coco"
    det = DatasetSpec(
        "coco",
        str(coco / "test_coco.json"),
        str(coco),
        det_file=str(coco / "test_coco_det_AP_H_56.json"),
        use_gt_bbox=False,
        det_bbox_thr=0.3,
    )
    assert len(read_dataset(det)[0]) == 33
    data, camera, joint = _interhand_files(fixtures_dir)
    ih = DatasetSpec(
        "interhand2d", str(data), str(data.parent), camera_file=str(camera), joint_file=str(joint)
    )
    assert len(read_dataset(ih)[0]) == 6
    mpii = fixtures_dir / "mpii"
    assert len(read_dataset(DatasetSpec("mpii", str(mpii / "test_mpii.json"), str(mpii)))[0]) == 5
    aic = DatasetSpec("aic", str(fixtures_dir / "aic" / "test_aic.json"), "x", use_gt_bbox=False)
    with pytest.raises(DatasetError, match="use_gt_bbox"):
        read_dataset(aic)


def test_instances_pickle_and_are_read_only(fixtures_dir: Path) -> None:
    instances, _ = read_coco(fixtures_dir / "coco" / "test_coco.json", fixtures_dir / "coco")
    back = pickle.loads(pickle.dumps(instances))
    np.testing.assert_array_equal(back[3].keypoints, instances[3].keypoints)
    assert back[3].bbox == instances[3].bbox and back[3].extras == instances[3].extras
    with pytest.raises(ValueError):
        instances[0].keypoints[0, 0] = 1.0


# --------------------------------------------------------------------------------------------
# Malformed input: DatasetError naming the file and the field
# --------------------------------------------------------------------------------------------


def _coco_file(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    (tmp_path / "a.jpg").write_bytes(b"")
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100, **changes}],
        "annotations": [
            {
                "id": 5,
                "image_id": 1,
                "bbox": [10, 10, 50, 50],
                "num_keypoints": 1,
                "keypoints": [20.0, 20.0, 2.0] + [0.0] * 48,
                "category_id": 1,
                "iscrowd": 0,
            }
        ],
    }


def test_error_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nothere\.json"):
        read_coco(tmp_path / "nothere.json", tmp_path)


def test_error_malformed_json_has_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [\n  {"id": 1,,}\n]}')
    with pytest.raises(DatasetError) as e:
        read_coco(bad, tmp_path)
    assert "broken.json" in str(e.value) and "line 2 column" in str(e.value)


def test_error_wrong_keypoint_count(fixtures_dir: Path) -> None:
    # The AIC file (14 keypoints) read as COCO (17).
    with pytest.raises(DatasetError) as e:
        read_coco(fixtures_dir / "aic" / "test_aic.json", fixtures_dir / "aic")
    msg = str(e.value)
    assert "test_aic.json" in msg and "'keypoints'" in msg and "42 values" in msg and "51" in msg


def test_error_missing_image_eager_and_lazy(tmp_path: Path) -> None:
    ann_file = _write(tmp_path / "c.json", _coco_file(tmp_path, file_name="missing.jpg"))
    with pytest.raises(DatasetError) as e:
        read_coco(ann_file, tmp_path)
    msg = str(e.value)
    assert "c.json" in msg and "missing.jpg" in msg and "id=5" in msg
    instances, _ = read_coco(ann_file, tmp_path, check_images=False)
    with pytest.raises(DatasetError, match=r"annotation id=5.*missing\.jpg"):
        check_image(instances[0])


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["images"][0].pop("file_name"), "file_name"),
        (lambda d: d["images"][0].pop("height"), "height"),
        (lambda d: d["annotations"][0].pop("image_id"), "image_id"),
        (lambda d: d.pop("annotations"), "annotations"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), "bbox"),
        (lambda d: d["annotations"][0].update(keypoints="abc"), "keypoints"),
    ],
)
def test_error_missing_or_bad_coco_field(tmp_path: Path, mutate: Any, field: str) -> None:
    data = _coco_file(tmp_path)
    mutate(data)
    ann_file = _write(tmp_path / "fields.json", data)
    with pytest.raises(DatasetError) as e:
        read_coco(ann_file, tmp_path)
    assert "fields.json" in str(e.value) and f"'{field}'" in str(e.value)


def test_error_ap10k_needs_category_and_wholebody_parts(tmp_path: Path) -> None:
    data = _coco_file(tmp_path)
    data["annotations"][0].pop("category_id")
    with pytest.raises(DatasetError, match=r"animals\.json.*'category_id'"):
        read_ap10k(_write(tmp_path / "animals.json", data), tmp_path)
    data = _coco_file(tmp_path)  # body only: no foot/face/hand fields
    with pytest.raises(DatasetError, match=r"wb\.json.*'foot_kpts'"):
        read_coco_wholebody(_write(tmp_path / "wb.json", data), tmp_path)


def test_error_detections(fixtures_dir: Path, tmp_path: Path) -> None:
    coco = fixtures_dir / "coco"
    no_score = _write(
        tmp_path / "dets.json", [{"image_id": 785, "category_id": 1, "bbox": [1, 2, 3, 4]}]
    )
    with pytest.raises(DatasetError, match=r"dets\.json.*'score'"):
        read_coco_detections(no_score, coco / "test_coco.json", coco)
    alien = _write(
        tmp_path / "dets2.json",
        [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9}],
    )
    with pytest.raises(DatasetError, match=r"dets2\.json.*'image_id'"):
        read_coco_detections(alien, coco / "test_coco.json", coco)


def test_error_mpii(fixtures_dir: Path, tmp_path: Path) -> None:
    raw = _json(fixtures_dir / "mpii" / "test_mpii.json")
    raw[1]["joints"] = raw[1]["joints"][:15]
    with pytest.raises(DatasetError, match=r"m1\.json.*record \[1\].*'joints'"):
        read_mpii(_write(tmp_path / "m1.json", raw), fixtures_dir / "mpii")
    raw = _json(fixtures_dir / "mpii" / "test_mpii.json")
    del raw[2]["center"]
    with pytest.raises(DatasetError, match=r"m2\.json.*record \[2\].*'center'"):
        read_mpii(_write(tmp_path / "m2.json", raw), fixtures_dir / "mpii")
    with pytest.raises(DatasetError, match=r"m3\.json.*list"):
        read_mpii(_write(tmp_path / "m3.json", {"a": 1}), fixtures_dir / "mpii")


def test_error_interhand(fixtures_dir: Path, tmp_path: Path) -> None:
    data, camera, joint = _interhand_files(fixtures_dir)
    cams = _json(camera)
    del cams["4"]["focal"]["410028"]
    with pytest.raises(DatasetError, match=r"cams\.json.*'focal'.*410028"):
        read_interhand2d(data, _write(tmp_path / "cams.json", cams), joint, data.parent)
    raw = _json(data)
    raw["annotations"][0]["joint_valid"] = raw["annotations"][0]["joint_valid"][:40]
    with pytest.raises(DatasetError, match=r"ih\.json.*'joint_valid'.*40 values"):
        read_interhand2d(_write(tmp_path / "ih.json", raw), camera, joint, data.parent)
    joints = _json(joint)
    del joints["7"]["29590"]
    with pytest.raises(DatasetError, match=r"j\.json.*frame '29590'"):
        read_interhand2d(data, camera, _write(tmp_path / "j.json", joints), data.parent)


def test_summary_accounts_for_everything(fixtures_dir: Path) -> None:
    readers = [
        (read_coco_keypoints, ("coco/test_coco.json", "coco", "coco")),
        (read_coco_keypoints, ("coco/test_coco_wholebody.json", "coco", "coco_wholebody")),
        (read_coco_keypoints, ("ochuman/test_ochuman.json", "ochuman", "ochuman")),
    ]
    for fn, (ann, prefix, name) in readers:
        _, s = fn(fixtures_dir / ann, fixtures_dir / prefix, name)
        assert s.read == s.kept + s.num_skipped
        assert math.isfinite(s.kept) and s.dataset == name
