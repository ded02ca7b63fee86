"""Heatmap decoding and test-time flip helpers: the NumPy reference of the official decode.

Shape vocabulary, used by every function below:

* ``N`` instances (person boxes), ``K`` keypoints (heatmap channels), ``H×W`` heatmap;
* ``heatmaps`` are ``[N, K, H, W]``; ``coords``/``preds`` are ``[N, K, 2]`` as ``(x, y)``
  (x is the column, y the row); ``maxvals`` are ``[N, K, 1]``;
* ``center`` ``[N, 2]`` is the box centre in image pixels and ``scale`` ``[N, 2]`` the box
  size ``(w, h)`` in units of 200 px (the mmpose ``pixel_std``).

What this module reproduces is the mmpose 0.x code that the PoseBH release (8f03438) ships and
evaluates with: ``keypoints_from_heatmaps`` with ``target_type='GaussianHeatmap'`` (and
``'CombinedTarget'``), ``_get_max_preds``, ``_taylor``, ``_gaussian_blur`` and ``post_dark_udp``
of ``mmpose/core/evaluation/top_down_eval.py``, and ``transform_preds`` / ``flip_back`` of
``mmpose/core/post_processing/post_transforms.py``. It is written from those semantics, not
copied, and it is vectorised over ``N`` and ``K`` instead of looping.

Numerical contract (checked against both golden ``decode.npz`` files in ``tests/test_decode.py``):

* The official code ran under NumPy 1.x on float32 heatmaps. NumPy 1.x promotes a float32
  *scalar* combined with a Python number to float64 but keeps float32 when an *array* meets a
  scalar; the sub-expressions below are cast so that NumPy 2 evaluates them in the same
  precision. Predictions are float32 (the official ``preds`` always are), ``maxvals`` keep the
  heatmap dtype (float32 for half/bfloat16 input).
* ``cv2.GaussianBlur`` is replaced by a NumPy separable filter with OpenCV's kernel (see
  :func:`gaussian_kernel_1d`) and OpenCV's default border ``BORDER_REFLECT_101``, which repeats
  the float32 operations of OpenCV 4.x's AVX2/FMA filter engine one by one
  (:func:`_sep_filter_valid`). On every golden vector it is bit-exact, and so is every decode
  mode (max error 0). That matters: on real, non-Gaussian maps the DARK-UDP Hessian can be
  nearly singular and a one-ulp blur difference then moves a keypoint by tens of pixels
  (``backbone_heads.pt``). On a CPU/OpenCV build without FMA the official output itself would
  differ at that level.
* Official quirks are reproduced on purpose and listed where they occur: the border rules of the
  quarter-pixel step and of the Taylor step, the megvii ``+0.5`` applied only inside that border,
  the 0/0 NaN of ``_gaussian_blur`` on an all-zero map, DARK-UDP running whenever
  ``use_udp=True`` (whatever ``post_process`` says), and DARK-UDP reading the neighbours of a
  ``-1`` sentinel from the previous channel's memory (so a sentinel is *not* always left at
  ``(-1, -1)`` in heatmap space).
* NaN input is **propagated, not rejected**, exactly as the official code does: a map that
  contains a NaN has ``maxval`` NaN (arg-max returns the first NaN, whose value is NaN) and hence
  the ``-1`` sentinel, which is then refined and transformed like any other sentinel (the plain
  modes give the transformed ``(-1, -1)``; DARK-UDP gives NaN if the NaN reached the pixels the
  sentinel reads). Blurring modes spread a NaN over the kernel window, never across maps.
  Callers that need clean scores must test ``maxvals`` for NaN.

Torch tensors are accepted wherever an array is: they are decoded through NumPy on the CPU and
returned as tensors on the input's device (the fused kernels accelerate this later).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "POST_PROCESS_MODES",
    "cv2_gaussian_blur",
    "dark_refine",
    "flip_back",
    "flip_test_merge",
    "gaussian_blur",
    "gaussian_kernel_1d",
    "get_max_preds",
    "keypoints_from_heatmaps",
    "post_dark_udp",
    "quarter_offset_refine",
    "taylor_refine",
    "transform_preds",
]

_A = TypeVar("_A", np.ndarray, Tensor)

POST_PROCESS_MODES = ("default", "unbiased", "megvii", None)
_TARGET_TYPES = ("gaussianheatmap", "combinedtarget")
# mmpose's default radius of the positive area of a CombinedTarget map, as a fraction of H.
_VALID_RADIUS_FACTOR = 0.0546875

# ---------------------------------------------------------------------------------------------
# Array plumbing
# ---------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    """A NumPy view/copy of ``x``; half and bfloat16 tensors become float32 (NumPy lacks bf16)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _like(out: np.ndarray, ref: Any) -> Any:
    """Return ``out`` as the container type of ``ref`` (a tensor on ref's device, or NumPy)."""
    if isinstance(ref, Tensor):
        return torch.from_numpy(np.ascontiguousarray(out)).to(ref.device)
    return out


def _float(a: np.ndarray) -> np.ndarray:
    """float64 stays float64; every other dtype is decoded in float32 like the official code."""
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)


def _check_maps(a: np.ndarray, name: str = "heatmaps") -> np.ndarray:
    if a.ndim != 4:
        raise ValueError(f"{name} must be [N, K, H, W], got shape {a.shape}")
    if a.shape[2] == 0 or a.shape[3] == 0:
        raise ValueError(f"{name} must have a non-empty H×W, got shape {a.shape}")
    return _float(a)


def _check_kernel(kernel: int, what: str) -> int:
    # The official code asserts kernel > 0 ('unbiased', 'megvii') and kernel odd
    # (_gaussian_blur); OpenCV rejects the others. We raise ValueError for all of them.
    if isinstance(kernel, bool) or int(kernel) != kernel or kernel <= 0 or kernel % 2 != 1:
        raise ValueError(f"{what} needs a positive odd Gaussian kernel size, got {kernel!r}")
    return int(kernel)


def _gather(maps: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``maps[n, k, ys[n, k], xs[n, k]]`` with indices clipped into range (callers mask)."""
    n, k, h, w = maps.shape
    ni = np.arange(n)[:, None]
    ki = np.arange(k)[None, :]
    return maps[ni, ki, np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)]


def _int_coords(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``int(x), int(y)`` of the official loops (truncation toward 0); NaN maps to -1."""
    c = np.where(np.isfinite(coords), coords, -1.0)
    c = np.trunc(c).astype(np.int64)
    return c[..., 0], c[..., 1]


# ---------------------------------------------------------------------------------------------
# Arg-max
# ---------------------------------------------------------------------------------------------


def get_max_preds(heatmaps: _A) -> tuple[_A, _A]:
    """Integer arg-max of every map (the official ``_get_max_preds``).

    Args:
        heatmaps: ``[N, K, H, W]``.

    Returns:
        ``preds`` float32 ``[N, K, 2]`` with ``x = idx mod W`` and ``y = idx div W`` of the
        flattened arg-max (ties: the first maximum in row-major order wins), and ``maxvals``
        ``[N, K, 1]`` (heatmap dtype). Where the maximum is not ``> 0`` (including NaN) both
        coordinates are the sentinel ``-1``.
    """
    hm = _check_maps(_to_numpy(heatmaps))
    n, k, h, w = hm.shape
    flat = hm.reshape(n, k, h * w)  # explicit size: reshape(-1) fails for N = 0
    idx = flat.argmax(axis=2)
    maxvals = flat.max(axis=2)[..., None]
    preds = np.stack([idx % w, idx // w], axis=-1).astype(np.float32)
    preds = np.where(maxvals > 0.0, preds, np.float32(-1.0))
    return _like(preds, heatmaps), _like(maxvals, heatmaps)


# ---------------------------------------------------------------------------------------------
# OpenCV's Gaussian blur without OpenCV
# ---------------------------------------------------------------------------------------------

# cv2.getGaussianKernel(k, sigma <= 0) returns these fixed binomial kernels for k <= 7 instead of
# sampling a Gaussian (so k = 3 is [1/4, 1/2, 1/4], not sigma 0.8).
_SMALL_KERNELS = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


def gaussian_kernel_1d(ksize: int, dtype: Any = np.float32) -> np.ndarray:
    """OpenCV's 1-D Gaussian kernel for ``sigma <= 0`` (``cv2.getGaussianKernel(ksize, 0)``).

    ``sigma = 0.3·((ksize − 1)·0.5 − 1) + 0.8`` (OpenCV: the fused ``0.15·ksize + 0.35``), taps
    ``exp(−d²/(2σ²))`` for ``d = −(ksize−1)/2 … (ksize−1)/2``, normalised in float64 the way
    OpenCV's bit-exact kernel builder does (multiply by ``1/sum``), then cast to ``dtype``
    (OpenCV filters float32 images with a float32 kernel). ``ksize`` 1, 3, 5, 7 use OpenCV's
    fixed binomial tables. ``GaussianBlur(…, (k, k), 0)`` applies it along x, then along y.
    """
    ksize = _check_kernel(ksize, "gaussian_kernel_1d")
    if ksize in _SMALL_KERNELS:
        return np.asarray(_SMALL_KERNELS[ksize], dtype=dtype)
    # 0.15·n + 0.35 with a single rounding, as OpenCV's softdouble mulAdd.
    sigma = float(Fraction(ksize) * Fraction(0.15) + Fraction(0.35))
    scale2x = -0.125 / (sigma * sigma)
    # OpenCV samples x = 2d, so exp(x²·(−1/8σ²)) = exp(−d²/2σ²); the centre tap is exactly 1.
    x = np.arange(1 - ksize, 0, 2, dtype=np.float64)
    taps = np.exp((x * x) * scale2x)
    total = 0.0
    for t in taps:  # sequential sum, as OpenCV
        total += float(t)
    mul = 1.0 / (2.0 * total + 1.0)
    side = taps * mul
    return np.concatenate([side, [mul], side[::-1]]).astype(dtype)


def _reflect101(p: np.ndarray, n: int) -> np.ndarray:
    """Source index of positions ``p`` under OpenCV BORDER_REFLECT_101
    (``gfedcb|abcdefgh|gfedcba``), reflecting repeatedly when ``p`` is far outside ``[0, n)``."""
    if n == 1:
        return np.zeros_like(p)
    period = 2 * (n - 1)
    p = np.mod(p, period)
    return np.where(p >= n, period - p, p)


def _fma32(a: np.ndarray, b: np.floating, c: np.ndarray) -> np.ndarray:
    """float32 fused multiply-add: the float32 product is exact in float64, so one float64 sum
    rounded to float32 is the fused result (up to a double rounding too rare to matter)."""
    return (a.astype(np.float64) * np.float64(b) + c).astype(np.float32)


def _symm_pass(src: np.ndarray, kern: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """``s = src[c]·k[r]``, then ``s = fma(src[c + t] + src[c − t], k[r + t], s)`` for
    t = 1…r, along ``axis`` (−1 or −2) of a map padded by r on both sides (float64 maps:
    an unfused multiply-add)."""
    r = kern.shape[0] // 2

    def tap(t: int) -> np.ndarray:
        sl = slice(r + t, r + t + n_out)
        return src[..., sl] if axis == -1 else src[..., sl, :]

    s = tap(0) * kern[r]
    for t in range(1, r + 1):
        pair = tap(t) + tap(-t)
        s = _fma32(pair, kern[r + t], s) if src.dtype == np.float32 else s + pair * kern[r + t]
    return s


def _sep_filter_valid(
    padded: np.ndarray, kx: np.ndarray | None, ky: np.ndarray | None
) -> np.ndarray:
    """Separable 'valid' correlation of a padded ``[..., H+2ry, W+2rx]`` stack: ``kx`` along x
    first, then ``ky`` along y (``None``: that pass is skipped, the map is not padded there).

    Float32 follows OpenCV 4.x's SIMD filter engine (AVX2 + FMA3) operation by operation, which
    makes it bit-exact with ``cv2.GaussianBlur`` on the golden maps:

    * row pass, kernel > 5 taps (``RowVec_32f``): ``s = fma(src[x + t], k[t], s)`` from ``s = 0``
      for t = 0…k−1; kernel ≤ 5 taps (``SymmRowSmallVec_32f``): the symmetric form below;
    * column pass (``SymmColumnVec_32f`` / ``SymmColumnSmallVec_32f``): ``s = src[y]·k[r]``, then
      ``s = fma(src[y + t] + src[y − t], k[r + t], s)`` for t = 1…r;
    * the row result is stored as float32 before the column pass.

    Float64 maps use the same orders in plain float64 arithmetic.
    """
    out = padded
    if kx is not None:
        ks = kx.shape[0]
        w = out.shape[-1] - ks + 1
        if out.dtype == np.float32 and ks <= 5:
            out = _symm_pass(out, kx, -1, w)
        else:
            s = np.zeros((*out.shape[:-1], w), dtype=out.dtype)
            for t in range(ks):
                tap = out[..., t : t + w]
                s = _fma32(tap, kx[t], s) if out.dtype == np.float32 else s + tap * kx[t]
            out = s
    if ky is not None:
        out = _symm_pass(out, ky, -2, out.shape[-2] - ky.shape[0] + 1)
    return out


def cv2_gaussian_blur(maps: _A, ksize: int) -> _A:
    """``cv2.GaussianBlur(map, (ksize, ksize), 0)`` of every ``[..., H, W]`` map.

    Border mode ``BORDER_REFLECT_101`` (OpenCV's default, which ``post_dark_udp`` relies on).
    Float32 maps are filtered with a float32 kernel, float64 maps with a float64 one. Like
    OpenCV, a map of height (width) 1 is not filtered along y (x).
    """
    m = _float(_to_numpy(maps))
    ksize = _check_kernel(ksize, "cv2_gaussian_blur")
    kern = gaussian_kernel_1d(ksize, m.dtype)
    h, w = m.shape[-2:]
    rx = ksize // 2 if w > 1 and ksize > 1 else 0
    ry = ksize // 2 if h > 1 and ksize > 1 else 0
    padded = m[..., _reflect101(np.arange(-ry, h + ry), h), :]
    padded = padded[..., _reflect101(np.arange(-rx, w + rx), w)]
    out = _sep_filter_valid(padded, kern if rx else None, kern if ry else None)
    return _like(np.array(out, dtype=m.dtype, copy=True), maps)


def _cv2_blur_points(
    maps: np.ndarray, ch: np.ndarray, ys: np.ndarray, xs: np.ndarray, ksize: int
) -> np.ndarray:
    """``cv2_gaussian_blur(maps, ksize)[ch, ys, xs]`` for ``maps`` ``[C, H, W]``, computed only
    at those points: each output runs the very same operations on its own reflect-101 window,
    so the values are identical to the full blur (DARK-UDP needs 7 values per keypoint)."""
    _, h, w = maps.shape
    kern = gaussian_kernel_1d(ksize, maps.dtype)
    rx = ksize // 2 if w > 1 and ksize > 1 else 0
    ry = ksize // 2 if h > 1 and ksize > 1 else 0
    yy = _reflect101(ys[:, None] + np.arange(-ry, ry + 1), h)
    xx = _reflect101(xs[:, None] + np.arange(-rx, rx + 1), w)
    window = maps[ch[:, None, None], yy[:, :, None], xx[:, None, :]]
    return _sep_filter_valid(window, kern if rx else None, kern if ry else None)[:, 0, 0]


def gaussian_blur(heatmaps: _A, kernel: int = 11) -> _A:
    """The official ``_gaussian_blur`` (DARK / megvii modulation) of ``[N, K, H, W]`` maps.

    Each map is placed in a zero frame of width ``(kernel − 1)/2`` and blurred with OpenCV's
    Gaussian (:func:`gaussian_kernel_1d`); the frame is exactly the kernel radius, so the
    interior never sees OpenCV's border mode and this equals a zero-padded convolution. The blur
    is float32 whatever the input (the official frame is a float32 array). The interior is then
    rescaled so its maximum equals the original maximum.

    An all-zero map gives ``0/0`` in that rescale, so the official result — and ours — is an
    all-NaN map (golden ``gaussian_blur_k11_sample0`` channel 4). NaN input spreads the same way.
    ``kernel = 1`` is the identity here (the official slicing fails for it).
    """
    hm = _check_maps(_to_numpy(heatmaps))
    kernel = _check_kernel(kernel, "gaussian_blur")
    b = (kernel - 1) // 2
    origin_max = hm.max(axis=(2, 3), keepdims=True)
    framed = np.pad(hm.astype(np.float32), ((0, 0), (0, 0), (b, b), (b, b)))
    kern = gaussian_kernel_1d(kernel) if kernel > 1 else None
    blurred = _sep_filter_valid(framed, kern, kern).astype(hm.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        # ratio in the map dtype (official: float32 scalar / float32 scalar), then in place.
        ratio = origin_max / blurred.max(axis=(2, 3), keepdims=True)
        blurred *= ratio
    return _like(blurred, heatmaps)


# ---------------------------------------------------------------------------------------------
# Sub-pixel refinements (all in heatmap pixels; none mutates its inputs)
# ---------------------------------------------------------------------------------------------


def quarter_offset_refine(heatmaps: _A, coords: _A, *, megvii: bool = False) -> _A:
    """The 'default' step: move each arg-max 0.25 px toward the higher neighbour, per axis.

    Only where ``1 < int(x) < W − 1`` and ``1 < int(y) < H − 1`` (the official bounds: x = 1,
    y = 1 and the last column/row are left alone, and so is the ``-1`` sentinel); a zero
    difference moves nothing. ``megvii=True`` adds the megvii ``+0.5``, also only inside those
    bounds, as the official loop does.

    Args:
        heatmaps: ``[N, K, H, W]`` maps the arg-max was taken on.
        coords: ``[N, K, 2]`` integer arg-max positions (or -1).
    """
    hm = _check_maps(_to_numpy(heatmaps))
    c = _to_numpy(coords).astype(np.float32, copy=True)
    _, _, h, w = hm.shape
    px, py = _int_coords(c)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    # Neighbour differences in the map dtype, as the official np.array([...]) of two scalars.
    diff_x = _gather(hm, py, px + 1) - _gather(hm, py, px - 1)
    diff_y = _gather(hm, py + 1, px) - _gather(hm, py - 1, px)
    step = np.stack([np.sign(diff_x), np.sign(diff_y)], axis=-1) * 0.25
    if megvii:
        step = step + 0.5
    c = np.where(inside[..., None], (c + step).astype(np.float32), c)
    return _like(c, coords)


def taylor_refine(log_heatmaps: _A, coords: _A) -> _A:
    """One Newton step on log-heatmaps (the official ``_taylor``, DARK without UDP).

    Central differences at ``(x, y) = int(coords)``: gradient with half-steps of one pixel,
    Hessian from the 2-pixel second differences ``0.25·(f(x+2) − 2f(x) + f(x−2))`` and the
    2-pixel cross difference; ``coords −= H⁻¹·g``. Applied only where ``1 < x < W − 2`` and
    ``1 < y < H − 2`` and ``det H ≠ 0``; elsewhere (and for the ``-1`` sentinel) coords are kept.
    Precision follows NumPy 1.x on float32 maps: first differences and the cross term in
    float32, the second differences and the solve in float64, the result rounded to float32.

    Args:
        log_heatmaps: ``[N, K, H, W]``, usually ``log(max(gaussian_blur(hm), 1e-10))``.
        coords: ``[N, K, 2]`` arg-max positions.
    """
    hm = _check_maps(_to_numpy(log_heatmaps), "log_heatmaps")
    c = _to_numpy(coords).astype(np.float32, copy=True)
    _, _, h, w = hm.shape
    px, py = _int_coords(c)
    inside = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)

    def f(dy: int, dx: int) -> np.ndarray:
        return _gather(hm, py + dy, px + dx)

    f64 = np.float64
    dx = 0.5 * (f(0, 1) - f(0, -1)).astype(f64)
    dy = 0.5 * (f(1, 0) - f(-1, 0)).astype(f64)
    # `a - 2 * b + c` of NumPy float32 scalars: 2*b is float64 under NumPy 1.x, so is the sum.
    dxx = 0.25 * (f(0, 2).astype(f64) - 2 * f(0, 0).astype(f64) + f(0, -2).astype(f64))
    dyy = 0.25 * (f(2, 0).astype(f64) - 2 * f(0, 0).astype(f64) + f(-2, 0).astype(f64))
    dxy = 0.25 * (f(1, 1) - f(-1, 1) - f(1, -1) + f(-1, -1)).astype(f64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        det = dxx * dyy - dxy**2
        ok = inside & (det != 0)
        safe = np.where(ok, det, 1.0)
        off_x = -(dyy * dx - dxy * dy) / safe
        off_y = -(dxx * dy - dxy * dx) / safe
        moved = (c.astype(f64) + np.stack([off_x, off_y], axis=-1)).astype(np.float32)
    c = np.where(ok[..., None], moved, c)
    return _like(c, coords)


def dark_refine(heatmaps: _A, coords: _A, kernel: int = 11) -> _A:
    """DARK ('unbiased'): ``taylor_refine(log(max(gaussian_blur(hm, kernel), 1e-10)), coords)``."""
    hm = _check_maps(_to_numpy(heatmaps))
    kernel = _check_kernel(kernel, "post_process='unbiased'")
    with np.errstate(invalid="ignore"):
        log_hm = np.log(np.maximum(gaussian_blur(hm, kernel), hm.dtype.type(1e-10)))
    return _like(_to_numpy(taylor_refine(log_hm, _to_numpy(coords))), coords)


def post_dark_udp(coords: _A, heatmaps: _A, kernel: int = 3) -> _A:
    """DARK-UDP refinement (the official ``post_dark_udp``), in heatmap pixels.

    The maps are blurred with OpenCV's Gaussian (:func:`cv2_gaussian_blur`, reflect-101 border,
    no rescale), clipped to ``[0.001, 50]``, logged and edge-padded by one pixel; gradient
    ``g = ½(f(x+1) − f(x−1))`` and Hessian ``f(x+1) − 2f + f(x−1)`` (cross term from the
    one-pixel square) at ``int(coords)``; ``coords −= (H + ε·I)⁻¹ g`` with ε the float32
    machine epsilon, everywhere (no border test: the padding supplies the neighbours).

    Official quirk reproduced: neighbours are read by flat index into the padded stack, so the
    ``(-1, -1)`` sentinel sits on its own padded corner ``[0, 0]`` and takes its ``x − 1``,
    ``y − 1`` and ``(x − 1, y − 1)`` neighbours from the padded bottom-right edge of the
    *previous* channel (for the very first channel of the batch, from the end of the whole stack,
    by Python's negative indexing); it is refined from those values. The official index
    arithmetic is float32 and loses exactness beyond 2**24 padded pixels (about 300 instances of
    17 maps of 64×48); ours is exact. The official final ``squeeze()`` also breaks for K = 1,
    N > 1; ours does not.

    Args:
        coords: ``[N, K, 2]`` integer arg-max positions (or -1).
        heatmaps: ``[B, K, H, W]`` with ``B == N`` (top-down) or ``B == 1`` (shared maps).
        kernel: odd Gaussian size (the configs use 11).
    """
    hm = _check_maps(_to_numpy(heatmaps))
    c = _to_numpy(coords).astype(np.float32, copy=True)
    kernel = _check_kernel(kernel, "use_udp=True")
    b, k, h, w = hm.shape
    if c.ndim != 3 or c.shape[1:] != (k, 2) or b not in (1, c.shape[0]):
        raise ValueError(f"coords {c.shape} do not match heatmaps {hm.shape}")
    # The official blurs every map, clips to [0.001, 50], logs, edge-pads by one pixel and reads
    # 7 values per keypoint by flat index into that padded stack. Only those values are
    # computed here (the same operations, so the same bits; ~50× less work).
    wp, hp = w + 2, h + 2
    total = b * k * hp * wp
    base = (wp * hp * np.arange(b * k)).reshape(b, k)
    # float index then truncation, as the official `.astype(int)`; exact in float64.
    index = (c[..., 0].astype(np.float64) + 1 + (c[..., 1].astype(np.float64) + 1) * wp) + base
    # Order: i_, ix1, ix1_, iy1, iy1_, ix1y1, ix1_y1_ (x/y ± 1 in the padded stack).
    flat = index.astype(np.int64)[..., None] + np.array([0, 1, -1, wp, -wp, wp + 1, -wp - 1])
    if flat.size and (flat.max() >= total or flat.min() < -total):
        raise IndexError("coords outside the heatmaps")
    flat = np.where(flat < 0, flat + total, flat)  # negative indices wrap like the official
    chan, rem = np.divmod(flat, hp * wp)
    py, px = np.divmod(rem, wp)
    # Edge padding: padded pixel (py, px) holds map pixel (py − 1, px − 1) clamped into range.
    vals = _cv2_blur_points(
        hm.reshape(b * k, h, w),
        chan.ravel(),
        np.clip(py - 1, 0, h - 1).ravel(),
        np.clip(px - 1, 0, w - 1).ravel(),
        kernel,
    ).reshape(flat.shape)
    np.clip(vals, 0.001, 50, out=vals)
    np.log(vals, out=vals)
    i_, ix1, ix1_, iy1, iy1_, ix1y1, ix1_y1_ = np.moveaxis(vals, -1, 0)
    # All in the map dtype (array op Python scalar stays float32 in both NumPy lines).
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    # float32 Hessian + float64 ε·I is float64; its inverse and the product too.
    eps = float(np.finfo(np.float32).eps)
    a11 = dxx.astype(np.float64) + eps
    a22 = dyy.astype(np.float64) + eps
    a12 = dxy.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        det = a11 * a22 - a12 * a12
        step_x = (a22 * dx - a12 * dy) / det
        step_y = (a11 * dy - a12 * dx) / det
        c = (c.astype(np.float64) - np.stack([step_x, step_y], axis=-1)).astype(np.float32)
    return _like(c, coords)


# ---------------------------------------------------------------------------------------------
# Back to image coordinates
# ---------------------------------------------------------------------------------------------


def transform_preds(
    coords: _A,
    center: Any,
    scale: Any,
    heatmap_size: Sequence[int],
    use_udp: bool = False,
) -> _A:
    """Heatmap pixels → image pixels (the official ``transform_preds``, batched).

    ``x_img = x · s_px / W + c_x − s_px / 2`` with ``s_px = scale · 200``, and likewise for y;
    with ``use_udp`` the divisor is ``W − 1`` (resp. ``H − 1``): UDP maps pixel 0 and pixel
    ``W − 1`` onto the box edges. Evaluated in the coords dtype with the per-box factors rounded
    to it first, in the official order ``(x·f + c) − s_px/2``.

    Args:
        coords: ``[N, K, 2]`` (or ``[K, 2]`` with ``center``/``scale`` of shape ``[2]``).
        center: ``[N, 2]`` box centres in pixels.
        scale: ``[N, 2]`` box sizes in units of 200 px.
        heatmap_size: ``(W, H)``.
    """
    c = _to_numpy(coords)
    c = c if c.dtype == np.float64 else c.astype(np.float32)
    if c.shape[-1] != 2:
        raise ValueError(f"coords must end in (x, y), got shape {c.shape}")
    ctr = _float(_to_numpy(center))
    s = _float(_to_numpy(scale))
    w, h = heatmap_size
    s_px = (s * s.dtype.type(200.0)).astype(np.float64)
    div = np.array([w, h], dtype=np.float64) - (1.0 if use_udp else 0.0)
    dt = c.dtype
    factor = (s_px / div).astype(dt)[..., None, :]
    offset = ctr.astype(dt)[..., None, :]
    half = (s_px * 0.5).astype(dt)[..., None, :]
    out = (c * factor + offset) - half
    return _like(out.astype(dt), coords)


# ---------------------------------------------------------------------------------------------
# The full decode
# ---------------------------------------------------------------------------------------------


def keypoints_from_heatmaps(
    heatmaps: _A,
    center: Any,
    scale: Any,
    *,
    post_process: str | None = "default",
    use_udp: bool = False,
    kernel: int = 11,
    valid_radius_factor: float = _VALID_RADIUS_FACTOR,
    target_type: str = "GaussianHeatmap",
) -> tuple[_A, _A]:
    """Keypoints from heatmaps, in image pixels (official ``keypoints_from_heatmaps``).

    Args:
        heatmaps: ``[N, K, H, W]`` (NumPy or torch; ``N = 0`` gives empty outputs).
        center: ``[N, 2]`` box centres in image pixels.
        scale: ``[N, 2]`` box sizes ``(w, h)`` in units of 200 px.
        post_process: without UDP — ``None`` (integer arg-max), ``'default'`` (±0.25 px toward
            the higher neighbour), ``'unbiased'`` (DARK: :func:`gaussian_blur`, log, Taylor
            step) or ``'megvii'`` (blur first, arg-max and the quarter step on the blurred map
            plus 0.5 px inside the border, score ``max/255 + 0.5``). With ``use_udp=True`` it
            is ignored except that ``'megvii'`` is rejected: the official UDP branch always
            runs DARK-UDP (:func:`post_dark_udp`), even for ``None``.
        use_udp: UDP decoding (DARK-UDP refinement, ``size − 1`` in the transform).
        kernel: odd Gaussian size for 'unbiased', 'megvii' and UDP (11 for σ = 2 targets);
            a non-positive or even size raises ValueError in those modes.
        valid_radius_factor: CombinedTarget only: offset radius as a fraction of H.
        target_type: ``'GaussianHeatmap'``, or ``'CombinedTarget'`` (UDP only; K = 3·J channels
            ``response, x-offset, y-offset`` per joint; returns J keypoints).

    Returns:
        ``preds`` float32 ``[N, K, 2]`` and ``maxvals`` ``[N, K, 1]`` (heatmap dtype), of the
        same container type (and device) as ``heatmaps``. Maps whose maximum is ``≤ 0`` give the
        arg-max sentinel ``(-1, -1)``, refined and transformed as the official code does.
    """
    if post_process not in POST_PROCESS_MODES:
        raise ValueError(f"post_process must be one of {POST_PROCESS_MODES}, got {post_process!r}")
    ttype = str(target_type).lower()
    if ttype not in _TARGET_TYPES:
        raise ValueError(f"target_type must be 'GaussianHeatmap' or 'CombinedTarget', got {ttype}")
    if use_udp and post_process == "megvii":
        raise ValueError("post_process='megvii' cannot be combined with use_udp=True")
    if ttype == "combinedtarget" and not use_udp:
        raise ValueError("target_type='CombinedTarget' is decoded only with use_udp=True")
    if use_udp or post_process in ("unbiased", "megvii"):
        mode = "use_udp=True" if use_udp else f"post_process={post_process!r}"
        kernel = _check_kernel(kernel, mode)

    hm = _check_maps(_to_numpy(heatmaps))
    ctr = _to_numpy(center).reshape(-1, 2)
    scl = _to_numpy(scale).reshape(-1, 2)
    n, _, h, w = hm.shape
    if ctr.shape[0] != n or scl.shape[0] != n:
        raise ValueError(f"center {ctr.shape} and scale {scl.shape} must be [N={n}, 2]")

    if post_process == "megvii":
        hm = _to_numpy(gaussian_blur(hm, kernel))

    if use_udp and ttype == "combinedtarget":
        preds, maxvals = _decode_combined(hm, kernel, valid_radius_factor)
    elif use_udp:
        preds, maxvals = get_max_preds(hm)
        preds = post_dark_udp(preds, hm, kernel)
    else:
        preds, maxvals = get_max_preds(hm)
        if post_process == "unbiased":
            preds = dark_refine(hm, preds, kernel)
        elif post_process is not None:
            preds = quarter_offset_refine(hm, preds, megvii=post_process == "megvii")

    preds = transform_preds(preds, ctr, scl, (w, h), use_udp=use_udp)
    if post_process == "megvii":
        maxvals = maxvals / maxvals.dtype.type(255.0) + maxvals.dtype.type(0.5)
    return _like(preds, heatmaps), _like(maxvals, heatmaps)


def _decode_combined(
    hm: np.ndarray, kernel: int, valid_radius_factor: float
) -> tuple[np.ndarray, np.ndarray]:
    """UDP CombinedTarget: arg-max of the blurred response plus the blurred offsets there.

    Response channels are blurred with ``2·kernel + 1``, offset channels with ``kernel``
    (OpenCV, reflect-101). The official flat index adds ``W·H·arange(N·J)`` to an ``[N, J]``
    array, which only broadcasts for ``N = 1``; we use the per-(instance, joint) offset it
    intends, identical for ``N = 1``. A ``-1`` sentinel reads the previous joint's memory there.
    """
    n, k3, h, w = hm.shape
    if k3 % 3:
        raise ValueError(f"CombinedTarget needs 3 channels per joint, got K={k3}")
    j = k3 // 3
    response = _to_numpy(cv2_gaussian_blur(hm[:, 0::3], 2 * kernel + 1))
    radius = valid_radius_factor * h
    off_x = (_to_numpy(cv2_gaussian_blur(hm[:, 1::3], kernel)) * radius).astype(hm.dtype)
    off_y = (_to_numpy(cv2_gaussian_blur(hm[:, 2::3], kernel)) * radius).astype(hm.dtype)
    preds, maxvals = get_max_preds(response)
    index = preds[..., 0].astype(np.float64) + preds[..., 1] * w
    index = (index + w * h * np.arange(n * j).reshape(n, j)).astype(np.int64)
    offsets = np.stack([off_x.ravel()[index], off_y.ravel()[index]], axis=-1)
    return (preds + offsets).astype(np.float32), maxvals


# ---------------------------------------------------------------------------------------------
# Flip test
# ---------------------------------------------------------------------------------------------


def flip_back(
    heatmaps: _A,
    flip_indices: Sequence[int],
    shift: bool = False,
    *,
    target_type: str = "GaussianHeatmap",
) -> _A:
    """Undo a horizontal input flip on heatmaps [N, K, H, W].

    Channel k takes the map of its mirror ``flip_indices[k]``, then W is reversed; applied
    twice it is the identity.  ``shift=True`` then moves the map one column right
    (``hm[..., 1:] = hm[..., :-1]``, column 0 kept), the official ``shift_heatmap`` setting of
    the non-UDP evaluation configs (it breaks the involution).

    ``target_type='CombinedTarget'``: channels are ``J`` groups ``(response, x-offset,
    y-offset)``; ``flip_indices`` permutes the J joints, and the x-offsets are negated (the
    official ``flip_back`` does that in place on its input; we do not mutate the input).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {tuple(heatmaps.shape)}")
    k = heatmaps.shape[1]
    combined = str(target_type).lower() == "combinedtarget"
    if not combined and str(target_type).lower() != "gaussianheatmap":
        raise ValueError(f"unknown target_type {target_type!r}")
    group = 3 if combined else 1
    if k % group:
        raise ValueError(f"CombinedTarget needs 3 channels per joint, got K={k}")
    j = k // group
    if sorted(flip_indices) != list(range(j)):
        raise ValueError(f"flip_indices must be a permutation of range({j}), got {flip_indices}")
    # Channel order: joint flip_indices[i]'s group lands on joint i's group.
    idx = [group * int(f) + c for f in flip_indices for c in range(group)]
    if isinstance(heatmaps, np.ndarray):
        out = heatmaps[:, idx, :, ::-1].copy()
    else:
        out = heatmaps[:, idx].flip(-1)
    if combined:
        out[:, 1::3] = -out[:, 1::3]
    if shift:
        out[..., 1:] = out[..., :-1].clone() if isinstance(out, Tensor) else out[..., :-1].copy()
    return out


def flip_test_merge(
    heatmaps: _A,
    flipped_heatmaps: _A,
    flip_indices: Sequence[int],
    shift: bool,
    *,
    target_type: str = "GaussianHeatmap",
) -> _A:
    """Average the heatmaps of an image and of its mirror (flip test, PROTOCOL.md §6).

    ``flipped_heatmaps`` is the raw model output on ``img.flip(3)``; it is flipped back with
    :func:`flip_back` (plus the one-column right shift when ``shift``, i.e. ``shift_heatmap``),
    then ``(heatmaps + flipped_back) * 0.5`` in the heatmap dtype, as the official
    ``forward_test``. Both inputs are ``[N, K, H, W]`` of the same container type.
    """
    if isinstance(heatmaps, Tensor) != isinstance(flipped_heatmaps, Tensor):
        raise TypeError("heatmaps and flipped_heatmaps must both be tensors or both be arrays")
    if tuple(heatmaps.shape) != tuple(flipped_heatmaps.shape):
        raise ValueError(
            f"shape mismatch: {tuple(heatmaps.shape)} vs {tuple(flipped_heatmaps.shape)}"
        )
    back = flip_back(flipped_heatmaps, flip_indices, shift, target_type=target_type)
    return (heatmaps + back) * 0.5
