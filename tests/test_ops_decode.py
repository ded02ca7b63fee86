"""The fused heatmap decode (posebh.ops.decode_heatmaps) against the NumPy reference.

Reference: :func:`posebh.decode.keypoints_from_heatmaps` after :func:`posebh.decode.flip_test_merge`
(itself bit-exact with the official golden vectors, tests/test_decode.py). Backends tested
here: ``cpp`` (the C++ CPU op, compiled on first use), ``torch`` (the reference) and ``triton``
under the interpreter. The interpreter must be switched on before Triton kernels are defined,
so the ``test_interp_*`` tests run only in a child pytest process started by
:func:`test_triton_interpreter_suite` with ``TRITON_INTERPRET=1``. CUDA cannot run here; its
sources are compiled with nvcc / syntax-checked when the tools exist.

Contract: preds within 1e-3 px and maxvals within 1e-6 of the reference. The fused backends
actually reproduce the reference's bits (same operation order, NumPy's own log), which is what
most tests below assert; ``_assert_close`` holds the looser contract for the golden vectors.

Shapes: N instances, K keypoints, H×W maps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from triton_child import run_interpreter_tests

from posebh.decode import flip_back, flip_test_merge, gaussian_kernel_1d
from posebh.decode import keypoints_from_heatmaps as reference
from posebh.ops import decode as ops_decode
from posebh.ops import extensions
from posebh.ops.decode import decode_heatmaps
from posebh.protocol import get_protocol

REPO = Path(__file__).resolve().parents[1]
CHILD = os.environ.get("POSEBH_TRITON_CHILD") == "1"
EXT = "decode"
COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
PX_TOL = 1e-3
VAL_TOL = 1e-6

interp_only = pytest.mark.skipif(
    not CHILD, reason="runs in the TRITON_INTERPRET=1 child of test_triton_interpreter_suite"
)
parent_only = pytest.mark.skipif(CHILD, reason="parent-process test")

#: Every decode setting; the fused CPU op implements all of them.
MODES: list[dict[str, Any]] = [
    {"post_process": None},
    {"post_process": "default"},
    {"post_process": "unbiased"},
    {"post_process": "megvii"},
    {"post_process": "default", "use_udp": True},
    {"post_process": None, "use_udp": True, "kernel": 3},
    {"post_process": "unbiased", "use_udp": True, "kernel": 17},
    {"post_process": "unbiased", "kernel": 5},
    {"post_process": "megvii", "kernel": 7},
]
#: The settings the Triton and CUDA kernels implement (the evaluation's).
GPU_MODES = [m for m in MODES if m.get("use_udp") or m["post_process"] in (None, "default")]


def _mode_id(kw: dict[str, Any]) -> str:
    return f"{kw['post_process']}-udp{int(kw.get('use_udp', False))}-k{kw.get('kernel', 11)}"


@pytest.fixture(scope="module")
def cpp() -> None:
    """Build (or load from the cache) the C++ extension; a failure here is a real failure."""
    st = extensions.load_extension(EXT)
    assert st.status == "loaded", f"{st.reason}\n{st.log[-3000:]}"


def _boxes(n: int, seed: int = 0, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.uniform(100, 300, (n, 2)).astype(dtype),
        rng.uniform(0.5, 2.0, (n, 2)).astype(dtype),
    )


def _gaussians(n: int, k: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """σ = 2 Gaussians at random sub-pixel centres plus a little noise (model-like maps)."""
    rng = np.random.default_rng(seed)
    cx = rng.uniform(-2, w + 1, (n, k, 1, 1))
    cy = rng.uniform(-2, h + 1, (n, k, 1, 1))
    ys, xs = np.mgrid[0:h, 0:w]
    maps = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 8.0)
    return (maps + rng.normal(0, 0.01, maps.shape)).astype(np.float32)


def _ref(
    hm: Any,
    center: Any,
    scale: Any,
    flipped: Any = None,
    flip_indices: Any = None,
    shift: bool = False,
    **kw: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """The reference: flip_test_merge (if flipped) then posebh.decode.keypoints_from_heatmaps."""
    if flipped is not None:
        hm = flip_test_merge(hm, flipped, flip_indices, shift)
    p, v = reference(hm, center, scale, **kw)
    return np.asarray(p), np.asarray(v)


def _assert_same(got: tuple[Any, Any], want: tuple[Any, Any], what: str = "") -> None:
    """Bitwise equality (NaN where the reference has NaN)."""
    for g, w, name in zip(got, want, ("preds", "maxvals"), strict=True):
        g = g.cpu().numpy() if isinstance(g, torch.Tensor) else np.asarray(g)
        w = w.cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
        assert g.shape == w.shape, f"{what} {name}: shape {g.shape} != {w.shape}"
        assert g.dtype == w.dtype, f"{what} {name}: dtype {g.dtype} != {w.dtype}"
        np.testing.assert_array_equal(g, w, err_msg=f"{what} {name}")


def _assert_close(got: tuple[Any, Any], want_preds: Any, want_vals: Any, what: str) -> None:
    """The numerical contract: ≤ 1e-3 px and ≤ 1e-6 on the scores, NaN where NaN."""
    for g, w, tol in ((got[0], want_preds, PX_TOL), (got[1], want_vals, VAL_TOL)):
        g = np.asarray(g.cpu().numpy() if isinstance(g, torch.Tensor) else g, np.float64)
        w = np.asarray(w.cpu().numpy() if isinstance(w, torch.Tensor) else w, np.float64)
        g = g.reshape(w.shape)
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{what}: NaN")
        ok = ~np.isnan(w)
        err = float(np.abs(g[ok] - w[ok]).max()) if ok.any() else 0.0
        assert err <= tol, f"{what}: max |error| {err:.3g} > {tol:g}"


def _adversarial() -> dict[str, np.ndarray]:
    """[N, K, H, W] float32 maps that exercise every arg-max and border rule."""
    out: dict[str, np.ndarray] = {}
    h, w = 13, 11
    m = np.zeros((2, 8, h, w), np.float32)
    m[0, 0, 3, 4] = m[0, 0, 3, 8] = 1.0  # tie in one row: the left one
    m[0, 1, 9, 2] = m[0, 1, 2, 9] = 1.0  # tie across rows: the upper one
    m[0, 2] = 0.5  # flat positive map: pixel 0
    m[0, 3] = 0.0  # all zero: sentinel
    m[0, 4] = -0.25  # all negative: sentinel
    m[0, 5, 0, 0] = 2.0  # corners and borders
    m[0, 6, h - 1, w - 1] = 2.0
    m[0, 7, 0, w - 1] = 2.0
    m[1, 0, h - 1, 0] = 2.0
    m[1, 1, 1, 5] = 1.0  # row 1 / column 1: outside the quarter step's border
    m[1, 1, 2, 5] = 0.5
    m[1, 2, 6, 1] = 1.0
    m[1, 2, 6, 2] = 0.5
    m[1, 3, 6, 5] = np.nan  # NaN: score NaN, sentinel
    m[1, 3, 2, 2] = 3.0
    m[1, 4, 4, 4] = np.inf  # +inf is a proper maximum
    m[1, 5] = -np.inf  # all −inf: arg-max 0, sentinel
    m[1, 6] = np.linspace(-1, 1, h * w, dtype=np.float32).reshape(h, w)
    m[1, 7, 7, 7] = -0.0
    out["small"] = m + 0.0  # (the NaN stays)
    # Large maps: several 256-float chunks of the AVX2 arg-max plus a tail, ties between
    # chunks, a maximum in the tail, NaN in the tail.
    big = np.zeros((1, 5, 67, 53), np.float32)
    big[0, 0, 10, 3] = big[0, 0, 60, 40] = 1.0  # tie across chunks: the first
    big[0, 1, 66, 52] = 1.0  # last pixel (the scalar tail)
    big[0, 2] = 0.75
    big[0, 2, 66, 50] = 0.75  # flat map: pixel 0 even though the tail ties
    big[0, 3, 30, 30] = 1.0
    big[0, 3, 66, 51] = np.nan  # NaN in the tail
    big[0, 4, 0, 0] = 1.0
    big[0, 4, 66, 52] = 1.0  # tie between chunk 0 and the tail: pixel 0
    out["big"] = big
    out["one_pixel"] = np.float32([[[[0.5]], [[-1.0]]]])
    out["row"] = np.random.default_rng(1).normal(size=(2, 3, 1, 9)).astype(np.float32)
    out["column"] = np.random.default_rng(2).normal(size=(2, 3, 9, 1)).astype(np.float32)
    out["two_by_two"] = np.random.default_rng(3).normal(size=(1, 3, 2, 2)).astype(np.float32)
    out["odd"] = _gaussians(3, 4, 17, 13, seed=4)
    out["k1"] = _gaussians(4, 1, 64, 48, seed=5)
    return out


ADVERSARIAL = _adversarial()


# --------------------------------------------------------------------------------------------
# CPU op against the reference
# --------------------------------------------------------------------------------------------


@parent_only
@pytest.mark.parametrize("kw", MODES, ids=_mode_id)
@pytest.mark.parametrize("backend", ["cpp", "torch", "auto"])
def test_random_maps_match_reference_bitwise(cpp, kw: dict[str, Any], backend: str) -> None:
    for seed, (n, k, h, w) in enumerate([(3, 17, 64, 48), (2, 5, 17, 13), (1, 3, 20, 31)]):
        hm = _gaussians(n, k, h, w, seed=seed)
        center, scale = _boxes(n, seed)
        got = decode_heatmaps(torch.from_numpy(hm), center, scale, backend=backend, **kw)
        assert isinstance(got[0], torch.Tensor) and got[0].dtype == torch.float32
        _assert_same(got, _ref(hm, center, scale, **kw), f"{(n, k, h, w)}")
        noise = np.random.default_rng(seed).normal(size=hm.shape).astype(np.float32)
        got = decode_heatmaps(torch.from_numpy(noise), center, scale, backend=backend, **kw)
        _assert_same(got, _ref(noise, center, scale, **kw), f"noise {(n, k, h, w)}")


@parent_only
@pytest.mark.parametrize("kw", MODES, ids=_mode_id)
@pytest.mark.parametrize("case", list(ADVERSARIAL))
def test_adversarial_maps_match_reference(cpp, case: str, kw: dict[str, Any]) -> None:
    hm = ADVERSARIAL[case]
    center, scale = _boxes(hm.shape[0], 7)
    with np.errstate(all="ignore"):
        want = _ref(hm, center, scale, **kw)
    _assert_same(decode_heatmaps(torch.from_numpy(hm), center, scale, backend="cpp", **kw), want)
    # NumPy in, NumPy out, like the reference.
    got = decode_heatmaps(hm, center, scale, backend="cpp", **kw)
    assert isinstance(got[0], np.ndarray)
    _assert_same(got, want)


@parent_only
def test_documented_conventions(cpp) -> None:
    """Ties → first maximum; max ≤ 0 or NaN → the -1 sentinel (transformed); NaN scores NaN."""
    hm = ADVERSARIAL["small"]
    n, _, h, w = hm.shape
    center = np.tile(np.float32([w / 2, h / 2]), (n, 1))
    scale = np.tile(np.float32([w / 200, h / 200]), (n, 1))  # identity transform
    preds, maxvals = decode_heatmaps(torch.from_numpy(hm), center, scale, post_process=None)
    p, v = preds.numpy(), maxvals.numpy()[..., 0]
    np.testing.assert_array_equal(p[0, 0], [4, 3])
    np.testing.assert_array_equal(p[0, 1], [9, 2])
    np.testing.assert_array_equal(p[0, 2], [0, 0])
    for i, j in [(0, 3), (0, 4), (1, 3), (1, 5)]:
        np.testing.assert_array_equal(p[i, j], [-1, -1])
    assert np.isnan(v[1, 3]) and v[1, 5] == -np.inf and v[1, 4] == np.inf
    np.testing.assert_array_equal(p[1, 4], [4, 4])


@parent_only
@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("kw", MODES, ids=_mode_id)
def test_fused_flip_matches_merge_then_decode(cpp, kw: dict[str, Any], shift: bool) -> None:
    rng = np.random.default_rng(11)
    n, k, h, w = 3, 17, 64, 48
    hm = _gaussians(n, k, h, w, seed=12)
    flipped = _gaussians(n, k, h, w, seed=13)
    flipped[1, 4, 5, 7] = np.nan
    center, scale = _boxes(n, 14)
    for flip_indices in (COCO_FLIP, list(rng.permutation(k))):
        with np.errstate(all="ignore"):
            want = _ref(hm, center, scale, flipped, flip_indices, shift, **kw)
        got = decode_heatmaps(
            torch.from_numpy(hm),
            center,
            scale,
            flipped=torch.from_numpy(flipped),
            flip_indices=flip_indices,
            shift=shift,
            backend="cpp",
            **kw,
        )
        _assert_same(got, want, f"flip {flip_indices[:4]}")
    # Odd widths (the vectorised merge's scalar tail) and a row of width 1.
    for dims in [(2, 3, 9, 13), (1, 2, 5, 1), (2, 3, 4, 8)]:
        hm = np.random.default_rng(15).normal(size=dims).astype(np.float32)
        flipped = np.random.default_rng(16).normal(size=dims).astype(np.float32)
        perm = list(np.random.default_rng(17).permutation(dims[1]))
        center, scale = _boxes(dims[0], 18)
        with np.errstate(all="ignore"):
            want = _ref(hm, center, scale, flipped, perm, shift, **kw)
        got = decode_heatmaps(
            hm, center, scale, flipped=flipped, flip_indices=perm, shift=shift, **kw
        )
        _assert_same(got, want, f"flip {dims}")


@parent_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_follow_the_reference(cpp, dtype: torch.dtype) -> None:
    """Half/bfloat16 are decoded in float32 (merged in their own dtype first, as the
    reference); float64 is decoded by the reference in float64 ('auto' picks it)."""
    hm = torch.from_numpy(_gaussians(2, 17, 16, 12, seed=19)).to(dtype)
    flipped = torch.from_numpy(_gaussians(2, 17, 16, 12, seed=20)).to(dtype)
    center, scale = _boxes(2, 21)
    for kw in ({"post_process": "default"}, {"use_udp": True}):
        want = _ref(hm, center, scale, flipped, COCO_FLIP, True, **kw)
        got = decode_heatmaps(
            hm, center, scale, flipped=flipped, flip_indices=COCO_FLIP, shift=True, **kw
        )
        _assert_same(got, want, str(dtype))
    info = ops_decode._call_info(hm.device, dtype, "default", False, 11, False)
    chosen = ops_decode.DECODE.select("auto", info).name
    assert chosen == ("torch" if dtype == torch.float64 else "cpp")


@parent_only
def test_float64_boxes_and_empty_batch(cpp) -> None:
    hm = _gaussians(3, 4, 16, 12, seed=22)
    center, scale = _boxes(3, 23, np.float64)
    for kw in MODES:
        _assert_same(
            decode_heatmaps(torch.from_numpy(hm), center, scale, backend="cpp", **kw),
            _ref(hm, center, scale, **kw),
        )
        empty = torch.zeros(0, 17, 64, 48)
        preds, maxvals = decode_heatmaps(empty, np.zeros((0, 2)), np.zeros((0, 2)), **kw)
        assert tuple(preds.shape) == (0, 17, 2) and tuple(maxvals.shape) == (0, 17, 1)


@parent_only
@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_simd_variants_agree_bitwise(cpp, monkeypatch, isa: str) -> None:
    """POSEBH_CPU_ISA=generic forces the scalar paths; both give the reference's bits."""
    monkeypatch.setenv("POSEBH_CPU_ISA", isa)
    assert ops_decode.cpu_isa() in ((isa,) if isa == "generic" else ("avx2", "generic"))
    hm = np.concatenate([ADVERSARIAL["big"], _gaussians(1, 5, 67, 53, seed=24)], axis=0)
    flipped = _gaussians(2, 5, 67, 53, seed=25)
    center, scale = _boxes(2, 26)
    for kw in MODES:
        with np.errstate(all="ignore"):
            want = _ref(hm, center, scale, flipped, [1, 0, 2, 4, 3], True, **kw)
        got = decode_heatmaps(
            hm, center, scale, flipped=flipped, flip_indices=[1, 0, 2, 4, 3], shift=True, **kw
        )
        _assert_same(got, want, f"{isa} {kw}")


@parent_only
def test_numpy_log_and_opencv_taps_are_exact(cpp) -> None:
    """The op's log is NumPy's float32 SIMD log, its taps cv2.getGaussianKernel's (both
    checked exhaustively on [0.001, 50] / every odd size ≤ 31 when written)."""
    for k in range(1, 64, 2):
        taps = torch.ops.posebh.decode_gaussian_taps(k).numpy()
        np.testing.assert_array_equal(taps, gaussian_kernel_1d(k), err_msg=f"kernel {k}")
    rng = np.random.default_rng(27)
    x = np.concatenate(
        [
            rng.uniform(0.001, 50, 2_000_000).astype(np.float32),
            rng.integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
            np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 1.17549435e-38, 1.0, -1.0]),
        ]
    )
    got = torch.ops.posebh.decode_numpy_logf(torch.from_numpy(x)).numpy()
    with np.errstate(all="ignore"):
        want = np.log(x)
    np.testing.assert_array_equal(got, want)


@parent_only
def test_opcheck_and_torch_compile(cpp) -> None:
    hm = torch.from_numpy(_gaussians(2, 3, 9, 7, seed=28))
    flipped = torch.from_numpy(_gaussians(2, 3, 9, 7, seed=29))
    center, scale = (torch.from_numpy(a) for a in _boxes(2, 30))
    op = torch.ops.posebh.decode_heatmaps.default
    torch.library.opcheck(op, (hm, center, scale))
    torch.library.opcheck(op, (hm, center, scale, flipped, [1, 0, 2], True, "default", True, 11))
    torch.library.opcheck(op, (hm, center, scale, None, None, False, "unbiased", False, 5))
    torch.library.opcheck(op, (hm, center, scale, None, None, False, None, False, 11))

    def decode(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        preds, maxvals = torch.ops.posebh.decode_heatmaps(
            x, center, scale, f, [1, 0, 2], False, "default", True, 11
        )
        return preds * (maxvals > 0)

    compiled = torch.compile(decode, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(hm, flipped), decode(hm, flipped), atol=0, rtol=0)


@parent_only
def test_invalid_arguments_raise(cpp) -> None:
    hm = torch.ones(1, 3, 8, 8)
    box = np.ones((1, 2), np.float32)
    for kw in [
        {"post_process": "unbiased", "kernel": 4},
        {"post_process": "megvii", "kernel": 0},
        {"use_udp": True, "kernel": -3},
        {"post_process": "megvii", "use_udp": True},
        {"post_process": "dark"},
    ]:
        for backend in ("cpp", "torch"):
            with pytest.raises(ValueError):
                decode_heatmaps(hm, box, box, backend=backend, **kw)
    with pytest.raises(ValueError, match=r"\[N, K, H, W\]"):
        decode_heatmaps(torch.ones(3, 8, 8), box, box)
    with pytest.raises(ValueError, match="center"):
        decode_heatmaps(torch.ones(2, 3, 8, 8), box, box, backend="cpp")
    with pytest.raises(ValueError, match="permutation"):
        decode_heatmaps(hm, box, box, flipped=hm, flip_indices=[0, 1, 1])
    with pytest.raises(ValueError, match="shape"):
        decode_heatmaps(hm, box, box, flipped=hm[:, :2], flip_indices=[0, 1])
    # The op itself checks too (ValueError from TORCH_CHECK_VALUE).
    op = torch.ops.posebh.decode_heatmaps
    tbox = torch.from_numpy(box)
    with pytest.raises(ValueError, match="odd"):
        op(hm, tbox, tbox, None, None, False, "default", True, 2)
    with pytest.raises(ValueError, match="permutation"):
        op(hm, tbox, tbox, hm, [0, 0, 1], False, "default", False, 3)
    with pytest.raises(ValueError, match="up to 63"):
        op(hm, tbox, tbox, None, None, False, "unbiased", False, 65)
    with pytest.raises(RuntimeError, match="float32"):
        op(hm.double(), tbox, tbox, None, None, False, "default", False, 11)
    # Kernels beyond the fused limit fall back to the reference under "auto".
    info = ops_decode._call_info(hm.device, hm.dtype, "unbiased", False, 65, False)
    assert ops_decode.DECODE.select("auto", info).name == "torch"


# --------------------------------------------------------------------------------------------
# Golden vectors (official mmpose + OpenCV outputs) through the C++ op
# --------------------------------------------------------------------------------------------

GOLDEN_A = {
    "default": {"post_process": "default"},
    "unbiased_k11": {"post_process": "unbiased", "kernel": 11},
    "udp_default_k11": {"post_process": "default", "use_udp": True, "kernel": 11},
    "none": {"post_process": None},
}
SUITE = {
    "a_default": {"post_process": "default"},
    "b_dark_udp": {"post_process": "default", "use_udp": True, "kernel": 11},
    "c_unbiased": {"post_process": "unbiased", "kernel": 11},
    "d_none": {"post_process": None},
    "e_megvii": {"post_process": "megvii", "kernel": 11},
}


def _golden_npz(golden_dir: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(golden_dir / name) as d:
        return {k: d[k] for k in d.files}


def _check_golden(golden_dir: Path, backend: str, gpu_modes_only: bool = False) -> None:
    """Every golden decode case (whose mode the backend implements) within the contract."""

    def wanted(kw: dict[str, Any]) -> bool:
        return not gpu_modes_only or kw.get("use_udp") or kw["post_process"] in (None, "default")

    a = _golden_npz(golden_dir, "decode.npz")
    for case, kw in GOLDEN_A.items():
        if wanted(kw):
            got = decode_heatmaps(
                torch.from_numpy(a["heatmaps"]), a["center"], a["scale"], backend=backend, **kw
            )
            _assert_close(got, a[f"preds_{case}"], a[f"maxvals_{case}"], f"decode.npz {case}")
    b = _golden_npz(golden_dir, "suite/decode.npz")
    hm = torch.from_numpy(b["heatmaps"])
    n, _, h, w = hm.shape
    for case, kw in SUITE.items():
        if not wanted(kw):
            continue
        got = decode_heatmaps(hm, b["center"], b["scale"], backend=backend, **kw)
        _assert_close(got, b[f"{case}_preds"], b[f"{case}_maxvals"], f"suite {case}")
        udp = kw.get("use_udp", False)  # identity transform: heatmap-space coordinates
        center = np.tile(np.float32([(w - udp) / 2, (h - udp) / 2]), (n, 1))
        scale = np.tile(np.float32([(w - udp) / 200, (h - udp) / 200]), (n, 1))
        got = decode_heatmaps(hm, center, scale, backend=backend, **kw)
        # The maxima do not depend on the transform: the image-space golden maxvals hold.
        _assert_close(
            got, b[f"{case}_preds_hm"], b[f"{case}_maxvals"], f"suite {case} (heatmap space)"
        )
    data = torch.load(golden_dir / "suite" / "backbone_heads.pt", weights_only=True)
    flip = data["flip"]
    maps = data["heatmaps"]["keypoint_head"]
    raw_flipped = flip_back(flip["keypoint_head_flipped_back"], COCO_FLIP)
    kw = get_protocol("coco").decode.decode_kwargs()
    kw.pop("target_type")
    if not wanted(kw):
        return
    shift = get_protocol("coco").decode.shift_heatmap
    for fused in (False, True):
        got = decode_heatmaps(
            maps,
            flip["centers"],
            flip["scales"],
            flipped=raw_flipped if fused else None,
            flip_indices=COCO_FLIP if fused else None,
            shift=shift,
            backend=backend,
            **kw,
        )
        want = flip["decode_flip_preds" if fused else "decode_noflip_preds"]
        _assert_close(got, want[..., :2], want[..., 2:], f"backbone_heads flip={fused}")


@parent_only
def test_golden_vectors_through_the_cpp_op(cpp, golden_dir: Path) -> None:
    _check_golden(golden_dir, "cpp")


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


@parent_only
def test_auto_override_and_explain(cpp) -> None:
    hm = torch.from_numpy(_gaussians(1, 3, 8, 8))
    box = np.ones((1, 2), np.float32)
    with pytest.raises(RuntimeError, match=r"'cuda' cannot run.*tensors are on cpu"):
        decode_heatmaps(hm, box, box, backend="cuda")
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            decode_heatmaps(hm, box, box, backend="triton")
    with pytest.raises(ValueError, match="unknown backend 'numba'"):
        decode_heatmaps(hm, box, box, backend="numba")
    text = ops_decode.explain()
    lines = text.splitlines()
    assert lines[0] == "posebh.ops.decode_heatmaps on cpu (float32): runs 'cpp'"
    assert "settings: post_process='default'" in lines[1]
    by_name = {line.split()[0]: line for line in lines[4:]}
    assert set(by_name) == {"triton", "cuda", "cpp", "torch"}
    assert "chosen" in by_name["cpp"] and "posebh_decode_cpu" in by_name["cpp"]
    assert "after 'cpp'" in by_name["torch"]
    cuda = ops_decode.explain("cuda", post_process="unbiased")
    assert "auto order on cuda: triton > cuda > torch" in cuda and "runs 'torch'" in cuda
    f64 = ops_decode.explain(dtype=torch.float64, use_udp=True, flipped=True)
    assert "runs 'torch'" in f64 and "DARK-UDP (kernel 11), flip test fused" in f64
    import posebh.ops

    generic = posebh.ops.explain("decode_heatmaps")
    assert generic.startswith("posebh.ops.decode_heatmaps on cpu (float32): runs 'cpp'")
    if hasattr(posebh.ops, "decode_heatmaps"):  # exported by posebh/ops/__init__.py
        assert posebh.ops.decode_heatmaps is decode_heatmaps


# --------------------------------------------------------------------------------------------
# CUDA sources: compile checks only (no GPU here)
# --------------------------------------------------------------------------------------------


@parent_only
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_cuda_kernel_compiles_with_nvcc(tmp_path: Path) -> None:
    src = REPO / "kernels" / "csrc" / "cuda" / "decode_heatmaps.cu"
    includes = [line for line in src.read_text().splitlines() if line.startswith("#include")]
    assert not any("torch" in line or "ATen" in line for line in includes), includes
    # PTX only (no ptxas): checks the C ABI and the shared header's device code in seconds.
    cmd = ["nvcc", "-c", "-std=c++17", "-gencode", "arch=compute_90,code=compute_90"]
    run = subprocess.run(
        [*cmd, str(src), "-o", str(tmp_path / "decode.o")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    ptx = subprocess.run(
        ["nvcc", "-ptx", "-std=c++17", str(src), "-o", str(tmp_path / "decode.ptx")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ptx.returncode == 0, ptx.stderr[-4000:]
    # No contractible float64 products: the Newton step must not be fused by ptxas.
    text = (tmp_path / "decode.ptx").read_text()
    assert "mul.f64" not in text and "fma.rn.f64" not in text


def _cuda_include_dir() -> Path | None:
    nvcc = shutil.which("nvcc")
    candidates = [Path(os.environ.get("CUDA_HOME", "/nonexistent")) / "include"]
    if nvcc:
        real = Path(nvcc).resolve()
        candidates.append(real.parents[1] / "include")
        text = real.read_text(errors="ignore") if real.stat().st_size < 4096 else ""
        for word in text.split():  # a wrapper script: `exec /path/to/bin/nvcc "$@"`
            if word.endswith("/bin/nvcc"):
                candidates.append(Path(word).parents[1] / "include")
    return next((c for c in candidates if (c / "cuda_runtime_api.h").is_file()), None)


@parent_only
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not on PATH")
def test_cuda_binding_compiles_against_torch_headers(tmp_path: Path) -> None:
    from torch.utils import cpp_extension

    include = _cuda_include_dir()
    if include is None:
        pytest.skip("no CUDA toolkit headers (cuda_runtime_api.h) found")
    stub = tmp_path / "c10" / "cuda" / "impl"  # missing from CPU torch wheels; empty suffices
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    src = REPO / "kernels" / "csrc" / "cuda" / "decode_heatmaps_cuda.cpp"
    incs = [f"-I{tmp_path}", *(f"-I{p}" for p in cpp_extension.include_paths()), f"-I{include}"]
    run = subprocess.run(
        ["g++", "-std=c++20", "-fsyntax-only", *incs, str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]


@parent_only
@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
    reason="Triton is in interpreter mode (TRITON_INTERPRET=1): nothing is compiled",
)
def test_triton_kernel_compiles_for_cuda_without_a_gpu() -> None:
    """Triton compiles the kernel to PTX and a cubin (its bundled ptxas) for sm_90 without a
    GPU; with enable_fp_fusion=False every multiply is .rn (never contracted into an FMA), the
    divisions are IEEE and the only FMAs are the explicit ones (blur, log)."""
    import re

    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget

    extensions.kernels_package()
    from posebh_kernels import decode_heatmaps as module

    sig = {
        **dict.fromkeys(["HM", "FL", "TAPS", "BOX", "PREDS", "MAXV"], "*fp32"),
        "FIDX": "*i64",
        **dict.fromkeys(["NK", "K", "H", "W", "SHIFT"], "i32"),
        **dict.fromkeys(["HAS_FLIP", "MODE", "KS", "RB", "BLOCK"], "constexpr"),
    }
    names = list(module._decode_kernel.arg_names)
    assert set(names) == set(sig), names
    sig = {name: sig[name] for name in names}
    for flip, mode, ks in [(True, 4, 11), (False, 4, 3), (True, 1, 1)]:
        consts = {
            "HAS_FLIP": flip,
            "MODE": mode,
            "KS": ks,
            "RB": max(1, 1 << (ks - 1).bit_length()),
        }
        consts["BLOCK"] = 4096
        src = triton.compiler.ASTSource(
            fn=module._decode_kernel,
            signature=sig,
            constexprs={(names.index(k),): v for k, v in consts.items()},
        )
        compiled = triton.compile(
            src, target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": False}
        )
        ptx = compiled.asm["ptx"]
        assert compiled.asm.get("cubin"), "ptxas produced no cubin"
        for pattern in (r"\bmul\.f32\b", r"\bmul\.f64\b", r"fma\.rn\.f64", r"div\.(full|approx)"):
            assert not re.search(pattern, ptx), (flip, mode, ks, pattern)
        if mode == 4:
            row_taps = ks if ks > 5 else ks // 2  # sequential form, or the symmetric one
            assert len(re.findall(r"fma\.rn\.f32", ptx)) >= row_taps + ks // 2 + 10  # + log


# --------------------------------------------------------------------------------------------
# Triton under the interpreter (child process)
# --------------------------------------------------------------------------------------------


@parent_only
def test_triton_interpreter_suite() -> None:
    pytest.importorskip("triton")
    run_interpreter_tests(__file__, timeout=1800)


@interp_only
@pytest.mark.parametrize("kw", GPU_MODES, ids=_mode_id)
def test_interp_matches_reference_bitwise(kw: dict[str, Any]) -> None:
    for seed, dims in enumerate([(2, 3, 17, 13), (1, 2, 64, 48)]):
        hm = _gaussians(*dims, seed=seed)
        flipped = _gaussians(*dims, seed=seed + 10)
        center, scale = _boxes(dims[0], seed)
        got = decode_heatmaps(torch.from_numpy(hm), center, scale, backend="triton", **kw)
        _assert_same(got, _ref(hm, center, scale, **kw), f"{dims}")
        perm = list(np.random.default_rng(seed).permutation(dims[1]))
        for shift in (False, True):
            got = decode_heatmaps(
                torch.from_numpy(hm),
                center,
                scale,
                flipped=torch.from_numpy(flipped),
                flip_indices=perm,
                shift=shift,
                backend="triton",
                **kw,
            )
            _assert_same(got, _ref(hm, center, scale, flipped, perm, shift, **kw), "flip")


@interp_only
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy inside the interpreter: 0·inf
@pytest.mark.parametrize("kw", GPU_MODES[:3], ids=_mode_id)
@pytest.mark.parametrize("case", ["small", "big", "one_pixel", "row", "column", "two_by_two"])
def test_interp_adversarial(case: str, kw: dict[str, Any]) -> None:
    hm = ADVERSARIAL[case]
    center, scale = _boxes(hm.shape[0], 7)
    with np.errstate(all="ignore"):
        want = _ref(hm, center, scale, **kw)
    _assert_same(decode_heatmaps(hm, center, scale, backend="triton", **kw), want, case)


@interp_only
def test_interp_empty_batch_and_auto() -> None:
    empty = torch.zeros(0, 17, 8, 6)
    preds, maxvals = decode_heatmaps(empty, np.zeros((0, 2)), np.zeros((0, 2)), backend="triton")
    assert tuple(preds.shape) == (0, 17, 2) and tuple(maxvals.shape) == (0, 17, 1)
    # On CPU, "auto" never picks the interpreter; forcing it works; 'unbiased' cannot.
    assert "usable if forced" in ops_decode.explain().splitlines()[4]
    with pytest.raises(RuntimeError, match="CPU op and the reference only"):
        decode_heatmaps(
            torch.ones(1, 1, 4, 4),
            np.ones((1, 2)),
            np.ones((1, 2)),
            post_process="unbiased",
            backend="triton",
        )


@interp_only
@pytest.mark.slow
def test_interp_golden_vectors(golden_dir: Path) -> None:
    _check_golden(golden_dir, "triton", gpu_modes_only=True)
