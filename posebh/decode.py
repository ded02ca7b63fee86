"""Heatmap decoding and test-time flip helpers (the pure NumPy/PyTorch reference).

Shape vocabulary: N instances, K keypoints, H×W heatmap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor


def flip_back(
    heatmaps: Tensor | np.ndarray, flip_indices: Sequence[int], shift: bool = False
) -> Tensor | np.ndarray:
    """Undo a horizontal input flip on heatmaps [N, K, H, W].

    Channel k takes the map of its mirror ``flip_indices[k]``, then W is reversed; applied
    twice it is the identity.  ``shift=True`` then moves the map one column right
    (``hm[..., 1:] = hm[..., :-1]``), the official ``shift_heatmap`` setting of the
    non-UDP evaluation configs.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {tuple(heatmaps.shape)}")
    k = heatmaps.shape[1]
    if sorted(flip_indices) != list(range(k)):
        raise ValueError(f"flip_indices must be a permutation of range({k}), got {flip_indices}")
    idx = list(flip_indices)
    if isinstance(heatmaps, np.ndarray):
        out = heatmaps[:, idx, :, ::-1].copy()
    else:
        out = heatmaps[:, idx].flip(-1)
    if shift:
        out[..., 1:] = out[..., :-1].clone() if isinstance(out, Tensor) else out[..., :-1].copy()
    return out
