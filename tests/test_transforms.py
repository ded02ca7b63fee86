"""Geometric transforms (posebh.transforms) and target encodings (posebh.targets) of the pipeline.

Golden sources, both produced by the official mmpose 0.x ``TopDownAffine`` /
``TopDownGenerateTarget`` / ``post_transforms`` of the PoseBH release:

* ``golden/suite/transforms.npz`` (NumPy 1.26, OpenCV 4.10): matrices, joints, crops,
  ``transform_preds`` and every ``TopDownGenerateTarget`` case;
* ``golden/transforms.npz``: four crops of a random image (rotations 0/30/−45/12.5) with their
  joints and MSRA / UDP targets. Its crops come from an OpenCV ≥ 4.11 ``warpAffine`` (float
  arithmetic), the suite's from OpenCV 4.10 (fixed point); the two differ by up to 7 grey
  levels, so each is matched by the corresponding ``warp_affine`` method.

The largest error per golden key is written to the terminal report when the module finishes.
Shape vocabulary: K joints, crops [h, w, 3] uint8 with (w, h) = (192, 256), heatmaps 48×64.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from golden_report import write_error_table

from posebh import decode
from posebh.codecs import generate_target
from posebh.targets import (
    megvii_heatmaps,
    msra_gaussian_heatmaps,
    udp_combined_target,
)
from posebh.transforms import (
    affine_transform_points,
    crop_joints,
    flip_image,
    fliplr_joints,
    get_affine_transform,
    get_warp_matrix,
    half_body_center_scale,
    normalize_image,
    random_scale_rotation,
    top_down_affine,
    transform_preds,
    warp_affine,
)

IMAGE_SIZE = (192, 256)
HEATMAP_SIZE = (48, 64)

#: golden key -> largest |ours − official| (for crops: "max grey levels / share of values").
MAX_ERRORS: dict[str, str] = {}
_CROP_STATS: dict[str, tuple[int, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_max_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    write_error_table(
        request, "posebh.transforms / targets golden max |error| per key:", MAX_ERRORS
    )


def _record(key: str, got: Any, want: Any, tol: float) -> float:
    """Store and check the largest absolute error of ``got`` against the official ``want``."""
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    assert g.shape == w.shape, f"{key}: shape {g.shape} != official {w.shape}"
    err = float(np.abs(g - w).max()) if g.size else 0.0
    prev = MAX_ERRORS.get(key)
    MAX_ERRORS[key] = f"{max(err, float(prev)) if prev else err:.3g}"
    assert err <= tol, f"{key}: max |error| {err:.3g} > {tol:g}"
    return err


def _record_crop(key: str, got: np.ndarray, want: np.ndarray, levels: int = 1) -> None:
    """Crops: at most ``levels`` grey levels apart; record the max and the share that differ."""
    assert got.shape == want.shape and got.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    worst, share = int(diff.max()), float((diff > 0).mean())
    if key in _CROP_STATS:
        worst, share = max(worst, _CROP_STATS[key][0]), max(share, _CROP_STATS[key][1])
    _CROP_STATS[key] = (worst, share)
    MAX_ERRORS[key] = f"{worst} levels, {100 * share:.4f}% of values differ (worst crop)"
    assert int(diff.max()) <= levels, f"{key}: {int(diff.max())} grey levels apart"


@pytest.fixture(scope="module")
def suite(golden_dir: Path) -> dict[str, Any]:
    with np.load(golden_dir / "suite" / "transforms.npz") as d:
        out: dict[str, Any] = {k: d[k] for k in d.files}
    out["meta"] = json.loads(str(out.pop("meta_json")))
    return out


@pytest.fixture(scope="module")
def top(golden_dir: Path) -> dict[str, np.ndarray]:
    with np.load(golden_dir / "transforms.npz") as d:
        return {k: d[k] for k in d.files}


# ---------------------------------------------------------------------------------------------
# Golden suite: TopDownAffine, transform_preds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("i", range(4))
def test_suite_affine_matrices(suite: dict[str, Any], i: int) -> None:
    c, s, r = suite["affine_centers"][i], suite["affine_scales"][i], suite["affine_rotations"][i]
    std = get_affine_transform(c, s, r, IMAGE_SIZE)
    assert std.dtype == np.float64
    _record("suite/affine_std_matrix", std, suite["affine_std_matrix"][i], 1e-6)
    inv = get_affine_transform(c, s, r, IMAGE_SIZE, inv=True)
    _record("suite/affine_std_matrix_inv", inv, suite["affine_std_matrix_inv"][i], 1e-6)
    size = np.asarray(IMAGE_SIZE, dtype=np.float64)
    udp = get_warp_matrix(r, c * 2.0, size - 1.0, s * 200.0)
    assert udp.dtype == np.float32
    _record("suite/affine_udp_matrix", udp, suite["affine_udp_matrix"][i], 1e-6)


@pytest.mark.parametrize("tag", ["std", "udp"])
@pytest.mark.parametrize("i", range(4))
def test_suite_top_down_affine(suite: dict[str, Any], i: int, tag: str) -> None:
    c, s, r = suite["affine_centers"][i], suite["affine_scales"][i], suite["affine_rotations"][i]
    joints_in = suite["affine_joints_in"][i].copy()
    visible = suite["affine_joints_visible"][i]
    crop, joints, _ = top_down_affine(
        suite["affine_src_img"], joints_in, visible, c, s, r, IMAGE_SIZE, use_udp=tag == "udp"
    )
    np.testing.assert_array_equal(joints_in, suite["affine_joints_in"][i])  # input untouched
    _record(f"suite/affine_{tag}_joints_out", joints, suite[f"affine_{tag}_joints_out"][i], 1e-5)
    # OpenCV 4.10 fixed-point arithmetic (the default method) on the official matrix and ours.
    _record_crop(f"suite/affine_{tag}_img_out (fixed)", crop, suite[f"affine_{tag}_img_out"][i])
    official = warp_affine(suite["affine_src_img"], suite[f"affine_{tag}_matrix"][i], IMAGE_SIZE)
    np.testing.assert_array_equal(official, suite[f"affine_{tag}_img_out"][i])


def test_suite_std_moves_visible_joints_only(suite: dict[str, Any]) -> None:
    # Golden suite README item 6: plain TopDownAffine leaves invisible joints where they were.
    for i in range(4):
        vis = suite["affine_joints_visible"][i][:, 0] > 0
        assert (~vis).sum() == 4
        out = suite["affine_std_joints_out"][i]
        np.testing.assert_array_equal(out[~vis], suite["affine_joints_in"][i][~vis])
        joints = crop_joints(
            suite["affine_joints_in"][i],
            suite["affine_joints_visible"][i],
            suite["affine_std_matrix"][i],
            use_udp=False,
        )
        np.testing.assert_array_equal(joints[~vis], suite["affine_joints_in"][i][~vis])


@pytest.mark.parametrize("use_udp", [False, True])
def test_suite_transform_preds(suite: dict[str, Any], use_udp: bool) -> None:
    tag = "udp" if use_udp else "std"
    for i in range(4):
        got = transform_preds(
            suite["transform_preds_in"][i],
            suite["affine_centers"][i],
            suite["affine_scales"][i],
            HEATMAP_SIZE,
            use_udp,
        )
        _record(f"suite/transform_preds_{tag}", got, suite[f"transform_preds_{tag}"][i], 1e-5)


def test_transform_preds_is_decode_s() -> None:
    assert transform_preds is decode.transform_preds


# ---------------------------------------------------------------------------------------------
# Golden suite: TopDownGenerateTarget
# ---------------------------------------------------------------------------------------------

TARGET_CASES: dict[str, dict[str, Any]] = {
    "msra": dict(encoding="MSRA"),
    "msra_unbiased": dict(encoding="MSRA", unbiased_encoding=True),
    "udp_gauss": dict(encoding="UDP"),
    "udp_combined": dict(encoding="UDP", target_type="CombinedTarget"),
    "megvii_k11": dict(encoding="Megvii", kernel=(11, 11)),
    "msra_jointweights": dict(encoding="MSRA", use_different_joint_weights=True),
    "udp_gauss_pad20": dict(encoding="UDP", max_num_joints=20),
}


@pytest.mark.parametrize("case", TARGET_CASES)
def test_suite_generate_target(suite: dict[str, Any], case: str) -> None:
    meta = suite["meta"]["target_cases"][case]
    assert meta["use_different_joint_weights"] == TARGET_CASES[case].get(
        "use_different_joint_weights", False
    )
    assert meta["max_num_joints"] == TARGET_CASES[case].get("max_num_joints")
    target, weight = generate_target(
        suite["target_joints_3d"],
        suite["target_joints_3d_visible"],
        image_size=IMAGE_SIZE,
        heatmap_size=HEATMAP_SIZE,
        joint_weights=suite["meta"]["coco_joint_weights"],
        **TARGET_CASES[case],
    )
    assert target.dtype == np.float32 and weight.dtype == np.float32
    want = suite[f"target_{case}"]
    # Gaussians ≤ 1e-6; the Megvii maps peak at 255, where 1e-6 relative is 2.6e-4.
    tol = 2.6e-4 if case == "megvii_k11" else 1e-6
    _record(f"suite/target_{case}", target, want, tol)
    _record(f"suite/target_weight_{case}", weight, suite[f"target_weight_{case}"], 1e-6)


def test_suite_msra_br_zero_quirk(suite: dict[str, Any]) -> None:
    # Joint 1 at x = −30 → μ = −7.5 → int(−7.0) = −7 → br = int(−7 + 7) = 0: weight kept, no map.
    target, weight = msra_gaussian_heatmaps(
        suite["target_joints_3d"], suite["target_joints_3d_visible"]
    )
    assert weight[1, 0] == 1.0 and not target[1].any()
    assert suite["target_weight_msra"][1, 0] == 1.0 and not suite["target_msra"][1].any()


# ---------------------------------------------------------------------------------------------
# Golden top-level transforms.npz (OpenCV ≥ 4.11 crops)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", ["plain", "udp"])
@pytest.mark.parametrize("i", range(4))
def test_top_crops_and_joints(top: dict[str, np.ndarray], i: int, tag: str) -> None:
    # The harness passed the rotation as a Python float (the float32 value converted to
    # radians in float32 moves UDP joints by a few more ulps).
    c, s, r = top["center"][i], top["scale"][i], float(top["rotation"][i])
    crop, joints, _ = top_down_affine(
        top["image"],
        top["joints_in"][i],
        top["visible_in"][i],
        c,
        s,
        r,
        IMAGE_SIZE,
        use_udp=tag == "udp",
        warp_method="float",
    )
    _record_crop(f"top/crop_{tag} (float)", crop, top[f"crop_{tag}"][i])
    assert joints.dtype == np.float32
    want = top[f"joints_{tag}"][i]
    if tag == "plain":
        _record(f"top/joints_{tag}", joints, want, 1e-5)
    else:
        # float32 x·m0 + y·m1 + m2 (terms up to ~500): the summation order of the official BLAS
        # call is unknown; one float32 ulp of a term in [256, 512) is 3.05e-5.
        _record(f"top/joints_{tag}", joints, want, 3.1e-5)
    np.testing.assert_array_equal(top["visible_in"][i], top[f"visible_{tag}"][i])


@pytest.mark.parametrize("i", range(4))
def test_top_targets(top: dict[str, np.ndarray], i: int) -> None:
    for tag, src, encoding in (("msra", "plain", "MSRA"), ("udp", "udp", "UDP")):
        target, weight = generate_target(
            top[f"joints_{src}"][i], top[f"visible_{src}"][i], encoding=encoding
        )
        _record(f"top/target_{tag}", target, top[f"target_{tag}"][i], 1e-6)
        _record(f"top/target_weight_{tag}", weight, top[f"target_weight_{tag}"][i], 0.0)


def test_top_targets_from_our_joints(top: dict[str, np.ndarray]) -> None:
    # The chain crop → target on our own joints gives the official targets.
    for i in range(4):
        for tag, use_udp, encoding in (("msra", False, "MSRA"), ("udp", True, "UDP")):
            _, joints, _ = top_down_affine(
                top["image"][:2, :2],
                top["joints_in"][i],
                top["visible_in"][i],
                top["center"][i],
                top["scale"][i],
                float(top["rotation"][i]),
                use_udp=use_udp,
            )
            target, _ = generate_target(joints, top["visible_in"][i], encoding=encoding)
            np.testing.assert_allclose(target, top[f"target_{tag}"][i], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Affine matrices by hand
# ---------------------------------------------------------------------------------------------


def test_plain_matrix_maps_box_onto_crop() -> None:
    c = np.array([100.0, 80.0], dtype=np.float32)
    s = np.array([1.5, 2.0], dtype=np.float32)  # 300×400 px, the 3:4 aspect of the input
    m = get_affine_transform(c, s, 0.0, IMAGE_SIZE)
    pts = np.array([[100.0, 80.0], [100 - 150.0, 80 - 200.0], [100 + 150.0, 80 + 200.0]])
    np.testing.assert_allclose(
        affine_transform_points(pts, m), [[96.0, 128.0], [0.0, 0.0], [192.0, 256.0]], atol=1e-9
    )
    back = get_affine_transform(c, s, 0.0, IMAGE_SIZE, inv=True)
    np.testing.assert_allclose(back[:, :2] @ m[:, :2], np.eye(2), atol=1e-12)


def test_udp_matrix_maps_box_edges_onto_pixel_centres() -> None:
    c = np.array([100.0, 80.0])
    s = np.array([1.5, 2.0])
    m = get_warp_matrix(0.0, c * 2, np.array([191.0, 255.0]), s * 200)
    pts = np.array([[100.0, 80.0], [-50.0, -120.0], [250.0, 280.0]])
    np.testing.assert_allclose(
        affine_transform_points(pts, m), [[95.5, 127.5], [0.0, 0.0], [191.0, 255.0]], atol=1e-4
    )


def test_plain_and_udp_rotate_in_opposite_directions() -> None:
    # A point d px right of the centre, rotation +90°: the plain crop sends it up, UDP down.
    c = np.array([200.0, 150.0])
    s = np.array([1.5, 2.0])
    d = 40.0
    p = np.array([[c[0] + d, c[1]]])
    plain = affine_transform_points(p, get_affine_transform(c, s, 90.0, IMAGE_SIZE))[0]
    k = 192 / 300  # crop pixels per image pixel
    np.testing.assert_allclose(plain, [96.0, 128.0 - d * k], atol=1e-6)
    udp_m = get_warp_matrix(90.0, c * 2, np.array([191.0, 255.0]), s * 200)
    udp = affine_transform_points(p, udp_m)[0]
    np.testing.assert_allclose(udp, [95.5, 127.5 + d * 255 / 400], atol=1e-4)


def test_float32_rotation_is_converted_in_float32() -> None:
    # np.deg2rad keeps float32: the official matrix differs with a float32 angle.
    args = (np.array([400.0, 300.0]), np.array([191.0, 255.0]), np.array([300.0, 400.0]))
    a = get_warp_matrix(np.float32(30.0), *args)
    b = get_warp_matrix(30.0, *args)
    th32 = float(np.deg2rad(np.float32(30.0)))
    assert a[0, 0] == np.float32(math.cos(th32) * 191 / 300)
    assert b[0, 0] == np.float32(math.cos(math.radians(30.0)) * 191 / 300)


# ---------------------------------------------------------------------------------------------
# warp_affine by hand
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fixed", "float"])
def test_warp_identity_and_integer_shift(method: str) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    eye = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_array_equal(warp_affine(img, eye, (30, 20), method), img)
    shift = np.array([[1.0, 0, -3.0], [0, 1.0, 2.0]])  # dst = src + (−3, 2)
    out = warp_affine(img, shift, (30, 20), method)
    np.testing.assert_array_equal(out[2:, :27], img[:18, 3:])
    assert not out[:2].any() and not out[:, 27:].any()  # outside the source → 0


@pytest.mark.parametrize("method", ["fixed", "float"])
def test_warp_half_pixel_is_the_rounded_mean(method: str) -> None:
    img = np.array([[[10], [21], [200], [0]]], dtype=np.uint8).repeat(2, axis=0)[..., 0]
    m = np.array([[1.0, 0, -0.5], [0, 1.0, 0]])  # sample at x + 0.5
    out = warp_affine(img, m, (4, 2), method)
    # (10+21)/2 = 15.5 → 16 (fixed rounds half up; float: 15.5 → 16 half to even),
    # (21+200)/2 = 110.5 → 111 / 110, (200+0)/2 = 100; the last column blends with the 0 border.
    want_fixed = [16, 111, 100, 0]
    want_float = [16, 110, 100, 0]
    np.testing.assert_array_equal(out[0], want_fixed if method == "fixed" else want_float)


def test_warp_border_blends_with_zero() -> None:
    img = np.full((4, 4, 3), 200, dtype=np.uint8)
    m = np.array([[1.0, 0, 0.25], [0, 1.0, 0]])  # sample at x − 0.25
    out = warp_affine(img, m, (4, 4))
    np.testing.assert_array_equal(out[:, 0], 150)  # 0.25·0 + 0.75·200
    np.testing.assert_array_equal(out[:, 1:], 200)


def test_warp_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        warp_affine(np.zeros((4, 4, 3), np.float32), np.eye(2, 3), (4, 4))
    with pytest.raises(ValueError, match="method"):
        warp_affine(np.zeros((4, 4, 3), np.uint8), np.eye(2, 3), (4, 4), "cubic")  # type: ignore[arg-type]


def test_warp_grey_image() -> None:
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert warp_affine(img, np.eye(2, 3), (4, 3)).shape == (3, 4)


# ---------------------------------------------------------------------------------------------
# Flip
# ---------------------------------------------------------------------------------------------


def test_fliplr_joints_by_hand() -> None:
    joints = np.array([[10.0, 5.0, 0.0], [20.0, 6.0, 0.0], [30.0, 7.0, 0.0]], np.float32)
    visible = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], np.float32)
    out, vis = fliplr_joints(joints, visible, 100, [0, 2, 1])
    # joint 1 ← old joint 2 (invisible → zeroed), joint 2 ← old joint 1 at x = 99 − 20.
    np.testing.assert_array_equal(out, [[89, 5, 0], [0, 0, 0], [79, 6, 0]])
    np.testing.assert_array_equal(vis, [[1, 1, 0], [0, 0, 0], [1, 1, 0]])
    back, vis2 = fliplr_joints(out, vis, 100, [0, 2, 1])
    np.testing.assert_array_equal(back[visible[:, 0] > 0], joints[visible[:, 0] > 0])
    np.testing.assert_array_equal(vis2, visible)


def test_flip_image_mirrors_columns() -> None:
    img = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    out = flip_image(img)
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out[:, 0], img[:, 3])
    np.testing.assert_array_equal(flip_image(out), img)


@pytest.mark.parametrize("shape", [(425, 640, 3), (7, 5), (3, 9, 4), (1, 1, 3)])
def test_flip_image_is_the_plain_column_reversal(shape) -> None:
    img = np.random.default_rng(len(shape)).integers(0, 256, shape, dtype=np.uint8)
    want = [[img[y, img.shape[1] - 1 - x] for x in range(img.shape[1])] for y in range(shape[0])]
    out = flip_image(img)
    assert out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"] and out.shape == img.shape
    np.testing.assert_array_equal(out, np.array(want))
    # A strided view and a wider dtype take NumPy's copy, with the same result.
    np.testing.assert_array_equal(
        flip_image(img[:, ::2]), np.array(want)[:, 1 - len(want[0]) % 2 :: 2]
    )
    np.testing.assert_array_equal(flip_image(img.astype(np.int32)), np.array(want))


def test_fliplr_joints_rejects_mismatch() -> None:
    with pytest.raises(ValueError):
        fliplr_joints(np.zeros((3, 3)), np.zeros((3, 3)), 10, [0, 1])


# ---------------------------------------------------------------------------------------------
# Random augmentations by hand
# ---------------------------------------------------------------------------------------------


class ScriptedRng:
    """Stands in for a numpy Generator: returns scripted normals and uniforms in order."""

    def __init__(self, normals: list[float] = (), uniforms: list[float] = ()) -> None:  # type: ignore[assignment]
        self.normals = list(normals)
        self.uniforms = list(uniforms)

    def standard_normal(self) -> float:
        return self.normals.pop(0)

    def random(self) -> float:
        return self.uniforms.pop(0)


def _half_body_joints() -> tuple[np.ndarray, np.ndarray]:
    # 0-3 upper, 4-6 lower, 7 neither upper nor lower (like a WholeBody face point).
    xy = [(10, 10), (30, 10), (20, 40), (25, 25), (10, 100), (30, 100), (20, 140), (12, 110)]
    joints = np.zeros((8, 3), np.float32)
    joints[:, :2] = xy
    visible = np.ones((8, 3), np.float32)
    visible[:, 2] = 0
    return joints, visible


def test_half_body_upper_by_hand() -> None:
    joints, visible = _half_body_joints()
    box = half_body_center_scale(joints, visible, (0, 1, 2, 3), ScriptedRng([0.2]))  # type: ignore[arg-type]
    assert box is not None
    center, scale = box
    np.testing.assert_allclose(center, [21.25, 21.25])  # mean of joints 0-3
    # min/max box 20 × 30, aspect 0.75 → w = 22.5; ×1.5 /200.
    np.testing.assert_allclose(scale, [22.5 * 1.5 / 200, 30 * 1.5 / 200], rtol=1e-6)
    assert center.dtype == np.float32 and scale.dtype == np.float32


def test_half_body_lower_includes_untyped_joints() -> None:
    # A normal ≥ 0.5 picks the lower set: every visible non-upper joint, 4-7 here.
    joints, visible = _half_body_joints()
    center, scale = half_body_center_scale(joints, visible, (0, 1, 2, 3), ScriptedRng([0.5]))  # type: ignore[arg-type,misc]
    np.testing.assert_allclose(center, [18.0, 112.5])
    # box 20 × 40 → w = 30 (aspect 0.75); ×1.5.
    np.testing.assert_allclose(scale, [30 * 1.5 / 200, 40 * 1.5 / 200], rtol=1e-6)


def test_half_body_falls_back_and_gives_up() -> None:
    joints, visible = _half_body_joints()
    visible[4:] = 0  # lower set empty: even a normal ≥ 0.5 takes the upper set
    center, _ = half_body_center_scale(joints, visible, (0, 1, 2, 3), ScriptedRng([3.0]))  # type: ignore[arg-type,misc]
    np.testing.assert_allclose(center, [21.25, 21.25])
    visible[1:] = 0  # one joint: no box
    assert half_body_center_scale(joints, visible, (0, 1, 2, 3), ScriptedRng([0.0])) is None  # type: ignore[arg-type]


def test_half_body_widens_to_the_aspect_ratio() -> None:
    joints = np.array([[0, 0, 0], [60, 0, 0], [30, 10, 0]], np.float32)  # 60 × 10: too wide
    visible = np.ones((3, 3), np.float32)
    _, scale = half_body_center_scale(joints, visible, (0, 1, 2), ScriptedRng([0.0]))  # type: ignore[arg-type,misc]
    np.testing.assert_allclose(scale, [60 * 1.5 / 200, 80 * 1.5 / 200], rtol=1e-6)


def test_random_scale_rotation_by_hand() -> None:
    s = np.array([1.0, 2.0], np.float32)
    # normals: scale 0.4 → ×1.2; angle 0.5 → 20°; uniform 0.6 ≤ 0.6 → rotate.
    scale, rot = random_scale_rotation(s, ScriptedRng([0.4, 0.5], [0.6]))  # type: ignore[arg-type]
    np.testing.assert_allclose(scale, [1.2, 2.4], rtol=1e-6)
    assert scale.dtype == np.float32
    assert rot == pytest.approx(20.0)
    # Clipping: 5σ → ×1.5 and 80°; a uniform above rot_prob → no rotation.
    scale, rot = random_scale_rotation(s, ScriptedRng([5.0, 5.0], [0.61]))  # type: ignore[arg-type]
    np.testing.assert_allclose(scale, [1.5, 3.0], rtol=1e-6)
    assert rot == 0.0
    scale, rot = random_scale_rotation(s, ScriptedRng([-5.0, -5.0], [0.0]))  # type: ignore[arg-type]
    np.testing.assert_allclose(scale, [0.5, 1.0], rtol=1e-6)
    assert rot == -80.0


def test_random_scale_rotation_distribution_and_determinism() -> None:
    draws = [
        random_scale_rotation(np.ones(2, np.float32), np.random.default_rng(i)) for i in range(2000)
    ]
    factors = np.array([d[0][0] for d in draws])
    rots = np.array([d[1] for d in draws])
    assert factors.min() >= 0.5 and factors.max() <= 1.5
    assert np.abs(rots).max() <= 80.0
    assert 0.35 < np.mean(rots == 0.0) < 0.45  # rotation probability 0.6
    again = random_scale_rotation(np.ones(2, np.float32), np.random.default_rng(7))
    assert again[1] == draws[7][1] and np.array_equal(again[0], draws[7][0])


# ---------------------------------------------------------------------------------------------
# Targets by hand
# ---------------------------------------------------------------------------------------------


def test_msra_truncates_towards_zero() -> None:
    # x = −2.8 px → μ = −0.7 → int(−0.2) = 0: the peak sits on column 0, not −1.
    joints = np.array([[-2.8, 100.0, 0.0]], np.float32)
    target, weight = msra_gaussian_heatmaps(joints, np.ones(1))
    assert weight[0, 0] == 1.0
    y, x = np.unravel_index(np.argmax(target[0]), target[0].shape)
    assert (x, y) == (0, 25) and target[0, y, x] == 1.0
    assert target[0, 25, 6] == pytest.approx(math.exp(-36 / 8), rel=1e-6)
    assert target[0, 25, 7] == 0.0  # outside the 13-px window


def test_msra_br_zero_keeps_weight_with_empty_map() -> None:
    # m = int(x/4 + 0.5); window [m − 6, m + 7). x ∈ (−34, −30] gives m = −7 and br = 0:
    # weight kept, empty map. x = −34 gives m = −8, br = −1 < 0: weight 0.
    joints = np.array([[-30.0, 100.0], [-31.0, 100.0], [-33.9, 100.0], [-34.0, 100.0]])
    target, weight = msra_gaussian_heatmaps(joints, np.ones(4))
    np.testing.assert_array_equal(weight[:, 0], [1, 1, 1, 0])
    assert not target.any()
    # x = −28: m = int(−6.5) = −6, br = 1: only column 0 is drawn, at 6 px from the peak.
    target, weight = msra_gaussian_heatmaps(np.array([[-28.0, 100.0]]), np.ones(1))
    assert weight[0, 0] == 1.0
    assert target[0, 25, 0] == pytest.approx(math.exp(-36 / 8), rel=1e-6)
    assert not target[0, :, 1:].any()


def test_msra_batched_matches_single() -> None:
    rng = np.random.default_rng(3)
    joints = rng.uniform(-20, 210, (2, 5, 2)).astype(np.float32)
    vis = (rng.random((2, 5)) > 0.3).astype(np.float32)
    for unbiased in (False, True):
        tb, wb = msra_gaussian_heatmaps(joints, vis, unbiased=unbiased)
        for n in range(2):
            t1, w1 = msra_gaussian_heatmaps(joints[n], vis[n], unbiased=unbiased)
            np.testing.assert_array_equal(tb[n], t1)
            np.testing.assert_array_equal(wb[n], w1)


def test_megvii_peak_is_255() -> None:
    target, weight = megvii_heatmaps(np.array([[100.0, 60.0, 0]]), np.ones(1))
    assert weight[0, 0] == 1.0
    assert target[0, 15, 25] == 255.0 and target[0].max() == 255.0


def test_combined_target_offsets() -> None:
    # Joint exactly on heatmap pixel (10, 20) (UDP stride (191/47, 255/63)).
    xy = np.array([[10 * 191 / 47, 20 * 255 / 63, 0.0]])
    target, _ = udp_combined_target(xy, np.ones(1))
    r = 0.0546875 * 64
    assert target[0, 20, 10] == 1.0 and target[1, 20, 10] == pytest.approx(0.0, abs=1e-6)
    assert target[1, 20, 8] == pytest.approx(2 / r, rel=1e-5)  # (μx − x)/R
    assert target[2, 23, 10] == pytest.approx(-3 / r, rel=1e-5)
    assert target[0, 20, 14] == 0.0  # 4 px > R = 3.5


def test_generate_target_padding_and_errors() -> None:
    joints = np.array([[96.0, 128.0, 0.0], [10.0, 10.0, 0.0]], np.float32)
    vis = np.ones((2, 3), np.float32)
    target, weight = generate_target(joints, vis, encoding="UDP", max_num_joints=5)
    assert target.shape == (5, 64, 48) and weight.shape == (5, 1)
    assert not target[2:].any() and not weight[2:].any()
    with pytest.raises(ValueError, match="max_num_joints"):
        generate_target(joints, vis, max_num_joints=1)
    with pytest.raises(ValueError, match="encoding"):
        generate_target(joints, vis, encoding="DARK")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="joint_weights"):
        generate_target(joints, vis, use_different_joint_weights=True)


# ---------------------------------------------------------------------------------------------
# normalize_image
# ---------------------------------------------------------------------------------------------


def test_normalize_image_matches_the_official_tensor_ops() -> None:
    img = np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    got = normalize_image(img)
    ref = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1).div_(255.0)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    ref = ref.sub_(mean).div_(std)
    assert got.shape == (3, 8, 6) and got.dtype == torch.float32
    assert torch.equal(got, ref)


@pytest.mark.parametrize(
    ("mean", "std"),
    [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5, 0.25, 0.0), (0.5, 0.3, 1.7))],
)
def test_normalize_image_every_grey_level(mean, std) -> None:
    # Every uint8 value in every channel, at odd positions: the look-up must give the formula's
    # float32 bits for all 256 levels, not only those a small random image happens to hold.
    levels = np.arange(256, dtype=np.uint8)
    img = np.stack([levels, levels[::-1], np.roll(levels, 77)], axis=-1).reshape(16, 16, 3)
    got = normalize_image(img, mean, std)
    ref = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1).div_(255.0)
    ref = ref.sub_(torch.tensor(mean)[:, None, None]).div_(torch.tensor(std)[:, None, None])
    assert torch.equal(got, ref)
    floats = img.astype(np.float32)  # a float image takes the direct formula
    assert torch.equal(normalize_image(floats, mean, std), ref)
