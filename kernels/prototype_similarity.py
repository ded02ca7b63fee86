"""Triton kernels of the fused prototype similarity, with launchers and autograd Functions.

Shapes: embeddings ``[B, F, H, W]`` (heatmaps) or ``[N, F]`` (training logits), prototypes
``[J, M, F]``; a call covers the class block ``start .. stop − 1`` (``K = stop − start``).

- :class:`PrototypeHeatmapsFunction`: ``[B, K, H, W]``, ``out[b, k, y, x] = clamp(max_m
  |cos(e, p[start + k, m])|, 1e-4, 1 − 1e-4)``.
- :class:`PrototypeLogitsFunction`: ``logits [N, K·M]`` (``|cos|``, column ``k·M + m``) and
  ``best [N, K]`` int64, the first arg-max over ``m`` (NaN counts as the largest value, like
  ``torch.argmax``).

Each program normalises a block of ``BLOCK_P`` pixels once, then loops over the class block
in chunks of ``BLOCK_K`` classes and over ``m``, computing ``[BLOCK_P, BLOCK_K]`` similarities
with ``tl.dot`` in IEEE precision (never TF32: fp32 results must match the reference to
1e-5) and reducing them in registers; the ``[N, J·M]`` similarity matrix of the PyTorch
reference is never materialised. Heatmaps are stored straight into ``[B, K, H, W]`` with
pixel-contiguous (coalesced) stores.

Precision: the compute dtype is float64 for float64 prototypes and float32 otherwise; inputs of
any float dtype (fp16/bf16 embeddings from autocast, fp16 prototypes) are converted on load, and
outputs take the prototypes' dtype like the reference. fp16/bf16 therefore only round the inputs
and the stored result; the accumulation is fp32.

Backward (embeddings only; the prototypes are a buffer in posebh and get no gradient): the
similarities are recomputed, ``w = ∂L/∂s`` (the clamp passes where ``lo ≤ max ≤ hi``, tied maxima
share the gradient equally as in ``torch.amax``, times ``sign(s)``) and ``G = Σ w p̂`` is
accumulated with ``tl.dot``; then the derivative of ``F.normalize``: ``(G − (G·u) u) / ||e||``
where ``||e|| ≥ 1e-12``, else ``G / 1e-12``.

Interpreter: with ``TRITON_INTERPRET=1`` in the environment *when this module is imported*,
``triton.jit`` builds interpreted kernels that run on CPU tensors (numpy); autotuning is then
off and fixed small blocks are used. Without it, the kernels need CUDA tensors and are
autotuned over a few block shapes.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor

__all__ = [
    "INTERPRET",
    "LAUNCH_DTYPES",
    "PrototypeHeatmapsFunction",
    "PrototypeLogitsFunction",
    "autotune_configs",
    "block_f",
    "launch_specialisations",
    "prototype_heatmaps",
    "prototype_logits",
]

#: True when the kernels below were built by the Triton interpreter (CPU tensors only).
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

_SCORE_MIN = 1.0e-4
_SCORE_MAX = 1.0 - 1.0e-4
_NORM_EPS = 1.0e-12


# ------------------------------------------------------------------------------------------
# Kernels
# ------------------------------------------------------------------------------------------


@triton.jit
def _load_normalised(
    E, b, offs_p, offs_f, P, F, s_eb, s_ef, s_ep, COMPUTE: tl.constexpr
):  # pragma: no cover - traced by Triton
    """[BLOCK_P, BLOCK_F] tile of pixels normalised like F.normalize; also ||e|| and the
    denominator max(||e||, eps). Padding pixels and features load as 0."""
    mask = (offs_p[:, None] < P) & (offs_f[None, :] < F)
    ptrs = E + b * s_eb + offs_f[None, :] * s_ef + offs_p[:, None] * s_ep
    e = tl.load(ptrs, mask=mask, other=0.0).to(COMPUTE)
    norm = tl.sqrt(tl.sum(e * e, axis=1))
    eps = tl.full(norm.shape, 1.0e-12, COMPUTE)
    denom = tl.maximum(norm, eps, propagate_nan=tl.PropagateNan.ALL)
    return e / denom[:, None], norm, denom


@triton.jit
def _prototype_tile(PT, m, offs_f, offs_k, F, K, COMPUTE: tl.constexpr):  # pragma: no cover
    """[BLOCK_F, BLOCK_K] slice of the normalised prototypes PT [M, F, K] for prototype m."""
    mask = (offs_f[:, None] < F) & (offs_k[None, :] < K)
    return tl.load(PT + m * F * K + offs_f[:, None] * K + offs_k[None, :], mask=mask, other=0.0).to(
        COMPUTE
    )


@triton.jit
def _sign(x):  # pragma: no cover
    return tl.where(x > 0, 1.0, tl.where(x < 0, -1.0, 0.0)).to(x.dtype)


@triton.jit
def _heatmaps_fwd_kernel(
    E,
    PT,
    OUT,
    P,
    F,
    K,
    M,
    s_eb,
    s_ef,
    s_ep,
    s_ob,
    s_ok,
    s_op,
    COMPUTE: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # pragma: no cover
    pid_p = tl.program_id(0)
    b = tl.program_id(1)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_f = tl.arange(0, BLOCK_F)
    u, _norm, _denom = _load_normalised(E, b, offs_p, offs_f, P, F, s_eb, s_ef, s_ep, COMPUTE)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        best = tl.zeros((BLOCK_P, BLOCK_K), dtype=COMPUTE)
        for m in range(0, M):
            w = _prototype_tile(PT, m, offs_f, offs_k, F, K, COMPUTE)
            s = tl.dot(u, w, input_precision="ieee", out_dtype=COMPUTE)
            best = tl.maximum(best, tl.abs(s), propagate_nan=tl.PropagateNan.ALL)
        lo = tl.full((BLOCK_P, BLOCK_K), 1.0e-4, COMPUTE)
        hi = tl.full((BLOCK_P, BLOCK_K), 1.0 - 1.0e-4, COMPUTE)
        h = tl.minimum(tl.maximum(best, lo, propagate_nan=tl.PropagateNan.ALL), hi,
                       propagate_nan=tl.PropagateNan.ALL)  # fmt: skip
        mask = (offs_p[:, None] < P) & (offs_k[None, :] < K)
        ptrs = OUT + b * s_ob + offs_k[None, :] * s_ok + offs_p[:, None] * s_op
        tl.store(ptrs, h.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _logits_fwd_kernel(
    E,
    PT,
    LOGITS,
    BEST,
    N,
    F,
    K,
    M,
    s_en,
    s_ef,
    s_ln,
    s_bn,
    COMPUTE: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # pragma: no cover
    pid_p = tl.program_id(0)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_f = tl.arange(0, BLOCK_F)
    u, _norm, _denom = _load_normalised(E, 0, offs_p, offs_f, N, F, 0, s_ef, s_en, COMPUTE)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = (offs_p[:, None] < N) & (offs_k[None, :] < K)
        best_v = tl.full((BLOCK_P, BLOCK_K), -1.0, COMPUTE)
        best_i = tl.zeros((BLOCK_P, BLOCK_K), dtype=tl.int32)
        for m in range(0, M):
            w = _prototype_tile(PT, m, offs_f, offs_k, F, K, COMPUTE)
            a = tl.abs(tl.dot(u, w, input_precision="ieee", out_dtype=COMPUTE))
            ptrs = LOGITS + offs_p[:, None] * s_ln + offs_k[None, :] * M + m
            tl.store(ptrs, a.to(LOGITS.dtype.element_ty), mask=mask)
            # torch.argmax: first maximum; NaN counts as the largest value.
            better = (a > best_v) | ((a != a) & (best_v == best_v))
            best_v = tl.where(better, a, best_v)
            best_i = tl.where(better, m, best_i)
        ptrs = BEST + offs_p[:, None] * s_bn + offs_k[None, :]
        tl.store(ptrs, best_i.to(tl.int64), mask=mask)


@triton.jit
def _finish_input_grad(
    G, u, norm, denom, GX, b, offs_p, offs_f, P, F, s_xb, s_xf, s_xp, COMPUTE: tl.constexpr
):  # pragma: no cover
    """Store (G − (G·u) u) / denom (or G / eps below eps) into the embeddings' gradient."""
    eps = tl.full(norm.shape, 1.0e-12, COMPUTE)
    a = tl.sum(G * u, axis=1)
    a = tl.where(norm >= eps, a, tl.zeros_like(a))
    gx = (G - a[:, None] * u) / denom[:, None]
    mask = (offs_p[:, None] < P) & (offs_f[None, :] < F)
    ptrs = GX + b * s_xb + offs_f[None, :] * s_xf + offs_p[:, None] * s_xp
    tl.store(ptrs, gx.to(GX.dtype.element_ty), mask=mask)


@triton.jit
def _heatmaps_bwd_kernel(
    E,
    PT,
    GRAD,
    GX,
    P,
    F,
    K,
    M,
    s_eb,
    s_ef,
    s_ep,
    s_gb,
    s_gk,
    s_gp,
    s_xb,
    s_xf,
    s_xp,
    COMPUTE: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # pragma: no cover
    pid_p = tl.program_id(0)
    b = tl.program_id(1)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_f = tl.arange(0, BLOCK_F)
    u, norm, denom = _load_normalised(E, b, offs_p, offs_f, P, F, s_eb, s_ef, s_ep, COMPUTE)
    G = tl.zeros((BLOCK_P, BLOCK_F), dtype=COMPUTE)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = (offs_p[:, None] < P) & (offs_k[None, :] < K)
        g_ptrs = GRAD + b * s_gb + offs_k[None, :] * s_gk + offs_p[:, None] * s_gp
        g = tl.load(g_ptrs, mask=mask, other=0.0).to(COMPUTE)
        # Pass 1: the maximum over m, how many prototypes reach it, and NaN.
        best = tl.zeros((BLOCK_P, BLOCK_K), dtype=COMPUTE)
        count = tl.zeros((BLOCK_P, BLOCK_K), dtype=COMPUTE)
        has_nan = tl.zeros((BLOCK_P, BLOCK_K), dtype=tl.int1)
        for m in range(0, M):
            w = _prototype_tile(PT, m, offs_f, offs_k, F, K, COMPUTE)
            a = tl.abs(tl.dot(u, w, input_precision="ieee", out_dtype=COMPUTE))
            has_nan = has_nan | (a != a)
            count = tl.where(a > best, 1.0, tl.where(a == best, count + 1.0, count))
            best = tl.where(a > best, a, best)
        lo = tl.full((BLOCK_P, BLOCK_K), 1.0e-4, COMPUTE)
        hi = tl.full((BLOCK_P, BLOCK_K), 1.0 - 1.0e-4, COMPUTE)
        passes = (best >= lo) & (best <= hi) & (count > 0) & (has_nan == 0) & mask
        scale = tl.where(passes, g / tl.maximum(count, 1.0), tl.zeros_like(g))
        # Pass 2: route the gradient to the maxima, through sign(s), onto the prototypes.
        for m in range(0, M):
            w = _prototype_tile(PT, m, offs_f, offs_k, F, K, COMPUTE)
            s = tl.dot(u, w, input_precision="ieee", out_dtype=COMPUTE)
            coef = tl.where(tl.abs(s) == best, scale * _sign(s), tl.zeros_like(s))
            G += tl.dot(coef, tl.trans(w), input_precision="ieee", out_dtype=COMPUTE)
    _finish_input_grad(G, u, norm, denom, GX, b, offs_p, offs_f, P, F, s_xb, s_xf, s_xp, COMPUTE)


@triton.jit
def _logits_bwd_kernel(
    E,
    PT,
    GRAD,
    GX,
    N,
    F,
    K,
    M,
    s_en,
    s_ef,
    s_gn,
    s_gc,
    s_xn,
    s_xf,
    COMPUTE: tl.constexpr,
    BLOCK_F: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # pragma: no cover
    pid_p = tl.program_id(0)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_f = tl.arange(0, BLOCK_F)
    u, norm, denom = _load_normalised(E, 0, offs_p, offs_f, N, F, 0, s_ef, s_en, COMPUTE)
    G = tl.zeros((BLOCK_P, BLOCK_F), dtype=COMPUTE)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = (offs_p[:, None] < N) & (offs_k[None, :] < K)
        for m in range(0, M):
            w = _prototype_tile(PT, m, offs_f, offs_k, F, K, COMPUTE)
            s = tl.dot(u, w, input_precision="ieee", out_dtype=COMPUTE)
            g_ptrs = GRAD + offs_p[:, None] * s_gn + (offs_k[None, :] * M + m) * s_gc
            g = tl.load(g_ptrs, mask=mask, other=0.0).to(COMPUTE)
            G += tl.dot(g * _sign(s), tl.trans(w), input_precision="ieee", out_dtype=COMPUTE)
    _finish_input_grad(G, u, norm, denom, GX, 0, offs_p, offs_f, N, F, 0, s_xf, s_xn, COMPUTE)


# Autotuning (GPU only): block shapes (BLOCK_P pixels, BLOCK_K classes, warps) per kernel and
# compute dtype; the key is what changes the best shape. Each list holds the shapes that
# compile for sm_80 and sm_90 at BLOCK_F 32 and 64 without spilling registers
# (python -m posebh.ops.compile_check; tests/test_compile_check.py): the IEEE fp32 tl.dot keeps
# its operands in registers, so wide tiles spill, and float64 needs narrower ones. One known
# exception: the fp32 heatmaps backward spills 16–48 B on sm_80 (ptxas holds it to 128
# registers) at every shape tried (16–256 pixels × 16–64 classes × 1–16 warps, with and
# without a register cap); its shape below is clean on sm_90. The interpreter runs fixed
# small blocks (several class chunks even for small tests).
_SHAPES: dict[tuple[str, str], tuple[tuple[int, int, int], ...]] = {
    ("_heatmaps_fwd_kernel", "fp32"): ((32, 16, 4), (64, 16, 4), (32, 32, 8), (64, 32, 8)),
    ("_heatmaps_fwd_kernel", "fp64"): ((32, 16, 4), (64, 16, 4), (64, 16, 8), (64, 32, 8)),
    ("_logits_fwd_kernel", "fp32"): ((32, 16, 4), (64, 16, 4), (64, 32, 8)),
    ("_logits_fwd_kernel", "fp64"): ((32, 16, 4), (64, 16, 4), (64, 16, 8), (64, 32, 8)),
    ("_heatmaps_bwd_kernel", "fp32"): ((16, 16, 4),),
    ("_heatmaps_bwd_kernel", "fp64"): ((32, 16, 8), (64, 16, 8)),
    ("_logits_bwd_kernel", "fp32"): ((16, 16, 4),),
    ("_logits_bwd_kernel", "fp64"): ((64, 16, 8),),
}
_INTERPRET_BLOCKS = {"BLOCK_P": 32, "BLOCK_K": 16}


def _configs(kernel: str, compute: str) -> list[triton.Config]:
    return [
        triton.Config({"BLOCK_P": bp, "BLOCK_K": bk}, num_warps=nw)
        for bp, bk, nw in _SHAPES[(kernel, compute)]
    ]


def _tuned(kernel: triton.JITFunction) -> dict[str, triton.JITFunction]:
    """The kernel autotuned over its shapes, per compute dtype ("fp32", "fp64")."""
    if INTERPRET:
        return {"fp32": kernel, "fp64": kernel}
    return {
        compute: triton.autotune(
            configs=_configs(kernel.__name__, compute), key=["F", "K", "M", "BLOCK_F"]
        )(kernel)
        for compute in ("fp32", "fp64")
    }


_HEATMAPS_FWD = _tuned(_heatmaps_fwd_kernel)
_HEATMAPS_BWD = _tuned(_heatmaps_bwd_kernel)
_LOGITS_FWD = _tuned(_logits_fwd_kernel)
_LOGITS_BWD = _tuned(_logits_bwd_kernel)


# ------------------------------------------------------------------------------------------
# Launchers
# ------------------------------------------------------------------------------------------


def _compute_dtype(prototypes: Tensor) -> tuple[torch.dtype, tl.dtype]:
    if prototypes.dtype == torch.float64:
        return torch.float64, tl.float64
    return torch.float32, tl.float32


def _name(compute: tl.dtype) -> str:
    return "fp64" if compute == tl.float64 else "fp32"


def _prepared_prototypes(prototypes: Tensor, start: int, stop: int) -> Tensor:
    """F.normalize(prototypes[start:stop]) (in their dtype, as the reference) → [M, F, K]."""
    compute, _ = _compute_dtype(prototypes)
    p = F.normalize(prototypes[start:stop], p=2, dim=-1).to(compute)
    return p.permute(1, 2, 0).contiguous()


def block_f(f: int) -> int:
    """The ``BLOCK_F`` the launchers pick for ``f`` features."""
    return max(16, triton.next_power_of_2(f))  # tl.dot needs every dimension ≥ 16


def _grid(pixels: int, batch: int = 1):
    if INTERPRET:
        return (triton.cdiv(pixels, _INTERPRET_BLOCKS["BLOCK_P"]), batch)
    return lambda meta: (triton.cdiv(pixels, meta["BLOCK_P"]), batch)


def _blocks() -> dict[str, int]:
    return dict(_INTERPRET_BLOCKS) if INTERPRET else {}


def _pixel_strides(x: Tensor) -> tuple[Tensor, int, int, int]:
    """[B, F, H, W] → (tensor, batch, feature, pixel) strides with H·W as one pixel axis."""
    _, _, h, w = x.shape
    if h > 1 and w > 1 and x.stride(2) != w * x.stride(3):
        x = x.contiguous()
    sp = x.stride(3) if w > 1 else x.stride(2)
    return x, x.stride(0), x.stride(1), sp


def heatmaps_forward(
    embeddings: Tensor, prototypes: Tensor, start: int, stop: int
) -> tuple[Tensor, Tensor]:
    """Heatmaps [B, K, H, W] and the prepared prototypes [M, F, K] (kept for backward)."""
    b, f, h, w = embeddings.shape
    k = stop - start
    pt = _prepared_prototypes(prototypes, start, stop)
    out = torch.empty((b, k, h, w), device=embeddings.device, dtype=prototypes.dtype)
    if out.numel() == 0:
        return out, pt
    x, s_b, s_f, s_p = _pixel_strides(embeddings)
    _, compute = _compute_dtype(prototypes)
    _HEATMAPS_FWD[_name(compute)][_grid(h * w, b)](
        x, pt, out, h * w, f, k, pt.shape[0], s_b, s_f, s_p, out.stride(0), out.stride(1), 1,
        COMPUTE=compute, BLOCK_F=block_f(f), **_blocks(),
    )  # fmt: skip
    return out, pt


def heatmaps_backward(grad: Tensor, embeddings: Tensor, pt: Tensor) -> Tensor:
    """Gradient w.r.t. the embeddings [B, F, H, W] (same dtype) from ``grad`` [B, K, H, W]."""
    b, f, h, w = embeddings.shape
    gx = torch.zeros(embeddings.shape, device=embeddings.device, dtype=embeddings.dtype)
    if gx.numel() == 0 or pt.shape[2] == 0:
        return gx
    x, s_b, s_f, s_p = _pixel_strides(embeddings)
    g, g_b, g_k, g_p = _pixel_strides(grad)
    _, compute = _compute_dtype(pt)
    _HEATMAPS_BWD[_name(compute)][_grid(h * w, b)](
        x, pt, g, gx, h * w, f, pt.shape[2], pt.shape[0], s_b, s_f, s_p, g_b, g_k, g_p,
        gx.stride(0), gx.stride(1), 1, COMPUTE=compute, BLOCK_F=block_f(f), **_blocks(),
    )  # fmt: skip
    return gx


def logits_forward(
    embeddings: Tensor, prototypes: Tensor, start: int, stop: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits [N, K·M], arg-max [N, K] int64 and the prepared prototypes [M, F, K]."""
    n, f = embeddings.shape
    m, k = prototypes.shape[1], stop - start
    pt = _prepared_prototypes(prototypes, start, stop)
    logits = torch.empty((n, k * m), device=embeddings.device, dtype=prototypes.dtype)
    best = torch.empty((n, k), device=embeddings.device, dtype=torch.long)
    if logits.numel() == 0:
        return logits, best, pt
    _, compute = _compute_dtype(prototypes)
    _LOGITS_FWD[_name(compute)][_grid(n)](
        embeddings, pt, logits, best, n, f, k, m, embeddings.stride(0), embeddings.stride(1),
        logits.stride(0), best.stride(0), COMPUTE=compute, BLOCK_F=block_f(f), **_blocks(),
    )  # fmt: skip
    return logits, best, pt


def logits_backward(grad: Tensor, embeddings: Tensor, pt: Tensor) -> Tensor:
    """Gradient w.r.t. the embeddings [N, F] from ``grad`` [N, K·M]."""
    n, f = embeddings.shape
    m, _, k = pt.shape
    gx = torch.zeros((n, f), device=embeddings.device, dtype=embeddings.dtype)
    if gx.numel() == 0 or k == 0:
        return gx
    _, compute = _compute_dtype(pt)
    _LOGITS_BWD[_name(compute)][_grid(n)](
        embeddings, pt, grad, gx, n, f, k, m, embeddings.stride(0), embeddings.stride(1),
        grad.stride(0), grad.stride(1), gx.stride(0), gx.stride(1), COMPUTE=compute,
        BLOCK_F=block_f(f), **_blocks(),
    )  # fmt: skip
    return gx


# ------------------------------------------------------------------------------------------
# Compile-time specialisations (read by posebh.ops.compile_check; no GPU needed)
# ------------------------------------------------------------------------------------------

#: (embeddings, prototypes) dtypes compiled by the compile check: an fp32 model, autocast (half
#: embeddings, the fp32 prototype buffer), a half model, and float64 (gradcheck; the float64
#: compute path). Other mixes compile the same arithmetic with other load conversions.
LAUNCH_DTYPES: tuple[tuple[str, str], ...] = (
    ("fp32", "fp32"),
    ("fp16", "fp32"),
    ("bf16", "fp32"),
    ("fp16", "fp16"),
    ("bf16", "bf16"),
    ("fp64", "fp64"),
)

# Per kernel: pointer arguments → what their dtype follows ("input": the embeddings, "compute":
# the prepared prototypes, "output": the prototypes' dtype, or a fixed Triton type), and the
# strides that are 1 for contiguous tensors (Triton specialises an int argument equal to 1 as a
# constant, so the contiguous launch compiles with them folded).
_POINTERS: dict[str, dict[str, str]] = {
    "_heatmaps_fwd_kernel": {"E": "input", "PT": "compute", "OUT": "output"},
    "_heatmaps_bwd_kernel": {"E": "input", "PT": "compute", "GRAD": "output", "GX": "input"},
    "_logits_fwd_kernel": {"E": "input", "PT": "compute", "LOGITS": "output", "BEST": "*i64"},
    "_logits_bwd_kernel": {"E": "input", "PT": "compute", "GRAD": "output", "GX": "input"},
}
_UNIT_STRIDES: dict[str, tuple[str, ...]] = {
    "_heatmaps_fwd_kernel": ("s_ep", "s_op"),
    "_heatmaps_bwd_kernel": ("s_ep", "s_gp", "s_xp"),
    "_logits_fwd_kernel": ("s_ef",),
    "_logits_bwd_kernel": ("s_ef", "s_gc", "s_xf"),
}


def autotune_configs(kernel: str, compute: str = "fp32") -> list[triton.Config]:
    """The autotune configs of ``kernel`` (a ``_*_kernel`` name of this module) on a GPU for
    the compute dtype ``compute`` ("fp32", or "fp64" for float64 prototypes)."""
    if kernel not in _POINTERS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {sorted(_POINTERS)}")
    return _configs(kernel, compute)


def launch_specialisations(feature_dims: tuple[int, ...] | list[int]) -> list[dict]:
    """Every compile-time specialisation the launchers and autotuning pick for contiguous
    tensors with the given feature dims: kernel × (embeddings, prototypes) dtype
    (:data:`LAUNCH_DTYPES`) × autotune config of its compute dtype (:func:`autotune_configs`)
    × ``BLOCK_F``.

    Each entry: ``kernel`` (attribute name of the ``triton.jit`` function in this module),
    ``config`` (JSON-able description), ``signature`` (argument → Triton type or
    ``"constexpr"``), ``constexprs`` (argument → value), ``aligned`` (pointer arguments, 16-byte
    aligned like every torch allocation) and ``options`` (``triton.compile`` options).
    """
    specs = []
    for name, pointers in _POINTERS.items():
        fn = globals()[name]  # the kernel itself, not its autotuned wrapper
        unit = _UNIT_STRIDES[name]
        for emb, proto in LAUNCH_DTYPES:
            compute = "fp64" if proto == "fp64" else "fp32"
            for cfg in autotune_configs(name, compute):
                role = {"input": emb, "compute": compute, "output": proto}
                for bf in sorted({block_f(f) for f in feature_dims}):
                    signature, constexprs = {}, {}
                    for arg in fn.arg_names:
                        if arg in pointers:
                            kind = pointers[arg]
                            signature[arg] = kind if kind.startswith("*") else "*" + role[kind]
                        elif arg in unit:
                            signature[arg], constexprs[arg] = "constexpr", 1
                        elif arg in ("COMPUTE", "BLOCK_F", *cfg.kwargs):
                            signature[arg] = "constexpr"
                        else:
                            signature[arg] = "i32"
                    constexprs.update(cfg.kwargs, BLOCK_F=bf)
                    constexprs["COMPUTE"] = tl.float64 if compute == "fp64" else tl.float32
                    options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
                    config = {**cfg.kwargs, "BLOCK_F": bf, "num_warps": cfg.num_warps}
                    config.update(embeddings=emb, prototypes=proto, compute=compute)
                    specs.append(
                        {
                            "kernel": name,
                            "config": config,
                            "signature": signature,
                            "constexprs": constexprs,
                            "aligned": tuple(pointers),
                            "options": options,
                        }
                    )
    return specs


# ------------------------------------------------------------------------------------------
# Autograd
# ------------------------------------------------------------------------------------------


def _no_prototype_grad(ctx: torch.autograd.function.FunctionCtx) -> None:
    if ctx.needs_input_grad[1]:
        raise RuntimeError(
            "the fused prototype-similarity kernels give no gradient w.r.t. the prototypes "
            "(a buffer in posebh); use backend='torch' to differentiate them"
        )


class PrototypeHeatmapsFunction(torch.autograd.Function):
    """``apply(embeddings [B,F,H,W], prototypes [J,M,F], start, stop) -> [B,K,H,W]``."""

    @staticmethod
    def forward(ctx, embeddings: Tensor, prototypes: Tensor, start: int, stop: int) -> Tensor:
        out, pt = heatmaps_forward(embeddings, prototypes, start, stop)
        ctx.save_for_backward(embeddings, pt)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        _no_prototype_grad(ctx)
        embeddings, pt = ctx.saved_tensors
        gx = heatmaps_backward(grad, embeddings, pt) if ctx.needs_input_grad[0] else None
        return gx, None, None, None


class PrototypeLogitsFunction(torch.autograd.Function):
    """``apply(embeddings [N,F], prototypes [J,M,F], start, stop) -> (logits [N,K·M], best
    [N,K] int64)``; ``best`` is not differentiable."""

    @staticmethod
    def forward(
        ctx, embeddings: Tensor, prototypes: Tensor, start: int, stop: int
    ) -> tuple[Tensor, Tensor]:
        logits, best, pt = logits_forward(embeddings, prototypes, start, stop)
        ctx.save_for_backward(embeddings, pt)
        ctx.mark_non_differentiable(best)
        return logits, best

    @staticmethod
    def backward(
        ctx, grad: Tensor, _grad_best: Tensor | None
    ) -> tuple[Tensor | None, None, None, None]:
        _no_prototype_grad(ctx)
        embeddings, pt = ctx.saved_tensors
        gx = logits_backward(grad, embeddings, pt) if ctx.needs_input_grad[0] else None
        return gx, None, None, None


def prototype_heatmaps(embeddings: Tensor, prototypes: Tensor, start: int, stop: int) -> Tensor:
    """Differentiable heatmaps [B, K, H, W] of classes ``start .. stop − 1`` (Triton)."""
    return PrototypeHeatmapsFunction.apply(embeddings, prototypes, start, stop)


def prototype_logits(
    embeddings: Tensor, prototypes: Tensor, start: int, stop: int
) -> tuple[Tensor, Tensor]:
    """Differentiable logits [N, K·M] and arg-max [N, K] of classes ``start .. stop − 1``."""
    return PrototypeLogitsFunction.apply(embeddings, prototypes, start, stop)
