"""OKS keypoint AP (posebh.evaluation.oks_eval / wholebody_eval) against plain pycocotools.

pycocotools *is* the reference COCO evaluation. Every xtcocotools rule that ``oks_eval`` adds is
checked against an independent construction that feeds plain pycocotools (``loadRes`` +
``COCOeval``) inputs rewritten by hand the way xtcocotools would read them:

* ``use_area=False``: every GT ``area`` rewritten to ``bbox[3]·bbox[2]·0.53``;
* the drop rule: detections whose keypoint scores are all ``<= 0`` deleted from the list first;
* WholeBody parts: per-part GT/DT dicts (part keypoints, ``num_keypoints`` = labelled count in
  the part, whole-person GT ``area``, ``<part>_score`` or ``score``, DT area from the body
  keypoints as ``loadRes`` computes it);
* ``keypoints_crowd``: the crowd-index splits evaluated as separate restricted datasets.

Observed agreement is exact (max error 0.0) everywhere; the tests use 1e-6, the brief's bound.
(During development the same comparisons were also run against the xtcocotools 1.14.3
``cocoeval.py`` source itself, outside the repository: also exact.)
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posebh.evaluation import (
    CROWD_STAT_NAMES,
    STAT_NAMES,
    WHOLEBODY_PARTS,
    oks_eval,
    wholebody_eval,
    write_coco_results,
)
from posebh.skeletons import get_skeleton

TOL = 1e-6
PARTS = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
PART_OF_FIELD = dict(zip(("body", "foot", "face", "lefthand", "righthand"), PARTS, strict=True))

# (fixture file under mmpose_testdata, skeleton, use_area) as the official configs evaluate them.
FIXTURES = {
    "coco": ("coco/test_coco.json", "coco", True),
    "aic": ("aic/test_aic.json", "aic", False),
    "ap10k": ("ap10k/test_ap10k.json", "ap10k", True),
    "ochuman": ("ochuman/test_ochuman.json", "ochuman", True),
}


# ------------------------------------------------------------------------------------------
# Independent reference: plain pycocotools on hand-rewritten inputs
# ------------------------------------------------------------------------------------------


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def ref_cocoeval(gt_dataset: dict, results: list, sigmas, *, swap_keypoints=None) -> COCOeval:
    """Plain pycocotools ``loadRes`` + ``COCOeval('keypoints')`` with ``kpt_oks_sigmas``.

    ``swap_keypoints[i]``, if given, replaces result i's ``keypoints`` *after* ``loadRes`` has
    computed its area/bbox from the original (body) ``keypoints``.
    """
    with _quiet():
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dataset)
        gt.createIndex()
        if results:
            dt = gt.loadRes(copy.deepcopy(results))
        else:  # pycocotools' loadRes cannot take an empty list (xtcocotools' can)
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "annotations": []}
            dt.createIndex()
        if swap_keypoints is not None:
            for i, kpts in enumerate(swap_keypoints):
                dt.anns[i + 1]["keypoints"] = kpts  # loadRes numbers results 1..N in order
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def ref_stats(gt_dataset: dict, results: list, sigmas, **kw) -> dict[str, float]:
    ev = ref_cocoeval(gt_dataset, results, sigmas, **kw)
    return dict(zip(STAT_NAMES, map(float, ev.stats), strict=True))


def ref_area_053(gt_dataset: dict) -> dict:
    """``use_area=False`` by hand: area := bbox h·w·0.53 (and iscrowd := 0 where absent)."""
    out = copy.deepcopy(gt_dataset)
    for ann in out["annotations"]:
        ann["area"] = ann["bbox"][3] * ann["bbox"][2] * 0.53
        ann.setdefault("iscrowd", 0)
    return out


def positive(kpts) -> bool:
    return bool(np.any(np.asarray(kpts, dtype=float)[2::3] > 0))


def ref_drop(results: list, field: str = "keypoints") -> list:
    """The xtcocotools drop rule by hand: delete detections without a positive score."""
    return [r for r in results if positive(r[field])]


def ref_wholebody_part(gt_dataset: dict, results: list, part: str, sigmas) -> dict[str, float]:
    fields = PARTS if part == "wholebody" else (PART_OF_FIELD[part],)
    gt = copy.deepcopy(gt_dataset)
    for ann in gt["annotations"]:
        ann["keypoints"] = [v for f in fields for v in ann[f]]
        ann["num_keypoints"] = int(np.count_nonzero(np.asarray(ann["keypoints"])[2::3] > 0))
    dts, swap = [], []
    for r in results:
        kpts = [v for f in fields for v in r[f]]
        if not positive(kpts):
            continue
        dts.append(
            {
                "image_id": r["image_id"],
                "category_id": r["category_id"],
                "keypoints": list(r["keypoints"]),  # body: loadRes takes the area from it
                "score": r.get(f"{part}_score", r["score"]),
            }
        )
        swap.append(kpts)
    return ref_stats(gt, dts, sigmas, swap_keypoints=swap)


def max_err(ours: dict, ref: dict, names=STAT_NAMES) -> float:
    return max(abs(ours[k] - ref[k]) for k in names)


# ------------------------------------------------------------------------------------------
# Synthetic predictions
# ------------------------------------------------------------------------------------------


def gt_as_predictions(dataset: dict, fields=("keypoints",), score: float = 1.0) -> list:
    """Every GT annotation fed back as a detection; keypoint scores = visibility flags."""
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": score}
        | {f: list(a[f]) for f in fields}
        for a in dataset["annotations"]
    ]


def noisy_predictions(
    dataset: dict, seed: int, fields=("keypoints",), part_scores=False, sigma: float = 0.06
) -> list:
    """GT-as-prediction with seeded Gaussian noise on the coordinates, plus hard cases.

    Noise std is ``c·sigma·sqrt(0.53·w·h)`` with ``c ~ U(0.2, 2)`` per instance (``sigma`` a
    typical OKS sigma of the dataset), so the OKS spans its range. Each GT also yields, at random,
    a lower-scored duplicate with larger noise, a copy whose scores are all 0 (dropped by
    xtcocotools), and a false positive scattered over the image.
    """
    rng = np.random.default_rng(seed)
    out = []

    def perturbed(ann, std):
        rec = {"image_id": ann["image_id"], "category_id": ann["category_id"]}
        rec["score"] = float(rng.uniform(0.1, 1.0))
        for f in fields:
            k = np.asarray(ann[f], dtype=float).reshape(-1, 3)
            xy = k[:, :2] + rng.normal(0.0, std, (len(k), 2))
            s = np.where(k[:, 2] > 0, rng.uniform(0.05, 1.0, len(k)), 0.0)
            rec[f] = np.c_[xy, s].ravel().tolist()
        if part_scores:
            for part in WHOLEBODY_PARTS:
                if rng.uniform() < 0.5:
                    rec[f"{part}_score"] = float(rng.uniform(0.1, 1.0))
        return rec

    for ann in dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        std = rng.uniform(0.2, 2.0) * sigma * float(np.sqrt(max(0.53 * w * h, 1.0)))
        out.append(perturbed(ann, std))
        if rng.uniform() < 0.5:
            dup = perturbed(ann, 3 * std)
            dup["score"] *= 0.5
            out.append(dup)
        if rng.uniform() < 0.4:
            zero = perturbed(ann, std)
            for f in fields:
                k = np.asarray(zero[f]).reshape(-1, 3)
                k[:, 2] = 0.0 if rng.uniform() < 0.5 else -0.1
                zero[f] = k.ravel().tolist()
            out.append(zero)
        if rng.uniform() < 0.3:
            fp = perturbed(ann, std)
            for f in fields:
                k = np.asarray(fp[f]).reshape(-1, 3)
                k[:, 0] = rng.uniform(x - w, x + 2 * w, len(k))
                k[:, 1] = rng.uniform(y - h, y + 2 * h, len(k))
                k[:, 2] = rng.uniform(0.05, 0.5, len(k))
                fp[f] = k.ravel().tolist()
            out.append(fp)
    return out


def load(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def examples_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "xtcocoapi_examples"


# ------------------------------------------------------------------------------------------
# Conformance
# ------------------------------------------------------------------------------------------


def test_example_coco_equals_pycocotools(examples_dir: Path) -> None:
    gt_path = examples_dir / "example_coco_val.json"
    preds_path = examples_dir / "example_coco_preds.json"
    sigmas = get_skeleton("coco").sigmas_array()
    ours = oks_eval(gt_path, preds_path, sigmas=sigmas)
    ref = ref_stats(load(gt_path), load(preds_path), sigmas)
    assert max_err(ours, ref) <= TOL
    assert 0.5 < ours["AP"] < 1.0  # a meaningful, non-degenerate comparison
    # The same through in-memory inputs and a skeleton name.
    again = oks_eval(load(gt_path), load(preds_path), sigmas="coco")
    assert max_err(again, ours) == 0.0


def test_example_coco_use_area_false(examples_dir: Path) -> None:
    gt = load(examples_dir / "example_coco_val.json")
    preds = load(examples_dir / "example_coco_preds.json")
    sigmas = get_skeleton("coco").sigmas_array()
    ours = oks_eval(gt, preds, sigmas=sigmas, use_area=False)
    assert max_err(ours, ref_stats(ref_area_053(gt), preds, sigmas)) <= TOL
    # ... and it is a different number from the area-based evaluation.
    assert max_err(ours, oks_eval(gt, preds, sigmas="coco")) > 1e-3


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perturbed_fixture_equals_reference(fixtures_dir: Path, name: str, seed: int) -> None:
    rel, skeleton, use_area = FIXTURES[name]
    gt = load(fixtures_dir / rel)
    sigmas = get_skeleton(skeleton).sigmas_array()
    preds = noisy_predictions(gt, seed, sigma=float(sigmas.mean()))
    ours = oks_eval(gt, preds, sigmas=sigmas, use_area=use_area)
    ref_gt = gt if use_area else ref_area_053(gt)
    ref = ref_stats(ref_gt, ref_drop(preds), sigmas)
    assert max_err(ours, ref) <= TOL, (ours, ref)
    dropped = len(preds) - len(ref_drop(preds))
    assert ours["meta"]["num_dropped_nonpositive_scores"] == dropped
    assert ours["meta"]["num_evaluated"] == len(preds) - dropped


def test_drop_rule_and_use_area_change_the_numbers(fixtures_dir: Path) -> None:
    """The reference constructions are not vacuous: without them pycocotools disagrees."""
    gt = load(fixtures_dir / "coco/test_coco.json")
    sigmas = get_skeleton("coco").sigmas_array()
    for seed in range(3):
        preds = noisy_predictions(gt, seed)
        ours = oks_eval(gt, preds, sigmas=sigmas)
        assert ours["meta"]["num_dropped_nonpositive_scores"] > 0
        if max_err(ours, ref_stats(gt, preds, sigmas)) > 1e-3:  # zero-score dets kept
            break
    else:
        pytest.fail("keeping the all-zero detections never changed the stats")
    ua = oks_eval(gt, preds, sigmas=sigmas, use_area=False)
    assert max_err(ua, ours) > 1e-3
    assert max_err(ua, ref_stats(ref_area_053(gt), ref_drop(preds), sigmas)) <= TOL


def test_aic_without_area_and_iscrowd(fixtures_dir: Path) -> None:
    gt = load(fixtures_dir / "aic/test_aic.json")
    assert all("area" not in a and "iscrowd" not in a for a in gt["annotations"])
    preds = noisy_predictions(gt, 7, sigma=0.025)
    ours = oks_eval(gt, preds, sigmas="aic", use_area=False)
    assert 0.0 < ours["AP"] < 1.0
    with pytest.raises(ValueError, match=r"missing field 'area'.*use_area=False"):
        oks_eval(gt, preds, sigmas="aic", use_area=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_wholebody_example_per_part(examples_dir: Path, seed: int) -> None:
    gt = load(examples_dir / "example_wholebody_val.json")
    preds = load(examples_dir / "example_wholebody_preds.json")
    if seed:  # per-part scores on some records: <part>_score where present, else score
        rng = np.random.default_rng(seed)
        for rec in preds:
            for part in ("face", "foot", "wholebody"):
                if rng.uniform() < 0.6:
                    rec[f"{part}_score"] = float(rng.uniform(0.05, 1.0))
    ours = wholebody_eval(gt, preds)
    skel = get_skeleton("coco_wholebody")
    sig = skel.sigmas_array()
    assert set(ours) == set(WHOLEBODY_PARTS)
    for part in WHOLEBODY_PARTS:
        start, end = skel.parts.get(part, (0, 133))
        ref = ref_wholebody_part(gt, preds, part, sig[start:end])
        assert max_err(ours[part], ref) <= TOL, part
        assert ours[part]["meta"]["iou_type"] == f"keypoints_{part}"
        assert ours[part]["meta"]["sigmas"] == sig[start:end].tolist()
    without_face_score = sum("face_score" not in r for r in preds)
    assert ours["face"]["meta"]["num_part_score_fallback"] == without_face_score
    # Parts really are evaluated separately.
    assert len({round(ours[p]["AP"], 6) for p in WHOLEBODY_PARTS}) >= 4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wholebody_fixture_perturbed(fixtures_dir: Path, seed: int) -> None:
    gt = load(fixtures_dir / "coco/test_coco_wholebody.json")
    preds = noisy_predictions(gt, seed, fields=PARTS, part_scores=True, sigma=0.015)
    ours = wholebody_eval(gt, preds)
    skel = get_skeleton("coco_wholebody")
    sig = skel.sigmas_array()
    for part in WHOLEBODY_PARTS:
        start, end = skel.parts.get(part, (0, 133))
        ref = ref_wholebody_part(gt, preds, part, sig[start:end])
        assert max_err(ours[part], ref) <= TOL, part


def test_wholebody_uses_person_area_for_every_part(fixtures_dir: Path) -> None:
    """Shrinking the GT person area changes every part's AP (it is the scale of all parts)."""
    gt = load(fixtures_dir / "coco/test_coco_wholebody.json")
    preds = noisy_predictions(gt, 3, fields=PARTS, sigma=0.01)
    base = wholebody_eval(gt, preds)
    small = copy.deepcopy(gt)
    for ann in small["annotations"]:
        ann["area"] *= 0.25
    shrunk = wholebody_eval(small, preds)
    for part in WHOLEBODY_PARTS:
        assert shrunk[part]["AP"] < base[part]["AP"], part


def test_crowdpose_keypoints_crowd(examples_dir: Path, fixtures_dir: Path) -> None:
    sigmas = get_skeleton("coco").sigmas_array()[[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]]
    sigmas = np.r_[sigmas, 0.079, 0.079]  # PROTOCOL.md §1 CrowdPose: 12 limbs + head + neck
    cases = [
        (load(examples_dir / "example_crowdpose_val.json"),
         load(examples_dir / "example_crowdpose_preds.json")),
        *((load(fixtures_dir / "crowdpose/test_crowdpose.json"), None) for _ in range(2)),
    ]  # fmt: skip
    for i, (gt, preds) in enumerate(cases):
        if preds is None:
            for img in gt["images"]:
                img["crowdIndex"] = [0.1, 0.5, 0.9][(img["id"] + i) % 3]  # cover all splits
            preds = noisy_predictions(gt, i)
        ours = oks_eval(gt, preds, sigmas=sigmas, use_area=False, iou_type="keypoints_crowd")
        assert set(ours) == {*CROWD_STAT_NAMES, "meta"}
        ref_gt = ref_area_053(gt)  # plain pycocotools ignores by num_keypoints, as CrowdPose
        ev = ref_cocoeval(ref_gt, ref_drop(preds), sigmas)
        s = ev.stats
        ref = {"AP": s[0], "AP50": s[1], "AP75": s[2], "AR": s[5], "AR50": s[6], "AR75": s[7]}
        for name, lo, hi in (("AP_easy", -1, 0.2), ("AP_medium", 0.2, 0.8), ("AP_hard", 0.8, 2)):
            ids = {im["id"] for im in gt["images"] if lo <= im["crowdIndex"] < hi}
            sub = copy.deepcopy(ref_gt)
            sub["images"] = [im for im in sub["images"] if im["id"] in ids]
            sub["annotations"] = [a for a in sub["annotations"] if a["image_id"] in ids]
            sub_preds = [p for p in ref_drop(preds) if p["image_id"] in ids]
            prec = ref_cocoeval(sub, sub_preds, sigmas).eval["precision"][:, :, :, 0, :]
            ref[name] = round(float(np.mean(prec)), 4)
        assert max_err(ours, ref, CROWD_STAT_NAMES) <= TOL, (ours, ref)


def test_crowd_ignores_by_num_keypoints_not_labelled_count(examples_dir: Path) -> None:
    """CrowdPose ``num_keypoints`` counts visible joints only; xtcocotools uses it as is."""
    gt = load(examples_dir / "example_crowdpose_val.json")
    ann = next(a for a in gt["annotations"] if a["num_keypoints"] > 0)
    ann["num_keypoints"] = 0  # labelled joints remain, but the crowd rule ignores it
    preds = load(examples_dir / "example_crowdpose_preds.json")
    sig = np.full(14, 0.079)
    crowd = oks_eval(gt, preds, sigmas=sig, use_area=False, iou_type="keypoints_crowd")
    plain = oks_eval(gt, preds, sigmas=sig, use_area=False)
    assert crowd["meta"]["num_gt_ignored"] == plain["meta"]["num_gt_ignored"] + 1


# ------------------------------------------------------------------------------------------
# GT fed back as predictions
# ------------------------------------------------------------------------------------------


def perfect(stats: dict) -> bool:
    """AP = AR = 1 and every area-range stat 1 or -1 (no GT in that range).

    COCOeval's precision is ``tp / (tp + fp + eps)``, which is 1 − 2.2e-16 rather than 1 when
    ``tp = 1`` (a category or area range with one GT), hence the 1e-12 slack.
    """
    ones = [stats[k] == pytest.approx(1.0, abs=1e-12) for k in STAT_NAMES if stats[k] != -1.0]
    return stats["AP"] == pytest.approx(1.0, abs=1e-12) and stats["AR"] == 1.0 and all(ones)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_gt_as_predictions_gives_ap_1(fixtures_dir: Path, name: str) -> None:
    rel, skeleton, use_area = FIXTURES[name]
    gt = load(fixtures_dir / rel)
    stats = oks_eval(gt, gt_as_predictions(gt), sigmas=skeleton, use_area=use_area)
    assert perfect(stats), stats
    unlabelled = sum(not positive(a["keypoints"]) for a in gt["annotations"])
    assert stats["meta"]["num_dropped_nonpositive_scores"] == unlabelled


def test_gt_as_predictions_wholebody_every_part(fixtures_dir: Path, examples_dir: Path) -> None:
    for path in (fixtures_dir / "coco/test_coco_wholebody.json",
                 examples_dir / "example_wholebody_val.json"):  # fmt: skip
        gt = load(path)
        out = wholebody_eval(gt, gt_as_predictions(gt, PARTS))
        for part in WHOLEBODY_PARTS:
            assert perfect(out[part]), (path.name, part, out[part])


def test_gt_id_zero_is_matched(fixtures_dir: Path) -> None:
    """pycocotools treats a match with GT id 0 as no match; xtcocotools (and we) do not."""
    gt = load(fixtures_dir / "coco/test_coco.json")
    gt["annotations"][0]["id"] = 0
    preds = gt_as_predictions(gt)
    assert oks_eval(gt, preds, sigmas="coco")["AP"] == 1.0
    assert ref_stats(gt, ref_drop(preds), get_skeleton("coco").sigmas_array())["AP"] < 1.0


def test_ignore_counts_labelled_keypoints_not_num_keypoints(fixtures_dir: Path) -> None:
    gt = load(fixtures_dir / "coco/test_coco.json")
    stale = copy.deepcopy(gt)
    stale["annotations"][0]["num_keypoints"] = 0  # a stale field must not ignore a labelled GT
    preds = noisy_predictions(gt, 11)
    assert max_err(oks_eval(stale, preds, sigmas="coco"), oks_eval(gt, preds, sigmas="coco")) == 0


# ------------------------------------------------------------------------------------------
# Metadata, immutability, writing
# ------------------------------------------------------------------------------------------


def test_meta_records_versions_and_settings(fixtures_dir: Path) -> None:
    gt_path = fixtures_dir / "aic/test_aic.json"
    preds = noisy_predictions(load(gt_path), 0)
    stats = oks_eval(gt_path, preds, sigmas="aic", use_area=False)
    meta = stats["meta"]
    assert meta["versions"]["pycocotools"] == metadata.version("pycocotools")
    assert meta["versions"]["numpy"] == np.__version__
    assert meta["versions"]["posebh"]
    assert meta["sigmas"] == get_skeleton("aic").sigmas_array().tolist()
    assert meta["use_area"] is False and meta["iou_type"] == "keypoints"
    assert meta["gt"] == str(gt_path)
    assert meta["num_gt"] == 9 and meta["num_results"] == len(preds)
    assert "xtcocotools 1.14.3" in meta["semantics"]
    json.dumps(stats)  # the whole result is JSON-serialisable


def test_inputs_not_modified(examples_dir: Path) -> None:
    gt = load(examples_dir / "example_wholebody_val.json")
    preds = load(examples_dir / "example_wholebody_preds.json")
    gt0, preds0 = copy.deepcopy(gt), copy.deepcopy(preds)
    wholebody_eval(gt, preds)
    oks_eval(gt, preds, sigmas="coco", use_area=False)
    assert gt == gt0 and preds == preds0


def test_write_coco_results_round_trip(fixtures_dir: Path, tmp_path: Path) -> None:
    gt = load(fixtures_dir / "coco/test_coco.json")
    results = [
        {
            "image_id": np.int64(a["image_id"]),
            "category_id": np.int32(a["category_id"]),
            "keypoints": np.asarray(a["keypoints"], dtype=np.float32).reshape(17, 3),
            "score": np.float32(0.9),
            "center": np.zeros(2),
            "scale": np.ones(2),
        }
        for a in gt["annotations"]
    ]
    path = write_coco_results(tmp_path / "sub" / "results.json", results)
    written = load(path)
    assert len(written) == len(results)
    assert all(set(r) == {"image_id", "category_id", "keypoints", "score"} for r in written)
    assert all(len(r["keypoints"]) == 51 for r in written)
    assert oks_eval(gt, path, sigmas="coco")["AP"] == 1.0
    no_score = {k: v for k, v in written[1].items() if k != "score"}
    with pytest.raises(ValueError, match=r"result 1: missing field 'score'"):
        write_coco_results(tmp_path / "bad.json", [written[0], no_score])
    with pytest.raises(ValueError, match=r"result 0: field 'keypoints' contains NaN"):
        write_coco_results(tmp_path / "bad.json", [{**written[0], "keypoints": [np.nan] * 51}])
    assert not (tmp_path / "bad.json").exists()


# ------------------------------------------------------------------------------------------
# Malformed inputs
# ------------------------------------------------------------------------------------------


@pytest.fixture()
def coco_case(fixtures_dir: Path) -> tuple[Path, list]:
    path = fixtures_dir / "coco/test_coco.json"
    return path, gt_as_predictions(load(path))


def test_unknown_image_id(coco_case, tmp_path: Path) -> None:
    gt_path, preds = coco_case
    preds[3]["image_id"] = 123456789
    res_path = tmp_path / "res.json"
    res_path.write_text(json.dumps(preds))
    with pytest.raises(ValueError, match=r"res\.json: result 3 .*image_id 123456789"):
        oks_eval(gt_path, res_path, sigmas="coco")


def test_wrong_keypoint_length(coco_case) -> None:
    gt_path, preds = coco_case
    preds[2]["keypoints"] = preds[2]["keypoints"][:-3]
    with pytest.raises(ValueError, match=r"result 2 .*'keypoints' has 48 values, expected 51"):
        oks_eval(gt_path, preds, sigmas="coco")
    with pytest.raises(ValueError, match=r"expected 42"):  # 17-keypoint GT against 14 sigmas
        oks_eval(gt_path, gt_as_predictions(load(gt_path)), sigmas="aic")


def test_missing_score(coco_case) -> None:
    gt_path, preds = coco_case
    del preds[5]["score"]
    with pytest.raises(ValueError, match=r"result 5 .*missing field 'score'"):
        oks_eval(gt_path, preds, sigmas="coco")


def test_bad_values(coco_case) -> None:
    gt_path, preds = coco_case
    bad = copy.deepcopy(preds)
    bad[0]["keypoints"][0] = float("nan")
    with pytest.raises(ValueError, match=r"result 0 .*NaN"):
        oks_eval(gt_path, bad, sigmas="coco")
    bad = copy.deepcopy(preds)
    bad[1]["score"] = "high"
    with pytest.raises(ValueError, match=r"result 1 .*'score' must be a finite number"):
        oks_eval(gt_path, bad, sigmas="coco")
    bad = copy.deepcopy(preds)
    bad[4]["category_id"] = 99
    with pytest.raises(ValueError, match=r"result 4 .*category_id 99"):
        oks_eval(gt_path, bad, sigmas="coco")
    with pytest.raises(ValueError, match=r"JSON list"):
        oks_eval(gt_path, {"annotations": preds}, sigmas="coco")
    with pytest.raises(ValueError, match=r"iou_type"):
        oks_eval(gt_path, preds, sigmas="coco", iou_type="bbox")


def test_non_json_files(coco_case, tmp_path: Path) -> None:
    gt_path, preds = coco_case
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    with pytest.raises(ValueError, match=r"junk\.json: results file is not valid JSON"):
        oks_eval(gt_path, junk, sigmas="coco")
    with pytest.raises(ValueError, match=r"junk\.json: annotation file is not valid JSON"):
        oks_eval(junk, preds, sigmas="coco")
    junk.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=r"junk\.json"):
        oks_eval(gt_path, junk, sigmas="coco")


def test_malformed_gt(fixtures_dir: Path) -> None:
    gt = load(fixtures_dir / "coco/test_coco.json")
    preds = gt_as_predictions(gt)
    bad = copy.deepcopy(gt)
    del bad["annotations"][2]["bbox"]
    with pytest.raises(ValueError, match=r"annotation 2 \(id=230195\): missing field 'bbox'"):
        oks_eval(bad, preds, sigmas="coco")
    bad = copy.deepcopy(gt)
    del bad["categories"]
    with pytest.raises(ValueError, match=r"'categories'"):
        oks_eval(bad, preds, sigmas="coco")
