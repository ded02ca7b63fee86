"""Limits and supported modes of the fused kernels, importable without Triton or a compiler.

:mod:`posebh.ops` reads these to route calls (constants flow up: ``kernels/`` knows nothing of
posebh). The C++/CUDA sources state the same limits at compile time (named below); the tests
check that each kernel rejects what lies beyond them.
"""

from __future__ import annotations

__all__ = [
    "DECODE_CPP_MAX_KERNEL",
    "DECODE_CUDA_MAX_KERNEL",
    "DECODE_GPU_POST_PROCESS",
    "DECODE_TRITON_MAX_KERNEL",
    "SIMILARITY_CUDA_MAX_F",
]

#: Largest Gaussian kernel of the C++ CPU decode (``kMaxKernel``, decode_heatmaps_common.h).
DECODE_CPP_MAX_KERNEL = 63
#: Largest Gaussian kernel of the CUDA decode (``POSEBH_DECODE_CUDA_MAX_KERNEL``,
#: cuda/decode_heatmaps_abi.h).
DECODE_CUDA_MAX_KERNEL = 31
#: Largest Gaussian kernel of the Triton decode (its blur is unrolled at compile time; at 63
#: it ran out of registers and spilled on sm_80, ``python -m posebh.ops.compile_check``).
DECODE_TRITON_MAX_KERNEL = 31
#: The ``post_process`` modes the GPU decodes (Triton, CUDA) implement without UDP. With
#: ``use_udp=True`` they run DARK-UDP whatever ``post_process`` says, as the reference does
#: (which rejects ``'megvii'`` there).
DECODE_GPU_POST_PROCESS: tuple[str | None, ...] = (None, "default")
#: Largest feature dimension F of the CUDA similarity kernels (``POSEBH_SIMILARITY_CUDA_MAX_F``,
#: cuda/prototype_similarity.cu), which also compute in float32 only: one thread holds a pixel's
#: features and gradient in registers, and float64 or larger F spilled on sm_80/sm_90
#: (``python -m posebh.ops.compile_check``). The Triton kernels take any F and float64.
SIMILARITY_CUDA_MAX_F = 64
