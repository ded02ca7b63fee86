"""Heatmap codecs: one class per target encoding, with its ``encode`` and its ``decode``.

The mmpose 1.x codec idea: whoever needs a target encoding (the training pipeline, the
evaluation, the CSS pseudo labels) picks it here by name and gets the matching decode with it,
instead of branching on encoding names. The arithmetic stays where it is tested against the
official code: :mod:`posebh.targets` (encoding) and :mod:`posebh.decode` / :mod:`posebh.ops`
(decoding); a codec only binds the settings.

Shape vocabulary, used by every codec:

* ``N`` instances, ``K`` keypoints, ``H×W`` heatmap (``heatmap_size = (W, H)``, 48×64 by
  default) of an input crop of ``image_size = (w, h)`` pixels (192×256);
* :meth:`~HeatmapCodec.encode`: ``keypoints`` ``[K, 2|3]`` ``(x, y[, 0])`` in input-crop pixels
  and ``visible`` ``[K]`` or ``[K, 3]`` (column 0) → ``target`` ``[K, H, W]`` float32
  (``[3K, H, W]`` for :class:`UDPCombinedTarget`) and ``weight`` ``[K, 1]`` float32;
* :meth:`~HeatmapCodec.decode`: ``heatmaps`` ``[N, K, H, W]`` with ``center`` ``[N, 2]`` (box
  centre, pixels) and ``scale`` ``[N, 2]`` (box size in units of 200 px), optionally the raw
  ``flipped`` maps of the mirrored crops (flip test) → ``preds`` ``[N, K, 2]`` float32 in image
  pixels and ``maxvals`` ``[N, K, 1]``.

Encodings (``TopDownGenerateTarget`` of the official mmpose 0.x code, and its decode):

* ``"MSRA"`` (:class:`MSRAHeatmap`): Gaussian on the rounded (``unbiased``: exact) position,
  plain affine; decoded by arg-max + ``post_process`` (``'default'`` quarter-pixel step);
* ``"UDP"`` (:class:`UDPHeatmap`): Gaussian at the exact position with the ``size − 1``
  stride; decoded by DARK-UDP and the UDP transform;
* ``"Megvii"`` (:class:`MegviiHeatmap`): blurred impulse scaled to 255; ``'megvii'`` decode;
* ``"CombinedTarget"`` (:class:`UDPCombinedTarget`): UDP response disc + x/y offset maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from posebh import ops
from posebh.decode import flip_test_merge, keypoints_from_heatmaps
from posebh.targets import (
    _joints_and_visibility,
    heatmap_peaks,
    megvii_heatmaps,
    msra_gaussian_heatmaps,
    udp_combined_target,
    udp_gaussian_heatmaps,
)

__all__ = [
    "ENCODINGS",
    "HeatmapCodec",
    "MSRAHeatmap",
    "MegviiHeatmap",
    "UDPCombinedTarget",
    "UDPHeatmap",
    "decoding_codec",
    "generate_target",
    "get_codec",
]

Array = np.ndarray | Tensor


@dataclass(frozen=True)
class HeatmapCodec:
    """Base of the codecs: sizes and the decode settings shared by all of them.

    ``kernel`` is the odd Gaussian size of the blurring decodes (11 for σ = 2 targets);
    ``post_process`` the sub-pixel step of the decode (see
    :func:`posebh.decode.keypoints_from_heatmaps`).
    """

    image_size: tuple[int, int] = (192, 256)
    heatmap_size: tuple[int, int] = (48, 64)
    kernel: int = 11
    post_process: str | None = "default"

    #: The ``encoding`` name of the official configs.
    encoding: ClassVar[str] = ""
    #: The official ``target_type`` the decode expects.
    target_type: ClassVar[str] = "GaussianHeatmap"
    #: Whether the decode is UDP (DARK-UDP refinement, ``size − 1`` transform).
    use_udp: ClassVar[bool] = False

    def encode(self, keypoints: Any, visible: Any) -> tuple[np.ndarray, np.ndarray]:
        """Targets ``[K, H, W]`` and weights ``[K, 1]`` of one instance (module docstring)."""
        raise NotImplementedError

    def decode_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`posebh.decode.keypoints_from_heatmaps`."""
        return {
            "post_process": self.post_process,
            "use_udp": self.use_udp,
            "kernel": self.kernel,
            "target_type": self.target_type,
        }

    def decode(
        self,
        heatmaps: Array,
        center: Array,
        scale: Array,
        *,
        flipped: Array | None = None,
        flip_indices: Sequence[int] | None = None,
        shift: bool = False,
        backend: str = "auto",
    ) -> tuple[Any, Any]:
        """Keypoints in image pixels (:func:`posebh.ops.decode_heatmaps`, the flip test fused
        in when ``flipped`` is given; ``backend`` as there, ``"torch"`` = the reference)."""
        return ops.decode_heatmaps(
            heatmaps,
            center,
            scale,
            flipped=flipped,
            flip_indices=flip_indices,
            shift=shift,
            post_process=self.post_process,
            use_udp=self.use_udp,
            kernel=self.kernel,
            backend=backend,
        )


@dataclass(frozen=True)
class MSRAHeatmap(HeatmapCodec):
    """MSRA Gaussian (``unbiased``: DARK's exact-position Gaussian), σ in heatmap pixels."""

    sigma: float = 2.0
    unbiased: bool = False

    encoding: ClassVar[str] = "MSRA"

    def encode(self, keypoints: Any, visible: Any) -> tuple[np.ndarray, np.ndarray]:
        return msra_gaussian_heatmaps(
            keypoints, visible, self.heatmap_size, self.image_size, self.sigma, self.unbiased
        )


@dataclass(frozen=True)
class UDPHeatmap(HeatmapCodec):
    """UDP Gaussian (σ in heatmap pixels); decoded by DARK-UDP whatever ``post_process`` says
    (as the official UDP branch), except that ``'megvii'`` is rejected."""

    sigma: float = 2.0

    encoding: ClassVar[str] = "UDP"
    use_udp: ClassVar[bool] = True

    def stride(self) -> np.ndarray:
        """Input pixels per heatmap pixel, ``(image_size − 1) / (heatmap_size − 1)``."""
        size = np.asarray(self.heatmap_size, dtype=np.float64)
        return (np.asarray(self.image_size, dtype=np.float64) - 1.0) / (size - 1.0)

    def encode(self, keypoints: Any, visible: Any) -> tuple[np.ndarray, np.ndarray]:
        xy, v = _joints_and_visibility(keypoints, visible)
        if xy.ndim != 2:
            raise ValueError("UDPHeatmap.encode takes one instance: keypoints [K, 2|3]")
        kp = torch.from_numpy(xy.astype(np.float64) / self.stride())[None]
        hm, w = self.render(kp, torch.from_numpy(v)[None])
        return hm[0].numpy(), w[0].numpy()

    def render(self, keypoints: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Targets of keypoints already in heatmap pixels, batched on any device:
        ``keypoints`` ``[N, K, 2]``, ``weights`` ``[N, K]`` → ``[N, K, H, W]``, ``[N, K, 1]``
        (:func:`posebh.targets.udp_gaussian_heatmaps`)."""
        w, h = self.heatmap_size
        return udp_gaussian_heatmaps(keypoints, weights, (int(w), int(h)), self.sigma)

    def peaks(self, heatmaps: Tensor, refine: str = "dark_udp") -> tuple[Tensor, Tensor]:
        """Sub-pixel peaks in heatmap pixels, ``xy`` ``[N, K, 2]`` and ``maxval`` ``[N, K]``
        (:func:`posebh.targets.heatmap_peaks`; ``"dark_udp"`` uses this codec's kernel)."""
        return heatmap_peaks(heatmaps, refine, self.kernel)  # type: ignore[arg-type]


@dataclass(frozen=True)
class MegviiHeatmap(HeatmapCodec):
    """Megvii: a unit impulse blurred with OpenCV's Gaussian of ``target_kernel``, scaled to
    255 at the impulse; decoded with ``post_process='megvii'``."""

    target_kernel: tuple[int, int] = (11, 11)
    post_process: str | None = "megvii"

    encoding: ClassVar[str] = "Megvii"

    def encode(self, keypoints: Any, visible: Any) -> tuple[np.ndarray, np.ndarray]:
        return megvii_heatmaps(
            keypoints, visible, self.heatmap_size, self.image_size, self.target_kernel
        )


@dataclass(frozen=True)
class UDPCombinedTarget(HeatmapCodec):
    """UDP ``CombinedTarget``: per joint a response disc of radius ``valid_radius_factor · H``
    and the x/y offsets inside it (``3K`` channels); decoded by the reference only."""

    valid_radius_factor: float = 0.0546875

    encoding: ClassVar[str] = "UDP"
    target_type: ClassVar[str] = "CombinedTarget"
    use_udp: ClassVar[bool] = True

    def encode(self, keypoints: Any, visible: Any) -> tuple[np.ndarray, np.ndarray]:
        return udp_combined_target(
            keypoints, visible, self.heatmap_size, self.image_size, self.valid_radius_factor
        )

    def decode(
        self,
        heatmaps: Array,
        center: Array,
        scale: Array,
        *,
        flipped: Array | None = None,
        flip_indices: Sequence[int] | None = None,
        shift: bool = False,
        backend: str = "auto",
    ) -> tuple[Any, Any]:
        if backend not in ("auto", "torch"):
            raise ValueError(f"CombinedTarget is decoded by the reference only, not {backend!r}")
        if flipped is not None:
            heatmaps = flip_test_merge(
                heatmaps, flipped, list(flip_indices or ()), shift, target_type=self.target_type
            )
        return keypoints_from_heatmaps(heatmaps, center, scale, **self.decode_kwargs())


#: Codec class per official ``encoding`` name (Gaussian targets).
ENCODINGS: dict[str, type[HeatmapCodec]] = {
    "MSRA": MSRAHeatmap,
    "UDP": UDPHeatmap,
    "Megvii": MegviiHeatmap,
}


def get_codec(encoding: str, target_type: str = "GaussianHeatmap", **settings: Any) -> HeatmapCodec:
    """The codec of an official ``encoding`` (``"MSRA"``, ``"UDP"``, ``"Megvii"``) and
    ``target_type`` (``"GaussianHeatmap"``, or ``"CombinedTarget"`` with UDP); ``settings``
    are its fields (sizes, ``sigma``, ``kernel``, ...)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be 'MSRA', 'UDP' or 'Megvii', got {encoding!r}")
    kind = str(target_type).lower()
    if kind not in ("gaussianheatmap", "combinedtarget"):
        raise ValueError(
            f"target_type must be 'GaussianHeatmap' or 'CombinedTarget', got {target_type!r}"
        )
    if kind == "combinedtarget" and encoding == "UDP":
        return UDPCombinedTarget(**settings)
    return ENCODINGS[encoding](**settings)


def decoding_codec(
    use_udp: bool, post_process: str | None = "default", kernel: int = 11
) -> HeatmapCodec:
    """The codec whose decode is the given evaluation setting (as in the configs' ``test_cfg``):
    UDP when ``use_udp``, Megvii for ``post_process='megvii'``, MSRA otherwise."""
    if use_udp:
        return UDPHeatmap(kernel=kernel, post_process=post_process)
    if post_process == "megvii":
        return MegviiHeatmap(kernel=kernel)
    return MSRAHeatmap(kernel=kernel, post_process=post_process)


def generate_target(
    joints: Any,
    joints_visible: Any,
    *,
    encoding: str = "MSRA",
    sigma: float = 2.0,
    image_size: Sequence[int] = (192, 256),
    heatmap_size: Sequence[int] = (48, 64),
    unbiased_encoding: bool = False,
    target_type: str = "GaussianHeatmap",
    kernel: Sequence[int] = (11, 11),
    valid_radius_factor: float = 0.0546875,
    joint_weights: Sequence[float] | None = None,
    use_different_joint_weights: bool = False,
    max_num_joints: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The official ``TopDownGenerateTarget.__call__`` for one instance.

    joints [K, 3] (x, y, 0) in input-image pixels, joints_visible [K, 3] (or [K]); sizes
    (w, h). Returns target [C, H, W] float32 and target_weight [K', 1] float32, where C = K
    (3K for ``CombinedTarget``) and K' = K.

    * the encoding is the codec :func:`get_codec` picks for ``encoding`` / ``target_type``
      (``unbiased_encoding`` = DARK for MSRA; ``kernel`` the Megvii blur);
    * ``use_different_joint_weights`` multiplies the weights by ``joint_weights`` [K]
      (MSRA and UDP only, as the official code);
    * ``max_num_joints`` (the PoseBH multi-dataset padding): zero channels are appended to
      the target and zero rows to the weight up to ``max_num_joints`` — ``max_num_joints − K``
      of each, also for ``CombinedTarget`` (as the official code).

    The official weight is float64 after the joint-weight product; it is float32 here.
    """
    xy, _ = _joints_and_visibility(joints, joints_visible)
    if xy.ndim != 2:
        raise ValueError("generate_target takes one instance: joints [K, 3]")
    k = len(xy)
    sizes = {"image_size": tuple(image_size), "heatmap_size": tuple(heatmap_size)}
    if encoding == "MSRA":
        settings: dict[str, Any] = {"sigma": sigma, "unbiased": unbiased_encoding}
    elif encoding == "Megvii":
        settings = {"target_kernel": (int(kernel[0]), int(kernel[1]))}
    elif str(target_type).lower() == "combinedtarget":
        settings = {"valid_radius_factor": valid_radius_factor}
    else:
        settings = {"sigma": sigma}
    # MSRA and Megvii ignore target_type, as the official code.
    codec = get_codec(encoding, target_type if encoding == "UDP" else "GaussianHeatmap",
                      **sizes, **settings)  # fmt: skip
    target, weight = codec.encode(joints, joints_visible)
    if use_different_joint_weights and encoding != "Megvii":
        if joint_weights is None or len(joint_weights) != k:
            raise ValueError(f"use_different_joint_weights needs {k} joint_weights")
        jw = np.asarray(joint_weights, dtype=np.float64)[:, None]
        weight = (weight.astype(np.float64) * jw).astype(np.float32)
    if max_num_joints is not None:
        pad = int(max_num_joints) - k
        if pad < 0:
            raise ValueError(f"max_num_joints={max_num_joints} is below the {k} joints")
        # Into calloc'd zeros (pages the kernel zeroes lazily) rather than concatenating
        # 133 - K channels of written zeros: the padded target is 1.6 MB per sample.
        padded = np.zeros((len(target) + pad, *target.shape[1:]), np.float32)
        padded[: len(target)] = target
        target = padded
        weight = np.concatenate([weight, np.zeros((pad, 1), np.float32)])
    return target.astype(np.float32, copy=False), weight.astype(np.float32, copy=False)
