"""Heatmap targets (UDP Gaussian, MSRA, Megvii, CombinedTarget) and small peak decoders.

Shape vocabulary: N instances, K keypoints, H×W heatmap (64×48 by default); coordinates are
(x, y) in heatmap pixels, pixel centres on the integer grid (the UDP convention).

What lives here is what training needs: rendering a Gaussian target at a sub-pixel location
(torch, used on the fly by the CSS pseudo labels) and reading sub-pixel peaks back, plus the
NumPy encodings of the data pipeline's ``TopDownGenerateTarget``
(:func:`msra_gaussian_heatmaps`, :func:`megvii_heatmaps` and :func:`udp_combined_target`;
:mod:`posebh.codecs` binds them to their decodes and picks one by name). In those, joints are
in *input-image* pixels (192×256 by default) and ``visible`` is the per-joint visibility;
targets are ``[K, H, W]`` float32 and weights ``[K, 1]``. The full NumPy decoding reference
(image-space transforms, flip averaging) is a separate module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from posebh.decode import (
    _reflect101,
    gaussian_kernel_1d,
    get_max_preds,
    post_dark_udp,
    quarter_offset_refine,
)

__all__ = [
    "heatmap_peaks",
    "megvii_heatmaps",
    "msra_gaussian_heatmaps",
    "udp_combined_target",
    "udp_gaussian_heatmaps",
]


def udp_gaussian_heatmaps(
    keypoints: Tensor,
    weights: Tensor | None = None,
    heatmap_size: tuple[int, int] = (48, 64),
    sigma: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """Render UDP Gaussian targets: heatmaps [N, K, H, W] float32, target_weight [N, K, 1].

    keypoints: [N, K, 2] (x, y) in heatmap pixels; weights: [N, K] visibility / weight
    (``None`` = all ones); heatmap_size: (W, H), the order of the official configs.

    Semantics of the official ``TopDownGenerateTarget`` (encoding 'UDP', GaussianHeatmap)
    with image size = heatmap size:

    * the Gaussian exp(−((x−μx)² + (y−μy)²) / 2σ²) is centred exactly on the sub-pixel
      location and evaluated on the integer grid;
    * it is truncated to the square window [m − 3σ, m + 3σ] around the rounded centre
      m = int(μ + 0.5) (``int`` truncates towards zero, as in the reference);
    * a joint whose window lies entirely outside the map (ul ≥ size or br < 0, with
      ul = int(m − 3σ), br = int(m + 3σ + 1)) gets weight 0 and an empty map.  Note the
      reference's ``br < 0``: a window ending exactly at column −1 keeps its weight with an
      all-zero map;
    * the map is drawn only where the weight exceeds 0.5 (a visibility flag); the returned
      weight is ``weights`` with the out-of-map joints zeroed.
    """
    if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
        raise ValueError(f"keypoints must be [N, K, 2], got {tuple(keypoints.shape)}")
    n, k, _ = keypoints.shape
    width, height = int(heatmap_size[0]), int(heatmap_size[1])
    device = keypoints.device
    if weights is None:
        weights = torch.ones(n, k, device=device)
    if weights.shape != (n, k):
        raise ValueError(f"weights must be [N, K] = {(n, k)}, got {tuple(weights.shape)}")

    # float64 throughout: the reference computes the window in Python ints and the Gaussian
    # in float64 before storing float32.
    kp = keypoints.detach().to(torch.float64)
    tmp = 3.0 * float(sigma)
    size = int(2 * tmp + 1)
    centre = float(size // 2)
    mu = torch.trunc(kp + 0.5)  # [N, K, 2] rounded centre, truncated like int()
    ul = torch.trunc(mu - tmp)
    br = torch.trunc(mu + tmp + 1)
    limits = torch.tensor([width, height], dtype=torch.float64, device=device)
    outside = ((ul >= limits) | (br < 0)).any(dim=-1)  # [N, K]
    w = weights.to(torch.float32).masked_fill(outside, 0.0)
    draw = (weights > 0.5) & ~outside

    # Separable: exp(−(dx² + dy²)/2σ²) = gx · gy, which keeps memory at one float32 map.
    # Position inside the reference's window array: i = p − ul; its centre is
    # size//2 + (μ − m), so the offset is p − ul − centre − (μ − m).
    def axis_profile(axis: int, length: int) -> Tensor:
        p = torch.arange(length, dtype=torch.float64, device=device)
        lo, hi = ul[..., axis, None], br[..., axis, None]
        i = p - lo
        d = i - (centre + (kp[..., axis, None] - mu[..., axis, None]))
        inside = (p >= lo) & (p < hi) & (i < size)
        return torch.exp(-(d * d) / (2.0 * sigma * sigma)) * inside

    gx = axis_profile(0, width)  # [N, K, W]
    gy = axis_profile(1, height)  # [N, K, H]
    heatmaps = (gy[..., :, None] * gx[..., None, :]).to(torch.float32)
    heatmaps = heatmaps * draw[..., None, None]
    return heatmaps, w[..., None]


def heatmap_peaks(
    heatmaps: Tensor,
    refine: Literal["quarter", "dark_udp", "none"] = "quarter",
    ksize: int = 11,
) -> tuple[Tensor, Tensor]:
    """Sub-pixel peaks of heatmaps [N, K, H, W]: xy [N, K, 2] float32, maxval [N, K].

    refine:
      * ``"quarter"``: the official ``post_process='default'`` (non-UDP) step — move 0.25 px
        towards the higher neighbour on each axis, only for peaks with 1 < x < W−1 and
        1 < y < H−1;
      * ``"dark_udp"``: ``_get_max_preds`` + ``post_dark_udp(kernel=ksize)``, which is what
        the official CSS (``KptProtoHead.get_css_preds``) decodes with;
      * ``"none"``: the integer argmax (maps whose maximum is not positive give (−1, −1)).

    A thin wrapper over the decoding reference (:mod:`posebh.decode`), which is bit-exact with
    the official NumPy/OpenCV code; results come back on the input's device.  No gradient
    flows through them (decoding is a label-making step).
    """
    if refine not in ("quarter", "dark_udp", "none"):
        raise ValueError(f"refine must be 'quarter', 'dark_udp' or 'none', got {refine!r}")
    heatmaps = heatmaps.detach()
    xy, maxval = get_max_preds(heatmaps)
    if refine == "dark_udp":
        xy = post_dark_udp(xy, heatmaps, kernel=ksize)
    elif refine == "quarter":
        xy = quarter_offset_refine(heatmaps, xy)
    return xy.to(torch.float32), maxval[..., 0].to(heatmaps.dtype)


# ---------------------------------------------------------------------------------------------
# TopDownGenerateTarget (NumPy): MSRA, Megvii, UDP Gaussian / CombinedTarget, padding
# ---------------------------------------------------------------------------------------------


def _joints_and_visibility(joints: Any, visible: Any) -> tuple[np.ndarray, np.ndarray]:
    """(xy [..., K, 2] in the joints' float dtype, visibility [..., K] float32).

    joints: [K, 2|3] or [N, K, 2|3]; visible: the same leading shape, either [..., K] or the
    mmpose layout [..., K, 3] whose column 0 is used.
    """
    j = np.asarray(joints)
    if j.ndim not in (2, 3) or j.shape[-1] not in (2, 3):
        raise ValueError(f"joints must be [K, 2|3] or [N, K, 2|3], got {j.shape}")
    xy = j[..., :2]
    if not np.issubdtype(xy.dtype, np.floating):
        xy = xy.astype(np.float32)
    v = np.asarray(visible, dtype=np.float32)
    if v.ndim == j.ndim:
        v = v[..., 0]
    if v.shape != j.shape[:-1]:
        raise ValueError(f"visible must be {j.shape[:-1]} or {(*j.shape[:-1], 3)}, got {v.shape}")
    return xy, v


def msra_gaussian_heatmaps(
    joints: Any,
    visible: Any,
    heatmap_size: Sequence[int] = (48, 64),
    image_size: Sequence[int] = (192, 256),
    sigma: float = 2.0,
    unbiased: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The official ``_msra_generate_target``: target [..., K, H, W], weight [..., K, 1] float32.

    joints: [K, 2|3] or [N, K, 2|3] in input-image pixels; visible: [..., K] or [..., K, 3]
    (column 0); sizes are (w, h). The heatmap position is joints / (image_size / heatmap_size).

    ``unbiased=False`` (the MSRA default): the Gaussian is centred on the **rounded** position
    m = int(μ + 0.5) and drawn on the window [m − 3σ, m + 3σ] — ``int`` truncates towards zero,
    so μ = −0.7 rounds to 0, not −1. A joint whose window misses the map (ul ≥ size or
    br < 0, with ul = int(m − 3σ) and br = int(m + 3σ + 1)) gets weight 0. The test is
    ``br < 0``, **not** ``br ≤ 0``: a window ending just left of / above the map keeps weight 1
    with an all-zero map (the official quirk; the golden ``msra`` case, joint 1 at x = −30).

    ``unbiased=True`` (DARK): the Gaussian is centred at the exact sub-pixel μ over the whole
    map, with the same window test on the unrounded bounds. The exponent is evaluated in
    float32 as the official NumPy 1.x code does (μ rounded to float32 first).

    The weight is the visibility (zeroed for joints off the map); the map is drawn only where
    that weight exceeds 0.5.
    """
    xy, v = _joints_and_visibility(joints, visible)
    w_hm, h_hm = int(heatmap_size[0]), int(heatmap_size[1])
    stride = np.asarray(image_size, dtype=np.float64) / np.array([w_hm, h_hm], dtype=np.float64)
    mu = xy.astype(np.float64) / stride  # [..., K, 2] heatmap pixels
    tmp = float(sigma) * 3.0
    limits = np.array([w_hm, h_hm], dtype=np.float64)
    denom = np.float32(2.0 * float(sigma) ** 2)
    grid_x = np.arange(w_hm, dtype=np.float32)
    grid_y = np.arange(h_hm, dtype=np.float32)

    if unbiased:
        outside = ((mu - tmp >= limits) | (mu + tmp + 1 < 0)).any(axis=-1)
        weight = np.where(outside, np.float32(0.0), v).astype(np.float32)
        mu32 = mu.astype(np.float32)
        dx = (grid_x - mu32[..., 0:1]) ** 2  # [..., K, W] float32
        dy = (grid_y - mu32[..., 1:2]) ** 2  # [..., K, H]
    else:
        m = np.trunc(mu + 0.5)
        ul = np.trunc(m - tmp)
        br = np.trunc(m + tmp + 1)
        outside = ((ul >= limits) | (br < 0)).any(axis=-1)
        weight = np.where(outside, np.float32(0.0), v).astype(np.float32)
        size = 2.0 * tmp + 1.0
        centre = size // 2  # the peak's index inside the official window array
        n_window = int(np.ceil(size))  # len(np.arange(0, size))

        def offsets(grid: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
            lo, hi = ul[..., axis : axis + 1], br[..., axis : axis + 1]
            i = grid.astype(np.float64) - lo  # index into the window
            inside = (grid >= lo) & (grid < hi) & (i < n_window)
            return ((i - centre).astype(np.float32)) ** 2, inside

        dx, in_x = offsets(grid_x, 0)
        dy, in_y = offsets(grid_y, 1)
    target = np.exp(-(dy[..., :, None] + dx[..., None, :]) / denom).astype(np.float32)
    if not unbiased:
        target *= in_y[..., :, None] & in_x[..., None, :]
    target *= (weight > 0.5)[..., None, None]
    return target, weight[..., None]


def _blurred_delta_profile(t: int, n: int, kernel: np.ndarray) -> np.ndarray:
    """1-D ``GaussianBlur`` of a unit impulse at t on n samples (reflect-101 border), float32."""
    r = len(kernel) // 2
    pos = np.arange(n)[:, None] + np.arange(-r, r + 1)[None, :]  # [n, k] source indices
    hits = _reflect101(pos, n) == t
    return np.where(hits, kernel[None, :], np.float32(0.0)).sum(axis=1, dtype=np.float32)


def megvii_heatmaps(
    joints: Any,
    visible: Any,
    heatmap_size: Sequence[int] = (48, 64),
    image_size: Sequence[int] = (192, 256),
    kernel: Sequence[int] = (11, 11),
) -> tuple[np.ndarray, np.ndarray]:
    """The official ``_megvii_generate_target``: target [K, H, W], weight [K, 1] float32.

    joints [K, 2|3] in input pixels, visible [K] or [K, 3]. A joint with visibility < 1 keeps
    that visibility as its weight and gets no map; otherwise the integer heatmap pixel
    (int(x·W / w), int(y·H / h)) — truncated towards zero — must lie on the map (else weight
    0); the map is ``cv2.GaussianBlur`` (``kernel``, σ from the kernel size, reflect-101
    border) of a unit impulse there, rescaled so that the impulse pixel is 255.
    """
    xy, v = _joints_and_visibility(joints, visible)
    if xy.ndim != 2:
        raise ValueError("megvii_heatmaps takes one instance: joints [K, 2|3]")
    w_hm, h_hm = int(heatmap_size[0]), int(heatmap_size[1])
    kx = gaussian_kernel_1d(int(kernel[0]))
    ky = gaussian_kernel_1d(int(kernel[1]))
    k = len(xy)
    target = np.zeros((k, h_hm, w_hm), dtype=np.float32)
    weight = v.astype(np.float32).copy()
    for j in range(k):
        if weight[j] < 1:
            continue
        tx = int(float(xy[j, 0]) * w_hm / float(image_size[0]))
        ty = int(float(xy[j, 1]) * h_hm / float(image_size[1]))
        if not (0 <= tx < w_hm and 0 <= ty < h_hm):
            weight[j] = 0.0
            continue
        px = _blurred_delta_profile(tx, w_hm, kx)
        py = _blurred_delta_profile(ty, h_hm, ky)
        hm = py[:, None] * px[None, :]
        target[j] = hm / np.float32(hm[ty, tx] / np.float32(255.0))
    return target, weight[:, None]


def udp_combined_target(
    joints: Any,
    visible: Any,
    heatmap_size: Sequence[int] = (48, 64),
    image_size: Sequence[int] = (192, 256),
    valid_radius_factor: float = 0.0546875,
) -> tuple[np.ndarray, np.ndarray]:
    """The official UDP ``CombinedTarget``: target [3K, H, W], weight [K, 1] float32.

    For joint k (position μ = joints / ((image_size − 1) / (heatmap_size − 1)) in heatmap
    pixels) and the radius R = valid_radius_factor · H: channel 3k is 1 on the disc
    ‖μ − p‖ ≤ R, channels 3k+1 and 3k+2 hold the offsets (μ − p)/R there (x then y). Only
    joints with visibility > 0.5 are drawn; the weight is the visibility, unchanged (no
    off-map test, unlike the Gaussian targets).
    """
    xy, v = _joints_and_visibility(joints, visible)
    if xy.ndim != 2:
        raise ValueError("udp_combined_target takes one instance: joints [K, 2|3]")
    w_hm, h_hm = int(heatmap_size[0]), int(heatmap_size[1])
    stride = (np.asarray(image_size, dtype=np.float64) - 1.0) / (np.array([w_hm, h_hm]) - 1.0)
    radius = float(valid_radius_factor) * h_hm
    mu = xy.astype(np.float64) / stride  # [K, 2]
    off_x = (mu[:, 0, None, None] - np.arange(w_hm)[None, None, :]) / radius  # [K, 1, W]
    off_y = (mu[:, 1, None, None] - np.arange(h_hm)[None, :, None]) / radius  # [K, H, 1]
    off_x, off_y = np.broadcast_arrays(off_x, off_y)
    keep = (off_x**2 + off_y**2 <= 1) & (v > 0.5)[:, None, None]
    target = np.stack([keep, off_x * keep, off_y * keep], axis=1).astype(np.float32)
    return target.reshape(3 * len(xy), h_hm, w_hm), v.astype(np.float32)[:, None]
