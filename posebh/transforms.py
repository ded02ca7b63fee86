"""Geometric transforms of the top-down pipeline: crops, flips and the random augmentations.

Shape and unit vocabulary, used by every function below:

* an *image* is ``[H, W, 3]`` uint8 RGB (row y, column x); ``img_width`` is its W;
* ``joints`` are ``[K, 3]`` (x, y, z) in image pixels (z is unused and kept at 0) and
  ``visible`` ``[K, 3]`` is the per-joint visibility repeated over the columns (0 or 1 in
  columns 0 and 1, as mmpose's ``joints_3d_visible``); ``points`` are ``[..., 2]`` (x, y);
* ``center`` ``[2]`` is the box centre in pixels and ``scale`` ``[2]`` the box size (w, h) in
  units of 200 px (mmpose's ``pixel_std``); ``rotation`` is in degrees;
* ``image_size`` / ``output_size`` / ``heatmap_size`` are (w, h) — the order of the configs —
  default input 192×256 and heatmap 48×64;
* an affine ``matrix`` is ``[2, 3]`` mapping source (x, y, 1) to destination (x, y).

What is reproduced: ``get_affine_transform``, ``get_warp_matrix``, ``affine_transform`` /
``warp_affine_joints`` and ``fliplr_joints`` of mmpose 0.x ``post_transforms.py`` and the
``TopDownRandomFlip`` / ``TopDownHalfBodyTransform`` / ``TopDownGetRandomScaleRotation`` /
``TopDownAffine`` steps of ``top_down_transform.py`` (as shipped by the PoseBH release), written
from their semantics. Two facts worth knowing (golden suite README, items 6 and 7):

* the plain matrix (:func:`get_affine_transform`) and the UDP matrix (:func:`get_warp_matrix`)
  rotate in **opposite** directions for the same ``rotation``;
* the plain crop moves only the visible joints; the UDP crop moves all of them.

Numerics: the official code ran under NumPy 1.x, where a float32 *scalar* meeting a Python float
is promoted to float64; the scalar arithmetic below is therefore done in Python floats (float64)
from the float32-rounded inputs, which NumPy 2 would otherwise keep in float32.

``cv2.warpAffine`` is replaced by :func:`warp_affine`, OpenCV's bilinear warp with a constant-0
border reproduced bit for bit (the op :func:`posebh.ops.warp_affine`: a C++ kernel with a NumPy
reference): the fixed-point arithmetic of OpenCV ≤ 4.10 (the default) or the float32
arithmetic of OpenCV ≥ 4.11.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from posebh.decode import transform_preds
from posebh.ops import warp as ops_warp

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "affine_transform_points",
    "crop_joints",
    "crop_matrix",
    "flip_image",
    "fliplr_joints",
    "get_affine_transform",
    "get_warp_matrix",
    "half_body_center_scale",
    "normalize_image",
    "random_scale_rotation",
    "top_down_affine",
    "transform_preds",
    "warp_affine",
]

# The NormalizeTensor constants of every official config (ImageNet statistics, RGB order).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------
# Affine matrices
# ---------------------------------------------------------------------------------------------


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` plus ``a − b`` rotated by +90°, in float32 (the official ``_get_3rd_point``)."""
    d = (a - b).astype(np.float32)
    return (b + np.array([-d[1], d[0]], dtype=np.float32)).astype(np.float32)


def _solve_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 float64 matrix taking three points src [3, 2] onto dst [3, 2].

    ``cv2.getAffineTransform`` semantics: the float32 points are promoted to float64 and the
    6×6 system is solved by LU; a 3×3 solve of the same system agrees to ~1e-13.
    """
    s = np.concatenate([src.astype(np.float64), np.ones((3, 1))], axis=1)  # [3, 3]
    return np.linalg.solve(s, dst.astype(np.float64)).T  # [2, 3]


def get_affine_transform(
    center: Any,
    scale: Any,
    rot: float,
    output_size: Sequence[float],
    shift: Sequence[float] = (0.0, 0.0),
    inv: bool = False,
) -> np.ndarray:
    """The plain (non-UDP) crop matrix [2, 3] float64: box → ``output_size`` (or back if inv).

    The box is ``center`` ± ``scale``·200/2, rotated by ``rot`` degrees (positive rot turns the
    crop window clockwise in the image, so the content appears rotated counter-clockwise).
    Only the box *width* fixes the zoom (the height follows from ``output_size``'s aspect).
    ``shift`` moves the centre by a fraction of the box size. Three point pairs are formed in
    float32 — the centre, the centre plus the rotated half-width "up" vector, and a third point
    at +90° — exactly as the official code, and solved in float64.
    """
    c = np.asarray(center)
    s_px = np.asarray(scale) * 200.0  # keeps float32 for float32 scale, as the official code
    if c.shape != (2,) or s_px.shape != (2,) or len(output_size) != 2 or len(shift) != 2:
        raise ValueError("center, scale, output_size and shift must each have 2 entries")
    shift_px = s_px * np.asarray(shift, dtype=np.float64)
    src_w = float(s_px[0])
    dst_w, dst_h = float(output_size[0]), float(output_size[1])

    rot_rad = math.pi * float(rot) / 180.0
    sn, cs = math.sin(rot_rad), math.cos(rot_rad)
    up = src_w * -0.5  # the half-width vector (0, −w/2), rotated
    src_dir = np.array([-up * sn, up * cs])

    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = c + shift_px
    src[1] = c + src_dir + shift_px
    src[2] = _third_point(src[0], src[1])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = [dst_w * 0.5, dst_h * 0.5 + dst_w * -0.5]
    dst[2] = _third_point(dst[0], dst[1])
    return _solve_affine(dst, src) if inv else _solve_affine(src, dst)


def get_warp_matrix(
    theta: float,
    size_input: Any,
    size_dst: Any,
    size_target: Any,
) -> np.ndarray:
    """The UDP crop matrix [2, 3] float32 (the official ``get_warp_matrix``).

    ``size_input`` is twice the box centre (so ``size_input / 2`` is the centre), ``size_dst``
    the output size minus one (UDP measures sizes between the first and last pixel centres) and
    ``size_target`` the box size in pixels; ``theta`` is in degrees. The matrix maps
    p ↦ S · (R(θ) · (p − c) + size_target / 2) with c = size_input / 2,
    S = diag(size_dst / size_target) and R(θ) = [[cos, −sin], [sin, cos]]: for positive θ the
    content turns clockwise on screen — the opposite of :func:`get_affine_transform`.

    ``TopDownAffine(use_udp=True)`` calls it as
    ``get_warp_matrix(rot, center * 2, image_size − 1, scale * 200)``; see :func:`top_down_affine`.
    A float32 ``theta`` is converted to radians in float32, as ``np.deg2rad`` does.
    """
    th = float(np.deg2rad(theta))
    cs, sn = math.cos(th), math.sin(th)
    # .tolist() gives the exact Python floats of the (float32 or float64) entries.
    in_x, in_y = np.asarray(size_input, dtype=np.float64).reshape(2).tolist()
    dst_x, dst_y = np.asarray(size_dst, dtype=np.float64).reshape(2).tolist()
    tgt_x, tgt_y = np.asarray(size_target, dtype=np.float64).reshape(2).tolist()
    sx, sy = dst_x / tgt_x, dst_y / tgt_y
    # Each float64 entry rounded to float32, as assigning it into a float32 array does.
    return np.array(
        [
            [cs * sx, -sn * sx, sx * (-0.5 * in_x * cs + 0.5 * in_y * sn + 0.5 * tgt_x)],
            [sn * sy, cs * sy, sy * (-0.5 * in_x * sn - 0.5 * in_y * cs + 0.5 * tgt_y)],
        ],
        dtype=np.float32,
    )


def affine_transform_points(points: Any, matrix: Any) -> np.ndarray:
    """Apply a [2, 3] matrix to points [..., 2]; returns [..., 2].

    Computed as ``[x, y, 1] @ matrix.T`` in the promoted dtype of the two arguments (float32
    points with a float32 UDP matrix stay float32, as the official ``warp_affine_joints``).
    """
    p = np.asarray(points)
    m = np.asarray(matrix)
    if p.shape[-1] != 2 or m.shape != (2, 3):
        raise ValueError(f"points must be [..., 2] and matrix [2, 3], got {p.shape}, {m.shape}")
    dt = np.result_type(p.dtype, m.dtype, np.float32)
    flat = p.reshape(-1, 2).astype(dt)
    homo = np.concatenate([flat, np.ones((flat.shape[0], 1), dtype=dt)], axis=1)
    return np.dot(homo, m.astype(dt).T).reshape(p.shape)


def crop_joints(
    joints: np.ndarray,
    visible: np.ndarray,
    matrix: np.ndarray,
    use_udp: bool,
) -> np.ndarray:
    """Joints [K, 3] mapped into the crop by ``matrix``, as ``TopDownAffine`` does.

    UDP moves every joint (in the promoted dtype of joints and the float32 matrix); the plain
    variant moves only joints with ``visible[:, 0] > 0``, each computed in float64 and stored
    in the joints' dtype, and leaves the others where they were (in image coordinates).
    """
    out = np.array(joints, copy=True)
    if use_udp:
        out[:, :2] = affine_transform_points(out[:, :2], matrix)
    else:
        vis = np.asarray(visible)[:, 0] > 0.0
        moved = affine_transform_points(out[vis, :2].astype(np.float64), np.float64(matrix))
        out[vis, :2] = moved
    return out


# ---------------------------------------------------------------------------------------------
# The image warp (cv2.warpAffine, INTER_LINEAR, BORDER_CONSTANT 0)
# ---------------------------------------------------------------------------------------------


def warp_affine(
    image: np.ndarray,
    matrix: Any,
    out_size: Sequence[int],
    method: Literal["fixed", "float"] = "fixed",
) -> np.ndarray:
    """Warp image [H, W, C] (or [H, W]) uint8 by matrix [2, 3] into out_size (w, h), as
    ``cv2.warpAffine(image, matrix, out_size, flags=INTER_LINEAR)`` with a constant-0 border.

    ``method`` is OpenCV's arithmetic: ``"fixed"`` (≤ 4.10, the default: the era of the
    official mmpose 0.x training; the golden crops) or ``"float"`` (≥ 4.11). Runs the op
    :func:`posebh.ops.warp_affine` (the C++ kernel when its extension loads, else its NumPy
    reference :func:`posebh.ops.warp_reference.warp_affine_reference`, where both arithmetics
    are spelled out; the same bits either way).
    """
    return ops_warp.warp_affine(image, matrix, out_size, method)


def _check_crop_box(center: np.ndarray, scale: np.ndarray) -> None:
    """``ValueError`` unless ``center`` is finite and ``scale`` finite and > 0 (two checks on
    two numbers each: an empty or NaN box would give a division by zero, a singular matrix or,
    for a negative scale, a silently mirrored crop)."""
    c, s = center.reshape(-1).tolist(), scale.reshape(-1).tolist()
    if all(math.isfinite(v) for v in c + s) and all(v > 0 for v in s):
        return
    raise ValueError(
        f"crop box center {center.tolist()} / scale {scale.tolist()} (w, h in units of 200 px) "
        "is not finite with a positive scale: the box has zero, negative or NaN size. Fix: "
        "repair or drop the annotation or detection box it comes from (for a training "
        "half-body box: the instance's visible joints coincide)."
    )


def top_down_affine(
    image: np.ndarray,
    joints: np.ndarray,
    visible: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    rotation: float,
    image_size: Sequence[int] = (192, 256),
    use_udp: bool = False,
    warp_method: Literal["fixed", "float"] = "fixed",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The official ``TopDownAffine``: (crop [h, w, 3] uint8, joints [K, 3], matrix [2, 3]).

    UDP: ``get_warp_matrix(rotation, center·2, image_size − 1, scale·200)`` (float32 matrix);
    plain: ``get_affine_transform(center, scale, rotation, image_size)`` (float64). The
    products ``center·2`` and ``scale·200`` keep the dtype of ``center``/``scale``.
    ``ValueError`` if ``center`` is not finite or ``scale`` not finite and positive.
    """
    matrix = crop_matrix(center, scale, rotation, image_size, use_udp)
    crop = warp_affine(image, matrix, (int(image_size[0]), int(image_size[1])), warp_method)
    return crop, crop_joints(joints, visible, matrix, use_udp), matrix


def crop_matrix(
    center: np.ndarray,
    scale: np.ndarray,
    rotation: float,
    image_size: Sequence[int] = (192, 256),
    use_udp: bool = False,
) -> np.ndarray:
    """The matrix [2, 3] of :func:`top_down_affine`'s crop (float32 UDP, float64 plain);
    ``ValueError`` for a box that is not finite with a positive scale."""
    size = np.asarray(image_size, dtype=np.float64)
    c, s = np.asarray(center), np.asarray(scale)
    _check_crop_box(c, s)
    if use_udp:
        return get_warp_matrix(rotation, c * 2.0, size - 1.0, s * 200.0)
    return get_affine_transform(c, s, rotation, image_size)


# ---------------------------------------------------------------------------------------------
# Flip
# ---------------------------------------------------------------------------------------------


def flip_image(image: np.ndarray) -> np.ndarray:
    """Mirror image [H, W, ...] left-right (a contiguous copy).

    torch's flip kernel copies a 640×480×3 image in ~0.5 ms, NumPy's negative-stride copy in
    ~2 ms (it moves one byte at a time); the bytes are the same.
    """
    img = np.asarray(image)
    if img.ndim < 2:
        raise ValueError(f"image must be [H, W, ...], got shape {img.shape}")
    if img.dtype == np.uint8 and img.flags.c_contiguous:
        return torch.flip(torch.from_numpy(img), [1]).numpy()
    return np.ascontiguousarray(img[:, ::-1])


def fliplr_joints(
    joints: np.ndarray,
    visible: np.ndarray,
    img_width: int,
    flip_indices: Sequence[int],
) -> tuple[np.ndarray, np.ndarray]:
    """Joints [K, 3] and visible [K, 3] of the left-right mirrored image of width img_width.

    Joint ``i`` of the result is joint ``flip_indices[i]`` of the input with
    x ← img_width − 1 − x (pixel centres on the integer grid). As the official
    ``fliplr_joints``, the joints are then multiplied by the visibility, so an invisible joint
    becomes (0, 0, 0).
    """
    j = np.asarray(joints)
    v = np.asarray(visible)
    if len(j) != len(v) or len(flip_indices) != len(j):
        raise ValueError(
            f"joints ({len(j)}), visible ({len(v)}) and flip_indices ({len(flip_indices)}) "
            "must have the same length"
        )
    if img_width <= 0:
        raise ValueError(f"img_width must be positive, got {img_width}")
    idx = np.asarray(flip_indices, dtype=np.int64)
    j_out = j[idx].copy()
    v_out = v[idx].copy()
    j_out[:, 0] = img_width - 1 - j_out[:, 0]
    return (j_out * v_out).astype(j.dtype, copy=False), v_out


# ---------------------------------------------------------------------------------------------
# Random augmentations (explicit numpy Generator, never the global RNG)
# ---------------------------------------------------------------------------------------------


def half_body_center_scale(
    joints: np.ndarray,
    visible: np.ndarray,
    upper_body_ids: Sequence[int],
    rng: np.random.Generator,
    image_size: Sequence[int] = (192, 256),
    padding: float = 1.5,
) -> tuple[np.ndarray, np.ndarray] | None:
    """A box around the upper or the lower body: (center [2], scale [2]) float32, or None.

    The official ``TopDownHalfBodyTransform.half_body_transform``: the visible joints are split
    into "upper" (index in ``upper_body_ids``) and "lower" (**every other** visible joint — the
    official code has no third group, so e.g. WholeBody face and hand joints count as lower).
    The upper set is chosen when a standard-normal draw is < 0.5 (the official
    ``np.random.randn() < 0.5``, i.e. about 69 %, not 50 %) and it has more than 2 joints,
    otherwise the lower set if it has more than 2, otherwise the upper set; fewer than 2
    selected joints give None. The box is the joints' min/max (centred on their **mean**),
    widened to the aspect ratio of ``image_size`` and padded by ``padding`` (1.5).
    """
    vis = np.asarray(visible)[:, 0] > 0
    is_upper = np.zeros(len(vis), dtype=bool)
    ids = [i for i in upper_body_ids if 0 <= i < len(vis)]
    is_upper[ids] = True
    upper = np.asarray(joints)[vis & is_upper]
    lower = np.asarray(joints)[vis & ~is_upper]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        selected = upper
    elif len(lower) > 2:
        selected = lower
    else:
        selected = upper
    if len(selected) < 2:
        return None
    sel = selected.astype(np.float32)
    center = sel.mean(axis=0)[:2]
    lo, hi = sel.min(axis=0), sel.max(axis=0)
    w, h = float(hi[0] - lo[0]), float(hi[1] - lo[1])
    aspect = float(image_size[0]) / float(image_size[1])
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    scale = np.array([w / 200.0, h / 200.0], dtype=np.float32) * np.float32(padding)
    return center.astype(np.float32), scale.astype(np.float32)


def random_scale_rotation(
    scale: np.ndarray,
    rng: np.random.Generator,
    scale_factor: float = 0.5,
    rot_factor: float = 40.0,
    rot_prob: float = 0.6,
) -> tuple[np.ndarray, float]:
    """The official ``TopDownGetRandomScaleRotation``: (scale [2], rotation in degrees).

    Draw order (from ``rng``): a normal for the scale, a normal for the angle, a uniform for
    whether to rotate. scale ← scale · clip(1 + sf·N, 1 − sf, 1 + sf); rotation =
    clip(rf·N, −2rf, 2rf) when the uniform is ≤ ``rot_prob``, else 0. The scale keeps its dtype.
    """
    s = np.asarray(scale)
    sf, rf = float(scale_factor), float(rot_factor)
    s_factor = float(np.clip(rng.standard_normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
    r_factor = float(np.clip(rng.standard_normal() * rf, -2.0 * rf, 2.0 * rf))
    rotation = r_factor if rng.random() <= rot_prob else 0.0
    return (s * s.dtype.type(s_factor)).astype(s.dtype), rotation


# ---------------------------------------------------------------------------------------------
# To tensor
# ---------------------------------------------------------------------------------------------


def normalize_image(
    image: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Tensor:
    """uint8 image [H, W, 3] → float32 tensor [3, H, W] = (image/255 − mean) / std.

    The official ``ToTensor`` + ``NormalizeTensor`` (float32 division by 255, then subtraction
    and division per channel), for uint8 images in one C++ pass
    (:func:`posebh.ops.warp.normalize_image`): the same IEEE operations, ~10× faster than NumPy.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != len(mean) or len(mean) != len(std):
        raise ValueError(f"image must be [H, W, {len(mean)}], got {img.shape}")
    if img.dtype != np.uint8:
        return ops_warp.normalize_image_reference(img, mean, std)
    return ops_warp.normalize_image(img, mean, std)
