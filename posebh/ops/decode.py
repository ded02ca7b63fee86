"""The fused heatmap decode: arg-max, sub-pixel refinement, flip-test merge and transform.

Shapes: ``heatmaps`` ``[N, K, H, W]`` (``N`` instances, ``K`` keypoints), ``center`` and
``scale`` ``[N, 2]`` (box centre in pixels, box size in units of 200 px), optional ``flipped``
``[N, K, H, W]`` (the raw model output on the mirrored image) with ``flip_indices`` ``[K]``.
Result: ``(preds [N, K, 2] float32 in image pixels, maxvals [N, K, 1])``.

:func:`decode_heatmaps` equals, on every backend,
``posebh.decode.keypoints_from_heatmaps(posebh.decode.flip_test_merge(heatmaps, flipped,
flip_indices, shift) if flipped is not None else heatmaps, center, scale, post_process=...,
use_udp=..., kernel=...)`` — the NumPy reference of the official mmpose decode. The fused
backends never materialise the merged stack and decode each map with one streaming pass; on the
golden vectors and random/adversarial inputs they give the reference's bits
(tests/test_ops_decode.py).

Backends:

- ``"cpp"``: the C++ CPU op ``posebh::decode_heatmaps`` (``kernels/csrc/decode_heatmaps.cpp``,
  AVX2 with a run-time CPU check, blocks of maps handed to ``at::parallel_for``'s threads
  dynamically). Every mode.
- ``"cuda"``: the same op's CUDA kernel (``kernels/csrc/cuda/decode_heatmaps.cu``); modes None,
  ``'default'`` and DARK-UDP, kernels ≤ 31. Compiles here, never run (no GPU).
- ``"triton"``: ``posebh_kernels.decode_heatmaps.launch_decode`` (CUDA tensors, or CPU tensors under
  ``TRITON_INTERPRET=1``); modes None, ``'default'`` and DARK-UDP.
- ``"torch"``: the reference (:mod:`posebh.decode`, NumPy), always available.

``backend="auto"`` tries ``cpp > torch`` on CPU and ``triton > cuda > torch`` on CUDA and takes
the first that can run the call; a mode a backend lacks (DARK ``'unbiased'`` and ``'megvii'``
off the CPU op), float64 maps (decoded in float64 by the reference only) or kernels above the
fused limits fall back to the reference. :func:`explain` says which backend runs and why.

Conventions (the reference's, kept by every backend): ties → the first maximum in row-major
order; a map whose maximum is not > 0 (all-zero, all-negative, or containing NaN) gives the
``-1`` sentinel, which DARK-UDP refines from the previous channel's memory like the official
code; NaN propagates (a map with a NaN scores NaN), never raises; half/bfloat16 maps are decoded
in float32 (with a flipped map they are merged in their own dtype first, as the reference does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from posebh.decode import (
    POST_PROCESS_MODES,
    flip_test_merge,
    gaussian_kernel_1d,
    keypoints_from_heatmaps,
)
from posebh.ops import extensions
from posebh.ops.registry import CallInfo, Op, register_op

__all__ = ["DECODE", "decode_heatmaps", "explain"]

_EXTENSION = "decode"
#: Input dtypes the fused backends decode (converted to float32 like the reference does).
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# The kernels' own limits (kernels/limits.py; constants flow up from kernels/).
_LIMITS = extensions.kernels_module("limits")
_CPP_MAX_KERNEL: int = _LIMITS.DECODE_CPP_MAX_KERNEL
_CUDA_MAX_KERNEL: int = _LIMITS.DECODE_CUDA_MAX_KERNEL
_TRITON_MAX_KERNEL: int = _LIMITS.DECODE_TRITON_MAX_KERNEL
_GPU_MODES: tuple[str | None, ...] = _LIMITS.DECODE_GPU_POST_PROCESS  # + all of DARK-UDP


# ------------------------------------------------------------------------------------------
# The C++ extension and its Python-side registrations
# ------------------------------------------------------------------------------------------


def _register_python_parts() -> None:
    """Fake (meta) kernels so torch.compile can trace the C++ ops."""

    @torch.library.register_fake("posebh::decode_heatmaps")
    def _decode_fake(
        heatmaps: Tensor,
        center: Tensor,
        scale: Tensor,
        flipped: Tensor | None = None,
        flip_indices: Sequence[int] | None = None,
        shift: bool = False,
        post_process: str | None = "default",
        use_udp: bool = False,
        kernel: int = 11,
    ) -> tuple[Tensor, Tensor]:
        n, k = heatmaps.shape[:2]
        return heatmaps.new_empty((n, k, 2)), heatmaps.new_empty((n, k, 1))

    @torch.library.register_fake("posebh::decode_numpy_logf")
    def _log_fake(x: Tensor) -> Tensor:
        return x.new_empty(x.shape)


extensions.register_extension(
    extensions.ExtensionSpec(
        name=_EXTENSION,
        sources=("decode_heatmaps.cpp",),
        cuda_sources=("cuda/decode_heatmaps.cu", "cuda/decode_heatmaps_cuda.cpp"),
        on_load=_register_python_parts,
    )
)


def cpu_isa() -> str | None:
    """The SIMD variant the loaded C++ decode runs ("avx2" or "generic"), or None."""
    if extensions.state(_EXTENSION).status != "loaded":
        return None
    return str(torch.ops.posebh.decode_heatmaps_cpu_isa())


# ------------------------------------------------------------------------------------------
# Triton
# ------------------------------------------------------------------------------------------


def _triton_module() -> tuple[Any | None, str]:
    return extensions.triton_kernels("decode_heatmaps")


_interpret_env = extensions.triton_interpret


# ------------------------------------------------------------------------------------------
# Checks: CallInfo.extra carries post_process, use_udp, kernel (defaults: the plain decode)
# ------------------------------------------------------------------------------------------


def _setting(info: CallInfo) -> tuple[str | None, bool, int]:
    e = info.extra
    return e.get("post_process", "default"), bool(e.get("use_udp", False)), int(e.get("kernel", 11))


def _mode_text(info: CallInfo) -> str:
    pp, udp, kernel = _setting(info)
    if udp:
        return f"DARK-UDP (kernel {kernel})"
    blur = f" (kernel {kernel})" if pp in ("unbiased", "megvii") else ""
    return f"post_process={pp!r}{blur}"


def _blurs(info: CallInfo) -> bool:
    pp, udp, _ = _setting(info)
    return udp or pp in ("unbiased", "megvii")


def _dtype_reason(info: CallInfo) -> str | None:
    if info.dtype not in _FUSED_DTYPES:
        return f"{info.dtype} maps are decoded in that precision by the reference only"
    return None


def _cpp_check(info: CallInfo) -> str | None:
    if info.device.type != "cpu":
        return f"tensors are on {info.device.type} (the C++ kernels are CPU-only)"
    if _blurs(info) and _setting(info)[2] > _CPP_MAX_KERNEL:
        return f"Gaussian kernel {_setting(info)[2]} > {_CPP_MAX_KERNEL}"
    return _dtype_reason(info) or extensions.unavailable(_EXTENSION)


def _gpu_mode_reason(info: CallInfo, max_kernel: int) -> str | None:
    pp, udp, kernel = _setting(info)
    if not udp and pp not in _GPU_MODES:
        return f"{_mode_text(info)} is implemented by the CPU op and the reference only"
    if udp and kernel > max_kernel:
        return f"Gaussian kernel {kernel} > {max_kernel}"
    return None


def _cuda_check(info: CallInfo) -> str | None:
    if info.device.type != "cuda":
        return f"tensors are on {info.device.type}"
    why = _dtype_reason(info) or _gpu_mode_reason(info, _CUDA_MAX_KERNEL)
    if why:
        return why
    ok, why = extensions.cuda_build_support()
    if not ok:
        return why
    st = extensions.load_extension(_EXTENSION)
    if st.status != "loaded":
        return st.reason
    return None if st.variant == "cuda" else "the extension was built without CUDA sources"


def _triton_check(info: CallInfo) -> str | None:
    if info.device.type not in ("cuda", "cpu"):
        return f"tensors are on {info.device.type}"
    if info.device.type == "cpu" and not _interpret_env():
        return "tensors are on cpu and TRITON_INTERPRET is not set (Triton compiles for GPUs)"
    if info.device.type == "cuda" and not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    why = _dtype_reason(info) or _gpu_mode_reason(info, _TRITON_MAX_KERNEL)
    if why:
        return why
    module, why = _triton_module()
    if module is None:
        return why
    if info.device.type == "cpu" and not module.INTERPRET:
        return "the Triton kernel was imported before TRITON_INTERPRET=1 was set"
    if info.device.type == "cuda" and module.INTERPRET:
        return "the Triton kernel was imported in interpreter mode (TRITON_INTERPRET=1)"
    return None


def _summary_cpp() -> str:
    st = extensions.state(_EXTENSION)
    if st.status != "loaded":
        return "C++ extension posebh_decode (CPU op, every mode)"
    return f"C++ CPU op ({cpu_isa()} arg-max, {torch.get_num_threads()} threads), {st.reason}"


# ------------------------------------------------------------------------------------------
# The op and its backends
# ------------------------------------------------------------------------------------------

DECODE = register_op(
    Op(
        "decode_heatmaps",
        summary="heatmaps [N,K,H,W] (+ flipped), center/scale [N,2] -> preds [N,K,2], "
        "maxvals [N,K,1]",
        preference={"cpu": ("cpp", "torch"), "cuda": ("triton", "cuda", "torch")},
    )
)


def _fused_inputs(
    heatmaps: Tensor, flipped: Tensor | None, flip_indices: Sequence[int] | None, shift: bool
) -> tuple[Tensor, Tensor | None]:
    """float32 maps for the fused kernels. Lower precisions are merged in their own dtype first
    (the reference's flip_test_merge), then widened, so the results stay the reference's."""
    if heatmaps.dtype == torch.float32 and (flipped is None or flipped.dtype == torch.float32):
        return heatmaps, flipped
    if flipped is not None:
        heatmaps = flip_test_merge(heatmaps, flipped, list(flip_indices or ()), shift)
    return heatmaps.float(), None


@DECODE.backend(
    "torch", "the reference posebh.decode.keypoints_from_heatmaps (NumPy, official order)"
)
def _decode_torch(
    heatmaps: Tensor,
    center: Tensor,
    scale: Tensor,
    flipped: Tensor | None,
    flip_indices: Sequence[int] | None,
    shift: bool,
    post_process: str | None,
    use_udp: bool,
    kernel: int,
) -> tuple[Tensor, Tensor]:
    if flipped is not None:
        heatmaps = flip_test_merge(heatmaps, flipped, list(flip_indices or ()), shift)
    return keypoints_from_heatmaps(
        heatmaps, center, scale, post_process=post_process, use_udp=use_udp, kernel=kernel
    )


@DECODE.backend("cpp", _summary_cpp, check=_cpp_check)
def _decode_cpp(
    heatmaps: Tensor,
    center: Tensor,
    scale: Tensor,
    flipped: Tensor | None,
    flip_indices: Sequence[int] | None,
    shift: bool,
    post_process: str | None,
    use_udp: bool,
    kernel: int,
) -> tuple[Tensor, Tensor]:
    hm, fl = _fused_inputs(heatmaps, flipped, flip_indices, shift)
    fi = None if fl is None else [int(i) for i in flip_indices or ()]
    return torch.ops.posebh.decode_heatmaps(
        hm, center, scale, fl, fi, bool(shift), post_process, bool(use_udp), int(kernel)
    )


@DECODE.backend(
    "cuda", "CUDA kernel of the C++ extension (C ABI .cu + torch binding)", check=_cuda_check
)
def _decode_cuda(
    heatmaps: Tensor,
    center: Tensor,
    scale: Tensor,
    flipped: Tensor | None,
    flip_indices: Sequence[int] | None,
    shift: bool,
    post_process: str | None,
    use_udp: bool,
    kernel: int,
) -> tuple[Tensor, Tensor]:
    return _decode_cpp(
        heatmaps, center, scale, flipped, flip_indices, shift, post_process, use_udp, kernel
    )


@DECODE.backend("triton", "Triton kernel (posebh_kernels.decode_heatmaps)", check=_triton_check)
def _decode_triton(
    heatmaps: Tensor,
    center: Tensor,
    scale: Tensor,
    flipped: Tensor | None,
    flip_indices: Sequence[int] | None,
    shift: bool,
    post_process: str | None,
    use_udp: bool,
    kernel: int,
) -> tuple[Tensor, Tensor]:
    module, _ = _triton_module()
    hm, fl = _fused_inputs(heatmaps, flipped, flip_indices, shift)
    return module.launch_decode(  # type: ignore[union-attr]
        hm,
        torch.as_tensor(center),
        torch.as_tensor(scale),
        flipped=fl,
        flip_indices=flip_indices,
        shift=shift,
        post_process=post_process,
        use_udp=use_udp,
        kernel=kernel,
        taps=gaussian_kernel_1d(int(kernel)) if use_udp else None,
    )


# ------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------


def _validate(
    heatmaps: Tensor,
    flipped: Tensor | None,
    flip_indices: Sequence[int] | None,
    post_process: str | None,
    use_udp: bool,
    kernel: int,
) -> None:
    """The reference's ValueErrors, raised before any backend runs (same on every backend)."""
    if post_process not in POST_PROCESS_MODES:
        raise ValueError(f"post_process must be one of {POST_PROCESS_MODES}, got {post_process!r}")
    if use_udp and post_process == "megvii":
        raise ValueError("post_process='megvii' cannot be combined with use_udp=True")
    if (use_udp or post_process in ("unbiased", "megvii")) and (
        isinstance(kernel, bool) or int(kernel) != kernel or kernel <= 0 or kernel % 2 != 1
    ):
        raise ValueError(f"needs a positive odd Gaussian kernel size, got {kernel!r}")
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {tuple(heatmaps.shape)}")
    if heatmaps.shape[2] == 0 or heatmaps.shape[3] == 0:
        raise ValueError(f"heatmaps must have a non-empty H×W, got shape {tuple(heatmaps.shape)}")
    if not heatmaps.is_floating_point():
        raise TypeError(f"heatmaps must be floating point, got {heatmaps.dtype}")
    if flipped is None:
        return
    if tuple(flipped.shape) != tuple(heatmaps.shape):
        raise ValueError(
            f"shape mismatch: {tuple(heatmaps.shape)} vs flipped {tuple(flipped.shape)}"
        )
    if flipped.device != heatmaps.device or flipped.dtype != heatmaps.dtype:
        raise ValueError("flipped must have the dtype and device of heatmaps")
    k = heatmaps.shape[1]
    if flip_indices is None or sorted(int(i) for i in flip_indices) != list(range(k)):
        raise ValueError(f"flip_indices must be a permutation of range({k}), got {flip_indices}")


def _call_info(
    device: torch.device,
    dtype: torch.dtype,
    post_process: str | None,
    use_udp: bool,
    kernel: int,
    flipped: bool,
) -> CallInfo:
    return CallInfo(
        device=device,
        dtype=dtype,
        extra={
            "post_process": post_process,
            "use_udp": bool(use_udp),
            "kernel": int(kernel),
            "flipped": flipped,
        },
    )


def decode_heatmaps(
    heatmaps: Tensor | np.ndarray,
    center: Tensor | np.ndarray,
    scale: Tensor | np.ndarray,
    *,
    flipped: Tensor | np.ndarray | None = None,
    flip_indices: Sequence[int] | None = None,
    shift: bool = False,
    post_process: str | None = "default",
    use_udp: bool = False,
    kernel: int = 11,
    backend: str = "auto",
) -> tuple[Tensor, Tensor] | tuple[np.ndarray, np.ndarray]:
    """Keypoints of heatmaps in image pixels, with the flip test fused in front.

    Args:
        heatmaps: ``[N, K, H, W]`` float tensor (or array); ``N = 0`` gives empty outputs.
        center: ``[N, 2]`` box centres in image pixels.
        scale: ``[N, 2]`` box sizes ``(w, h)`` in units of 200 px.
        flipped: optional ``[N, K, H, W]`` raw output on the mirrored images (same dtype and
            device): the maps decoded are ``(heatmaps + flip_back(flipped)) · 0.5``.
        flip_indices: ``[K]`` mirror pairs (a permutation), required with ``flipped``.
        shift: ``shift_heatmap``: the flipped-back map moves one column right first.
        post_process: None, ``'default'``, ``'unbiased'`` or ``'megvii'`` (see
            :func:`posebh.decode.keypoints_from_heatmaps`; ignored with ``use_udp`` except that
            ``'megvii'`` is rejected).
        use_udp: DARK-UDP refinement and the UDP transform.
        kernel: odd Gaussian size of the blurring modes (11 for σ = 2 targets).
        backend: ``"auto"`` (see :func:`explain`), or ``"cpp"``, ``"cuda"``, ``"triton"``,
            ``"torch"`` to force one (raises RuntimeError if it cannot run the call).

    Returns:
        ``preds`` ``[N, K, 2]`` float32 and ``maxvals`` ``[N, K, 1]`` (float32; float64 for
        float64 maps), tensors on the heatmaps' device — or NumPy arrays for array input.
    """
    as_numpy = isinstance(heatmaps, np.ndarray)
    hm = torch.from_numpy(np.ascontiguousarray(heatmaps)) if as_numpy else heatmaps
    fl = (
        torch.from_numpy(np.ascontiguousarray(flipped))
        if isinstance(flipped, np.ndarray)
        else flipped
    )
    ctr = torch.as_tensor(center)
    scl = torch.as_tensor(scale)
    _validate(hm, fl, flip_indices, post_process, use_udp, kernel)
    info = _call_info(hm.device, hm.dtype, post_process, use_udp, kernel, fl is not None)
    preds, maxvals = DECODE(
        backend, info, hm, ctr, scl, fl, flip_indices, shift, post_process, use_udp, kernel
    )
    if as_numpy:
        return np.asarray(preds.cpu().numpy()), np.asarray(maxvals.cpu().numpy())
    return preds, maxvals


def explain(
    device: str | torch.device = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
    post_process: str | None = "default",
    use_udp: bool = False,
    kernel: int = 11,
    flipped: bool = False,
) -> str:
    """Which backend ``backend="auto"`` runs for a decode call with these settings, and why
    each other one is not used. (``posebh.ops.explain("decode_heatmaps", device)`` answers
    for the default settings: plain ``'default'`` decoding, kernel 11.)"""
    info = _call_info(torch.device(device), dtype, post_process, use_udp, kernel, flipped)
    first, *rest = DECODE.explain(info).splitlines()
    fused = ", flip test fused" if flipped else ""
    return "\n".join([first, f"  settings: {_mode_text(info)}{fused}", *rest])
