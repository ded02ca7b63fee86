"""posebh's fused operators with backend dispatch.

Operators (shapes in :mod:`posebh.ops.similarity`):

- :func:`prototype_similarity` (embeddings [B, F, H, W], prototypes [J, M, F], classes) →
  heatmaps [B, K, H, W]: the inference heatmaps of :class:`posebh.prototypes.KeypointPrototypes`;
- :func:`prototype_logits` (embeddings [N, F], prototypes, classes) → :class:`PrototypeLogits`
  (logits [N, K·M], best [N, K]): the training logits of a dataset's class block;
- :func:`decode_heatmaps` (heatmaps [N, K, H, W], boxes) → keypoints: the fused decode
  (:mod:`posebh.ops.decode`);
- :func:`warp_affine` (image [H, W, C] uint8, matrix [2, 3], (w, h)) → crop [h, w, C] uint8:
  ``cv2.warpAffine`` bit for bit in OpenCV's two arithmetics (:mod:`posebh.ops.warp`).

Backends: ``"triton"`` (CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1`` and when
forced), ``"cuda"`` (CUDA kernels of the C++ extension), ``"cpp"`` (CPU kernels of the C++
extension), ``"torch"`` (the references: :mod:`posebh.ops.similarity_reference`,
:mod:`posebh.decode`, :mod:`posebh.ops.warp_reference`). ``backend="auto"`` (the default)
tries, in order, ``cpp > torch`` on CPU and ``triton > cuda > torch`` on CUDA, and takes the
first that can run the call (right device and dtype, extension built, no gradient needed
w.r.t. the prototypes). :func:`explain`
says which one runs and why the others do not.

The C++ extension is compiled on first use (see :mod:`posebh.ops.extensions`), or ahead of
time with :func:`build_extensions`; importing this package never compiles anything and never
fails because a compiler is missing.

To add an operator, see :mod:`posebh.ops.registry`.
"""

from __future__ import annotations

import torch

from posebh.ops import extensions, registry
from posebh.ops.decode import decode_heatmaps
from posebh.ops.extensions import build_extensions
from posebh.ops.registry import BACKENDS, CallInfo, Op, get_op, register_op
from posebh.ops.similarity import PrototypeLogits, prototype_logits, prototype_similarity
from posebh.ops.warp import warp_affine

__all__ = [
    "BACKENDS",
    "CallInfo",
    "Op",
    "PrototypeLogits",
    "build_extensions",
    "decode_heatmaps",
    "explain",
    "extensions",
    "get_op",
    "prototype_logits",
    "prototype_similarity",
    "register_op",
    "registry",
    "warp_affine",
]


def explain(
    op: str = "prototype_similarity",
    device: str | torch.device = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
    prototypes_require_grad: bool = False,
) -> str:
    """Which backend ``backend="auto"`` would run for ``op`` and why each other is not used.

    Building the C++ extension is part of deciding (it is what the call would do), so the first
    call may take a while; its outcome, including a build error, is in the answer.

    Args:
        op: a registered op name (``"prototype_similarity"``, ``"prototype_logits"``, ...).
        device: the tensors' device.
        dtype: the compute dtype (for the similarity ops, the prototypes' dtype).
        requires_grad: whether a gradient w.r.t. the main input will be needed.
        prototypes_require_grad: whether the prototypes require grad (similarity ops).

    Returns:
        A few lines of text, e.g. ``posebh.ops.prototype_similarity on cpu (float32): runs
        'cpp'`` followed by one line per backend.
    """
    info = CallInfo(
        device=torch.device(device),
        dtype=dtype,
        needs_grad=requires_grad,
        extra={"prototypes_need_grad": prototypes_require_grad},
    )
    return get_op(op).explain(info)
