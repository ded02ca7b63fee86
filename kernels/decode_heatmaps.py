"""Triton kernel of the fused heatmap decode, with its launcher.

Shapes: ``heatmaps`` ``[N, K, H, W]`` float32 (``N`` instances, ``K`` keypoints; channel
``c = n·K + k``), ``center``/``scale`` ``[N, 2]``, optional ``flipped`` ``[N, K, H, W]`` (the
raw model output on the mirrored image) with ``flip_indices`` ``[K]``; outputs ``preds``
``[N, K, 2]`` float32 in image pixels and ``maxvals`` ``[N, K, 1]`` float32.

One program decodes one map, as :func:`posebh.decode.keypoints_from_heatmaps` (the reference)
does:

1. one pass over the map in blocks: the flip-test merge ``(a + flip_back(flipped)) · 0.5`` is
   computed on load when ``flipped`` is given (:func:`posebh.decode.flip_test_merge` without
   materialising the merged stack), then the arg-max with NumPy's rules (the first NaN wins,
   else the first maximum in row-major order) and the max value;
2. ``'default'``: the quarter-pixel step toward the higher neighbour (official border rule);
   DARK-UDP (``use_udp=True``): the 7 points the official code reads (its flat index into the
   edge-padded stack, so the ``-1`` sentinel reads the previous channel like the official code)
   are blurred with OpenCV's Gaussian in OpenCV's operation order (explicit ``tl.fma``), clipped,
   logged with NumPy's float32 log algorithm (bit manipulation + ``tl.fma`` + ``div_rn``), and
   one Newton step is solved in float64;
3. the transform to image pixels with the reference's per-box factors.

Numerics: the kernel is launched with ``enable_fp_fusion=False`` so the only fused operations are
the explicit ``tl.fma`` (the reference's order); divisions are correctly rounded. Under the
interpreter (``TRITON_INTERPRET=1`` when this module is imported; CPU tensors) the results are
the reference's bits on the golden vectors. On a GPU the same code should give the same bits
(IEEE operations only), but that is not verified here (no GPU).

Modes: ``post_process`` None and ``'default'``, and ``use_udp=True`` (kernels ≤ 63). DARK
(``'unbiased'``) and ``'megvii'`` need whole-map blurs and are left to the other backends
(:data:`SUPPORTED` is what :mod:`posebh.ops.decode` checks).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

from .limits import DECODE_GPU_POST_PROCESS, DECODE_TRITON_MAX_KERNEL

__all__ = [
    "INTERPRET",
    "MAX_BLOCK",
    "MAX_KERNEL",
    "MIN_BLOCK",
    "SUPPORTED",
    "launch_decode",
    "launch_specialisations",
    "mode_of",
]

#: True when the kernel below was built by the Triton interpreter (CPU tensors only).
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

_MODE_NONE, _MODE_DEFAULT, _MODE_UDP = 0, 1, 4
#: (post_process, use_udp) combinations the kernel implements.
SUPPORTED = {(pp, False) for pp in DECODE_GPU_POST_PROCESS} | {
    (pp, True) for pp in (None, "default", "unbiased")
}
#: Largest Gaussian kernel (the blur is unrolled at compile time).
MAX_KERNEL = DECODE_TRITON_MAX_KERNEL
#: Arg-max blocks on a GPU: the launcher picks next_pow2(H·W) clamped to [MIN_BLOCK, MAX_BLOCK]
#: (a block below one lane per thread of the 4 warps only masks lanes; the arg-max is the same
#: for any block, so the clamp changes no value, and fewer specialisations compile).
MIN_BLOCK = 128
MAX_BLOCK = 4096


def num_warps(block: int) -> int:
    """Warps of a launch: 4 up to 256-wide arg-max blocks, 8 up to 1024, then 16. With fewer,
    ptxas spilled 8–12 B in some modes (python -m posebh.ops.compile_check); the arg-max is the
    same however the block is split."""
    return 4 if block <= 256 else 8 if block <= 1024 else 16


_BIG = tl.constexpr(2**30)  # "no index" in the arg-max reductions (maps are far smaller)


def mode_of(post_process: str | None, use_udp: bool) -> int | None:
    """The kernel's mode for a decode setting, or None if the kernel does not implement it.

    ``use_udp=True`` always runs DARK-UDP (as the reference, whatever ``post_process`` says,
    except ``'megvii'`` which the reference rejects).
    """
    if (post_process, bool(use_udp)) not in SUPPORTED:
        return None
    if use_udp:
        return _MODE_UDP
    return _MODE_NONE if post_process is None else _MODE_DEFAULT


# ------------------------------------------------------------------------------------------
# Kernel
# ------------------------------------------------------------------------------------------


@triton.jit
def _map_value(HM, FL, FIDX, c, y, x, mask, K, HW, W, SHIFT, HAS_FLIP: tl.constexpr):
    """Map value at (c, y, x) (any broadcastable shapes): the raw map or the flip merge."""
    a = tl.load(HM + c * HW + y * W + x, mask=mask, other=0.0)
    if HAS_FLIP:
        n = c // K
        # (+ x·0 broadcasts the flip pair to the shape of the mask)
        fk = tl.load(FIDX + (c - n * K) + x * 0, mask=mask, other=0)
        xs = tl.where(SHIFT != 0, tl.where(x == 0, W - 1, W - x), W - 1 - x)
        b = tl.load(FL + (n * K + fk) * HW + y * W + xs, mask=mask, other=0.0)
        a = (a + b) * 0.5
    return a


@triton.jit
def _reflect101(p, n):
    """OpenCV BORDER_REFLECT_101 source index of p in [0, n), reflecting repeatedly."""
    period = tl.maximum(2 * (n - 1), 1)
    q = p % period
    q = tl.where(q < 0, q + period, q)
    q = tl.where(q >= n, period - q, q)
    return tl.where(n == 1, 0, q)


@triton.jit
def _numpy_log(v):
    """NumPy's float32 log (simd_log_FLOAT) for positive normal numbers or NaN."""
    bits = v.to(tl.int32, bitcast=True)
    e = ((bits >> 23) - 126).to(tl.float32)
    m = ((bits & 0x007FFFFF) | (126 << 23)).to(tl.float32, bitcast=True)
    small = m <= 0.707106781186547524400844362104849039
    m = tl.where(small, m + m, m)
    e = tl.where(small, e - 1.0, e)
    m = m - 1.0
    num = tl.fma(m, 2.589979117907922693523e-02, 3.808837741388407920751e-01)
    num = tl.fma(num, m, 1.480000633576506585156e00)
    num = tl.fma(num, m, 2.112677543073053063722e00)
    num = tl.fma(num, m, 9.999999999999998702752e-01)
    num = tl.fma(num, m, 0.0)
    den = tl.fma(m, 5.875095403124574342950e-03, 1.546476374983906719538e-01)
    den = tl.fma(den, m, 9.864942958519418960339e-01)
    den = tl.fma(den, m, 2.453006071784736363091e00)
    den = tl.fma(den, m, 2.612677543073109236779e00)
    den = tl.fma(den, m, 1.0)
    out = tl.fma(e, 0.693147180559945309417232121458176568, tl.math.div_rn(num, den))
    return tl.where(v != v, v, out)


@triton.jit
def _pick(vec, lanes, q):
    """Lane q of an 8-lane vector as a scalar (the other lanes are zeroed, so the sum is exact)."""
    return tl.sum(tl.where(lanes == q, vec, 0.0), axis=0)


@triton.jit
def _pick_rows(block, rows, i):
    """Column i of an [8, RB] block as an [8] vector (other columns zeroed: the sum is exact)."""
    return tl.sum(tl.where(rows[None, :] == i, block, 0.0), axis=1)


@triton.jit
def _decode_kernel(
    HM,
    FL,
    FIDX,
    TAPS,
    BOX,
    PREDS,
    MAXV,
    NK,
    K,
    H,
    W,
    SHIFT,
    HAS_FLIP: tl.constexpr,
    MODE: tl.constexpr,
    KS: tl.constexpr,
    RB: tl.constexpr,
    BLOCK: tl.constexpr,
):  # pragma: no cover - traced by Triton
    c = tl.program_id(0).to(tl.int64)
    HW = H * W
    # 1. Arg-max in blocks: running (best, first index), strict > keeps the earlier block.
    offs = tl.arange(0, BLOCK)
    # Loop-carried scalars with fixed types (a Python constant would change type in the loop).
    best = tl.full([], -float("inf"), tl.float32)
    bi = tl.full([], _BIG, tl.int32)
    first_nan = tl.full([], _BIG, tl.int32)
    for start in range(0, HW, BLOCK):
        idx = start + offs
        mask = idx < HW
        v = _map_value(HM, FL, FIDX, c, idx // W, idx % W, mask, K, HW, W, SHIFT, HAS_FLIP)
        isnan = (v != v) & mask
        first_nan = tl.minimum(first_nan, tl.min(tl.where(isnan, idx, _BIG), axis=0))
        clean = tl.where(isnan | ~mask, -float("inf"), v)
        m = tl.max(clean, axis=0)
        i = tl.min(tl.where((clean == m) & mask & ~isnan, idx, _BIG), axis=0)
        take = ((m > best) | (bi == _BIG)) & (i < _BIG)
        best = tl.where(take, m, best)
        bi = tl.where(take, i, bi)
    has_nan = first_nan < _BIG
    bi = tl.where(has_nan, first_nan, tl.where(bi == _BIG, 0, bi))
    maxval = tl.where(has_nan, float("nan"), best)
    found = maxval > 0.0
    px = tl.where(found, bi % W, -1)
    py = tl.where(found, bi // W, -1)
    cx = px.to(tl.float32)
    cy = py.to(tl.float32)

    if MODE == 1:
        # 'default': 0.25 px toward the higher neighbour, only for 1 < x < W-1, 1 < y < H-1.
        inside = (px > 1) & (px < W - 1) & (py > 1) & (py < H - 1)
        r = _map_value(HM, FL, FIDX, c, py, px + 1, inside, K, HW, W, SHIFT, HAS_FLIP)
        lf = _map_value(HM, FL, FIDX, c, py, px - 1, inside, K, HW, W, SHIFT, HAS_FLIP)
        dn = _map_value(HM, FL, FIDX, c, py + 1, px, inside, K, HW, W, SHIFT, HAS_FLIP)
        up = _map_value(HM, FL, FIDX, c, py - 1, px, inside, K, HW, W, SHIFT, HAS_FLIP)
        dxv = r - lf
        dyv = dn - up
        sx = tl.where(dxv > 0, 1.0, tl.where(dxv < 0, -1.0, dxv))
        sy = tl.where(dyv > 0, 1.0, tl.where(dyv < 0, -1.0, dyv))
        cx = tl.where(inside, cx + sx * 0.25, cx)
        cy = tl.where(inside, cy + sy * 0.25, cy)

    if MODE == 4:
        # DARK-UDP. Lanes 0..6: i_, ix1, ix1_, iy1, iy1_, ix1y1, ix1_y1_ (lane 7 repeats 0).
        lanes = tl.arange(0, 8)
        wp = W + 2
        plane = wp * (H + 2)
        total = NK * plane
        off = tl.where(lanes == 1, 1, tl.where(lanes == 2, -1, 0))
        off = tl.where(lanes == 3, wp, tl.where(lanes == 4, -wp, off))
        off = tl.where(lanes == 5, wp + 1, tl.where(lanes == 6, -wp - 1, off))
        flat = c * plane + (px + 1) + (py + 1) * wp + off
        flat = tl.where(flat < 0, flat + total, flat)
        cc = flat // plane
        rem = flat - cc * plane
        yy = tl.minimum(tl.maximum(rem // wp - 1, 0), H - 1)
        xx = tl.minimum(tl.maximum(rem % wp - 1, 0), W - 1)
        # OpenCV: maps thinner than 2 px are not filtered along that axis.
        bx = (W > 1) & (KS > 1)
        by = (H > 1) & (KS > 1)
        R: tl.constexpr = KS // 2
        # Row pass of all window rows at once: a [8 points, RB rows] block per tap, rows
        # reflect-101 around each point's y (row i ↔ y + i − R; padding rows are never read).
        rows = tl.arange(0, RB)
        row_ok = (rows < KS)[None, :] & (lanes < 8)[:, None]
        ry = tl.where(by, _reflect101(yy[:, None] + (rows[None, :] - R), H), yy[:, None])
        cc2 = cc[:, None]
        xx2 = xx[:, None] + rows[None, :] * 0
        direct = _map_value(HM, FL, FIDX, cc2, ry, xx2, row_ok, K, HW, W, SHIFT, HAS_FLIP)
        if KS > 5:
            # s = fma(src[x + t − R], k[t], s) from 0, t = 0 … KS − 1 (OpenCV's RowVec_32f).
            rp = tl.zeros([8, RB], dtype=tl.float32)
            for t in tl.static_range(KS):
                rx = _reflect101(xx2 + (t - R), W)
                val = _map_value(HM, FL, FIDX, cc2, ry, rx, row_ok, K, HW, W, SHIFT, HAS_FLIP)
                rp = tl.fma(val, tl.load(TAPS + t), rp)
        else:
            # Symmetric small-kernel form (SymmRowSmallVec_32f).
            rp = direct * tl.load(TAPS + R)
            for t in tl.static_range(1, R + 1):
                vp = _map_value(
                    HM,
                    FL,
                    FIDX,
                    cc2,
                    ry,
                    _reflect101(xx2 + t, W),
                    row_ok,
                    K,
                    HW,
                    W,
                    SHIFT,
                    HAS_FLIP,
                )
                vm = _map_value(
                    HM,
                    FL,
                    FIDX,
                    cc2,
                    ry,
                    _reflect101(xx2 - t, W),
                    row_ok,
                    K,
                    HW,
                    W,
                    SHIFT,
                    HAS_FLIP,
                )
                rp = tl.fma(vp + vm, tl.load(TAPS + R + t), rp)
        rp = tl.where(bx, rp, direct)
        # Symmetric column pass: s = row(R)·k[R], s = fma(row(R + t) + row(R − t), k[R + t], s).
        centre = _pick_rows(rp, rows, R)
        col = centre * tl.load(TAPS + R)
        for t in tl.static_range(1, R + 1):
            pair = _pick_rows(rp, rows, R + t) + _pick_rows(rp, rows, R - t)
            col = tl.fma(pair, tl.load(TAPS + R + t), col)
        blurred = tl.where(by, col, centre)
        # np.clip(v, 0.001, 50) (NaN stays NaN), then NumPy's log.
        clipped = tl.where(
            blurred != blurred, blurred, tl.minimum(tl.maximum(blurred, 0.001), 50.0)
        )
        lv = _numpy_log(clipped)
        i_ = _pick(lv, lanes, 0)
        ix1 = _pick(lv, lanes, 1)
        ix1_ = _pick(lv, lanes, 2)
        iy1 = _pick(lv, lanes, 3)
        iy1_ = _pick(lv, lanes, 4)
        ix1y1 = _pick(lv, lanes, 5)
        ix1_y1_ = _pick(lv, lanes, 6)
        # float32 derivatives in the reference's order, then the float64 solve.
        dx = 0.5 * (ix1 - ix1_)
        dy = 0.5 * (iy1 - iy1_)
        dxx = (ix1 - 2.0 * i_) + ix1_
        dyy = (iy1 - 2.0 * i_) + iy1_
        dxy = 0.5 * ((((((ix1y1 - ix1) - iy1) + i_) + i_) - ix1_) - iy1_ + ix1_y1_)
        eps = 1.1920928955078125e-07
        a11 = dxx.to(tl.float64) + eps
        a22 = dyy.to(tl.float64) + eps
        a12 = dxy.to(tl.float64)
        det = a11 * a22 - a12 * a12
        step_x = (a22 * dx.to(tl.float64) - a12 * dy.to(tl.float64)) / det
        step_y = (a11 * dy.to(tl.float64) - a12 * dx.to(tl.float64)) / det
        cx = (cx.to(tl.float64) - step_x).to(tl.float32)
        cy = (cy.to(tl.float64) - step_y).to(tl.float32)

    # 3. Transform: (c·factor + offset) − half per axis, float32, unfused.
    n = c // K
    fx = tl.load(BOX + n * 6)
    fy = tl.load(BOX + n * 6 + 1)
    ox = tl.load(BOX + n * 6 + 2)
    oy = tl.load(BOX + n * 6 + 3)
    hx = tl.load(BOX + n * 6 + 4)
    hy = tl.load(BOX + n * 6 + 5)
    tl.store(PREDS + 2 * c, (cx * fx + ox) - hx)
    tl.store(PREDS + 2 * c + 1, (cy * fy + oy) - hy)
    tl.store(MAXV + c, maxval)


# ------------------------------------------------------------------------------------------
# Launcher
# ------------------------------------------------------------------------------------------


def _box_factors(center: Tensor, scale: Tensor, n: int, h: int, w: int, udp: bool) -> Tensor:
    """[N, 6] float32 (factor x, y; offset x, y; half x, y) in the reference's precisions
    (posebh.decode.transform_preds): s_px = scale·200 in the scale dtype, then float64."""
    ctr = torch.as_tensor(center).reshape(-1, 2)
    scl = torch.as_tensor(scale).reshape(-1, 2)
    if ctr.shape[0] != n or scl.shape[0] != n:
        raise ValueError(
            f"center {tuple(ctr.shape)} and scale {tuple(scl.shape)} must be [N={n}, 2]"
        )
    c64 = ctr.double() if ctr.dtype == torch.float64 else ctr.float().double()
    s_px = scl.double() * 200.0 if scl.dtype == torch.float64 else (scl.float() * 200.0).double()
    div = torch.tensor([w, h], dtype=torch.float64, device=s_px.device) - (1.0 if udp else 0.0)
    return torch.cat([(s_px / div).float(), c64.float(), (s_px * 0.5).float()], dim=1)


def launch_decode(
    heatmaps: Tensor,
    center: Tensor,
    scale: Tensor,
    *,
    flipped: Tensor | None = None,
    flip_indices: Sequence[int] | None = None,
    shift: bool = False,
    post_process: str | None = "default",
    use_udp: bool = False,
    kernel: int = 11,
    taps: Tensor | np.ndarray | None = None,
) -> tuple[Tensor, Tensor]:
    """Decode ``heatmaps`` ``[N, K, H, W]`` (float32, CUDA; CPU under the interpreter) to
    ``(preds [N, K, 2], maxvals [N, K, 1])`` float32, fusing the flip test when ``flipped`` is
    given (``flip_indices`` ``[K]``, ``shift`` = ``shift_heatmap``). Same semantics as
    :func:`posebh.decode.keypoints_from_heatmaps` after :func:`posebh.decode.flip_test_merge`.

    ``taps`` (DARK-UDP only, required there): the ``kernel`` float32 taps of OpenCV's 1-D
    Gaussian for that size (``cv2.getGaussianKernel(kernel, 0)``; posebh.ops passes
    ``posebh.decode.gaussian_kernel_1d(kernel)``).

    Raises:
        NotImplementedError: for a mode outside :data:`SUPPORTED` or a kernel above
            :data:`MAX_KERNEL` (:mod:`posebh.ops.decode` routes those elsewhere).
        ValueError: for bad shapes or kernel sizes, like the reference.
    """
    mode = mode_of(post_process, use_udp)
    if mode is None:
        raise NotImplementedError(
            f"the Triton decode implements post_process None/'default' and use_udp=True, "
            f"not post_process={post_process!r}, use_udp={use_udp}"
        )
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {tuple(heatmaps.shape)}")
    n, k, h, w = heatmaps.shape
    if h == 0 or w == 0:
        raise ValueError(f"heatmaps must have a non-empty H×W, got shape {tuple(heatmaps.shape)}")
    if heatmaps.dtype != torch.float32:
        raise TypeError(f"heatmaps must be float32, got {heatmaps.dtype}")
    if mode == _MODE_UDP:
        if isinstance(kernel, bool) or int(kernel) != kernel or kernel <= 0 or kernel % 2 != 1:
            raise ValueError(
                f"use_udp=True needs a positive odd Gaussian kernel size, got {kernel!r}"
            )
        if kernel > MAX_KERNEL:
            raise NotImplementedError(f"the Triton decode supports kernels up to {MAX_KERNEL}")
        if taps is None:
            raise ValueError("use_udp=True needs the Gaussian taps of the kernel (taps=...)")
        taps = torch.as_tensor(taps, dtype=torch.float32).reshape(-1).contiguous()
        if taps.numel() != int(kernel):
            raise ValueError(f"taps has {taps.numel()} values for kernel {kernel}")
    else:
        taps = torch.ones(1, dtype=torch.float32)
    device = heatmaps.device
    box = _box_factors(center, scale, n, h, w, mode == _MODE_UDP).to(device)
    preds = torch.empty((n, k, 2), dtype=torch.float32, device=device)
    maxvals = torch.empty((n, k, 1), dtype=torch.float32, device=device)
    if n * k == 0:
        return preds, maxvals
    hm = heatmaps.contiguous()
    if flipped is not None:
        if tuple(flipped.shape) != tuple(heatmaps.shape):
            raise ValueError(
                f"flipped {tuple(flipped.shape)} must have the shape of heatmaps {tuple(hm.shape)}"
            )
        if flip_indices is None or sorted(int(i) for i in flip_indices) != list(range(k)):
            raise ValueError(f"flip_indices must be a permutation of range({k})")
        fl = flipped.to(torch.float32).contiguous()
        fidx = torch.tensor([int(i) for i in flip_indices], dtype=torch.int64, device=device)
    else:
        fl, fidx = hm, torch.zeros(1, dtype=torch.int64, device=device)
    block = min(triton.next_power_of_2(h * w), 1024 if INTERPRET else MAX_BLOCK)
    block = block if INTERPRET else max(block, MIN_BLOCK)
    ks = int(kernel) if mode == _MODE_UDP else 1
    extra = {} if INTERPRET else {"enable_fp_fusion": False, "num_warps": num_warps(block)}
    _decode_kernel[(n * k,)](
        hm,
        fl,
        fidx,
        taps.to(device),
        box,
        preds,
        maxvals,
        n * k,
        k,
        h,
        w,
        int(bool(shift)),
        HAS_FLIP=flipped is not None,
        MODE=mode,
        KS=ks,
        RB=triton.next_power_of_2(ks),
        BLOCK=block,
        **extra,
    )
    return preds, maxvals


# ------------------------------------------------------------------------------------------
# Compile-time specialisations (read by posebh.ops.compile_check; no GPU needed)
# ------------------------------------------------------------------------------------------

#: Every arg-max block the launcher can pick on a GPU: the powers of two MIN_BLOCK … MAX_BLOCK.
BLOCKS: tuple[int, ...] = tuple(
    2**i for i in range(MIN_BLOCK.bit_length() - 1, MAX_BLOCK.bit_length())
)


def udp_kernel_sizes(defaults: tuple[int, ...] = (11,)) -> tuple[int, ...]:
    """The DARK-UDP kernel sizes the compile check covers: every odd size would be 32
    specialisations of up to a minute each, so each shape class of the unrolled blur at its
    largest size (the symmetric row form ≤ 5 at 1, 3 and 5; then every register-block bucket
    ``RB = next_pow2(KS)`` at its largest KS: 7, 15, 31, :data:`MAX_KERNEL`) plus ``defaults``
    (the protocol's kernel sizes)."""
    buckets = {ks for ks in range(1, MAX_KERNEL + 1, 2) if ks <= 5 or (ks + 1) & ks == 0}
    return tuple(sorted(buckets | {MAX_KERNEL} | set(defaults)))


def launch_specialisations(udp_defaults: tuple[int, ...] = (11,)) -> list[dict]:
    """The launcher's compile-time specialisations (same entry format as
    ``prototype_similarity.launch_specialisations``): for MODE none and 'default', every
    HAS_FLIP × BLOCK; for DARK-UDP, every HAS_FLIP × kernel size of :func:`udp_kernel_sizes`
    at the largest BLOCK, and every HAS_FLIP × BLOCK at each of ``udp_defaults``. (The arg-max
    loop, which BLOCK shapes, ends before the blur, which KS shapes, starts.) ``SHIFT`` is
    compiled as a runtime int (the general form; Triton folds it when it is 1)."""
    pointers = {**dict.fromkeys(["HM", "FL", "TAPS", "BOX", "PREDS", "MAXV"], "*fp32")}
    pointers["FIDX"] = "*i64"
    constexpr = ("HAS_FLIP", "MODE", "KS", "RB", "BLOCK")
    signature = {
        arg: pointers.get(arg, "constexpr" if arg in constexpr else "i32")
        for arg in _decode_kernel.arg_names
    }
    cases = [(mode, 1, block) for mode in (_MODE_NONE, _MODE_DEFAULT) for block in BLOCKS]
    cases += [(_MODE_UDP, ks, MAX_BLOCK) for ks in udp_kernel_sizes(udp_defaults)]
    cases += [(_MODE_UDP, ks, block) for ks in udp_defaults for block in BLOCKS]
    names = {_MODE_NONE: "none", _MODE_DEFAULT: "default", _MODE_UDP: "udp"}
    specs = []
    for mode, ks, block in dict.fromkeys(cases):
        for flip in (False, True):
            rb = triton.next_power_of_2(ks)
            constexprs = {"HAS_FLIP": flip, "MODE": mode, "KS": ks, "RB": rb, "BLOCK": block}
            specs.append(
                {
                    "kernel": "_decode_kernel",
                    "config": {"mode": names[mode], "flip": flip, "KS": ks, "BLOCK": block},
                    "signature": dict(signature),
                    "constexprs": constexprs,
                    "aligned": tuple(pointers),
                    "options": {"num_warps": num_warps(block), "enable_fp_fusion": False},
                }
            )
    return specs
