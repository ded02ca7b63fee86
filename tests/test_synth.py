"""SynthPose (``posebh.synth``): every split in its real format through the real readers, GT fed
back as predictions scores perfectly, byte reproducibility and caching, flip consistency, and
the cross-type ground truth.

One ``tiny`` generation (a few images per split) is shared by the module.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posebh.cli import main as cli_main
from posebh.datasets import default_spec, read_dataset
from posebh.datasets.coco import SKIP_NO_BODY_KPTS, SKIP_NO_KPTS
from posebh.datasets.interhand import SKIP_FEW, SKIP_ROOT
from posebh.evaluate import evaluate
from posebh.evaluation import oks_eval, wholebody_eval
from posebh.skeletons import get_skeleton
from posebh.synth import DEFINITION_OFFSETS, Manifest, cross_type_gt, generate
from posebh.synth.animal import ANIMAL_SKELETON_NODES, SPECIES, animal_offsets, animal_tree
from posebh.synth.human import HUMAN_SKELETON_NODES, human_tree
from posebh.synth.interhand import hand_tree, interhand_nodes

# Skips that are part of the real formats (not errors): COCO's keypoint-less small people,
# InterHand's absent or truncated hand of an image.
ALLOWED_SKIPS = {SKIP_NO_KPTS, SKIP_NO_BODY_KPTS, SKIP_ROOT, SKIP_FEW}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("synth")
    return out, generate(out, "tiny", seed=0, progress=False)


def _spec(name: str, split: str, out: Path, **kw: object):
    spec = default_spec(name, split, out, **kw)  # type: ignore[arg-type]
    if name == "mpii" and split == "train":
        # default_spec attaches mpii_gt_val.mat to every MPII split, and read_mpii rejects a
        # .mat whose record count differs from the file's (test_mpii_train_default_spec).
        spec = dataclasses.replace(spec, gt_file=None)
    return spec


def _all_splits(m: Manifest) -> list[tuple[str, str, str]]:
    return [(d, s, gen) for d, per in m.splits.items() for s, gen in per.items()]


# ------------------------------------------------------------------------------------------
# Real formats through the real readers
# ------------------------------------------------------------------------------------------


def test_every_split_reads_with_the_expected_counts(synth: tuple[Path, Manifest]) -> None:
    out, m = synth
    assert {d for d, _, _ in _all_splits(m)} == {
        "coco", "coco_wholebody", "aic", "mpii", "ochuman", "pw3d", "ap10k", "apt36k",
        "interhand2d",
    }  # fmt: skip
    for d, split, gen in _all_splits(m):
        counts = m.counts[d][gen]
        spec = _spec(d, split, out)
        instances, summary = read_dataset(spec)
        where = f"{d} {split}"
        if not spec.use_gt_bbox:  # COCO / WholeBody val: the person detections
            assert summary.read == summary.kept == counts_det(m, gen), where
            spec = _spec(d, split, out, use_gt_bbox=True)
            instances, summary = read_dataset(spec)
        assert summary.read == counts["annotations"], where
        assert summary.kept == len(instances) == counts["instances"] > 0, where
        assert set(summary.skipped) <= ALLOWED_SKIPS, (where, summary.skipped)
        assert summary.images == len({i.image_id for i in instances}), where


def counts_det(m: Manifest, gen: str) -> int:
    return m.counts["coco"][gen]["detections"]


def test_mpii_train_default_spec(synth: tuple[Path, Manifest]) -> None:
    """The MPII train split reads without the validation head boxes (mpii_gt_val.mat)."""
    out, _ = synth
    spec = default_spec("mpii", "train", out)
    assert spec.gt_file is None
    instances, summary = read_dataset(spec)
    assert instances and summary.num_skipped == 0


def test_labelled_keypoints_lie_inside_their_images(synth: tuple[Path, Manifest]) -> None:
    out, m = synth
    sizes: dict[str, tuple[int, int]] = {}
    checked = 0
    for d, split, _ in _all_splits(m):
        instances, _ = read_dataset(_spec(d, split, out, use_gt_bbox=True))
        for inst in instances:
            if inst.image_file not in sizes:
                with Image.open(inst.image_file) as im:
                    sizes[inst.image_file] = im.size
            w, h = sizes[inst.image_file]
            k = inst.keypoints[inst.keypoints[:, 2] > 0]
            assert np.all(
                (k[:, 0] >= 0) & (k[:, 0] <= w - 1) & (k[:, 1] >= 0) & (k[:, 1] <= h - 1)
            ), (
                d,
                split,
                inst.image_file,
            )
            checked += len(k)
    assert checked > 1000


# ------------------------------------------------------------------------------------------
# Flip consistency
# ------------------------------------------------------------------------------------------


def _side(name: str) -> int:
    low = name.lower()
    if low.startswith(("left", "l_")):
        return 1
    if low.startswith(("right", "r_")):
        return -1
    return 0


@pytest.mark.parametrize(
    "skeleton", ["coco", "aic", "mpii", "pw3d", "coco_wholebody", "ap10k", "apt36k"]
)
def test_flip_pairs_are_mirror_landmarks(skeleton: str) -> None:
    """At rest (body frame: x = the figure's left) joint j and joint flip[j] are mirror images,
    and every left-named joint lies on the figure's left."""
    sk = get_skeleton(skeleton)
    if skeleton in ANIMAL_SKELETON_NODES:
        tree = animal_tree()
        offsets = animal_offsets(SPECIES[0], 1.0, np.random.default_rng(0))
        names = ANIMAL_SKELETON_NODES[skeleton]
    else:
        tree = human_tree()
        offsets = tree.offset
        names = HUMAN_SKELETON_NODES[skeleton]
    pos, _, _ = tree.forward(offsets, {}, np.eye(3), np.zeros(3))
    p = pos[tree.idx(names)]
    mirrored = p[list(sk.flip_indices)] * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(p, mirrored, atol=1e-9)
    for name, xyz in zip(sk.keypoint_names, p, strict=True):
        assert _side(name) == 0 or np.sign(xyz[0]) == _side(name), name


def test_the_two_hands_are_mirror_images() -> None:
    r, l_ = hand_tree("r"), hand_tree("l")
    pr, _, _ = r.forward(r.offset, {}, np.eye(3), np.zeros(3))
    pl, _, _ = l_.forward(l_.offset, {}, np.eye(3), np.zeros(3))
    a = pr[r.idx(interhand_nodes("r"))]
    b = pl[l_.idx(interhand_nodes("l"))] * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_rendered_left_eye_is_on_the_image_right_of_faces_seen_from_the_front(
    synth: tuple[Path, Manifest],
) -> None:
    """In every image, a person whose nose and both eyes are visible faces the camera, so the
    left eye (the person's left) is drawn to the right of the right eye."""
    out, _ = synth
    checked = 0
    for source, split in (
        ("coco", "train"),
        ("coco", "val"),
        ("aic", "train"),
        ("mpii", "val"),
        ("ochuman", "val"),
        ("pw3d", "test"),
    ):
        for ann in cross_type_gt(out, source, "coco", split, annotated_only=False)["annotations"]:
            k = np.asarray(ann["keypoints"]).reshape(17, 3)
            if k[0, 2] == 2 and k[1, 2] == 2 and k[2, 2] == 2:
                assert k[1, 0] > k[2, 0], (source, split, ann["id"])
                checked += 1
    assert checked >= 5


# ------------------------------------------------------------------------------------------
# Reproducibility and cache
# ------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(synth: tuple[Path, Manifest], tmp_path: Path) -> None:
    _, m = synth
    again = generate(tmp_path / "again", "tiny", seed=0, progress=False)
    assert not again.cached
    assert again.files == m.files
    assert again.counts == m.counts


def test_other_seed_differs_and_regenerates_in_place(
    synth: tuple[Path, Manifest], tmp_path: Path
) -> None:
    _, m = synth
    out = tmp_path / "seeds"
    a = generate(out, "tiny", seed=0, progress=False, groups=["ap10k"])
    assert {k: v for k, v in m.files.items() if k in a.files and "cross_gt" not in k} == {
        k: v for k, v in a.files.items() if "cross_gt" not in k
    }
    b = generate(out, "tiny", seed=1, progress=False, groups=["ap10k"])
    assert not b.cached and b.seed == 1
    images = [k for k in b.files if k.endswith(".jpg")]
    assert images and all(a.files[k]["sha256"] != b.files[k]["sha256"] for k in images)
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(b.files) | {"synthpose/manifest.json"}


def test_refuses_to_overwrite_a_real_data_tree(tmp_path: Path) -> None:
    ann = Path(default_spec("ap10k", "train", tmp_path).ann_file)
    ann.parent.mkdir(parents=True)
    ann.write_text("{}")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        generate(tmp_path, "tiny", seed=0, progress=False, groups=["ap10k"])
    assert ann.read_text() == "{}"
    m = generate(tmp_path, "tiny", seed=0, progress=False, groups=["ap10k"], force=True)
    assert m.counts["ap10k"]["train"]["instances"] > 0


def test_cache_hit_touches_nothing(synth: tuple[Path, Manifest]) -> None:
    """A second generation of the same preset and seed is a cache hit: the same manifest,
    no file rewritten (how fast it returns: benchmarks/test_bench_synth.py)."""
    out, m = synth
    stamps = {rel: (out / rel).stat().st_mtime_ns for rel in m.files}
    again = generate(out, "tiny", seed=0, progress=False)
    assert again.cached and again.files == m.files
    assert stamps == {rel: (out / rel).stat().st_mtime_ns for rel in m.files}
    manifest = json.loads((out / "synthpose" / "manifest.json").read_text())
    assert manifest["preset"] == "tiny" and manifest["seed"] == 0 and manifest["version"]
    assert all(len(v["sha256"]) == 64 for v in manifest["files"].values())


def test_cli_synth(synth: tuple[Path, Manifest], capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = synth
    assert cli_main(["synth", "--out", str(out), "--preset", "tiny"]) == 0
    text = capsys.readouterr().out
    assert "cached" in text and "interhand2d" in text


# ------------------------------------------------------------------------------------------
# Ground truth as prediction: every metric perfect
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", ["coco", "aic", "ap10k", "apt36k", "ochuman", "pw3d"])
def test_gt_as_prediction_oks_ap_is_one(synth: tuple[Path, Manifest], dataset: str) -> None:
    out, _ = synth
    for split in ("val", "test"):
        spec = _spec(dataset, split, out, use_gt_bbox=True)
        r = evaluate(None, spec, gt_as_prediction=True, log=None, progress=False)
        assert r.metrics["AP"] == pytest.approx(1.0, abs=1e-12), (dataset, split)
        assert r.metrics["AR"] == pytest.approx(1.0, abs=1e-12), (dataset, split)


def test_gt_as_prediction_wholebody_every_part_is_one(synth: tuple[Path, Manifest]) -> None:
    out, _ = synth
    r = evaluate(
        None,
        "coco_wholebody",
        data_root=out,
        split="val",
        gt_as_prediction=True,
        log=None,
        progress=False,
    )
    assert set(r.metrics) >= {"body", "foot", "face", "lefthand", "righthand", "wholebody"}
    for part in ("body", "foot", "face", "lefthand", "righthand", "wholebody"):
        assert r.metrics[part]["AP"] == pytest.approx(1.0, abs=1e-12), part


def test_gt_as_prediction_mpii_pckh_is_100(synth: tuple[Path, Manifest]) -> None:
    out, _ = synth
    r = evaluate(
        None, "mpii", data_root=out, split="val", gt_as_prediction=True, log=None, progress=False
    )
    assert r.metrics["PCKh"] == pytest.approx(100.0, abs=1e-9)
    assert r.metrics["PCKh@0.1"] == pytest.approx(100.0, abs=1e-9)


def test_gt_as_prediction_interhand_pck_is_one(synth: tuple[Path, Manifest]) -> None:
    out, _ = synth
    for split in ("val", "test"):
        r = evaluate(
            None,
            "interhand2d",
            data_root=out,
            split=split,
            gt_as_prediction=True,
            log=None,
            progress=False,
        )
        assert r.metrics["PCK"] == pytest.approx(1.0, abs=1e-12)
        assert r.metrics["EPE"] == pytest.approx(0.0, abs=1e-12)
        assert r.metrics["AUC"] == pytest.approx(0.95, abs=1e-9)


# ------------------------------------------------------------------------------------------
# Cross-type ground truth
# ------------------------------------------------------------------------------------------


def _delta(dataset: str, keypoint: str) -> np.ndarray:
    """The documented definition offset (metres, scale 1) of a shared joint in ``dataset``."""
    base = keypoint.removeprefix("left_").removeprefix("right_")
    entry = DEFINITION_OFFSETS.get((base, dataset))
    return np.zeros(3) if entry is None else np.asarray(entry[2], dtype=np.float64)


def test_cross_gt_coco_on_aic_images_matches_aic_up_to_definition_offsets(
    synth: tuple[Path, Manifest],
) -> None:
    out, _ = synth
    coco, aic = get_skeleton("coco"), get_skeleton("aic")
    shared = [n for n in coco.keypoint_names if n in aic.keypoint_names]
    assert len(shared) == 12
    exact = offset = 0
    for split in ("train", "val"):
        cross = {a["id"]: a for a in cross_type_gt(out, "aic", "coco", split)["annotations"]}
        figures = {
            f["id"]: f
            for f in json.loads((out / "synthpose/cross_gt" / f"aic_{split}.json").read_text())[
                "figures"
            ]
        }
        anns = json.loads(Path(default_spec("aic", split, out).ann_file).read_text())["annotations"]
        assert anns and {a["id"] for a in anns} == set(cross)
        for a in anns:
            ka = np.asarray(a["keypoints"], dtype=np.float64).reshape(14, 3)
            kc = np.asarray(cross[a["id"]]["keypoints"], dtype=np.float64).reshape(17, 3)
            fig = figures[a["id"]]
            for name in shared:
                pa, pc = ka[aic.index(name)], kc[coco.index(name)]
                assert (pa[2] > 0) == (pc[2] > 0), name  # same landmark side of the border
                if pa[2] == 0:
                    continue
                dist_m = (
                    float(np.linalg.norm(_delta("coco", name) - _delta("aic", name))) * fig["scale"]
                )
                # Perspective: joints up to ~1/3 nearer than the root; 0.02 px of rounding.
                tol = 1.5 * dist_m * fig["px_per_m"] + 0.02
                assert np.hypot(*(pa[:2] - pc[:2])) <= tol, (name, a["id"], pa, pc, tol)
                exact += dist_m == 0
                offset += dist_m > 0 and np.hypot(*(pa[:2] - pc[:2])) > 0.5
    assert exact > 0 and offset > 0  # elbows/wrists/knees coincide, hips/shoulders do not


@pytest.mark.parametrize(
    ("source", "target", "split"),
    [("aic", "coco", "val"), ("coco", "aic", "val"), ("mpii", "pw3d", "val"),
     ("pw3d", "mpii", "test"), ("ap10k", "apt36k", "val"), ("apt36k", "ap10k", "test"),
     ("ochuman", "ochuman", "val")],
)  # fmt: skip
def test_cross_gt_scored_against_itself_is_perfect(
    synth: tuple[Path, Manifest], source: str, target: str, split: str
) -> None:
    out, _ = synth
    gt = cross_type_gt(out, source, target, split)
    results = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "keypoints": [v if i % 3 != 2 else float(v > 0) for i, v in enumerate(a["keypoints"])],
            "score": 1.0,
        }
        for a in gt["annotations"]
    ]
    use_area = target not in ("aic", "pw3d")
    stats = oks_eval(gt, results, sigmas=target, use_area=use_area)
    assert stats["AP"] == pytest.approx(1.0, abs=1e-12)


def test_cross_gt_wholebody_on_mpii_images_is_perfect(synth: tuple[Path, Manifest]) -> None:
    out, _ = synth
    gt = cross_type_gt(out, "mpii", "coco_wholebody", "val")
    fields = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
    results = [
        {"image_id": a["image_id"], "category_id": 1, "score": 1.0}
        | {f: [v if i % 3 != 2 else float(v > 0) for i, v in enumerate(a[f])] for f in fields}
        for a in gt["annotations"]
    ]
    stats = wholebody_eval(gt, results)
    assert stats["body"]["AP"] == pytest.approx(1.0, abs=1e-12)
    assert stats["wholebody"]["AP"] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("dataset", ["coco", "coco_wholebody", "aic", "ochuman", "ap10k", "apt36k"])
def test_cross_gt_of_own_skeleton_equals_the_annotation_file(
    synth: tuple[Path, Manifest], dataset: str
) -> None:
    out, m = synth
    fields = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
    for split in m.counts[dataset]:
        anns = {
            a["id"]: a
            for a in json.loads(Path(default_spec(dataset, split, out).ann_file).read_text())[
                "annotations"
            ]
        }
        cross = {a["id"]: a for a in cross_type_gt(out, dataset, dataset, split)["annotations"]}
        assert set(cross) <= set(anns) and cross
        for i, c in cross.items():
            for f in fields if dataset == "coco_wholebody" else ("keypoints",):
                assert c[f] == anns[i][f], (dataset, split, i, f)
            assert c["bbox"] == anns[i]["bbox"], (dataset, split, i)
            if "area" in anns[i]:
                assert c["area"] == anns[i]["area"], (dataset, split, i)


def test_cross_gt_splits_follow_the_layout_and_kinds_are_checked(
    synth: tuple[Path, Manifest],
) -> None:
    out, _ = synth
    assert cross_type_gt(out, "coco", "coco", "test") == cross_type_gt(out, "coco", "coco", "val")
    assert cross_type_gt(out, "pw3d", "pw3d", "val")["annotations"]
    with pytest.raises(ValueError, match="quadruped"):
        cross_type_gt(out, "ap10k", "coco", "val")
    with pytest.raises(FileNotFoundError):
        cross_type_gt(out, "ochuman", "coco", "train")


# ------------------------------------------------------------------------------------------
# Areas and head boxes
# ------------------------------------------------------------------------------------------


def test_segment_area_fills_holes_and_keeps_thin_shapes() -> None:
    from posebh.synth.scene import segment_area

    frame = np.zeros((60, 50), dtype=bool)
    frame[10:50, 5:45] = True
    frame[13:47, 8:42] = False  # a 3-px square frame: its inside is a hole
    assert segment_area(frame) == 40 * 40
    line = np.zeros((60, 50), dtype=bool)
    line[5:55, 20] = True  # nothing to bridge: the closing adds no pixel
    assert segment_area(line) == 50
    assert segment_area(np.zeros((4, 4), dtype=bool)) == 0


def test_coco_area_is_the_segment_area(synth: tuple[Path, Manifest]) -> None:
    """COCO / WholeBody ``area`` = the figure's segment area: at least its visible pixels,
    at most its box, and about 0.4 of the box on average (real COCO ≈ 0.53)."""
    out, _ = synth
    ratios = []
    for split in ("train", "val"):
        figs = {
            f["id"]: f
            for f in json.loads((out / f"synthpose/cross_gt/coco_{split}.json").read_text())[
                "figures"
            ]
        }
        for name in ("coco", "coco_wholebody"):
            anns = json.loads(Path(default_spec(name, split, out).ann_file).read_text())
            for a in anns["annotations"]:
                f = figs[a["id"]]
                w, h = a["bbox"][2:]
                assert a["area"] == f["segment_area"]
                assert f["visible_area"] <= a["area"] <= w * h + 1e-6
                if name == "coco" and a["num_keypoints"] > 0:
                    ratios.append(a["area"] / (w * h))
    assert ratios and 0.3 < float(np.mean(ratios)) < 0.6


def test_cross_gt_head_box_is_the_mpii_mat_head_box(synth: tuple[Path, Manifest]) -> None:
    from posebh.evaluation import load_mpii_gt

    out, _ = synth
    spec = default_spec("mpii", "val", out)
    gt = load_mpii_gt(spec.gt_file)
    figs = [
        f
        for f in json.loads((out / "synthpose/cross_gt/mpii_val.json").read_text())["figures"]
        if f["annotated"]
    ]
    boxes = np.transpose(gt["headboxes_src"], (2, 0, 1))  # [N, corner, (x, y)]
    assert len(figs) == len(boxes) > 0
    for f in figs:
        np.testing.assert_allclose(
            np.asarray(f["head_box"]).reshape(2, 2) + 1.0, boxes[f["id"]], atol=1e-4
        )
