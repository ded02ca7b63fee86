"""The fused prototype similarity: heatmaps for inference, logits for training.

Shapes: embeddings ``[B, F, H, W]`` (heatmaps) or ``[N, F]`` (logits), prototypes ``[J, M,
F]``; ``classes`` is a slice of ``0 .. J − 1`` with step 1 (a dataset's contiguous block, e.g.
``KeypointPrototypes.class_slice(d)``, or all classes), ``K`` its length.

- :func:`prototype_similarity` → ``[B, K, H, W]``: ``clamp(max_m |cos(e[b, :, y, x],
  p[c, m])|, 1e-4, 1 − 1e-4)`` for ``c = classes.start + k``; the reference is
  :func:`posebh.ops.similarity_reference.prototype_similarity_heatmaps`.
- :func:`prototype_logits` → :class:`PrototypeLogits` ``(logits [N, K·M], best [N, K])``:
  the ``|cos|`` PPC/PPD logits of the class block (column ``k·M + m``) and the index of the
  most similar prototype of each class (first maximum); the reference is
  ``posebh.ops.similarity_reference.prototype_pair_similarity(e, p)[:, classes]``.

Both are differentiable w.r.t. the embeddings on every backend. The fused backends give no
gradient w.r.t. the prototypes (in posebh they are a buffer moved by the Sinkhorn update);
when the prototypes require grad, ``"auto"`` picks the reference.

Conventions shared by every backend (and tested):

- zero embedding: ``F.normalize`` divides by ``max(||e||, 1e-12)``, so the similarity is 0 and
  the heatmap value the clamp floor 1e-4 (its gradient is 0);
- an empty batch, image or class slice gives an empty ``[B, K, H, W]`` result (the reference
  raises there);
- NaN in an embedding or a prototype propagates to every value it touches (no error is
  raised, like the reference); ``best`` counts NaN as the largest value, like
  ``torch.argmax``;
- ties between prototypes: the heatmap gradient is shared equally among the tied maxima
  (``torch.amax``'s rule); ``best`` is the first of them;
- the compute dtype is the prototypes' dtype as in the reference (embeddings are converted);
  the C++ CPU kernels reproduce the reference bit for bit in float32 when ``F`` is a multiple
  of 8 (see ``kernels/csrc/prototype_similarity.cpp``); Triton accumulates in float32 (or
  float64) whatever the input precision; the CUDA kernels take float32 prototypes and
  ``F ≤ 64`` only (:data:`posebh_kernels.limits.SIMILARITY_CUDA_MAX_F`: larger F or float64
  spilled registers), and "auto" passes those calls on to Triton or the reference.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from posebh.ops import extensions
from posebh.ops.registry import CallInfo, Op, register_op
from posebh.ops.similarity_reference import (
    SCORE_MAX,
    SCORE_MIN,
    prototype_pair_similarity,
    prototype_similarity_heatmaps,
)

__all__ = ["HEATMAPS", "LOGITS", "PrototypeLogits", "prototype_logits", "prototype_similarity"]

_EXTENSION = "prototype_similarity"
_CPU_DTYPES = (torch.float32, torch.float64)
_GPU_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_LIMITS = extensions.kernels_module("limits")


class PrototypeLogits(NamedTuple):
    """Training outputs of :func:`prototype_logits` for ``N`` pixels and ``K`` classes.

    Attributes:
        logits: [N, K·M] ``|cos|``; column ``k·M + m`` is prototype ``m`` of class
            ``classes.start + k``. Differentiable w.r.t. the embeddings.
        best: [N, K] int64, the ``m`` of the most similar prototype of each class (first
            maximum; NaN counts as the largest). Not differentiable.
    """

    logits: Tensor
    best: Tensor

    def class_scores(self) -> Tensor:
        """[N, K] clamped class scores ``clamp(max_m logits, 1e-4, 1 − 1e-4)``."""
        n, k = self.best.shape
        per_class = self.logits.reshape(n, k, -1)
        return per_class.gather(2, self.best.unsqueeze(2)).squeeze(2).clamp(SCORE_MIN, SCORE_MAX)


# ------------------------------------------------------------------------------------------
# The C++ extension and its Python-side registrations
# ------------------------------------------------------------------------------------------


def _register_python_parts() -> None:
    """Fake (meta) kernels for torch.compile and the autograd formulas of the C++ ops."""
    lib = "posebh::"

    @torch.library.register_fake(lib + "prototype_heatmaps")
    def _heatmaps_fake(embeddings: Tensor, prototypes: Tensor, start: int, stop: int) -> Tensor:
        b, _, h, w = embeddings.shape
        return embeddings.new_empty((b, stop - start, h, w), dtype=prototypes.dtype)

    @torch.library.register_fake(lib + "prototype_heatmaps_backward")
    def _heatmaps_backward_fake(
        grad: Tensor, embeddings: Tensor, prototypes: Tensor, start: int, stop: int
    ) -> Tensor:
        return embeddings.new_empty(embeddings.shape)

    @torch.library.register_fake(lib + "prototype_logits")
    def _logits_fake(
        embeddings: Tensor, prototypes: Tensor, start: int, stop: int
    ) -> tuple[Tensor, Tensor]:
        n, k, m = embeddings.shape[0], stop - start, prototypes.shape[1]
        logits = embeddings.new_empty((n, k * m), dtype=prototypes.dtype)
        return logits, embeddings.new_empty((n, k), dtype=torch.long)

    @torch.library.register_fake(lib + "prototype_logits_backward")
    def _logits_backward_fake(
        grad: Tensor, embeddings: Tensor, prototypes: Tensor, start: int, stop: int
    ) -> Tensor:
        return embeddings.new_empty(embeddings.shape)

    def setup(ctx, inputs, output) -> None:
        embeddings, prototypes, start, stop = inputs
        # A snapshot: the Sinkhorn update rewrites the prototype buffer in place between the
        # forward and the backward of a training step, and the gradient must use the values
        # the forward saw (as the reference's autograd does). [J, M, F] is a few hundred KB.
        ctx.save_for_backward(embeddings, prototypes.detach().clone())
        ctx.classes = (start, stop)

    def no_prototype_grad(ctx) -> None:
        if ctx.needs_input_grad[1]:
            raise RuntimeError(
                "the fused prototype-similarity kernels give no gradient w.r.t. the prototypes "
                "(a buffer in posebh); use backend='torch' to differentiate them"
            )

    def heatmaps_backward(ctx, grad: Tensor):
        no_prototype_grad(ctx)
        embeddings, prototypes = ctx.saved_tensors
        gx = None
        if ctx.needs_input_grad[0]:
            op = torch.ops.posebh.prototype_heatmaps_backward
            gx = op(grad, embeddings, prototypes, *ctx.classes)
        return gx, None, None, None

    def logits_backward(ctx, grad: Tensor, _grad_best: Tensor | None):
        no_prototype_grad(ctx)
        embeddings, prototypes = ctx.saved_tensors
        gx = None
        if ctx.needs_input_grad[0]:
            op = torch.ops.posebh.prototype_logits_backward
            gx = op(grad, embeddings, prototypes, *ctx.classes)
        return gx, None, None, None

    torch.library.register_autograd(
        lib + "prototype_heatmaps", heatmaps_backward, setup_context=setup
    )
    torch.library.register_autograd(lib + "prototype_logits", logits_backward, setup_context=setup)


extensions.register_extension(
    extensions.ExtensionSpec(
        name=_EXTENSION,
        sources=("prototype_similarity.cpp",),
        cuda_sources=("cuda/prototype_similarity.cu", "cuda/prototype_similarity_cuda.cpp"),
        on_load=_register_python_parts,
    )
)


def cpu_isa() -> str | None:
    """The SIMD variant of the loaded C++ CPU kernels ("avx512", "avx2", "generic"), or None."""
    if extensions.state(_EXTENSION).status != "loaded":
        return None
    return str(torch.ops.posebh.prototype_similarity_cpu_isa())


# ------------------------------------------------------------------------------------------
# Triton
# ------------------------------------------------------------------------------------------


def _triton_module() -> tuple[Any | None, str]:
    return extensions.triton_kernels("prototype_similarity")


_interpret_env = extensions.triton_interpret


def _triton_check(info: CallInfo) -> str | None:
    if info.device.type not in ("cuda", "cpu"):
        return f"tensors are on {info.device.type}"
    if info.device.type == "cpu" and not _interpret_env():
        return "tensors are on cpu and TRITON_INTERPRET is not set (Triton compiles for GPUs)"
    if info.device.type == "cuda" and not torch.cuda.is_available():
        return "torch.cuda.is_available() is False"
    if info.dtype not in _GPU_DTYPES:
        return f"unsupported dtype {info.dtype}"
    module, why = _triton_module()
    if module is None:
        return why
    interpreted = bool(module.INTERPRET)  # type: ignore[attr-defined]
    if info.device.type == "cpu" and not interpreted:
        return "the Triton kernels were imported before TRITON_INTERPRET=1 was set"
    if info.device.type == "cuda" and interpreted:
        return "the Triton kernels were imported in interpreter mode (TRITON_INTERPRET=1)"
    return _prototype_grad_reason(info)


# ------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------


def _prototype_grad_reason(info: CallInfo) -> str | None:
    if info.extra.get("prototypes_need_grad"):
        return "the prototypes require grad; the fused kernels differentiate the embeddings only"
    return None


def _cpp_check(info: CallInfo) -> str | None:
    if info.device.type != "cpu":
        return f"tensors are on {info.device.type} (the C++ kernels are CPU-only)"
    if info.dtype not in _CPU_DTYPES:
        return f"unsupported dtype {info.dtype} (float32/float64 on CPU)"
    return _prototype_grad_reason(info) or extensions.unavailable(_EXTENSION)


#: Below these sizes "auto" keeps the reference on CPU (the C++ kernels still run if forced).
#: The fused kernel gains microseconds there, and MKL switches to small-matrix kernels (fewer
#: than ~10 pixels, or fewer than 12 prototype columns J·M, measured) whose rounding it does
#: not reproduce; above them it equals the reference bit for bit, so "auto" never changes the
#: reference's float32 results on CPU.
SMALL_PIXELS = 16
SMALL_COLUMNS = 16
SMALL_SIMILARITIES = 1 << 16


def _cpp_decline(info: CallInfo) -> str | None:
    pixels, columns = info.extra.get("pixels"), info.extra.get("columns")
    if pixels is None or columns is None:
        return None
    if pixels < SMALL_PIXELS or columns < SMALL_COLUMNS or pixels * columns < SMALL_SIMILARITIES:
        return (
            f"small problem (N = {pixels} pixels, J·M = {columns} prototypes): the reference "
            "takes microseconds and its MKL small-matrix rounding is kept"
        )
    return None


def _cuda_check(info: CallInfo) -> str | None:
    if info.device.type != "cuda":
        return f"tensors are on {info.device.type}"
    if info.dtype not in _GPU_DTYPES:
        return f"unsupported dtype {info.dtype}"
    if info.dtype == torch.float64:
        return "float64 prototypes: the CUDA kernels compute in float32 (triton takes float64)"
    features = info.extra.get("features", 0)
    if features > _LIMITS.SIMILARITY_CUDA_MAX_F:
        limit = _LIMITS.SIMILARITY_CUDA_MAX_F
        return f"F = {features} > {limit} (the CUDA kernels' register budget; triton takes any F)"
    why = _prototype_grad_reason(info)
    if why:
        return why
    ok, why = extensions.cuda_build_support()
    if not ok:
        return why
    st = extensions.load_extension(_EXTENSION)
    if st.status != "loaded":
        return st.reason
    return None if st.variant == "cuda" else "the extension was built without CUDA sources"


def _summary_cpp() -> str:
    st = extensions.state(_EXTENSION)
    if st.status != "loaded":
        return "C++ extension posebh_prototype_similarity (CPU kernels)"
    return f"C++ CPU kernels ({cpu_isa()} micro-kernels), {st.reason}"


# ------------------------------------------------------------------------------------------
# Ops and backends
# ------------------------------------------------------------------------------------------

_PREFERENCE = {"cpu": ("cpp", "torch"), "cuda": ("triton", "cuda", "torch")}

HEATMAPS = register_op(
    Op(
        "prototype_similarity",
        summary="embeddings [B,F,H,W], prototypes [J,M,F] -> heatmaps [B,K,H,W]",
        preference=_PREFERENCE,
    )
)
LOGITS = register_op(
    Op(
        "prototype_logits",
        summary="embeddings [N,F], prototypes [J,M,F] -> logits [N,K*M], best [N,K]",
        preference=_PREFERENCE,
    )
)

_TORCH_SUMMARY = "the PyTorch reference (ops.similarity_reference), materialises [N, J*M]"
_TRITON_SUMMARY = "Triton kernels (posebh_kernels.prototype_similarity)"
_CUDA_SUMMARY = "CUDA kernels of the C++ extension (C ABI .cu + torch binding)"


@HEATMAPS.backend("torch", _TORCH_SUMMARY)
def _heatmaps_torch(embeddings: Tensor, prototypes: Tensor, start: int, stop: int) -> Tensor:
    return prototype_similarity_heatmaps(embeddings, prototypes, slice(start, stop))


@HEATMAPS.backend("cpp", _summary_cpp, check=_cpp_check, decline=_cpp_decline)
def _heatmaps_cpp(embeddings: Tensor, prototypes: Tensor, start: int, stop: int) -> Tensor:
    x = embeddings.to(prototypes.dtype)  # the reference's compute dtype
    return torch.ops.posebh.prototype_heatmaps(x, prototypes, start, stop)


@HEATMAPS.backend("cuda", _CUDA_SUMMARY, check=_cuda_check)
def _heatmaps_cuda(embeddings: Tensor, prototypes: Tensor, start: int, stop: int) -> Tensor:
    return torch.ops.posebh.prototype_heatmaps(embeddings, prototypes, start, stop)


@HEATMAPS.backend("triton", _TRITON_SUMMARY, check=_triton_check)
def _heatmaps_triton(embeddings: Tensor, prototypes: Tensor, start: int, stop: int) -> Tensor:
    module, _ = _triton_module()
    return module.prototype_heatmaps(embeddings, prototypes, start, stop)  # type: ignore[union-attr]


@LOGITS.backend("torch", _TORCH_SUMMARY)
def _logits_torch(embeddings: Tensor, prototypes: Tensor, start: int, stop: int) -> PrototypeLogits:
    sim = prototype_pair_similarity(embeddings, prototypes)[:, start:stop]  # [N, K, M]
    n, k, m = sim.shape
    best = sim.detach().argmax(dim=2) if sim.numel() else sim.new_empty((n, k), dtype=torch.long)
    return PrototypeLogits(sim.reshape(n, k * m), best)


@LOGITS.backend("cpp", _summary_cpp, check=_cpp_check, decline=_cpp_decline)
def _logits_cpp(embeddings: Tensor, prototypes: Tensor, start: int, stop: int) -> PrototypeLogits:
    x = embeddings.to(prototypes.dtype)
    return PrototypeLogits(*torch.ops.posebh.prototype_logits(x, prototypes, start, stop))


@LOGITS.backend("cuda", _CUDA_SUMMARY, check=_cuda_check)
def _logits_cuda(embeddings: Tensor, prototypes: Tensor, start: int, stop: int) -> PrototypeLogits:
    return PrototypeLogits(*torch.ops.posebh.prototype_logits(embeddings, prototypes, start, stop))


@LOGITS.backend("triton", _TRITON_SUMMARY, check=_triton_check)
def _logits_triton(
    embeddings: Tensor, prototypes: Tensor, start: int, stop: int
) -> PrototypeLogits:
    module, _ = _triton_module()
    out = module.prototype_logits(embeddings, prototypes, start, stop)  # type: ignore[union-attr]
    return PrototypeLogits(*out)


# ------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------


def _class_range(classes: slice, num_classes: int) -> tuple[int, int]:
    if not isinstance(classes, slice):
        raise TypeError(f"classes must be a slice, got {type(classes).__name__}")
    start, stop, step = classes.indices(num_classes)
    if step != 1:
        raise ValueError(f"classes must be a contiguous slice (step 1), got {classes}")
    return start, max(start, stop)


def _call_info(embeddings: Tensor, prototypes: Tensor) -> CallInfo:
    grad = torch.is_grad_enabled()
    pixels = embeddings.numel() // max(1, embeddings.shape[1])
    return CallInfo(
        device=embeddings.device,
        dtype=prototypes.dtype,
        input_dtype=embeddings.dtype,
        needs_grad=grad and embeddings.requires_grad,
        extra={
            "prototypes_need_grad": grad and prototypes.requires_grad,
            "pixels": pixels,
            "columns": prototypes.shape[0] * prototypes.shape[1],
            "features": prototypes.shape[2],
        },
    )


def _check_shapes(embeddings: Tensor, prototypes: Tensor, dims: int, layout: str) -> None:
    if embeddings.ndim != dims:
        raise ValueError(f"embeddings must be {layout}, got {tuple(embeddings.shape)}")
    if prototypes.ndim != 3 or prototypes.shape[2] != embeddings.shape[1]:
        raise ValueError(
            f"prototypes must be [J, M, F] with F = {embeddings.shape[1]}, "
            f"got {tuple(prototypes.shape)}"
        )
    if prototypes.device != embeddings.device:
        raise ValueError(f"devices differ: {embeddings.device} and {prototypes.device}")
    if not (embeddings.is_floating_point() and prototypes.is_floating_point()):
        raise TypeError("embeddings and prototypes must be floating point")


def prototype_similarity(
    embeddings: Tensor,
    prototypes: Tensor,
    classes: slice = slice(None),
    *,
    backend: str = "auto",
) -> Tensor:
    """Prototype heatmaps [B, K, H, W] of embedding maps, fused (no [N, J·M] intermediate).

    ``out[b, k, y, x] = clamp(max_m |cos(embeddings[b, :, y, x], prototypes[c, m])|, 1e-4,
    1 − 1e-4)`` with ``c = classes.start + k``. Per-class values do not depend on which other
    classes are requested, so a dataset's heatmaps equal the slice of the all-class heatmaps
    bit for bit on every backend.

    Args:
        embeddings: [B, F, H, W] (any norm; any float dtype, computed in the prototypes').
        prototypes: [J, M, F] (any norm; normalised out of place).
        classes: contiguous slice (step 1) of ``0 .. J − 1``; default all classes.
        backend: "auto" (see :func:`posebh.ops.explain`), or "cpp", "cuda", "triton", "torch"
            to force one (raises if it cannot run the call).

    Returns:
        [B, K, H, W], contiguous, dtype of the prototypes. Differentiable w.r.t. embeddings.
    """
    _check_shapes(embeddings, prototypes, 4, "[B, F, H, W]")
    start, stop = _class_range(classes, prototypes.shape[0])
    b, _, h, w = embeddings.shape
    if b * h * w * (stop - start) == 0:  # the reference cannot reshape zero elements
        return embeddings.new_empty((b, stop - start, h, w), dtype=prototypes.dtype)
    return HEATMAPS(
        backend, _call_info(embeddings, prototypes), embeddings, prototypes, start, stop
    )


def prototype_logits(
    embeddings: Tensor,
    prototypes: Tensor,
    classes: slice = slice(None),
    *,
    backend: str = "auto",
) -> PrototypeLogits:
    """PPC/PPD logits of sampled pixels for a class block, and the best prototype per class.

    Args:
        embeddings: [N, F] sampled pixel embeddings (any norm).
        prototypes: [J, M, F].
        classes: contiguous slice of ``0 .. J − 1`` (e.g. a dataset's block).
        backend: as in :func:`prototype_similarity`.

    Returns:
        :class:`PrototypeLogits`: ``logits`` [N, K·M] (``|cos|``, column ``k·M + m``;
        differentiable w.r.t. embeddings) and ``best`` [N, K] int64 (arg-max over ``m``).
        ``.class_scores()`` gives the clamped [N, K] class scores.
    """
    _check_shapes(embeddings, prototypes, 2, "[N, F]")
    start, stop = _class_range(classes, prototypes.shape[0])
    return LOGITS(backend, _call_info(embeddings, prototypes), embeddings, prototypes, start, stop)
