"""Heatmap targets (UDP Gaussian encoding) and small peak decoders, in torch.

Shape vocabulary: N instances, K keypoints, H×W heatmap (64×48 by default); coordinates are
(x, y) in heatmap pixels, pixel centres on the integer grid (the UDP convention).

What lives here is what training needs on the fly (the CSS pseudo labels): rendering a
Gaussian target at a sub-pixel location and reading sub-pixel peaks back.  The full NumPy
decoding reference (image-space transforms, flip averaging) is a separate module.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "cv2_gaussian_kernel",
    "dark_udp_refine",
    "gaussian_blur",
    "heatmap_peaks",
    "max_preds",
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


def max_preds(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """Integer argmax: xy [N, K, 2] float32 and maxval [N, K] of heatmaps [N, K, H, W].

    The first maximum in row-major order wins (as NumPy's argmax); maps whose maximum is
    not positive give (−1, −1), as the official ``_get_max_preds``.
    """
    n, k, _, w = heatmaps.shape
    maxval, idx = heatmaps.reshape(n, k, -1).max(dim=-1)
    xy = torch.stack([idx % w, idx // w], dim=-1).to(torch.float32)
    xy = torch.where(maxval[..., None] > 0, xy, torch.full_like(xy, -1.0))
    return xy, maxval


# cv2.getGaussianKernel's fixed tables, used when sigma ≤ 0 and ksize ≤ 7 is odd.
_CV2_SMALL_KERNELS = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
}


def cv2_gaussian_kernel(ksize: int) -> Tensor:
    """The 1-D kernel [ksize] float64 of ``cv2.GaussianBlur(x, (ksize, ksize), 0)``.

    With sigma 0, OpenCV takes σ = 0.3·((ksize − 1)/2 − 1) + 0.8 (σ = 2 for ksize 11), except
    for odd ksize ≤ 7, where it uses fixed binomial-like tables.
    """
    if ksize % 2 != 1 or ksize < 1:
        raise ValueError(f"kernel size must be odd and positive, got {ksize}")
    if ksize in _CV2_SMALL_KERNELS:
        return torch.tensor(_CV2_SMALL_KERNELS[ksize], dtype=torch.float64)
    sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    x = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def gaussian_blur(heatmaps: Tensor, ksize: int = 11) -> Tensor:
    """``cv2.GaussianBlur(hm, (ksize, ksize), 0)`` on every map of heatmaps [N, K, H, W].

    Border: OpenCV's default BORDER_REFLECT_101, which is torch's ``reflect`` padding.
    """
    n, k, h, w = heatmaps.shape
    g = cv2_gaussian_kernel(ksize).to(heatmaps)
    r = ksize // 2
    x = heatmaps.reshape(n * k, 1, h, w)
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, ksize))
    x = F.conv2d(x, g.view(1, 1, ksize, 1))
    return x.reshape(n, k, h, w)


def dark_udp_refine(xy: Tensor, heatmaps: Tensor, ksize: int = 11) -> Tensor:
    """DARK refinement as the official ``post_dark_udp``: xy [N, K, 2] → refined [N, K, 2].

    heatmaps [N, K, H, W] are blurred (``gaussian_blur``), clipped to [0.001, 50] and
    log-transformed; one Newton step xy − (∇²L + εI)⁻¹∇L uses central differences at the
    integer peak, with edge-replicated borders, and ε = float32 eps.  The 2×2 solve runs in
    float64, as NumPy promotes it there.  Entries at (−1, −1) (non-positive maps) are left
    unchanged; the reference reads unrelated memory for them.
    """
    n, k, h, w = heatmaps.shape
    logm = gaussian_blur(heatmaps.detach(), ksize).clamp(0.001, 50.0).log()
    pad = F.pad(logm.reshape(n * k, 1, h, w), (1, 1, 1, 1), mode="replicate")
    pad = pad.reshape(n, k, h + 2, w + 2)
    valid = (xy >= 0).all(dim=-1)
    px = xy[..., 0].clamp(0, w - 1).long() + 1
    py = xy[..., 1].clamp(0, h - 1).long() + 1
    flat = pad.reshape(n, k, -1)

    def at(dx: int, dy: int) -> Tensor:
        return flat.gather(-1, ((py + dy) * (w + 2) + px + dx)[..., None])[..., 0]

    c = at(0, 0)
    xp, xm, yp, ym = at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
    dx = 0.5 * (xp - xm)
    dy = 0.5 * (yp - ym)
    dxx = xp - 2 * c + xm
    dyy = yp - 2 * c + ym
    dxy = 0.5 * (at(1, 1) - xp - yp + 2 * c - xm - ym + at(-1, -1))
    eps = float(np.finfo(np.float32).eps)
    a, b, d = dxx.double() + eps, dxy.double(), dyy.double() + eps
    det = a * d - b * b
    # inverse of [[a, b], [b, d]] applied to the gradient
    ox = (d * dx.double() - b * dy.double()) / det
    oy = (a * dy.double() - b * dx.double()) / det
    offset = torch.stack([ox, oy], dim=-1)
    refined = (xy.double() - offset).to(xy.dtype)
    return torch.where(valid[..., None], refined, xy)


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
      * ``"none"``: the integer argmax.

    No gradient flows through the result (decoding is a label-making step).
    """
    heatmaps = heatmaps.detach()
    xy, maxval = max_preds(heatmaps)
    if refine == "none":
        return xy, maxval
    if refine == "dark_udp":
        return dark_udp_refine(xy, heatmaps, ksize), maxval
    if refine != "quarter":
        raise ValueError(f"refine must be 'quarter', 'dark_udp' or 'none', got {refine!r}")
    n, k, h, w = heatmaps.shape
    px, py = xy[..., 0].long(), xy[..., 1].long()
    inner = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    flat = heatmaps.reshape(n, k, -1)

    def at(x: Tensor, y: Tensor) -> Tensor:
        idx = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1))[..., None]
        return flat.gather(-1, idx)[..., 0]

    diff = torch.stack([at(px + 1, py) - at(px - 1, py), at(px, py + 1) - at(px, py - 1)], -1)
    return xy + torch.sign(diff) * 0.25 * inner[..., None], maxval
