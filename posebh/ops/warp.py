"""The affine warp of the top-down crop: ``cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT 0)``.

Shapes: ``image`` ``[H, W, C]`` (any C ≥ 1) or ``[H, W]`` uint8, ``matrix`` ``[2, 3]`` mapping
source (x, y, 1) to destination (x, y), ``out_size`` ``(w, h)``; result ``[h, w, C]`` (or
``[h, w]``) uint8. Two arithmetics, both bit for bit with OpenCV: ``"fixed"`` (OpenCV ≤ 4.10)
and ``"float"`` (OpenCV ≥ 4.11); see :func:`posebh.ops.warp_reference.warp_affine_reference`.

Backends (every one gives the reference's bits; tests/test_ops_warp.py):

- ``"cpp"``: the C++ CPU op ``posebh::warp_affine`` (``kernels/csrc/warp_affine.cpp``);
- ``"torch"``: the NumPy reference :mod:`posebh.ops.warp_reference`, always available.

``backend="auto"`` runs ``cpp`` when its extension loads, else the reference
(``POSEBH_DISABLE_EXTENSIONS=1`` forces the reference). NumPy arrays go to the C++ op without a
copy (``torch.from_numpy``) unless they are not C-contiguous.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from posebh.ops import extensions
from posebh.ops.registry import Backend, CallInfo, Op, register_op
from posebh.ops.warp_reference import warp_affine_reference

__all__ = [
    "WARP",
    "normalize_image",
    "normalize_image_reference",
    "warp_affine",
    "warp_normalize_batch",
]

_EXTENSION = "warp"
METHODS: tuple[str, ...] = ("fixed", "float")


def _register_python_parts() -> None:
    """The fake (meta) kernel, so torch.compile and opcheck can trace the C++ op."""

    @torch.library.register_fake("posebh::normalize_image")
    def _normalize_fake(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
        h, w, c = image.shape
        return image.new_empty((c, h, w), dtype=torch.float32)

    @torch.library.register_fake("posebh::warp_normalize_batch")
    def _batch_fake(
        image: Tensor,
        matrices: Sequence[float],
        out_w: int,
        out_h: int,
        method: str,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> Tensor:
        n = len(matrices) // 6
        return image.new_empty((n, image.shape[2], out_h, out_w), dtype=torch.float32)

    @torch.library.register_fake("posebh::warp_affine")
    def _warp_fake(
        image: Tensor, matrix: Sequence[float], out_w: int, out_h: int, method: str
    ) -> Tensor:
        return image.new_empty((out_h, out_w, image.shape[2]))


extensions.register_extension(
    extensions.ExtensionSpec(
        name=_EXTENSION, sources=("warp_affine.cpp",), on_load=_register_python_parts
    )
)


def _cpp_check(info: CallInfo) -> str | None:
    if info.device.type != "cpu":
        return f"tensors are on {info.device.type} (the C++ kernel is CPU-only)"
    return extensions.unavailable(_EXTENSION)


def _summary_cpp() -> str:
    st = extensions.state(_EXTENSION)
    if st.status != "loaded":
        return "C++ extension posebh_warp (CPU op)"
    isa = torch.ops.posebh.warp_affine_cpu_isa()
    return f"C++ CPU op ({isa}, rows over {torch.get_num_threads()} threads), {st.reason}"


WARP = register_op(
    Op(
        "warp_affine",
        summary="image [H,W,C] uint8, matrix [2,3], out_size (w,h) -> crop [h,w,C] uint8",
        preference={"cpu": ("cpp", "torch")},
    )
)


@WARP.backend("torch", "the NumPy reference posebh.ops.warp_reference (OpenCV-exact)")
def _warp_torch(
    image: np.ndarray, matrix: list[float], out_w: int, out_h: int, method: str
) -> np.ndarray:
    return warp_affine_reference(image, np.reshape(matrix, (2, 3)), (out_w, out_h), method)  # type: ignore[arg-type]


def _read_only_tensor(array: np.ndarray) -> Tensor:
    """A CPU tensor sharing ``array``'s memory (a C-contiguous copy only if it is not), for an
    op that only reads it: torch's warning about read-only arrays (e.g. ``np.asarray`` of a
    PIL image) does not apply and is silenced."""
    arr = np.ascontiguousarray(array)
    if arr.flags.writeable:
        return torch.from_numpy(arr)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


@WARP.backend("cpp", _summary_cpp, check=_cpp_check)
def _warp_cpp(
    image: np.ndarray, matrix: list[float], out_w: int, out_h: int, method: str
) -> np.ndarray:
    img = _read_only_tensor(image)
    return torch.ops.posebh.warp_affine.default(img, matrix, out_w, out_h, method).numpy()


_CPU_INFO = CallInfo(device=torch.device("cpu"), dtype=torch.uint8, input_dtype=torch.uint8)


def _auto_backend() -> Backend:
    """``"auto"``'s choice on CPU. The C++ backend once its extension is loaded (a dict read:
    the common case skips the registry's general walk, ~10 µs per call), else the registry's
    answer (which builds the extension on first use, or gives the reference)."""
    if extensions.state(_EXTENSION).status == "loaded":
        return WARP.backends["cpp"]
    return WARP.select("auto", _CPU_INFO)


def _validate(
    image: Any, matrix: Any, out_size: Sequence[int], method: str
) -> tuple[np.ndarray, list[float], int, int]:
    """(image [H, W, C], matrix as 6 floats, w, h) or the ValueError of a bad argument."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"image must be [H, W(, C)] uint8, got {img.dtype} {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image must have a non-empty H×W, got shape {img.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be 'fixed' or 'float', got {method!r}")
    m = np.asarray(matrix, dtype=np.float64)
    if m.size != 6:
        raise ValueError(f"matrix must be [2, 3], got shape {m.shape}")
    if len(out_size) != 2:
        raise ValueError(f"out_size must be (w, h), got {out_size!r}")
    w_out, h_out = int(out_size[0]), int(out_size[1])
    if w_out < 0 or h_out < 0:
        raise ValueError(f"out_size (w, h) must not be negative, got ({w_out}, {h_out})")
    return (img if img.ndim == 3 else img[..., None]), m.reshape(6).tolist(), w_out, h_out


def warp_affine(
    image: np.ndarray,
    matrix: Any,
    out_size: Sequence[int],
    method: Literal["fixed", "float"] = "fixed",
    backend: str = "auto",
) -> np.ndarray:
    """Warp ``image`` [H, W, C] (or [H, W]) uint8 by ``matrix`` [2, 3] into ``out_size`` (w, h).

    Each output pixel (x, y) samples the source at ``matrix⁻¹ · (x, y, 1)`` bilinearly; source
    pixels outside the image count as 0. ``method`` picks OpenCV's arithmetic: ``"fixed"``
    (≤ 4.10, the default) or ``"float"`` (≥ 4.11); see
    :func:`posebh.ops.warp_reference.warp_affine_reference` for the details.

    Args:
        backend: ``"auto"`` (C++ when its extension loads, else the reference), ``"cpp"`` or
            ``"torch"`` (the NumPy reference); a forced backend that cannot run raises
            RuntimeError.

    Raises:
        ValueError: image not uint8 [H, W(, C)] or empty, matrix not 6 numbers, out_size not
            two non-negative sizes, or an unknown method.
    """
    img, m, w_out, h_out = _validate(image, matrix, out_size, method)
    chosen = _auto_backend() if backend == "auto" else WARP.select(backend, _CPU_INFO)
    out = chosen.fn(img, m, w_out, h_out, method)
    return out if np.ndim(image) == 3 else out[..., 0]


def normalize_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``image`` [H, W, C] → float32 tensor [C, H, W] = (image / 255 − mean) / std, each
    step one float32 operation in that order (the official ``ToTensor`` + ``NormalizeTensor``).

    The C++ op when the warp extension is loaded (one vectorised pass, ~0.03 ms for a
    256×192×3 crop), else ``reference`` (NumPy): the same IEEE operations, so the same bits.
    """
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or not len(mean) == len(std) == img.shape[2]:
        raise ValueError(
            f"image must be uint8 [H, W, C] with C = len(mean) = len(std), got {img.dtype} "
            f"{img.shape}, {len(mean)} means and {len(std)} stds"
        )
    if _auto_backend().name != "cpp":
        return normalize_image_reference(img, mean, std)
    src = _read_only_tensor(img)
    return torch.ops.posebh.normalize_image.default(
        src, [float(m) for m in mean], [float(s) for s in std]
    )


def normalize_image_reference(
    image: np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """The NumPy form of :func:`normalize_image`: float32 /255, −mean, /std."""
    x = np.asarray(image).astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def warp_normalize_batch(
    image: np.ndarray,
    matrices: Sequence[Any],
    out_size: Sequence[int],
    method: Literal["fixed", "float"],
    mean: Sequence[float],
    std: Sequence[float],
) -> Tensor:
    """The crops of several boxes of one ``image`` [H, W, C] uint8, normalised: float32
    [N, C, h, w], item i = ``normalize_image(warp_affine(image, matrices[i], out_size, method),
    mean, std)`` bit for bit — one C++ call instead of 2N when the extension is loaded."""
    img = np.asarray(image)
    flat = [v for m in matrices for v in _validate(img, m, out_size, method)[1]]
    w_out, h_out = int(out_size[0]), int(out_size[1])
    if img.ndim != 3 or not len(mean) == len(std) == img.shape[2]:
        raise ValueError(
            f"image must be [H, W, C] with C = len(mean) = len(std), got {img.shape}, "
            f"{len(mean)} means and {len(std)} stds"
        )
    if _auto_backend().name != "cpp":
        crops = [
            normalize_image_reference(warp_affine(img, m, out_size, method), mean, std)
            for m in matrices
        ]
        if crops:
            return torch.stack(crops)
        return torch.empty((0, img.shape[2], h_out, w_out), dtype=torch.float32)
    src = _read_only_tensor(img)
    return torch.ops.posebh.warp_normalize_batch.default(
        src, flat, w_out, h_out, method, [float(m) for m in mean], [float(s) for s in std]
    )
