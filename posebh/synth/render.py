"""Drawing SynthPose scenes with NumPy + Pillow: backgrounds, depth-sorted primitives, a part-label
buffer for occlusion, and the deterministic JPEG encoding.

Shapes: background ``[H, W, 3]`` uint8; the label buffer ``[H, W]`` int32, where a pixel holds
``(figure + 1) · LABEL_STRIDE + part`` for a figure's part, a value in ``1 … LABEL_STRIDE − 1``
for a distractor (occluder) shape, and 0 for the background. Points are ``[k, 2]`` float
pixels (0-based, pixel centres at integers, which is how ``ImageDraw`` rasterises them).

Everything random draws from the caller's ``numpy.random.Generator``; nothing here touches a
global RNG, so a scene is a pure function of its seed.
"""

from __future__ import annotations

import colorsys
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = [
    "JPEG_QUALITY",
    "LABEL_STRIDE",
    "Prim",
    "background",
    "convex_hull",
    "encode_jpeg",
    "finish",
    "hsv",
    "mix",
    "render",
    "textured_patch",
]

#: Label-buffer stride: parts of figure i are ``(i + 1) * LABEL_STRIDE + part``.
LABEL_STRIDE = 64
#: Fixed JPEG quality of every image (with 4:2:0 subsampling and no optimisation pass, so
#: Pillow's libjpeg output is byte-identical for identical pixels).
JPEG_QUALITY = 90

Color = tuple[int, int, int]


def hsv(h: float, s: float, v: float) -> Color:
    """HSV in [0, 1] → an RGB uint8 triple."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def mix(a: Color, b: Color, t: float) -> Color:
    """Linear blend (1 − t)·a + t·b of two RGB triples."""
    return tuple(round((1 - t) * x + t * y) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull [h, 2] (counter-clockwise, monotone chain) of points [k, 2]."""
    pts = sorted(map(tuple, np.asarray(points, dtype=np.float64).tolist()))
    if len(pts) <= 2:
        return np.asarray(pts)

    def cross(o: tuple, a: tuple, b: tuple) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple] = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple] = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.asarray(lower[:-1] + upper[:-1])


@dataclass
class Prim:
    """One depth-sorted drawing unit: ``ops`` drawn in order with one ``label``.

    ``depth`` is the camera z (metres) used by the painter's algorithm (far first). Ops:
    ``("poly", pts [k, 2], rgb)``, ``("ellipse", (cx, cy, rx, ry), rgb)``,
    ``("capsule", p0 [2], p1 [2], r0, r1, rgb)`` (a tapered limb with round ends),
    ``("line", pts [k, 2], width, rgb)`` and ``("patch", (x0, y0), texture RGB Image,
    mask L Image)`` (a textured shape pasted at integer offset (x0, y0)).
    """

    depth: float
    label: int
    ops: list[tuple[Any, ...]] = field(default_factory=list)


def _xy(pts: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in np.asarray(pts).reshape(-1, 2)]


def _capsule(
    d: ImageDraw.ImageDraw, p0: np.ndarray, p1: np.ndarray, r0: float, r1: float, fill: Any
) -> None:
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    if max(r0, r1) < 0.75:
        # Sub-pixel limbs: a 1-px line keeps thin fingers drawn (and labelled) at all.
        d.line(_xy(np.stack([p0, p1])), fill=fill, width=1)
        return
    v = p1 - p0
    n = float(np.hypot(v[0], v[1]))
    if n > 1e-6:
        perp = np.array([-v[1], v[0]]) / n
        d.polygon(
            _xy(np.stack([p0 + perp * r0, p1 + perp * r1, p1 - perp * r1, p0 - perp * r0])),
            fill=fill,
        )
    for c, r in ((p0, r0), (p1, r1)):
        d.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill)


def _draw_op(d: ImageDraw.ImageDraw, op: tuple[Any, ...], fill: Any) -> None:
    kind = op[0]
    if kind == "poly":
        pts = _xy(op[1])
        if len(pts) >= 3:
            d.polygon(pts, fill=fill)
    elif kind == "ellipse":
        cx, cy, rx, ry = op[1]
        rx, ry = max(rx, 0.5), max(ry, 0.5)
        d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill)
    elif kind == "capsule":
        _capsule(d, op[1], op[2], op[3], op[4], fill)
    elif kind == "line":
        pts = _xy(op[1])
        if len(pts) >= 2:
            d.line(pts, fill=fill, width=max(1, int(op[2])))
    else:  # pragma: no cover - programming error
        raise ValueError(f"unknown op {kind!r}")


def render(bg: np.ndarray, prims: Sequence[Prim]) -> tuple[Image.Image, np.ndarray]:
    """Draw ``prims`` over ``bg`` [H, W, 3] far-to-near; returns (RGB image, labels [H, W]).

    Ties in depth keep the list order, so the result is deterministic.
    """
    h, w = bg.shape[:2]
    rgb = Image.fromarray(bg, "RGB")
    lab = Image.new("I", (w, h), 0)
    d_rgb = ImageDraw.Draw(rgb)
    d_lab = ImageDraw.Draw(lab)
    order = sorted(range(len(prims)), key=lambda i: (-prims[i].depth, i))
    for i in order:
        prim = prims[i]
        for op in prim.ops:
            if op[0] == "patch":
                (x0, y0), tex, mask = op[1], op[2], op[3]
                rgb.paste(tex, (x0, y0), mask)
                lab.paste(prim.label, (x0, y0, x0 + mask.width, y0 + mask.height), mask)
                continue
            _draw_op(d_rgb, op, op[-1])
            _draw_op(d_lab, op, prim.label)
    return rgb, np.asarray(lab, dtype=np.int32)


# ------------------------------------------------------------------------------------------
# Textures and backgrounds
# ------------------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, w: int, h: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1], [h, w]: a coarse random grid upsampled bicubically."""
    gw, gh = max(2, w // cell + 2), max(2, h // cell + 2)
    grid = (rng.random((gh, gw)) * 255).astype(np.uint8)
    big = Image.fromarray(grid, "L").resize((gw * cell, gh * cell), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32)[:h, :w] / 255.0


def _pattern(rng: np.random.Generator, kind: str, w: int, h: int) -> np.ndarray:
    """A scalar pattern t in [0, 1], [h, w], of the given kind."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, np.pi)
    proj = xx * np.cos(a) + yy * np.sin(a)
    if kind == "gradient":
        t = (proj - proj.min()) / max(1e-6, float(proj.max() - proj.min()))
    elif kind == "stripes":
        period = rng.uniform(6, 40)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * proj / period)
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
    elif kind == "checker":
        p = rng.uniform(8, 40)
        t = ((np.floor(xx / p) + np.floor(yy / p)) % 2).astype(np.float32)
    elif kind == "horizon":
        # Sky above, ground below a slightly tilted horizon, each with its own gradient.
        y0 = h * rng.uniform(0.25, 0.6) + (xx - w / 2) * np.tan(rng.uniform(-0.1, 0.1))
        t = np.where(yy < y0, 0.25 * yy / np.maximum(y0, 1), 0.6 + 0.4 * (yy - y0) / h)
    else:  # "noise"
        t = _smooth_noise(rng, w, h, int(rng.integers(6, 40)))
    return t.astype(np.float32)


def background(
    rng: np.random.Generator,
    w: int,
    h: int,
    kinds: Sequence[str],
    palette: Sequence[tuple[float, float, float, float, float, float]],
    noise: float = 6.0,
) -> np.ndarray:
    """A textured background [h, w, 3] uint8.

    ``kinds`` are drawn from ("gradient", "stripes", "checker", "horizon", "noise");
    ``palette`` entries are HSV ranges ``(h0, h1, s0, s1, v0, v1)`` the two colours are drawn
    from. A second, low-frequency noise layer and Gaussian pixel noise of ``noise`` grey
    levels are added so that no two backgrounds are flat.
    """
    kind = kinds[int(rng.integers(len(kinds)))]
    t = _pattern(rng, kind, w, h)[..., None]
    cols = []
    for _ in range(2):
        h0, h1, s0, s1, v0, v1 = palette[int(rng.integers(len(palette)))]
        cols.append(np.array(hsv(rng.uniform(h0, h1), rng.uniform(s0, s1), rng.uniform(v0, v1))))
    c0, c1 = (np.asarray(c, dtype=np.float32) for c in cols)
    img = c0 + t * (c1 - c0)
    img += (_smooth_noise(rng, w, h, 24)[..., None] - 0.5) * np.float32(rng.uniform(10, 50))
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(noise)
    return np.clip(img, 0, 255).astype(np.uint8)


def textured_patch(
    rng: np.random.Generator, w: int, h: int, base: Color, shape: str
) -> tuple[Image.Image, Image.Image]:
    """(texture RGB, mask L) of size (w, h) for a distractor: a rectangle, ellipse or polygon
    filled with stripes / noise around ``base``."""
    w, h = max(2, w), max(2, h)
    t = _pattern(rng, ("stripes", "noise", "checker")[int(rng.integers(3))], w, h)[..., None]
    other = np.array(base) * rng.uniform(0.4, 0.8)
    tex = np.clip((1 - t) * np.array(base) + t * other, 0, 255).astype(np.uint8)
    mask = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(mask)
    if shape == "rect":
        d.rectangle([0, 0, w - 1, h - 1], fill=255)
    elif shape == "ellipse":
        d.ellipse([0, 0, w - 1, h - 1], fill=255)
    else:
        k = int(rng.integers(4, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(0.6, 1.0, k)
        pts = np.stack(
            [(0.5 + 0.5 * rad * np.cos(ang)) * (w - 1), (0.5 + 0.5 * rad * np.sin(ang)) * (h - 1)],
            1,
        )
        d.polygon(_xy(pts), fill=255)
    return Image.fromarray(tex, "RGB"), mask


# ------------------------------------------------------------------------------------------
# Post-processing and encoding
# ------------------------------------------------------------------------------------------


def _motion_blur(img: np.ndarray, length: int, angle: float) -> np.ndarray:
    """Average of ``length`` copies shifted along ``angle`` (a camera-shake streak)."""
    if length <= 1:
        return img
    h, w = img.shape[:2]
    pad = length
    padded = np.pad(img.astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    acc = np.zeros((h, w, img.shape[2]), dtype=np.float32)
    for k in range(length):
        s = k - (length - 1) / 2
        dx, dy = round(s * np.cos(angle)), round(s * np.sin(angle))
        acc += padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
    return np.clip(acc / length + 0.5, 0, 255).astype(np.uint8)


def finish(
    image: Image.Image,
    rng: np.random.Generator,
    *,
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0),
    gamma: float = 1.0,
    noise: float = 3.0,
    blur_prob: float = 0.0,
    motion_blur: tuple[int, int] | None = None,
) -> Image.Image:
    """Camera-like finishing of a rendered image: optional motion blur (``motion_blur`` =
    (min, max) streak length, APT-36K-like video), optional slight defocus, a per-dataset
    colour cast (``gain``, ``gamma``) and sensor noise."""
    arr = np.asarray(image)
    if motion_blur is not None:
        arr = _motion_blur(
            arr, int(rng.integers(motion_blur[0], motion_blur[1] + 1)), rng.uniform(0, np.pi)
        )
    if blur_prob > 0 and rng.random() < blur_prob:
        arr = np.asarray(
            Image.fromarray(arr).filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0)))
        )
    x = arr.astype(np.float32) * np.float32(1 / 255)
    if gamma != 1.0:
        x = np.power(x, np.float32(gamma))
    x *= np.asarray(gain, dtype=np.float32) * np.float32(255)
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(noise) + np.float32(0.5)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8), "RGB")


def encode_jpeg(image: Image.Image) -> bytes:
    """JPEG bytes at the fixed quality (baseline, 4:2:0, no optimisation: deterministic)."""
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=2, optimize=False)
    return buf.getvalue()
