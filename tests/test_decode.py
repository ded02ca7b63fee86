"""Heatmap decoding reference (posebh.decode) against the official golden vectors.

Golden sources: ``golden/decode.npz`` and ``golden/suite/decode.npz`` (official mmpose 0.x
``keypoints_from_heatmaps`` & co. run with NumPy 1.26 + OpenCV 4.10) and the flip-test decode of
``golden/suite/backbone_heads.pt``. The largest error reached on each golden case is stored in
``MAX_ERRORS`` and written to the terminal report when the module finishes.

Shape vocabulary: N instances, K keypoints, H×W heatmap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from golden_report import write_error_table

from posebh.decode import (
    cv2_gaussian_blur,
    dark_refine,
    flip_back,
    flip_test_merge,
    gaussian_blur,
    gaussian_kernel_1d,
    get_max_preds,
    keypoints_from_heatmaps,
    post_dark_udp,
    quarter_offset_refine,
    taylor_refine,
    transform_preds,
)
from posebh.protocol import PROTOCOLS, get_protocol

COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
PX_TOL = 1e-3  # image (or heatmap) pixels, the contract of the brief and the golden README
MAP_TOL = 1e-6  # heatmap values that went through the blur

#: case -> largest |ours − official| reached (NaN positions must coincide and are skipped).
MAX_ERRORS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_max_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    write_error_table(request, "posebh.decode golden max |error| per case:", MAX_ERRORS)


def _record(case: str, got: Any, want: Any, tol: float) -> float:
    """Store and check the largest absolute error of ``got`` against the official ``want``."""
    g = (got.numpy() if isinstance(got, torch.Tensor) else np.asarray(got)).astype(np.float64)
    w = (want.numpy() if isinstance(want, torch.Tensor) else np.asarray(want)).astype(np.float64)
    assert g.shape == w.shape, f"{case}: shape {g.shape} != official {w.shape}"
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{case}: NaN positions")
    finite = ~np.isnan(w)
    err = float(np.abs(g[finite] - w[finite]).max()) if finite.any() else 0.0
    MAX_ERRORS[case] = err
    assert err <= tol, f"{case}: max |error| {err:.3g} > {tol:g}"
    return err


# ---------------------------------------------------------------------------------------------
# Golden vectors
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden_a(golden_dir: Path) -> dict[str, np.ndarray]:
    with np.load(golden_dir / "decode.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def golden_b(golden_dir: Path) -> dict[str, np.ndarray]:
    with np.load(golden_dir / "suite" / "decode.npz") as d:
        return {k: d[k] for k in d.files}


GOLDEN_A_CASES = {
    "default": {"post_process": "default"},
    "unbiased_k11": {"post_process": "unbiased", "kernel": 11},
    "udp_default_k11": {"post_process": "default", "use_udp": True, "kernel": 11},
    "none": {"post_process": None},
}


@pytest.mark.parametrize("case", list(GOLDEN_A_CASES))
def test_golden_decode(golden_a: dict[str, np.ndarray], case: str) -> None:
    preds, maxvals = keypoints_from_heatmaps(
        golden_a["heatmaps"], golden_a["center"], golden_a["scale"], **GOLDEN_A_CASES[case]
    )
    assert preds.dtype == np.float32 and maxvals.dtype == np.float32
    _record(f"decode.npz/preds_{case}", preds, golden_a[f"preds_{case}"], PX_TOL)
    _record(f"decode.npz/maxvals_{case}", maxvals, golden_a[f"maxvals_{case}"], 0.0)


@pytest.mark.parametrize("shift", [False, True])
def test_golden_flip_back(golden_a: dict[str, np.ndarray], shift: bool) -> None:
    key = "flip_back_coco_shifted" if shift else "flip_back_coco"
    _record(
        f"decode.npz/{key}", flip_back(golden_a["heatmaps"], COCO_FLIP, shift), golden_a[key], 0
    )
    as_torch = flip_back(torch.from_numpy(golden_a["heatmaps"]), COCO_FLIP, shift)
    np.testing.assert_array_equal(as_torch.numpy(), golden_a[key])


SUITE_CASES = {
    "a_default": {"post_process": "default"},
    "b_dark_udp": {"post_process": "default", "use_udp": True, "kernel": 11},
    "c_unbiased": {"post_process": "unbiased", "kernel": 11},
    "d_none": {"post_process": None},
    "e_megvii": {"post_process": "megvii", "kernel": 11},
}


@pytest.mark.parametrize("case", list(SUITE_CASES))
def test_suite_decode(golden_b: dict[str, np.ndarray], case: str) -> None:
    kw = SUITE_CASES[case]
    hm = golden_b["heatmaps"]
    preds, maxvals = keypoints_from_heatmaps(hm, golden_b["center"], golden_b["scale"], **kw)
    _record(f"suite/{case}_preds", preds, golden_b[f"{case}_preds"], PX_TOL)
    # megvii scores are max(blurred)/255 + 0.5, so they depend on the OpenCV emulation.
    _record(
        f"suite/{case}_maxvals",
        maxvals,
        golden_b[f"{case}_maxvals"],
        MAP_TOL if case == "e_megvii" else 0.0,
    )
    # Identity transform (the README's recipe), giving heatmap-space coordinates.
    n, _, h, w = hm.shape
    if kw.get("use_udp"):
        center, scale = [(w - 1) / 2, (h - 1) / 2], [(w - 1) / 200, (h - 1) / 200]
    else:
        center, scale = [w / 2, h / 2], [w / 200, h / 200]
    center = np.tile(np.float32(center), (n, 1))
    scale = np.tile(np.float32(scale), (n, 1))
    preds_hm, _ = keypoints_from_heatmaps(hm, center, scale, **kw)
    _record(f"suite/{case}_preds_hm", preds_hm, golden_b[f"{case}_preds_hm"], PX_TOL)


def test_suite_megvii_nan_score(golden_b: dict[str, np.ndarray]) -> None:
    """The all-zero map [0, 4] blurs to NaN, so its megvii score is NaN (official)."""
    _, maxvals = keypoints_from_heatmaps(
        golden_b["heatmaps"], golden_b["center"], golden_b["scale"], post_process="megvii"
    )
    assert np.isnan(maxvals[0, 4, 0]) and np.isnan(golden_b["e_megvii_maxvals"][0, 4, 0])
    assert np.isfinite(np.delete(maxvals.reshape(-1), 4)).all()


def test_suite_pieces(golden_b: dict[str, np.ndarray]) -> None:
    hm = golden_b["heatmaps"]
    preds, maxvals = get_max_preds(hm)
    _record("suite/get_max_preds_preds", preds, golden_b["get_max_preds_preds"], 0)
    _record("suite/get_max_preds_maxvals", maxvals, golden_b["get_max_preds_maxvals"], 0)
    for k in (11, 3):
        refined = post_dark_udp(preds, hm, k)
        _record(f"suite/post_dark_udp_k{k}", refined, golden_b[f"post_dark_udp_k{k}"], PX_TOL)
    blurred = gaussian_blur(hm, 11)
    _record(
        "suite/gaussian_blur_k11_sample0",
        blurred[0],
        golden_b["gaussian_blur_k11_sample0"],
        MAP_TOL,
    )
    # Channel 4 is all zeros: the official 0/0 rescale makes the whole map NaN.
    assert np.isnan(blurred[0, 4]).all() and np.isfinite(np.delete(blurred[0], 4, axis=0)).all()
    with np.errstate(invalid="ignore"):
        log_blur = np.log(np.maximum(blurred, 1e-10))
    _record(
        "suite/taylor_on_log_blur_k11",
        taylor_refine(log_blur, preds),
        golden_b["taylor_on_log_blur_k11"],
        PX_TOL,
    )
    # dark_refine is the same chain in one call.
    np.testing.assert_array_equal(dark_refine(hm, preds, 11), taylor_refine(log_blur, preds))


def test_suite_flip_back(golden_b: dict[str, np.ndarray]) -> None:
    hm = golden_b["heatmaps"]
    _record(
        "suite/flip_back_coco_sample0",
        flip_back(hm, COCO_FLIP)[0],
        golden_b["flip_back_coco_sample0"],
        0,
    )
    _record(
        "suite/flip_back_small",
        flip_back(golden_b["flip_back_small_in"], COCO_FLIP),
        golden_b["flip_back_small_out"],
        0,
    )
    combined_in = golden_b["flip_back_combined_in"].copy()
    out = flip_back(combined_in, [1, 0], target_type="CombinedTarget")
    _record("suite/flip_back_combined", out, golden_b["flip_back_combined_out"], 0)
    # Unlike the official flip_back, the input is not negated in place.
    np.testing.assert_array_equal(combined_in, golden_b["flip_back_combined_in"])
    as_torch = flip_back(torch.from_numpy(combined_in), [1, 0], target_type="CombinedTarget")
    np.testing.assert_array_equal(as_torch.numpy(), golden_b["flip_back_combined_out"])


@pytest.fixture(scope="module")
def flip_golden(golden_dir: Path) -> dict[str, Any]:
    data = torch.load(golden_dir / "suite" / "backbone_heads.pt", weights_only=True)
    return {"heatmaps": data["heatmaps"]["keypoint_head"], **data["flip"]}


@pytest.mark.parametrize("flip", [False, True])
def test_backbone_heads_flip_decode(flip_golden: dict[str, Any], flip: bool) -> None:
    """DARK-UDP decode of the stored heatmaps as TopDownMoEProto.forward_test does (COCO cfg).

    These maps come from a random model, so many Hessians are nearly singular and the Newton
    step amplifies one-ulp differences of the blur by up to ~1e4: it checks the OpenCV emulation.
    """
    hm = flip_golden["heatmaps"]
    if flip:
        # The stored map is already flipped back; flipping it again gives the raw output of the
        # mirrored image, which flip_test_merge flips back and averages.
        raw_flipped = flip_back(flip_golden["keypoint_head_flipped_back"], COCO_FLIP)
        cfg = get_protocol("coco").decode
        hm = flip_test_merge(hm, raw_flipped, COCO_FLIP, cfg.shift_heatmap)
        assert torch.equal(
            hm, (flip_golden["heatmaps"] + flip_golden["keypoint_head_flipped_back"]) * 0.5
        )
    preds, maxvals = keypoints_from_heatmaps(
        hm,
        flip_golden["centers"],
        flip_golden["scales"],
        **get_protocol("coco").decode.decode_kwargs(),
    )
    assert isinstance(preds, torch.Tensor) and preds.dtype == torch.float32
    want = flip_golden["decode_flip_preds" if flip else "decode_noflip_preds"]
    tag = "flip" if flip else "noflip"
    _record(f"backbone_heads/decode_{tag}_preds_xy", preds, want[..., :2], PX_TOL)
    _record(f"backbone_heads/decode_{tag}_preds_score", maxvals[..., 0], want[..., 2], 0)


# ---------------------------------------------------------------------------------------------
# Containers, shapes and adversarial inputs
# ---------------------------------------------------------------------------------------------

ALL_MODES = [
    {"post_process": None},
    {"post_process": "default"},
    {"post_process": "unbiased"},
    {"post_process": "megvii"},
    {"post_process": "default", "use_udp": True},
]


def _gaussian_maps(centres: np.ndarray, h: int, w: int, sigma: float = 2.0) -> np.ndarray:
    """[N, K, H, W] float32 Gaussians of peak 1 at sub-pixel ``centres`` [N, K, 2] (x, y)."""
    ys, xs = np.mgrid[0:h, 0:w]
    dx = xs[None, None] - centres[..., 0, None, None]
    dy = ys[None, None] - centres[..., 1, None, None]
    return np.exp(-(dx**2 + dy**2) / (2 * sigma**2)).astype(np.float32)


def _boxes(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    center = rng.uniform(100, 300, (n, 2)).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, (n, 2)).astype(np.float32)
    return center, scale


@pytest.mark.parametrize(
    "kw", ALL_MODES, ids=lambda kw: f"{kw['post_process']}-{kw.get('use_udp', 0)}"
)
def test_torch_in_torch_out(golden_b: dict[str, np.ndarray], kw: dict[str, Any]) -> None:
    hm, center, scale = golden_b["heatmaps"], golden_b["center"], golden_b["scale"]
    p_np, v_np = keypoints_from_heatmaps(hm, center, scale, **kw)
    assert isinstance(p_np, np.ndarray) and isinstance(v_np, np.ndarray)
    p_t, v_t = keypoints_from_heatmaps(torch.from_numpy(hm), torch.from_numpy(center), scale, **kw)
    assert isinstance(p_t, torch.Tensor) and isinstance(v_t, torch.Tensor)
    assert p_t.device == torch.device("cpu") and p_t.dtype == torch.float32
    np.testing.assert_array_equal(p_t.numpy(), p_np)
    np.testing.assert_array_equal(v_t.numpy(), v_np)
    # Inputs are not modified (the official decode copies; the official flip_back does not).
    np.testing.assert_array_equal(hm, golden_b["heatmaps"])


def test_dtypes() -> None:
    """preds are float32 always (as the official); maxvals keep float64, half becomes float32."""
    hm = _gaussian_maps(np.float32([[[3.3, 4.6], [5.1, 2.8]]]), 9, 8)
    box = np.ones((1, 2), np.float32)
    ref_p, ref_v = keypoints_from_heatmaps(hm, box, box, use_udp=True)
    assert ref_p.dtype == np.float32 and ref_v.dtype == np.float32
    p64, v64 = keypoints_from_heatmaps(hm.astype(np.float64), box, box, use_udp=True)
    assert p64.dtype == np.float32 and v64.dtype == np.float64
    np.testing.assert_allclose(p64, ref_p, atol=1e-4)
    for dt in (torch.float16, torch.bfloat16):
        p, v = keypoints_from_heatmaps(torch.from_numpy(hm).to(dt), box, box, use_udp=True)
        assert p.dtype == torch.float32 and v.dtype == torch.float32
        np.testing.assert_allclose(p.numpy(), ref_p, atol=0.05)


def test_pieces_accept_torch(golden_b: dict[str, np.ndarray]) -> None:
    hm = torch.from_numpy(golden_b["heatmaps"])
    preds, maxvals = get_max_preds(hm)
    assert isinstance(preds, torch.Tensor) and isinstance(maxvals, torch.Tensor)
    refined = post_dark_udp(preds, hm, 11)
    assert isinstance(refined, torch.Tensor)
    np.testing.assert_array_equal(refined.numpy(), golden_b["post_dark_udp_k11"])
    blurred = gaussian_blur(hm, 11)
    assert isinstance(blurred, torch.Tensor) and blurred.shape == hm.shape


def test_flip_back_involution() -> None:
    rng = np.random.default_rng(0)
    hm = rng.normal(size=(2, 17, 5, 7)).astype(np.float32)
    once = flip_back(hm, COCO_FLIP)
    assert not np.array_equal(once, hm)
    np.testing.assert_array_equal(flip_back(once, COCO_FLIP), hm)
    # Channel k holds the mirrored map of its partner.
    np.testing.assert_array_equal(once[:, 1], hm[:, 2, :, ::-1])
    t = torch.from_numpy(hm)
    np.testing.assert_array_equal(flip_back(flip_back(t, COCO_FLIP), COCO_FLIP).numpy(), hm)
    comb = rng.normal(size=(2, 6, 3, 4)).astype(np.float32)
    twice = flip_back(
        flip_back(comb, [1, 0], target_type="CombinedTarget"), [1, 0], target_type="CombinedTarget"
    )
    np.testing.assert_array_equal(twice, comb)
    # The shift moves one column right and keeps column 0: not an involution any more.
    shifted = flip_back(hm, COCO_FLIP, shift=True)
    np.testing.assert_array_equal(shifted[..., 1:], once[..., :-1])
    np.testing.assert_array_equal(shifted[..., 0], once[..., 0])
    shifted_t = flip_back(t, COCO_FLIP, shift=True)
    np.testing.assert_array_equal(shifted_t.numpy(), shifted)


def test_flip_back_rejects_bad_input() -> None:
    hm = np.zeros((1, 17, 4, 4), np.float32)
    with pytest.raises(ValueError, match="permutation"):
        flip_back(hm, COCO_FLIP[:-1])
    with pytest.raises(ValueError, match=r"\[N, K, H, W\]"):
        flip_back(hm[0], COCO_FLIP)
    with pytest.raises(ValueError, match="3 channels"):
        flip_back(hm, COCO_FLIP, target_type="CombinedTarget")


def test_flip_test_merge() -> None:
    rng = np.random.default_rng(1)
    hm = rng.normal(size=(2, 17, 6, 5)).astype(np.float32)
    flipped = rng.normal(size=(2, 17, 6, 5)).astype(np.float32)
    for shift in (False, True):
        merged = flip_test_merge(hm, flipped, COCO_FLIP, shift)
        np.testing.assert_array_equal(merged, (hm + flip_back(flipped, COCO_FLIP, shift)) * 0.5)
        merged_t = flip_test_merge(
            torch.from_numpy(hm), torch.from_numpy(flipped), COCO_FLIP, shift
        )
        np.testing.assert_array_equal(merged_t.numpy(), merged)
    # A mirror-consistent model (its output on the mirrored image is the mirrored output)
    # gives back its own heatmaps: this fails if the flip direction or pairing is wrong.
    mirrored_output = flip_back(hm, COCO_FLIP)
    np.testing.assert_array_equal(flip_test_merge(hm, mirrored_output, COCO_FLIP, False), hm)
    with pytest.raises(TypeError):
        flip_test_merge(torch.from_numpy(hm), flipped, COCO_FLIP, False)
    with pytest.raises(ValueError, match="shape"):
        flip_test_merge(hm, flipped[:, :, :5], COCO_FLIP, False)


def test_ties_first_maximum_wins() -> None:
    hm = np.zeros((1, 3, 6, 7), np.float32)
    hm[0, 0, 2, 3] = hm[0, 0, 2, 5] = 1.0  # same row: the left one
    hm[0, 1, 4, 1] = hm[0, 1, 1, 6] = 1.0  # different rows: the upper one (row-major order)
    hm[0, 2] = 0.5  # flat positive map: the first pixel
    preds, maxvals = get_max_preds(hm)
    np.testing.assert_array_equal(preds[0], [[3, 2], [6, 1], [0, 0]])
    np.testing.assert_array_equal(maxvals[0, :, 0], [1.0, 1.0, 0.5])
    p_t, _ = get_max_preds(torch.from_numpy(hm))  # same rule through torch input
    np.testing.assert_array_equal(p_t.numpy(), preds)


def _identity_box(h: int, w: int, n: int, udp: bool) -> tuple[np.ndarray, np.ndarray]:
    """center/scale whose transform is the identity (heatmap pixels out)."""
    size = np.float32([w - udp, h - udp])
    return np.tile(size / 2, (n, 1)), np.tile(size / 200, (n, 1))


@pytest.mark.parametrize(
    "kw", ALL_MODES, ids=lambda kw: f"{kw['post_process']}-{kw.get('use_udp', 0)}"
)
def test_flat_and_non_positive_maps(kw: dict[str, Any]) -> None:
    """A flat positive map stays at its first pixel (zero gradient); maps with max ≤ 0 give the
    -1 sentinel, which no mode moves while the maps it reads are flat too."""
    h, w = 8, 6
    center, scale = _identity_box(h, w, 1, kw.get("use_udp", False))
    megvii = kw["post_process"] == "megvii"
    flat = np.full((1, 1, h, w), 0.7, np.float32)
    preds, maxvals = keypoints_from_heatmaps(flat, center, scale, **kw)
    want = np.float32(0.7) / np.float32(255) + np.float32(0.5) if megvii else np.float32(0.7)
    np.testing.assert_allclose(maxvals[0, 0, 0], want, rtol=1e-6)
    if not megvii:  # megvii blurs first, and the zero frame makes the blurred map peak inside
        np.testing.assert_allclose(preds[0, 0], [0, 0], atol=1e-6)
    negative = np.stack([np.full((h, w), -0.3), np.zeros((h, w))]).astype(np.float32)[None]
    preds, maxvals = keypoints_from_heatmaps(negative, center, scale, **kw)
    np.testing.assert_allclose(preds[0], [[-1, -1], [-1, -1]], atol=1e-6)
    if megvii:  # the all-zero map blurs to 0/0 = NaN, hence a NaN score (official)
        assert np.isnan(maxvals[0, 1, 0])
    else:
        np.testing.assert_array_equal(maxvals[0, :, 0], np.float32([-0.3, 0.0]))


def test_quarter_step_official_borders() -> None:
    """'default' moves 0.25 px toward the higher neighbour only for 1 < x < W-1, 1 < y < H-1."""
    h, w = 9, 8
    cases = [  # peak (x, y) -> expected refined position; the right/lower neighbour is higher
        ((1, 4), (1, 4.25)),  # x = 1 is outside the official bounds: x not moved, y not moved
        ((2, 4), (2.25, 4.25)),
        ((w - 2, 4), (w - 2 + 0.25, 4.25)),
        ((w - 1, 4), (w - 1, 4)),  # last column: untouched
        ((4, 1), (4, 1)),  # y = 1: untouched in both axes
        ((4, h - 2), (4.25, h - 2)),  # no lower neighbour is higher: only x moves
    ]
    hm = np.zeros((1, len(cases), h, w), np.float32)
    for k, ((x, y), _) in enumerate(cases):
        hm[0, k, y, x] = 1.0
        if x + 1 < w:
            hm[0, k, y, x + 1] = 0.5
        if y + 1 < h and y != h - 2:
            hm[0, k, y + 1, x] = 0.5
    preds, _ = get_max_preds(hm)
    refined = quarter_offset_refine(hm, preds)
    want = np.float32([[[x, y] for _, (x, y) in cases]])
    want[0, 0] = [1, 4]  # x = 1 → the whole keypoint is skipped (one border test for both axes)
    np.testing.assert_array_equal(refined, want)
    # megvii adds +0.5, but only inside the same bounds.
    mv = quarter_offset_refine(hm, preds, megvii=True)
    inside = np.array([False, True, True, False, False, True])
    np.testing.assert_array_equal(mv[0, inside], want[0, inside] + 0.5)
    np.testing.assert_array_equal(mv[0, ~inside], want[0, ~inside])
    # Equal neighbours (sign 0) do not move.
    sym = np.zeros((1, 1, h, w), np.float32)
    sym[0, 0, 4, 4] = 1.0
    np.testing.assert_array_equal(quarter_offset_refine(sym, get_max_preds(sym)[0]), [[[4, 4]]])


def test_taylor_border_and_accuracy() -> None:
    """DARK's Newton step recovers a Gaussian centre, and skips x ≤ 1 or x ≥ W − 2."""
    h, w = 24, 20
    centres = np.float32([[[9.3, 11.6], [w - 3 + 0.2, 8.4], [w - 2 + 0.3, 8.4], [1.4, 7.7]]])
    hm = _gaussian_maps(centres, h, w)
    preds, _ = get_max_preds(hm)
    with np.errstate(divide="ignore"):
        refined = taylor_refine(np.log(np.maximum(hm, 1e-10)), preds)
    # A pure Gaussian's log is a quadratic: one Newton step lands on the centre.
    np.testing.assert_allclose(refined[0, :2], centres[0, :2], atol=1e-4)
    np.testing.assert_array_equal(refined[0, 2:], preds[0, 2:])  # x = W−2 and x = 1: skipped


@pytest.mark.parametrize("hw", [(33, 25), (64, 48), (17, 13)])
def test_odd_sizes_recover_centres(hw: tuple[int, int]) -> None:
    """On σ=2 Gaussians every mode lands near the true centre, in the identity transform."""
    h, w = hw
    rng = np.random.default_rng(h)
    centres = np.stack(
        [rng.uniform(4, w - 5, (2, 3)), rng.uniform(4, h - 5, (2, 3))], axis=-1
    ).astype(np.float32)
    hm = _gaussian_maps(centres, h, w)
    for kw, tol in [
        ({"post_process": None}, 0.5 + 1e-6),  # integer arg-max: at most half a pixel
        ({"post_process": "default"}, 0.25 + 1e-6),  # the quarter step: at most 0.25
        ({"post_process": "unbiased"}, 0.01),
        # 0.07 on 17×13: the 11-tap reflect-101 blur of DARK-UDP distorts such small maps.
        ({"post_process": "default", "use_udp": True}, 0.1),
    ]:
        center, scale = _identity_box(h, w, 2, kw.get("use_udp", False))
        preds, _ = keypoints_from_heatmaps(hm, center, scale, **kw)
        err = np.abs(preds - centres).max()
        assert err < tol, (kw, err)


@pytest.mark.parametrize(
    "kw", ALL_MODES, ids=lambda kw: f"{kw['post_process']}-{kw.get('use_udp', 0)}"
)
def test_single_keypoint_and_batch_independence(
    golden_b: dict[str, np.ndarray], kw: dict[str, Any]
) -> None:
    """K = 1 works, and decoding each (n, k) map alone equals the batch decode (positive maps;
    the DARK-UDP sentinel is the one documented exception, see the quirk test below)."""
    hm, center, scale = golden_b["heatmaps"], golden_b["center"], golden_b["scale"]
    preds, maxvals = keypoints_from_heatmaps(hm, center, scale, **kw)
    for n in range(hm.shape[0]):
        for k in range(hm.shape[1]):
            if hm[n, k].max() <= 0:
                continue
            p1, v1 = keypoints_from_heatmaps(
                hm[n : n + 1, k : k + 1], center[n : n + 1], scale[n : n + 1], **kw
            )
            assert p1.shape == (1, 1, 2) and v1.shape == (1, 1, 1)
            np.testing.assert_array_equal(p1[0, 0], preds[n, k])
            np.testing.assert_array_equal(v1[0, 0], maxvals[n, k])


@pytest.mark.parametrize(
    "kw", ALL_MODES, ids=lambda kw: f"{kw['post_process']}-{kw.get('use_udp', 0)}"
)
def test_empty_batch(kw: dict[str, Any]) -> None:
    hm = np.zeros((0, 17, 64, 48), np.float32)
    box = np.zeros((0, 2), np.float32)
    preds, maxvals = keypoints_from_heatmaps(hm, box, box, **kw)
    assert preds.shape == (0, 17, 2) and maxvals.shape == (0, 17, 1)
    p_t, v_t = keypoints_from_heatmaps(torch.from_numpy(hm), box, box, **kw)
    assert isinstance(p_t, torch.Tensor) and tuple(p_t.shape) == (0, 17, 2)
    assert tuple(v_t.shape) == (0, 17, 1)


@pytest.mark.parametrize(
    "kw", ALL_MODES, ids=lambda kw: f"{kw['post_process']}-{kw.get('use_udp', 0)}"
)
def test_nan_input_propagates(golden_b: dict[str, np.ndarray], kw: dict[str, Any]) -> None:
    """Chosen behaviour (= official): NaN is propagated, never raised. A map containing NaN
    scores NaN and gets the -1 sentinel; other maps are unaffected."""
    hm = golden_b["heatmaps"].copy()
    center, scale = golden_b["center"], golden_b["scale"]
    clean_preds, clean_vals = keypoints_from_heatmaps(hm, center, scale, **kw)
    hm[1, 8, 30, 20] = np.nan
    preds, maxvals = keypoints_from_heatmaps(hm, center, scale, **kw)
    assert np.isnan(maxvals[1, 8, 0])
    np.testing.assert_array_equal(get_max_preds(hm)[0][1, 8], [-1, -1])
    if not kw.get("use_udp"):
        # The plain sentinel (-1, -1), transformed: what an all-negative map gives.
        sentinel, _ = keypoints_from_heatmaps(
            np.full((1, 1, 64, 48), -1, np.float32), center[1:2], scale[1:2], **kw
        )
        np.testing.assert_array_equal(preds[1, 8], sentinel[0, 0])
    keep = np.ones(hm.shape[:2], bool)
    keep[1, 8] = False
    np.testing.assert_array_equal(preds[keep], clean_preds[keep])
    np.testing.assert_array_equal(maxvals[keep], clean_vals[keep])
    if kw.get("use_udp"):
        # DARK-UDP refines the sentinel from its own corner: NaN there makes the position NaN.
        hm[1, 8] = np.nan
        preds, _ = keypoints_from_heatmaps(hm, center, scale, **kw)
        assert np.isnan(preds[1, 8]).all()


def test_dark_udp_sentinel_reads_previous_channel() -> None:
    """Official quirk: the (-1, -1) sentinel of channel k takes its −x/−y neighbours from the
    padded bottom-right edge of channel k − 1, so it moves when that edge has structure."""
    h, w, kernel = 12, 10, 3
    rng = np.random.default_rng(3)
    prev = rng.uniform(0.05, 2.0, (h, w)).astype(np.float32)
    hm = np.stack([prev, np.full((h, w), -1.0, np.float32)])[None]
    coords = np.float32([[[3, 4], [-1, -1]]])
    out = post_dark_udp(coords, hm, kernel)
    # Independent transcription for that one keypoint.
    logp = np.log(np.clip(cv2_gaussian_blur(hm, kernel), 0.001, 50))
    pad = np.pad(logp[0], ((0, 0), (1, 1), (1, 1)), mode="edge")
    own, before = pad[1], pad[0]
    i_, ix1, iy1, ix1y1 = own[0, 0], own[0, 1], own[1, 0], own[1, 1]
    ix1_, iy1_, ix1_y1_ = before[h + 1, w + 1], before[h + 1, 0], before[h, w + 1]
    g = np.array([0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)], np.float64)
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    hess = np.array([[ix1 - 2 * i_ + ix1_, dxy], [dxy, iy1 - 2 * i_ + iy1_]], np.float64)
    want = -1 - np.linalg.solve(hess + np.finfo(np.float32).eps * np.eye(2), g)
    np.testing.assert_allclose(out[0, 1], want, rtol=1e-5)
    assert np.abs(out[0, 1] + 1).max() > 1e-3  # it really moved
    # When the previous channel is also below the 0.001 clip, everything read is log(0.001)
    # and the sentinel stays where it is (the golden maps [0, 3], [0, 4]).
    hm[0, 0] = 0.0005
    np.testing.assert_allclose(post_dark_udp(coords, hm, kernel)[0, 1], [-1, -1], atol=1e-6)
    # A flat positive previous channel still moves it (its level differs from the clip level).
    hm[0, 0] = 1.0
    assert np.abs(post_dark_udp(coords, hm, kernel)[0, 1] + 1).max() > 0.5
    # The very first channel of the batch wraps around to the end of the whole stack (Python's
    # negative indexing): a sentinel at [0, 0] reads the last instance's last channel.
    two = np.stack([np.full((2, h, w), -1.0, np.float32), np.stack([prev, prev[::-1]])])
    first = post_dark_udp(np.float32([[[-1, -1], [3, 4]], [[3, 4], [5, 6]]]), two, kernel)[0, 0]
    last = np.pad(np.log(np.clip(cv2_gaussian_blur(two, kernel), 0.001, 50))[1, 1], 1, mode="edge")
    ix1_, iy1_, ix1_y1_ = last[h + 1, w + 1], last[h + 1, 0], last[h, w + 1]
    i_ = ix1 = iy1 = ix1y1 = np.float32(np.log(np.float32(0.001)))  # own corner: clipped
    g = np.array([0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)], np.float64)
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    hess = np.array([[ix1 - 2 * i_ + ix1_, dxy], [dxy, iy1 - 2 * i_ + iy1_]], np.float64)
    want = -1 - np.linalg.solve(hess + np.finfo(np.float32).eps * np.eye(2), g)
    np.testing.assert_allclose(first, want, rtol=1e-5)
    assert np.abs(first + 1).max() > 1e-3


def test_transform_preds() -> None:
    coords = np.float32([[[0, 0], [47, 63], [24, 32]]])
    center, scale = np.float32([[100, 200]]), np.float32([[0.96, 1.28]])  # 192 x 256 px
    plain = transform_preds(coords, center, scale, (48, 64))
    np.testing.assert_allclose(plain[0], [[4, 72], [4 + 47 * 4, 72 + 63 * 4], [100, 200]])
    udp = transform_preds(coords, center, scale, (48, 64), use_udp=True)
    # UDP maps pixel 0 and pixel W−1 (H−1) exactly onto the box edges.
    np.testing.assert_allclose(udp[0, :2], [[4, 72], [196, 328]], rtol=1e-6)
    single = transform_preds(coords[0], center[0], scale[0], (48, 64))
    np.testing.assert_array_equal(single, plain[0])
    as_torch = transform_preds(torch.from_numpy(coords), center, scale, (48, 64))
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_array_equal(as_torch.numpy(), plain)


def test_opencv_kernel_and_border() -> None:
    np.testing.assert_array_equal(gaussian_kernel_1d(3), np.float32([0.25, 0.5, 0.25]))
    k11 = gaussian_kernel_1d(11).astype(np.float64)
    assert k11.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_array_equal(k11, k11[::-1])
    assert k11[6] / k11[5] == pytest.approx(math.exp(-1 / 8), rel=1e-6)  # σ = 2 for k = 11
    assert k11[7] / k11[5] == pytest.approx(math.exp(-4 / 8), rel=1e-6)
    k17 = gaussian_kernel_1d(17).astype(np.float64)
    assert k17[9] / k17[8] == pytest.approx(math.exp(-1 / (2 * 2.9**2)), rel=1e-6)  # σ = 2.9
    # BORDER_REFLECT_101 (…c b | a b c…): a delta at column 0 keeps half its mass there.
    row = np.zeros((1, 1, 1, 5), np.float32)
    row[..., 0] = 1
    np.testing.assert_array_equal(cv2_gaussian_blur(row, 3)[0, 0, 0], [0.5, 0.25, 0, 0, 0])
    img = np.zeros((1, 1, 3, 5), np.float32)
    img[..., 0, 0] = 1
    out = cv2_gaussian_blur(img, 3)[0, 0]
    np.testing.assert_array_equal(out[:2, :2], [[0.25, 0.125], [0.125, 0.0625]])
    # The DARK blur instead uses a zero frame and rescales to the original maximum.
    hm = _gaussian_maps(np.float32([[[1.0, 1.0], [6.0, 5.0]]]), 10, 9)
    blurred = gaussian_blur(hm, 5)
    np.testing.assert_allclose(blurred.max(axis=(2, 3)), hm.max(axis=(2, 3)), rtol=1e-6)


@pytest.mark.parametrize("ksize", [1, 3, 5, 7, 11, 17])
@pytest.mark.parametrize("hw", [(1, 7), (5, 1), (3, 4), (13, 9), (64, 48)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_point_blur_equals_full_blur(ksize: int, hw: tuple[int, int], dtype: type) -> None:
    """post_dark_udp blurs only the 7 points it reads; they must be the full blur's bits."""
    from posebh.decode import _cv2_blur_points

    h, w = hw
    rng = np.random.default_rng(ksize * 100 + h)
    maps = rng.normal(size=(3, h, w)).astype(dtype)
    full = cv2_gaussian_blur(maps, ksize)
    assert full.dtype == dtype and full.shape == maps.shape
    ch = rng.integers(0, 3, 50)
    ys, xs = rng.integers(0, h, 50), rng.integers(0, w, 50)
    np.testing.assert_array_equal(_cv2_blur_points(maps, ch, ys, xs, ksize), full[ch, ys, xs])


@pytest.mark.parametrize(
    "kw",
    [
        {"post_process": "unbiased", "kernel": 0},
        {"post_process": "unbiased", "kernel": -3},
        {"post_process": "unbiased", "kernel": 4},
        {"post_process": "megvii", "kernel": 0},
        {"post_process": "default", "use_udp": True, "kernel": 0},
        {"post_process": "megvii", "use_udp": True},
        {"post_process": "dark"},
        {"post_process": "default", "target_type": "CombinedTarget"},
        {"post_process": "default", "target_type": "Regression"},
    ],
)
def test_invalid_settings_raise(kw: dict[str, Any]) -> None:
    hm = np.ones((1, 3, 8, 8), np.float32)
    box = np.ones((1, 2), np.float32)
    with pytest.raises(ValueError):
        keypoints_from_heatmaps(hm, box, box, **kw)


def test_kernel_unused_without_blur() -> None:
    """Plain 'default'/None decoding never reads the kernel (as the official)."""
    hm = _gaussian_maps(np.float32([[[3.2, 4.1]]]), 9, 8)
    box = np.ones((1, 2), np.float32)
    a, _ = keypoints_from_heatmaps(hm, box, box, post_process="default", kernel=0)
    b, _ = keypoints_from_heatmaps(hm, box, box, post_process="default")
    np.testing.assert_array_equal(a, b)


def test_bad_shapes_raise() -> None:
    box = np.ones((2, 2), np.float32)
    with pytest.raises(ValueError, match=r"\[N, K, H, W\]"):
        keypoints_from_heatmaps(np.ones((2, 3, 8), np.float32), box, box)
    with pytest.raises(ValueError, match="center"):
        keypoints_from_heatmaps(np.ones((3, 3, 8, 8), np.float32), box, box)
    with pytest.raises(ValueError, match="non-empty"):
        get_max_preds(np.ones((2, 3, 0, 8), np.float32))


def test_combined_target_decode() -> None:
    """UDP CombinedTarget: arg-max of the response plus the offset maps × radius there."""
    n, h, w = 2, 16, 12
    hm = np.zeros((n, 6, h, w), np.float32)
    peaks = [[(5, 7), (2, 11)], [(9, 3), (6, 6)]]
    for i in range(n):
        for j, (x, y) in enumerate(peaks[i]):
            hm[i, 3 * j, y, x] = 1.0
            hm[i, 3 * j + 1] = 0.1 * (j + 1)  # constant offsets: the blur keeps them (≈)
            hm[i, 3 * j + 2] = -0.2 * (i + 1)
    radius = 0.0546875 * h
    center = np.float32([[(w - 1) / 2, (h - 1) / 2]] * n)
    scale = np.float32([[(w - 1) / 200, (h - 1) / 200]] * n)
    preds, maxvals = keypoints_from_heatmaps(
        hm, center, scale, use_udp=True, target_type="CombinedTarget", kernel=3
    )
    assert preds.shape == (n, 2, 2) and maxvals.shape == (n, 2, 1)
    want = np.float32(peaks) + np.stack(
        [
            np.float32([[0.1, 0.2], [0.1, 0.2]]) * radius,
            np.float32([[-0.2, -0.2], [-0.4, -0.4]]) * radius,
        ],
        axis=-1,
    )
    np.testing.assert_allclose(preds, want, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Per-dataset settings
# ---------------------------------------------------------------------------------------------

# PROTOCOL.md §6 table row (first cell prefix) -> dataset records (posebh.protocol).
PROTOCOL_ROWS = {
    "| COCO (": ["coco"],
    "| MPII": ["mpii"],
    "| AIC": ["aic"],
    "| AP-10K": ["ap10k", "apt36k"],
    "| COCO-WholeBody": ["coco_wholebody"],
    "| OCHuman": ["ochuman"],
    "| InterHand2D": ["interhand2d"],
    "| 3DPW": ["pw3d"],
}


def test_decode_defaults_match_protocol(shared_dir: Path) -> None:
    from posebh.skeletons import SKELETONS

    assert set(PROTOCOLS) == {k for keys in PROTOCOL_ROWS.values() for k in keys}
    assert set(PROTOCOLS) <= set(SKELETONS)
    text = (shared_dir / "PROTOCOL.md").read_text()
    section = text[text.index("## 6.") : text.index("## 7.")]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    seen = set()
    for prefix, keys in PROTOCOL_ROWS.items():
        (row,) = [r for r in rows if r.startswith(prefix)]
        test_cfg = row.split("|")[2]
        udp = "no UDP" not in test_cfg and re.search(r"UDP|use_udp=True", test_cfg) is not None
        for key in keys:
            cfg = PROTOCOLS[key].decode
            assert cfg.use_udp is udp, key
            assert cfg.shift_heatmap is (not udp), key  # UDP rows: False; the others: True
            assert cfg.flip_test is True and cfg.post_process == "default", key
            assert cfg.kernel == 11 and cfg.target_type == "GaussianHeatmap", key
            assert "PROTOCOL.md §6" in cfg.source, key
            seen.add(key)
    assert seen == set(PROTOCOLS)
    with pytest.raises(ValueError, match="crowdpose"):
        get_protocol("crowdpose")
    assert get_protocol("coco").decode.decode_kwargs() == {
        "post_process": "default",
        "use_udp": True,
        "kernel": 11,
        "target_type": "GaussianHeatmap",
    }
