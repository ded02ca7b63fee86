"""Coordinate metrics, heatmap PCK, OKS-NMS, rescoring, MPII PCKh and MPJPE.

Golden values: ``golden/suite/metrics.npz`` (the official ``top_down_eval.py`` / ``nms.py`` run
unchanged on seeded inputs). Observed max errors against it: 0.0 for every key (PCK acc/avg/cnt,
AUC, EPE, NME, heatmap PCK, OKS-NMS and soft-NMS keep lists, both OKS matrices), so the float
comparisons below use 1e-12 and the index lists exact equality.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from posebh.evaluation import (
    auc,
    calc_distances,
    epe,
    heatmap_argmax,
    heatmap_pck,
    mpii_gt_arrays,
    mpjpe,
    nme,
    oks_iou,
    oks_nms,
    pck_accuracy,
    pckh,
    rescore_and_nms,
    soft_oks_nms,
)
from posebh.skeletons import get_skeleton

EXACT = 1e-12


@pytest.fixture(scope="module")
def gold(golden_dir: Path) -> dict[str, np.ndarray]:
    with np.load(golden_dir / "suite" / "metrics.npz") as d:
        out = {k: d[k] for k in d.files}
    assert json.loads(str(out["meta_json"]))["official_commit"] == "8f03438"
    return out


# ------------------------------------------------------------------------------------------
# Golden: PCK / AUC / EPE / NME / heatmap PCK
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("thr", ["0.05", "0.1", "0.2"])
def test_pck_golden(gold: dict, thr: str) -> None:
    acc, avg, cnt = pck_accuracy(
        gold["pred"], gold["gt"], gold["mask"], float(thr), gold["normalize"]
    )
    np.testing.assert_allclose(acc, gold[f"pck_thr{thr}_acc"], rtol=0, atol=EXACT)
    assert avg == pytest.approx(float(gold[f"pck_thr{thr}_avg"]), abs=EXACT)
    assert cnt == int(gold[f"pck_thr{thr}_cnt"])
    assert acc[16] == -1.0  # keypoint 16 is never visible


def test_normalize_is_not_mutated(gold: dict) -> None:
    """The official ``_calc_distances`` overwrites ``normalize``; ours reads a copy."""
    norm = gold["normalize"].copy()
    assert not np.array_equal(norm, gold["normalize_after_call"])  # the official mutation
    for fn in (
        lambda: pck_accuracy(gold["pred"], gold["gt"], gold["mask"], 0.1, norm),
        lambda: nme(gold["pred"], gold["gt"], gold["mask"], norm),
        lambda: calc_distances(gold["pred"], gold["gt"], gold["mask"], norm),
    ):
        fn()
        np.testing.assert_array_equal(norm, gold["normalize"])
    # Row 2 has a zero: masked out entirely (not merely rescaled by the 1e6 replacement).
    d = calc_distances(gold["pred"], gold["gt"], gold["mask"], norm)
    assert d.shape == (17, 4) and d.dtype == np.float32
    assert np.all(d[:, 2] == -1)


def test_negative_norm_is_replaced_not_masked() -> None:
    pred = np.array([[[3.0, 4.0]]], dtype=np.float32)
    gt = np.zeros_like(pred)
    d = calc_distances(pred, gt, np.ones((1, 1), bool), np.array([[-2.0, 4.0]], np.float32))
    assert d[0, 0] == pytest.approx(math.hypot(3 / 1e6, 1.0), rel=1e-6)


def test_auc_epe_nme_golden(gold: dict) -> None:
    p, g, m = gold["pred"], gold["gt"], gold["mask"]
    assert auc(p, g, m, 30) == pytest.approx(float(gold["auc_norm30"]), abs=EXACT)
    assert auc(p, g, m, 30, 20) == pytest.approx(float(gold["auc_norm30_numstep20"]), abs=EXACT)
    assert auc(p, g, m, 30, 5) == pytest.approx(float(gold["auc_norm30_numstep5"]), abs=EXACT)
    assert epe(p, g, m) == pytest.approx(float(gold["epe"]), abs=EXACT)
    assert nme(p, g, m, gold["normalize"]) == pytest.approx(float(gold["nme"]), abs=EXACT)


def test_auc_of_perfect_prediction() -> None:
    pred = np.random.default_rng(0).uniform(0, 100, (3, 5, 2))
    assert auc(pred, pred, np.ones((3, 5), bool), 30) == pytest.approx(0.95)
    assert auc(pred, pred, np.ones((3, 5), bool), 30, 4) == pytest.approx(0.75)


def test_heatmap_pck_golden(gold: dict) -> None:
    out, tgt, mask = gold["pose_pck_output"], gold["pose_pck_target"], gold["pose_pck_mask"]
    acc, avg, cnt = heatmap_pck(out, tgt, mask)
    np.testing.assert_allclose(acc, gold["pose_pck_default_acc"], rtol=0, atol=EXACT)
    assert avg == pytest.approx(float(gold["pose_pck_default_avg"]), abs=EXACT)
    assert cnt == int(gold["pose_pck_default_cnt"])
    norm = gold["pose_pck_thr0.1_normWH_normalize"]
    acc, avg, cnt = heatmap_pck(out, tgt, mask, 0.1, norm)
    np.testing.assert_allclose(acc, gold["pose_pck_thr0.1_normWH_acc"], rtol=0, atol=EXACT)
    assert avg == pytest.approx(float(gold["pose_pck_thr0.1_normWH_avg"]), abs=EXACT)
    assert cnt == int(gold["pose_pck_thr0.1_normWH_cnt"])


def test_heatmap_pck_normalises_x_by_height() -> None:
    """The default normalize is ``[[H, W]]`` while coordinates are ``(x, y)``: dx / H."""
    out = np.zeros((1, 1, 32, 24), np.float32)
    tgt = np.zeros_like(out)
    out[0, 0, 5, 10] = 1.0
    tgt[0, 0, 5, 11] = 1.0  # dx = 1: 1/32 < 0.04 < 1/24
    mask = np.ones((1, 1), bool)
    assert heatmap_pck(out, tgt, mask, 0.04)[1] == 1.0
    assert heatmap_pck(out, tgt, mask, 0.04, [[24, 32]])[1] == 0.0


def test_heatmap_argmax_rules() -> None:
    hm = np.zeros((1, 3, 4, 5), np.float32)
    hm[0, 0, 2, 3] = 1.0
    hm[0, 1] = -1.0  # max <= 0 -> (-1, -1)
    hm[0, 2, 1, 1] = hm[0, 2, 1, 2] = 0.5  # tie: first in row-major order
    preds, maxvals = heatmap_argmax(hm)
    assert preds.dtype == np.float32
    assert preds[0].tolist() == [[3, 2], [-1, -1], [1, 1]]
    assert maxvals[0, :, 0].tolist() == [1.0, -1.0, 0.5]


# ------------------------------------------------------------------------------------------
# Golden: OKS / NMS
# ------------------------------------------------------------------------------------------


def nms_instances(gold: dict) -> list[dict]:
    rows = zip(gold["nms_keypoints"], gold["nms_scores"], gold["nms_areas"], strict=True)
    return [{"keypoints": k, "score": s, "area": a} for k, s, a in rows]


@pytest.mark.parametrize("thr", ["0.9", "0.5", "0.2"])
def test_oks_nms_golden(gold: dict, thr: str) -> None:
    inst = nms_instances(gold)
    sig = gold["nms_sigmas"]
    assert oks_nms(inst, float(thr), sig) == gold[f"oks_nms_thr{thr}_keep"].tolist()
    assert oks_nms(inst, float(thr), sig, 0.2) == gold[f"oks_nms_thr{thr}_vis0.2_keep"].tolist()


def test_oks_nms_default_sigmas_and_soft_golden(gold: dict) -> None:
    inst = nms_instances(gold)
    assert oks_nms(inst, 0.9) == gold["oks_nms_thr0.9_default_sigmas_keep"].tolist()
    soft = soft_oks_nms(inst, 0.9, gold["nms_sigmas"])
    assert soft == gold["soft_oks_nms_thr0.9_keep"].tolist()
    assert soft_oks_nms(inst, 0.9, gold["nms_sigmas"], max_dets=4) == soft[:4]
    assert oks_nms([], 0.9) == [] and soft_oks_nms([], 0.9) == []
    np.testing.assert_array_equal(gold["nms_sigmas"], get_skeleton("coco").sigmas_array())


def test_oks_iou_golden(gold: dict) -> None:
    k, a, sig = gold["nms_keypoints"], gold["nms_areas"], gold["nms_sigmas"]
    for vis, key in ((None, "oks_iou_matrix"), (0.2, "oks_iou_matrix_vis0.2")):
        m = np.stack([oks_iou(k[i], k, a[i], a, sig, vis) for i in range(len(k))])
        assert m.dtype == np.float32
        np.testing.assert_array_equal(m, gold[key])
    # flat (3K,) / [N, 3K] inputs are the official layout and give the same values
    flat = k.reshape(len(k), -1)
    np.testing.assert_array_equal(oks_iou(flat[0], flat, a[0], a, sig), gold["oks_iou_matrix"][0])


def test_vis_thr_filters_by_detection_visibility_only() -> None:
    """``list(vg > t) and list(vd > t)`` is ``list(vd > t)``: only ``d``'s scores filter."""
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (17, 2))
    low = {"keypoints": np.c_[xy, np.full(17, 0.1)], "area": 5000.0}
    high = {"keypoints": np.c_[xy + 1.0, np.full(17, 0.9)], "area": 5000.0}
    # g = low-visibility instance, d = high: every keypoint counts -> a high OKS.
    assert oks_iou(low["keypoints"], high["keypoints"][None], 5000.0, [5000.0], None, 0.2)[0] > 0.9
    # g = high, d = low: no keypoint of d passes -> 0.
    assert oks_iou(high["keypoints"], low["keypoints"][None], 5000.0, [5000.0], None, 0.2)[0] == 0
    # Hence NMS with vis_thr is asymmetric in which instance scores higher.
    assert oks_nms([{**low, "score": 0.9}, {**high, "score": 0.5}], 0.5, vis_thr=0.2) == [0]
    assert oks_nms([{**low, "score": 0.5}, {**high, "score": 0.9}], 0.5, vis_thr=0.2) == [1, 0]


def test_oks_nms_keeps_at_equality() -> None:
    """Kept while OKS <= thr: two identical poses have OKS exactly 1."""
    k = np.c_[np.random.default_rng(2).uniform(0, 50, (17, 2)), np.ones(17)]
    pair = [
        {"keypoints": k, "score": 0.9, "area": 900.0},
        {"keypoints": k, "score": 0.8, "area": 900.0},
    ]
    assert oks_iou(k, k[None], 900.0, [900.0])[0] == 1.0
    assert oks_nms(pair, 1.0) == [0, 1]
    assert oks_nms(pair, 0.999) == [0]


def test_oks_iou_hand_computed() -> None:
    sig = np.array([0.1, 0.2])
    g = np.array([[0.0, 0.0, 1.0], [10.0, 0.0, 1.0]])
    d = np.array([[[3.0, 4.0, 1.0], [10.0, 0.0, 1.0]]])
    e0 = 25.0 / (2 * 0.1) ** 2 / ((100 + 300) / 2 + np.spacing(1)) / 2
    want = np.float32((math.exp(-e0) + 1.0) / 2)
    assert oks_iou(g, d, 100.0, [300.0], sig)[0] == want


# ------------------------------------------------------------------------------------------
# Rescoring + NMS (PROTOCOL.md §3)
# ------------------------------------------------------------------------------------------


def test_rescore_and_nms() -> None:
    k = np.zeros((17, 3), np.float32)
    k[:, 0] = np.arange(17) * 7.0
    k[:, 1] = np.arange(17) * 3.0
    k[:, 2] = 0.1
    k[:4, 2] = [0.5, 0.3, np.float32(0.2), 0.9]  # float32(0.2) > 0.2 in float64: counted
    a = {"keypoints": k, "score": 0.8, "area": 4000.0, "tag": "a"}
    b = {"keypoints": k + np.array([0.5, 0.5, 0.0]), "score": 0.9, "area": 4000.0, "tag": "b"}
    low = k.copy()
    low[:, 2] = 0.05
    c = {"keypoints": low, "score": 1.0, "area": 4000.0, "tag": "c"}
    far = {"keypoints": k + np.array([500.0, 0.0, 0.0]), "score": 0.5, "area": 4000.0, "tag": "far"}
    inputs = {1: [a, b, c, far], 2: [dict(a)]}
    out = rescore_and_nms(inputs, get_skeleton("coco").sigmas_array())
    mean = sum(float(np.float32(v)) for v in (0.5, 0.3, 0.2, 0.9)) / 4
    want_a, want_b = 0.8 * mean, 0.9 * mean
    # b beats a and suppresses it (OKS > 0.9); c has no keypoint above vis_thr -> score 0, and
    # it overlaps b as well; far survives.
    assert [r["tag"] for r in out[1]] == ["b", "far"]
    assert out[1][0]["score"] == pytest.approx(want_b, abs=1e-15)
    assert out[1][1]["score"] == pytest.approx(0.5 * mean, abs=1e-15)
    assert out[2][0]["score"] == pytest.approx(want_a, abs=1e-15)
    assert a["score"] == 0.8 and inputs[1][0] is a  # inputs untouched
    # list input, no NMS, and soft NMS (nothing dropped, re-ordered)
    plain = rescore_and_nms([[a, b, c, far]], None, use_nms=False)
    assert [r["score"] for r in plain[0]] == pytest.approx([want_a, want_b, 0.0, 0.5 * mean])
    soft = rescore_and_nms([[a, b, c, far]], None, soft=True)
    assert [r["tag"] for r in soft[0]][:2] == ["b", "far"] and len(soft[0]) == 4


# ------------------------------------------------------------------------------------------
# MPII PCKh
# ------------------------------------------------------------------------------------------

JOINTS = ("rank", "rkne", "rhip", "lhip", "lkne", "lank", "pelv", "thor",
          "neck", "head", "rwri", "relb", "rsho", "lsho", "lelb", "lwri")  # fmt: skip

# Error as a fraction of the head size, per (instance, joint); visibility per (instance, joint).
# Instance head boxes: 30x40 px (diagonal 50, head size 30) and 60x80 (diagonal 100, size 60).
_FRAC = np.array(
    [
        # rank rkne rhip lhip lkne lank pelv thor neck head rwri relb rsho lsho lelb lwri
        [0.0, 0.5, 0.6, 0.05, 0.5, 0.0, 0.9, 0.9, 0.0, 0.5, 0.6, 0.05, 0.0, 0.5, 0.6, 0.0],
        [0.5, 0.6, 0.0, 0.5, 0.05, 0.6, 0.9, 0.0, 0.6, 0.0, 0.0, 0.5, 0.6, 0.05, 0.0, 0.6],
        [0.6, 0.0, 0.5, 0.0, 0.6, 0.5, 0.9, 0.9, 0.5, 0.6, 0.5, 0.0, 0.5, 0.6, 0.05, 0.5],
    ]
)
_VIS = np.ones((3, 16), bool)
_VIS[0, [2, 12]] = False  # rhip, rsho missing in instance 0
_VIS[2, [0, 9]] = False  # rank, head missing in instance 2


def _pckh_case() -> tuple[np.ndarray, dict]:
    head_size = np.array([30.0, 60.0, 30.0])
    corners = np.array([[[5, 7], [35, 47]], [[10, 10], [70, 90]], [[0, 0], [30, 40]]], float)
    gt = np.arange(3 * 16 * 2, dtype=float).reshape(3, 16, 2) * 3 + 20  # 1-based (MATLAB)
    # error along (3/5, 4/5): the ties (frac 0.5) are exact, 0.5·30 = 15 = |(9, 12)|
    dist = _FRAC * head_size[:, None]
    offset = np.stack([dist * 0.6, dist * 0.8], axis=-1)
    pred0 = gt - 1.0 + offset  # 0-based predictions; pckh adds 1
    pred0[~_VIS] = 1e4  # missing joints: any prediction is ignored
    return pred0, mpii_gt_arrays(gt, corners, _VIS)


def _expected(thr: float, inclusive: bool) -> tuple[np.ndarray, float]:
    hit = np.less_equal(_FRAC, thr) if inclusive else np.less(_FRAC, thr)
    per_joint = 100.0 * (hit & _VIS).sum(0) / _VIS.sum(0)
    keep = np.r_[0:6, 8:16]  # pelvis (6), thorax (7) excluded
    # the count-weighted mean of per-joint percentages = 100 · hits / visible over kept joints
    return per_joint, 100.0 * (hit & _VIS)[:, keep].sum() / _VIS[:, keep].sum()


@pytest.mark.parametrize("inclusive", [True, False])
def test_pckh_hand_computed(inclusive: bool) -> None:
    pred, gt = _pckh_case()
    out = pckh(pred, gt, inclusive=inclusive)
    per_joint, mean = _expected(0.5, inclusive)
    np.testing.assert_allclose(out["per_joint"], per_joint, rtol=0, atol=1e-12)
    assert out["PCKh"] == pytest.approx(mean, abs=1e-12)
    j = {n: i for i, n in enumerate(JOINTS)}
    assert out["Head"] == pytest.approx(per_joint[j["head"]])
    pairs = {
        "Shoulder": ("lsho", "rsho"),
        "Elbow": ("lelb", "relb"),
        "Wrist": ("lwri", "rwri"),
        "Hip": ("lhip", "rhip"),
        "Knee": ("lkne", "rkne"),
        "Ankle": ("lank", "rank"),
    }
    for group, (a, b) in pairs.items():
        assert out[group] == pytest.approx(0.5 * (per_joint[j[a]] + per_joint[j[b]]))
    _, mean01 = _expected(0.1, True)
    assert out["PCKh@0.1"] == pytest.approx(mean01, abs=1e-4)  # float32 per-joint values
    assert out["per_joint_count"] == _VIS.sum(0).tolist()
    assert out["meta"]["inclusive"] is inclusive and out["meta"]["thr_low"] == 0.1
    json.dumps(out)


def test_pckh_ties_and_exclusions() -> None:
    pred, gt = _pckh_case()
    le, lt = pckh(pred, gt), pckh(pred, gt, inclusive=False)
    assert le["PCKh"] > lt["PCKh"]  # exact 0.5 ties count only with <=
    assert le["Head"] == 100.0 and lt["Head"] == 50.0  # head fracs: 0.5 (tie), 0.0, missing
    # pelvis (always 0.9: a miss) and thorax do not enter the mean
    worse = pred.copy()
    worse[:, 7] += 1000.0
    assert pckh(worse, gt)["PCKh"] == le["PCKh"]
    assert pckh(worse, gt)["per_joint"][7] == 0.0
    with pytest.raises(ValueError, match="16 joints"):
        pckh(pred[:, :15], gt)


def test_pckh_reads_mat_file(tmp_path: Path) -> None:
    sio = pytest.importorskip("scipy.io")
    pred, gt = _pckh_case()
    names = np.empty((1, 16), dtype=object)  # a MATLAB cell array, as in mpii_gt_val.mat
    names[0] = [np.array([n]) for n in JOINTS]
    path = tmp_path / "mpii_gt_val.mat"
    sio.savemat(path, {**gt, "dataset_joints": names})
    from_file = pckh(pred, path)
    from_arrays = pckh(pred, gt)
    for key in ("PCKh", "PCKh@0.1", "Head", "Ankle"):
        assert from_file[key] == from_arrays[key]
    assert from_file["meta"]["versions"]["scipy"]


def test_pckh_does_not_mutate() -> None:
    pred, gt = _pckh_case()
    pred0, gt0 = pred.copy(), {k: v.copy() for k, v in gt.items()}
    pckh(pred, gt)
    np.testing.assert_array_equal(pred, pred0)
    for k in gt:
        np.testing.assert_array_equal(gt[k], gt0[k])


# ------------------------------------------------------------------------------------------
# MPJPE
# ------------------------------------------------------------------------------------------


def _rotation(rng: np.random.Generator, c: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(c, c)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def umeyama_reference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Umeyama (1991), eqs. 34-42, for one instance: c·R·x + t closest to y. ``x, y [K, C]``."""
    n, c = x.shape
    mx, my = x.mean(0), y.mean(0)
    sx2 = ((x - mx) ** 2).sum() / n
    cov = (y - my).T @ (x - mx) / n
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(c)
    if np.linalg.det(cov) < 0:
        s[-1, -1] = -1
    r = u @ s @ vt
    scale = np.trace(np.diag(d) @ s) / sx2
    t = my - scale * r @ mx
    return (scale * (r @ x.T)).T + t


@pytest.fixture(scope="module")
def h36m(fixtures_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(fixtures_dir / "h36m" / "test_h36m_body3d.npz") as d:
        s = d["S"]
    return s[..., :3], s[..., 3] > 0


def test_mpjpe_h36m_fixture(h36m) -> None:
    joints, mask = h36m
    assert joints.shape == (4, 17, 3)
    for alignment in ("none", "scale", "procrustes"):
        assert mpjpe(joints, joints, mask, alignment) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(3)
    rot = np.stack([_rotation(rng, 3) for _ in range(4)])
    scale = rng.uniform(0.5, 2.0, 4)
    shift = rng.normal(0, 1, (4, 1, 3))
    moved = scale[:, None, None] * np.einsum("nij,nkj->nki", rot, joints) + shift
    assert mpjpe(moved, joints, mask) > 0.1
    assert mpjpe(moved, joints, mask, "procrustes") == pytest.approx(0.0, abs=1e-9)
    scaled = joints * scale[:, None, None]
    assert mpjpe(scaled, joints, mask, "scale") == pytest.approx(0.0, abs=1e-12)
    shifted = joints + np.array([0.03, -0.04, 0.0])
    assert mpjpe(shifted, joints, mask) == pytest.approx(0.05, abs=1e-12)


@pytest.mark.parametrize("c", [2, 3])
def test_mpjpe_against_plain_reference(c: int) -> None:
    rng = np.random.default_rng(10 + c)
    gt = rng.normal(0, 100, (6, 14, c))
    pred = gt * rng.uniform(0.7, 1.3, (6, 1, 1)) + rng.normal(0, 15, gt.shape)
    mirror = np.r_[-1.0, np.ones(c - 1)]
    pred[0] = gt[0] * mirror + 3.0  # a mirror image: the fit must stay a proper rotation
    mask = rng.uniform(size=(6, 14)) < 0.8
    ref_pa = np.stack([umeyama_reference(p, g) for p, g in zip(pred, gt, strict=True)])
    want = np.linalg.norm(ref_pa - gt, axis=-1)[mask].mean()
    assert mpjpe(pred, gt, mask, "procrustes") == pytest.approx(want, rel=1e-12)
    factor = (pred * gt).sum((1, 2)) / (pred * pred).sum((1, 2))
    want = np.linalg.norm(pred * factor[:, None, None] - gt, axis=-1)[mask].mean()
    assert mpjpe(pred, gt, mask, "scale") == pytest.approx(want, rel=1e-12)
    rows, cols = np.nonzero(mask)
    want = np.mean([np.linalg.norm(pred[n, k] - gt[n, k]) for n, k in zip(rows, cols, strict=True)])
    assert mpjpe(pred, gt, mask) == pytest.approx(want, rel=1e-12)
    # the reflected instance cannot be aligned by a proper rotation
    assert mpjpe(pred[:1], gt[:1], np.ones((1, 14), bool), "procrustes") > 1.0


def test_mpjpe_errors_and_no_mutation(h36m) -> None:
    joints, mask = h36m
    before = joints.copy()
    mpjpe(joints * 1.1, joints, mask, "procrustes")
    np.testing.assert_array_equal(joints, before)
    with pytest.raises(ValueError, match="alignment"):
        mpjpe(joints, joints, mask, "similarity")
    with pytest.raises(ValueError, match="no joint"):
        mpjpe(joints, joints, np.zeros_like(mask))
