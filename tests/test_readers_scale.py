"""The column-at-a-time COCO reader against an independent per-record reference, bit for bit.

``reference_read`` below is the official 0.x loading rule written out as a plain loop over
``json.load`` output (PROTOCOL.md §3; images in file order, per image its annotations in file
order; iscrowd → box present → cleaned box and area > 0 → keypoints field → something labelled;
centre/scale by ``_xywh2cs``), independent of ``posebh.datasets``. Every real fixture file and
a randomised COCO file holding every skip case are read by ``read_coco_keypoints`` through both
its column path and its per-record path (``COLUMN_PATH = False``) and compared to it field by
field: same ids, same float32 bits, same Python types, same skip counts in the same order.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import posebh.datasets.chunked_json as chunked_json
import posebh.datasets.coco as coco_module
from posebh.datasets import DatasetError, Instance, read_coco_detections, read_coco_keypoints
from posebh.datasets.coco_columns import read_keypoints_columns
from posebh.datasets.table import InstanceTable
from posebh.skeletons import get_skeleton

AR, PAD = 192 / 256, 1.25
WHOLEBODY_PARTS = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")

FIXTURES = [
    ("coco/test_coco.json", "coco", "coco"),
    ("coco/test_coco_wholebody.json", "coco", "coco_wholebody"),
    ("aic/test_aic.json", "aic", "aic"),
    ("ap10k/test_ap10k.json", "ap10k", "ap10k"),
    ("ap10k/test_ap10k.json", "ap10k", "apt36k"),  # APT-36K: AP-10K format and loader
    ("ochuman/test_ochuman.json", "ochuman", "ochuman"),
]


def reference_read(path: Path, prefix: Path, dataset: str) -> tuple[list[dict], Counter]:
    """Instances (as dicts of fields) and skip counts of a COCO-format keypoint file."""
    data = json.loads(path.read_text())
    k = get_skeleton(dataset).num_keypoints
    wholebody = dataset == "coco_wholebody"
    images = {img["id"]: img for img in data["images"]}
    per_image = defaultdict(list)
    skipped: Counter = Counter()
    for ann in data["annotations"]:
        if ann["image_id"] in images:
            per_image[ann["image_id"]].append(ann)
        else:
            skipped["image_id not in 'images'"] += 1
    out = []
    # The official loader joins the prefix as given; posebh makes it absolute without
    # resolving symlinks (a data folder is often a link).
    root = os.path.abspath(prefix)
    for img in data["images"]:
        width, height = img["width"], img["height"]
        for ann in per_image[img["id"]]:
            if ann.get("iscrowd", 0):
                skipped["iscrowd"] += 1
                continue
            if "bbox" not in ann:
                skipped["no 'bbox' field"] += 1
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            x1, y1 = max(0, x), max(0, y)
            x2 = min(width - 1, x1 + max(0, w - 1))
            y2 = min(height - 1, y1 + max(0, h - 1))
            area = ann.get("area")
            if not (x2 > x1 and y2 > y1) or (area is not None and not area > 0):
                skipped["box empty after cleaning (area <= 0, or x2 <= x1 or y2 <= y1)"] += 1
                continue
            if "keypoints" not in ann:
                skipped["no 'keypoints' field"] += 1
                continue
            if wholebody:
                if max(ann["keypoints"]) == 0:
                    skipped["no labelled body keypoints (max(keypoints) == 0)"] += 1
                    continue
                values = [v for name in WHOLEBODY_PARTS for v in ann[name]]
            else:
                if max(ann["keypoints"]) == 0 or ann.get("num_keypoints", -1) == 0:
                    skipped[
                        "no labelled keypoints (max(keypoints) == 0 or num_keypoints == 0)"
                    ] += 1
                    continue
                values = ann["keypoints"]
            kp = np.array(values, dtype=np.float64).reshape(k, 3)
            joints = np.zeros((k, 3), np.float32)
            joints[:, :2] = kp[:, :2]
            joints[:, 2] = kp[:, 2] > 0 if wholebody else np.minimum(1, kp[:, 2])
            bw, bh = x2 - x1, y2 - y1
            # _xywh2cs of mmpose 0.x, without its training-time jitter.
            cw, ch = float(bw), float(bh)
            center = np.array([x1 + cw * 0.5, y1 + ch * 0.5], dtype=np.float32)
            if cw > AR * ch:
                ch = cw * 1.0 / AR
            elif cw < AR * ch:
                cw = ch * AR
            scale = np.array([cw / 200.0, ch / 200.0], dtype=np.float32) * PAD
            extras: dict[str, Any] = {"iscrowd": 0}
            if "num_keypoints" in ann:
                extras["num_keypoints"] = int(ann["num_keypoints"])
            if wholebody:
                extras["part_valid"] = {"body": True} | {
                    p: bool(ann.get(f"{p}_valid", False))
                    for p in ("foot", "face", "lefthand", "righthand")
                }
                extras["part_boxes"] = {
                    p: tuple(float(v) for v in ann[f"{p}_box"])
                    for p in ("face", "lefthand", "righthand")
                    if f"{p}_box" in ann
                }
            box = (float(x1), float(y1), float(bw), float(bh))
            out.append(
                {
                    "dataset": dataset,
                    "image_file": f"{root}/{img['file_name']}",
                    "image_id": img["id"],
                    "ann_id": ann["id"],
                    "category_id": int(ann.get("category_id", 1)),
                    "bbox": box,
                    "center": center,
                    "scale": scale.astype(np.float32),
                    "keypoints": joints,
                    "bbox_score": 1.0,
                    "area": float(area) if area is not None else box[2] * box[3],
                    "extras": extras,
                }
            )
    return out, skipped


def assert_same(instances: Any, expected: list[dict]) -> None:
    assert len(instances) == len(expected)
    for inst, exp in zip(instances, expected, strict=True):
        assert isinstance(inst, Instance)
        for name, value in exp.items():
            got = getattr(inst, name)
            if isinstance(value, np.ndarray):
                assert got.dtype == value.dtype and got.shape == value.shape, name
                assert got.tobytes() == value.tobytes(), (name, got, value)
                assert not got.flags.writeable
            else:
                assert got == value and type(got) is type(value), (name, got, value)
        assert all(type(v) is float for v in inst.bbox)


def read_both(path: Path, prefix: Path, dataset: str) -> list[tuple[Any, Any]]:
    """(instances, summary) by the column path and by the per-record path."""
    out = []
    for column_path in (True, False):
        coco_module.COLUMN_PATH = column_path
        try:
            out.append(read_coco_keypoints(path, prefix, dataset, check_images=False))
        finally:
            coco_module.COLUMN_PATH = True
    return out


def column_read(path: Path, dataset: str) -> Any:
    skeleton = get_skeleton(dataset)
    return read_keypoints_columns(
        path.read_bytes(),
        dataset=dataset,
        num_keypoints=skeleton.num_keypoints,
        parts=dict(skeleton.parts),
        part_fields=coco_module._WHOLEBODY_FIELDS,
        wholebody=dataset == "coco_wholebody",
        per_instance_category=dataset in ("ap10k", "apt36k"),
        img_prefix="/x",
        aspect_ratio=AR,
        padding=PAD,
    )


@pytest.mark.parametrize(("ann", "prefix", "dataset"), FIXTURES)
def test_fixture_files_match_the_reference(
    fixtures_dir: Path, ann: str, prefix: str, dataset: str
) -> None:
    path, root = fixtures_dir / ann, fixtures_dir / prefix
    expected, skipped = reference_read(path, root, dataset)
    # The column path reads these files; OCHuman's RLE strings have escapes (per-record path).
    assert (column_read(path, dataset) is None) == (b"\\" in path.read_bytes())
    for instances, summary in read_both(path, root, dataset):
        assert isinstance(instances, InstanceTable)
        assert_same(instances, expected)
        assert summary.skipped == skipped and summary.kept == len(expected)


# ---------------------------------------------------------------------------------------------
# A randomised file with every skip case
# ---------------------------------------------------------------------------------------------


def _random_file(seed: int, *, odd_names: bool = False) -> dict[str, Any]:
    rng = random.Random(seed)
    images = []
    for i in range(40):
        name = f"{rng.randrange(10**6):012d}.jpg"
        if odd_names and i % 7 == 0:
            name = "a},{x:[1]}]," + name  # element gaps and ends inside strings
        w = rng.choice([640, 480, 100, 37.5, 1])
        images.append({"id": 1000 + 3 * i, "file_name": name, "width": w, "height": 480})
    anns = []
    for j in range(600):
        img = rng.choice(images)
        w, h = img["width"], img["height"]
        odd = rng.random() < 0.25  # degenerate or outside the image
        box = [
            rng.choice([0, -3, w + 5, w - 1] if odd else [rng.uniform(-50, w), round(w / 3, 2)]),
            rng.choice([rng.uniform(-50, h), round(rng.uniform(0, h), 2), 0]),
            rng.choice([1, 0.5, 2, 0, 1e-9] if odd else [rng.uniform(3, 300), 40.25]),
            rng.choice([1.0000001, 1, 0] if odd else [rng.uniform(3, 300), 7]),
        ]
        kp = []
        for _ in range(17):
            v = rng.choice([0, 0, 1, 2, 2, 2, 3, -1])
            xy = (
                [0, 0]
                if v == 0 and rng.random() < 0.8
                else [
                    rng.choice([rng.uniform(-5, 700), rng.randrange(-5, 700), 0.1 + 0.2]),
                    rng.choice([rng.uniform(0, 500), rng.randrange(500)]),
                ]
            )
            kp += [*xy, v]
        if rng.random() < 0.1:
            kp = [0] * 51
        if rng.random() < 0.05:
            kp = [rng.choice([-1.5, -2, 0]) for _ in range(51)]  # max < 0: labelled
        ann: dict[str, Any] = {
            "id": rng.randrange(10**9),
            "image_id": img["id"] if rng.random() > 0.05 else 7,  # 7: no such image
            "bbox": box,
            "keypoints": kp,
            "num_keypoints": sum(1 for v in kp[2::3] if v > 0),
            "area": rng.choice([rng.uniform(1, 9e4)] * 8 + [0, -1.0, 12, 0.0, None, "absent"]),
            "iscrowd": rng.choice([0] * 20 + [1, True, 2]),
            "category_id": rng.choice([1, 1, 1, 2]),
        }
        if odd_names and j % 5 == 0:
            ann["note"] = rng.choice(["}, {", "}]", "},{}],[{", "]}"]) * rng.randrange(1, 4)
        if ann["area"] == "absent":
            del ann["area"]
        for key, p in (("bbox", 0.04), ("keypoints", 0.04), ("iscrowd", 0.2)):
            if rng.random() < p:
                del ann[key]
        if rng.random() < 0.1:
            ann["num_keypoints"] = 0
        if rng.random() < 0.1:
            del ann["num_keypoints"]
        anns.append(ann)
    ids = [a["id"] for a in anns]
    assert len(set(ids)) == len(ids)
    images.append({"id": 5, "file_name": "unused.jpg", "width": 10, "height": 10})
    return {"info": {"x": [{"a": 1}, {"b": 2}]}, "images": images, "annotations": anns}


@pytest.mark.parametrize("chunk_bytes", [None, 300])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_file_with_every_skip_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, chunk_bytes: int | None
) -> None:
    if chunk_bytes:  # many chunks: every gap between elements is a candidate cut
        monkeypatch.setattr(chunked_json, "CHUNK_BYTES", chunk_bytes)
    data = _random_file(seed, odd_names=seed == 2)
    path = tmp_path / "random.json"
    path.write_text(json.dumps(data, indent=1 if seed == 1 else None))
    expected, skipped = reference_read(path, tmp_path, "coco")
    assert len(skipped) == 6 and len(expected) > 100  # every reason occurs
    assert column_read(path, "coco") is not None
    for instances, summary in read_both(path, tmp_path, "coco"):
        assert_same(instances, expected)
        assert summary.skipped == skipped
    (_, sa), (_, sb) = read_both(path, tmp_path, "coco")
    assert list(sa.skipped.items()) == list(sb.skipped.items())  # same first-seen order
    assert (sa.read, sa.kept, sa.images, sa.notes) == (sb.read, sb.kept, sb.images, sb.notes)


@pytest.mark.parametrize(
    ("edit", "by_columns"),
    [
        (lambda d: d["images"][0].update(file_name="back\\slash.jpg"), False),  # escapes
        (lambda d: d["annotations"][3].update(id=10**25), False),  # orjson: a float
        (lambda d: d["annotations"][4].update(bbox=["1.5", 2, 30, 40]), False),  # a string
        (lambda d: d["annotations"][5].update(keypoints=[[0, 0, 0]] * 17), False),  # nested
        (lambda d: d["annotations"].append({**d["annotations"][0], "id": 1.5}), False),
        (lambda d: d["images"][1].update(width=True), True),  # bool arithmetic is int's
    ],
)
def test_odd_but_valid_files_read_as_before(tmp_path: Path, edit: Any, by_columns: bool) -> None:
    """Files outside the column path's simple case read exactly as before (per record)."""
    data = _random_file(3)
    edit(data)
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(data))
    assert (column_read(path, "coco") is not None) == by_columns
    (a, sa), (b, sb) = read_both(path, tmp_path, "coco")
    assert len(a) == len(b) and sa.skipped == sb.skipped
    for x, y in zip(a, b, strict=True):
        assert x.ann_id == y.ann_id and type(x.ann_id) is type(y.ann_id)
        assert x.bbox == y.bbox and x.keypoints.tobytes() == y.keypoints.tobytes()


def test_nan_in_a_skipped_crowd_annotation_is_read_and_elsewhere_is_named(
    tmp_path: Path,
) -> None:
    data = _random_file(4)
    crowd = next(a for a in data["annotations"] if a.get("iscrowd") and "keypoints" in a)
    crowd["keypoints"][4] = float("nan")  # json writes NaN; orjson refuses it
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(data))
    expected, _ = reference_read(path, tmp_path, "coco")
    assert_same(read_coco_keypoints(path, tmp_path, check_images=False)[0], expected)
    kept = next(a for a in data["annotations"] if a["id"] == expected[3]["ann_id"])
    kept["bbox"][2] = float("inf")
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"nan\.json: annotations\[\d+\] .*'bbox'.*position 2"):
        read_coco_keypoints(path, tmp_path, check_images=False)


def test_missing_image_is_named_with_its_first_kept_annotation(tmp_path: Path) -> None:
    data = _random_file(5)
    path = tmp_path / "img.json"
    path.write_text(json.dumps(data))
    expected, _ = reference_read(path, tmp_path, "coco")
    for i, exp in enumerate(expected):
        if i == 0 or exp["image_id"] != expected[i - 1]["image_id"]:
            Path(exp["image_file"]).write_bytes(b"")
    read_coco_keypoints(path, tmp_path)  # every image of a kept instance exists
    first = expected[len(expected) // 2]
    first = next(e for e in expected if e["image_id"] == first["image_id"])
    Path(first["image_file"]).unlink()
    index = next(i for i, a in enumerate(data["annotations"]) if a["id"] == first["ann_id"])
    with pytest.raises(DatasetError, match=rf"annotations\[{index}\] \(id={first['ann_id']}\)"):
        read_coco_keypoints(path, tmp_path)


# ---------------------------------------------------------------------------------------------
# InstanceTable as a sequence of instances
# ---------------------------------------------------------------------------------------------


def test_instance_table_behaves_as_a_list(fixtures_dir: Path) -> None:
    table, _ = read_coco_keypoints(
        fixtures_dir / "coco" / "test_coco.json", fixtures_dir / "coco", check_images=False
    )
    items = list(table)
    assert len(items) == len(table) == 12
    assert table[-1].ann_id == items[-1].ann_id
    sub = table[2:5]
    assert isinstance(sub, InstanceTable) and [i.ann_id for i in sub] == [
        i.ann_id for i in items[2:5]
    ]
    assert [i.ann_id for i in table + items[:1]] == [i.ann_id for i in items + items[:1]]
    assert [i.ann_id for i in items[:1] + table][1:] == [i.ann_id for i in items]
    assert table[:0] == [] and table != [] and table == table
    with pytest.raises(IndexError):
        table[12]
    back = pickle.loads(pickle.dumps(table))
    assert_same(back, [dataclasses.asdict(i) for i in items])
    moved = dataclasses.replace(table[0], center=np.zeros(2, np.float32))
    assert moved.ann_id == items[0].ann_id and not moved.center.any()
    with pytest.raises(ValueError):
        table[0].keypoints[0, 0] = 1.0
    with pytest.raises(ValueError):
        table.keypoints[0, 0, 0] = 1.0
    again = InstanceTable.from_instances(items, "coco", 17)
    assert_same(again, [dataclasses.asdict(i) for i in items])


# ---------------------------------------------------------------------------------------------
# Detection files
# ---------------------------------------------------------------------------------------------


def reference_detections(det_file: Path, gt_file: Path, prefix: Path, thr: float) -> list[dict]:
    """The official _load_coco_person_detection_results, written out."""
    images = {img["id"]: img for img in json.loads(gt_file.read_text())["images"]}
    out = []
    for i, det in enumerate(json.loads(det_file.read_text())):
        if det["category_id"] != 1 or det["score"] < thr:
            continue
        x, y, w, h = (float(v) for v in det["bbox"][:4])
        center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
        cw, ch = w, h
        if cw > AR * ch:
            ch = cw * 1.0 / AR
        elif cw < AR * ch:
            cw = ch * AR
        scale = np.array([cw / 200.0, ch / 200.0], dtype=np.float32) * PAD
        out.append(
            {
                "image_file": f"{os.path.abspath(prefix)}/{images[det['image_id']]['file_name']}",
                "image_id": det["image_id"],
                "ann_id": None,
                "category_id": 1,
                "bbox": (x, y, w, h),
                "center": center,
                "scale": scale,
                "keypoints": np.zeros((17, 3), np.float32),
                "bbox_score": float(det["score"]),
                "area": w * h,
                "extras": {"det_index": i},
            }
        )
    return out


@pytest.mark.parametrize("thr", [0.0, 0.3])
def test_detections_match_the_reference(fixtures_dir: Path, tmp_path: Path, thr: float) -> None:
    coco = fixtures_dir / "coco"
    gt_file = coco / "test_coco.json"
    rng = random.Random(int(thr * 10))
    image_ids = [img["id"] for img in json.loads(gt_file.read_text())["images"]]
    dets = json.loads((coco / "test_coco_det_AP_H_56.json").read_text())
    for _ in range(300):
        dets.append(
            {
                "image_id": rng.choice(image_ids),
                "category_id": rng.choice([1, 1, 1, 3]),
                "bbox": [
                    rng.uniform(-20, 600),
                    rng.randrange(400),
                    rng.choice([rng.uniform(0.1, 300), 0, 42]),
                    rng.choice([rng.uniform(0.1, 300), 17]),
                ],
                "score": rng.choice([rng.random(), 1, 0.3]),
            }
        )
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps(dets))
    expected = reference_detections(det_file, gt_file, coco, thr)
    results = []
    for column_path in (True, False):
        coco_module.COLUMN_PATH = column_path
        try:
            results.append(read_coco_detections(det_file, gt_file, coco, det_bbox_thr=thr))
        finally:
            coco_module.COLUMN_PATH = True
    (a, sa), (b, sb) = results
    assert a.keypoints.strides[0] == 0  # the column path's shared zeros: it read this file
    assert_same(a, expected)
    assert_same(b, expected)
    assert list(sa.skipped.items()) == list(sb.skipped.items()) and sa.images == sb.images
    assert sa.skipped["category_id != 1"] > 0 and (thr == 0 or sa.skipped["score < det_bbox_thr"])
