"""The pure-PyTorch reference of the prototype similarities (what the fused kernels reproduce).

Shapes: ``N`` embeddings (pixels) of ``F`` dimensions, ``J`` keypoint classes of ``M``
prototypes each (``prototypes`` ``[J, M, F]``), ``B × F × H × W`` embedding maps and
``B × K × H × W`` heatmaps. The similarity of an embedding to a prototype is ``|cos(e, p)|``;
a class score is the maximum over the class's ``M`` prototypes, clamped to
``[SCORE_MIN, SCORE_MAX]`` like the official ``kpt_class``.

It sits below both :mod:`posebh.ops.similarity` (its ``"torch"`` backend) and
:mod:`posebh.prototypes` (the model's prototypes, which call the fused op), so the two do not
import each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SCORE_MAX",
    "SCORE_MIN",
    "prototype_class_scores",
    "prototype_pair_similarity",
    "prototype_similarity_heatmaps",
]

#: Class scores are clamped into this range, as the official ``kpt_class``.
SCORE_MIN = 1.0e-4
SCORE_MAX = 1.0 - 1.0e-4


def prototype_pair_similarity(embeddings: Tensor, prototypes: Tensor) -> Tensor:
    """|cosine| similarity of every embedding to every prototype.

    Args:
        embeddings: [N, F], any norm (normalised here).
        prototypes: [J, M, F], any norm (normalised here, out of place).

    Returns:
        [N, J, M] in [0, 1]. Differentiable w.r.t. both inputs.
    """
    j, m, f = prototypes.shape
    # The official code runs this part in float32 with autocast disabled: |cos| near 1 must
    # stay accurate because PPD squares 1 − s.
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        dtype = prototypes.dtype
        e = F.normalize(embeddings.to(dtype), p=2, dim=-1)
        p = F.normalize(prototypes, p=2, dim=-1).reshape(j * m, f)
        return (e @ p.t()).abs().reshape(-1, j, m)


def prototype_class_scores(embeddings: Tensor, prototypes: Tensor) -> Tensor:
    """Class scores for all ``J`` classes: max over ``M`` of |cos|, clamped.

    Args:
        embeddings: [N, F].
        prototypes: [J, M, F].

    Returns:
        [N, J] in [1e-4, 1 − 1e-4].
    """
    sim = prototype_pair_similarity(embeddings, prototypes)
    return sim.amax(dim=2).clamp(SCORE_MIN, SCORE_MAX)


def prototype_similarity_heatmaps(
    embeddings: Tensor, prototypes: Tensor, class_slice: slice = slice(None)
) -> Tensor:
    """Reference (pure PyTorch) prototype heatmaps: the one a fused kernel must reproduce.

    ``out[b, k, y, x] = clamp(max_m |cos(embeddings[b, :, y, x], prototypes[c, m])|, 1e-4,
    1 − 1e-4)`` with ``c = class_slice.start + k``.

    All ``J`` classes are computed and then sliced, so a dataset's heatmaps equal the slice of
    the all-class heatmaps bit for bit (the matmul's blocking would otherwise depend on how many
    classes are computed). The extra classes cost ~J·M·F multiply-adds per pixel, negligible
    next to the backbone.

    Args:
        embeddings: [B, F, H, W] prototype-head output (not normalised).
        prototypes: [J, M, F].
        class_slice: the classes to return, e.g. ``KeypointPrototypes.class_slice(d)``.

    Returns:
        [B, K, H, W], contiguous, K = number of classes in ``class_slice``.
    """
    b, f, h, w = embeddings.shape
    flat = embeddings.permute(0, 2, 3, 1).reshape(b * h * w, f)
    scores = prototype_class_scores(flat, prototypes)[:, class_slice]
    return scores.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()
