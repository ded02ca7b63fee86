"""Per-image bootstrap Resamplers of PCKh, PCK/AUC/EPE, NME and MPJPE against the full-set
functions themselves: the identity resample gives the full-set values, and any image multiset
gives the full-set function run on the arrays with each instance repeated in place as many
times as its image was drawn (instances of a zero-count image dropped).

Observed max differences against the full-set functions: 0.0 for every metric and multiset
(the resamplers repeat the same float operations in the same order: exact integer counts for
PCKh and PCK/AUC, the duplicated arrays themselves for EPE/NME's float32 sums and for MPJPE);
the comparisons use 1e-12 as tests/test_metrics.py does."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from posebh.evaluation import (
    auc,
    epe,
    mpii_gt_arrays,
    mpjpe,
    mpjpe_resampler,
    nme,
    nme_resampler,
    pck_accuracy,
    pck_auc_epe_resampler,
    pckh,
    pckh_resampler,
)
from posebh.evaluation.bootstrap import Resampler, bootstrap, paired_bootstrap
from posebh.evaluation.mpii import MPII_MAT_JOINTS

EXACT = 1e-12
PCKH_KEYS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "PCKh", "PCKh@0.1")


def _duplicated_index(image_ids, counts: np.ndarray) -> np.ndarray:
    """Instance order of the duplicated arrays, by plain loops: instance n repeated in place
    ``counts[rank of its image among the sorted unique ids]`` times."""
    rank = {img: r for r, img in enumerate(sorted(set(image_ids)))}
    out = []
    for n, img in enumerate(image_ids):
        out.extend([n] * int(counts[rank[img]]))
    return np.array(out, dtype=np.int64)


def _multisets(num_images: int, seed: int) -> np.ndarray:
    """Bootstrap-like multisets (summing to I) and arbitrary ones (some images drawn 0 times,
    others up to 3), several per call."""
    rng = np.random.default_rng(seed)
    boot = rng.multinomial(num_images, np.full(num_images, 1.0 / num_images), size=4)
    free = rng.integers(0, 4, size=(3, num_images))
    free[:, 0] = np.maximum(free[:, 0], 1)  # never the empty multiset
    return np.concatenate([boot, free])


def _check_identity(r: Resampler) -> None:
    got = r.values(np.ones((1, r.num_units), dtype=np.int64))
    assert got.shape == (1, len(r.names))
    np.testing.assert_allclose(got[0], r.full, rtol=0, atol=EXACT, equal_nan=True)


def _check_duplicates(r: Resampler, image_ids, full_set, seed: int) -> None:
    """``full_set(index)`` runs the full-set function on the instances ``index``."""
    counts = _multisets(r.num_units, seed)
    got = r.values(counts)
    assert got.shape == (len(counts), len(r.names))
    for row, c in zip(got, counts, strict=True):
        want = full_set(_duplicated_index(image_ids, c))
        np.testing.assert_allclose(row, want, rtol=0, atol=EXACT, equal_nan=True)


def _check_bootstrap(r: Resampler, smooth: str) -> None:
    same = paired_bootstrap(r, r, 100, seed=5)
    for name, entry in same.items():
        assert entry["delta"] == 0.0 and entry["ci95"] == [0.0, 0.0] and entry["p"] == 1.0, name
    first, again = bootstrap(r, 200, seed=11), bootstrap(r, 200, seed=11)
    assert json.dumps(first) == json.dumps(again)
    lo, hi = first[smooth]["ci95"]
    assert lo < first[smooth]["value"] < hi


# ------------------------------------------------------------------------------------------
# MPII PCKh
# ------------------------------------------------------------------------------------------


def _pckh_full_set(pred, joints, headboxes, visible):
    def run(index: np.ndarray) -> np.ndarray:
        gt = mpii_gt_arrays(joints[index], headboxes[index], visible[index])
        with warnings.catch_warnings():  # NaN joints: 0/0 and numpy.ma's masked-to-nan note
            warnings.simplefilter("ignore")
            out = pckh(pred[index], gt)
        return np.array([out[k] for k in PCKH_KEYS])

    return run


def _synthetic_mpii(seed: int):
    """Persons (1–4 per image, image order shuffled), missing joints; pelvis never annotated
    (its NaN is left out of the mean); left ankle annotated in one image only (Ankle and PCKh
    are NaN on resamples without it); errors spread around the 0.1 and 0.5 thresholds."""
    rng = np.random.default_rng(seed)
    image_ids = np.repeat(np.arange(100, 112), rng.integers(1, 5, 12))
    image_ids = image_ids[rng.permutation(len(image_ids))]
    n = len(image_ids)
    joints = rng.uniform(50, 600, (n, 16, 2))
    corner = rng.uniform(0, 500, (n, 2))
    headboxes = np.stack([corner, corner + rng.uniform(20, 80, (n, 2))], axis=1)
    head = np.linalg.norm(headboxes[:, 1] - headboxes[:, 0], axis=1) * 0.6
    visible = rng.random((n, 16)) < 0.8
    visible[:, 6] = False  # pelv
    visible[:, 5] = image_ids == image_ids[0]  # lank
    frac = rng.choice([0.0, 0.05, 0.1, 0.3, 0.5, 0.7, 1.5], size=(n, 16))
    angle = rng.uniform(0, 2 * np.pi, (n, 16))
    offset = np.stack([np.cos(angle), np.sin(angle)], -1) * (frac * head[:, None])[..., None]
    pred = joints - 1.0 + offset
    return image_ids, pred, joints, headboxes, visible


def test_pckh_resampler_synthetic() -> None:
    image_ids, pred, joints, headboxes, visible = _synthetic_mpii(0)
    for inclusive in (True, False):
        r = pckh_resampler(
            pred, mpii_gt_arrays(joints, headboxes, visible), image_ids, inclusive=inclusive
        )
        assert r.names == PCKH_KEYS and r.units == tuple(range(100, 112))
        if inclusive:
            full = _pckh_full_set(pred, joints, headboxes, visible)
            np.testing.assert_array_equal(r.full, full(np.arange(len(pred))))
            _check_identity(r)
            _check_duplicates(r, image_ids, full, seed=1)
            values = r.values(_multisets(r.num_units, 1))
            assert np.isnan(values[:, PCKH_KEYS.index("Ankle")]).any()  # NaN path exercised
            assert not np.isnan(values[:, PCKH_KEYS.index("Head")]).any()
    _check_bootstrap(r, "Head")


def test_pckh_resampler_real_fixture(fixtures_dir: Path, tmp_path: Path) -> None:
    """MPII's own test records (joints, visibility, images); head boxes around the head joint
    sized from the record's scale, predictions perturbed by a fraction of the head size."""
    records = json.loads((fixtures_dir / "mpii" / "test_mpii.json").read_text())
    joints = np.array([r["joints"] for r in records], dtype=np.float64)  # 1-based (MATLAB)
    visible = np.array([r["joints_vis"] for r in records]) > 0
    side = np.array([r["scale"] for r in records]) * 200.0 / 8.0
    headboxes = np.stack([joints[:, 9] - side[:, None] / 2, joints[:, 9] + side[:, None] / 2], 1)
    rng = np.random.default_rng(4)
    pred = joints - 1.0 + rng.normal(0, 0.35, joints.shape) * side[:, None, None]
    image_ids = [r["image"] for r in records]
    gt = mpii_gt_arrays(joints, headboxes, visible)
    sio = pytest.importorskip("scipy.io")
    mat = tmp_path / "mpii_gt_val.mat"
    names = np.empty((1, 16), dtype=object)  # a MATLAB cell array, as in mpii_gt_val.mat
    names[0] = [np.array([n]) for n in MPII_MAT_JOINTS]
    sio.savemat(mat, {**gt, "dataset_joints": names})
    r = pckh_resampler(pred, mat, image_ids)
    assert r.units == tuple(sorted(image_ids))
    full = _pckh_full_set(pred, joints, headboxes, visible)
    np.testing.assert_array_equal(r.full, [pckh(pred, mat)[k] for k in PCKH_KEYS])
    _check_identity(r)
    _check_duplicates(r, image_ids, full, seed=2)


# ------------------------------------------------------------------------------------------
# PCK / AUC / EPE, NME
# ------------------------------------------------------------------------------------------


def _synthetic_2d(seed: int, k: int = 17):
    """Instances (1–4 per image, shuffled), pixel errors around the PCK/AUC thresholds, masked
    keypoints, keypoint 3 valid in one image only, keypoint 4 never valid, one instance with a
    zero normaliser (masked out entirely) and one with a negative one (replaced by 1e6)."""
    rng = np.random.default_rng(seed)
    image_ids = np.repeat(np.arange(30), rng.integers(1, 5, 30))
    image_ids = image_ids[rng.permutation(len(image_ids))]
    n = len(image_ids)
    gt = rng.uniform(0, 400, (n, k, 2))
    pred = gt + rng.normal(0, rng.uniform(1, 25, (n, 1, 1)), (n, k, 2))
    mask = rng.random((n, k)) < 0.85
    mask[:, 3] = image_ids == image_ids[0]
    mask[:, 4] = False
    box = rng.uniform(40, 200, n)
    norm = np.repeat(box[:, None], 2, axis=1)
    norm[1, 0] = 0.0
    norm[2, 1] = -3.0
    return image_ids, pred, gt, mask, norm


def _pck_auc_epe(pred, gt, mask, norm):
    def run(index: np.ndarray) -> np.ndarray:
        p, g, m, nf = pred[index], gt[index], mask[index], norm[index]
        _, pck, _ = pck_accuracy(p, g, m, 0.2, nf)
        return np.array([pck, auc(p, g, m, 30.0, num_thrs=20), epe(p, g, m)])

    return run


def test_pck_auc_epe_resampler_synthetic() -> None:
    image_ids, pred, gt, mask, norm = _synthetic_2d(0)
    r = pck_auc_epe_resampler(pred, gt, mask, norm, image_ids)
    assert r.names == ("PCK", "AUC", "EPE") and r.units == tuple(range(30))
    full = _pck_auc_epe(pred, gt, mask, norm)
    np.testing.assert_array_equal(r.full, full(np.arange(len(pred))))
    _check_identity(r)
    _check_duplicates(r, image_ids, full, seed=3)
    _check_bootstrap(r, "EPE")


def test_pck_auc_epe_resampler_golden_inputs(golden_dir: Path) -> None:
    """The official suite's float32 inputs (keypoint 16 never visible), as 3 images."""
    with np.load(golden_dir / "suite" / "metrics.npz") as d:
        pred, gt, mask, norm = d["pred"], d["gt"], d["mask"], d["normalize"]
    image_ids = ["b", "a", "b", "c"]
    r = pck_auc_epe_resampler(pred, gt, mask, norm, image_ids)
    assert r.units == ("a", "b", "c")
    full = _pck_auc_epe(pred, gt, mask, norm)
    _check_identity(r)
    _check_duplicates(r, image_ids, full, seed=4)


def test_nme_resampler() -> None:
    image_ids, pred, gt, mask, norm = _synthetic_2d(5, k=68)
    r = nme_resampler(pred, gt, mask, norm, image_ids)
    assert r.names == ("NME",)

    def full(index: np.ndarray) -> np.ndarray:
        return np.array([nme(pred[index], gt[index], mask[index], norm[index])])

    np.testing.assert_array_equal(r.full, full(np.arange(len(pred))))
    _check_identity(r)
    _check_duplicates(r, image_ids, full, seed=6)
    _check_bootstrap(r, "NME")


# ------------------------------------------------------------------------------------------
# MPJPE / PA-MPJPE
# ------------------------------------------------------------------------------------------


def _synthetic_3d(seed: int):
    rng = np.random.default_rng(seed)
    image_ids = np.repeat(np.arange(25), rng.integers(1, 4, 25))
    image_ids = image_ids[rng.permutation(len(image_ids))]
    n = len(image_ids)
    gt = rng.normal(0, 300, (n, 17, 3))
    pred = gt * rng.uniform(0.8, 1.2, (n, 1, 1)) + rng.normal(0, 40, gt.shape)
    mask = rng.random((n, 17)) < 0.9
    return image_ids, pred, gt, mask


def test_mpjpe_resampler_synthetic() -> None:
    image_ids, pred, gt, mask = _synthetic_3d(0)
    alignments = ("none", "scale", "procrustes")
    r = mpjpe_resampler(pred, gt, mask, image_ids, alignment=alignments)
    assert r.names == ("MPJPE", "N-MPJPE", "PA-MPJPE")

    def full(index: np.ndarray) -> np.ndarray:
        return np.array([mpjpe(pred[index], gt[index], mask[index], a) for a in alignments])

    np.testing.assert_array_equal(r.full, full(np.arange(len(pred))))
    _check_identity(r)
    _check_duplicates(r, image_ids, full, seed=7)
    _check_bootstrap(r, "PA-MPJPE")
    single = mpjpe_resampler(pred, gt, mask, image_ids, alignment="procrustes")
    assert single.names == ("PA-MPJPE",) and single.full[0] == r.full[2]


def test_mpjpe_resampler_h36m_fixture(fixtures_dir: Path) -> None:
    with np.load(fixtures_dir / "h36m" / "test_h36m_body3d.npz") as d:
        joints, mask, names = d["S"][..., :3], d["S"][..., 3] > 0, d["imgname"]
    image_ids = [str(s).split("/")[0] for s in names]  # the subject as the unit: 4 frames
    pred = joints + np.random.default_rng(8).normal(0, 0.05, joints.shape)
    r = mpjpe_resampler(pred, joints, mask, image_ids, alignment=("none", "procrustes"))

    def full(index: np.ndarray) -> np.ndarray:
        return np.array(
            [mpjpe(pred[index], joints[index], mask[index], a) for a in ("none", "procrustes")]
        )

    _check_identity(r)
    _check_duplicates(r, image_ids, full, seed=9)


# ------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_argument_and_the_fix() -> None:
    image_ids, pred, gt, mask, norm = _synthetic_2d(0)
    short = image_ids[:-1]
    cases = [
        ("pck_auc_epe_resampler", lambda: pck_auc_epe_resampler(pred, gt, mask, norm, short)),
        ("nme_resampler", lambda: nme_resampler(pred, gt, mask, norm, short)),
        ("mpjpe_resampler", lambda: mpjpe_resampler(pred, gt, mask, short)),
    ]
    ids_mpii, pred_mpii, joints, headboxes, visible = _synthetic_mpii(0)
    gt_mpii = mpii_gt_arrays(joints, headboxes, visible)
    cases.append(("pckh_resampler", lambda: pckh_resampler(pred_mpii, gt_mpii, ids_mpii[1:])))
    for caller, make in cases:
        with pytest.raises(ValueError) as err:
            make()
        msg = str(err.value)
        assert caller in msg and "image_ids" in msg and "Fix: pass one image id per" in msg
    r = nme_resampler(pred, gt, mask, norm, image_ids)
    with pytest.raises(ValueError, match=r"counts has shape \(2, 29\); expected \[B, 30\]"):
        r.values(np.ones((2, 29), dtype=np.int64))
    with pytest.raises(ValueError, match="alignment must be"):
        mpjpe_resampler(pred, gt, mask, image_ids, alignment="similarity")
