"""Composing one SynthPose image: figures placed through a pinhole camera, distractors,
rendering, and the per-node visibility every annotation is derived from.

Shapes: a :class:`Figure` carries its model's N nodes: ``uv`` [N, 2] pixels, ``z`` [N] depth
(metres), and booleans [N] ``inside`` (in the image), ``front`` (a surface landmark faces the
camera; True for joints) and ``visible`` (inside, front and not hidden by any other shape).

Per-dataset looks (:data:`STYLES`) set the image size, the number and size of figures, pose
modes, truncation and occlusion rates, background textures and palettes, line thickness,
colour cast, and camera effects (APT-36K-like motion blur, OCHuman-like crowding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from . import animal as A
from . import human as Hm
from .kinematics import FLIP_BODY_TO_CAMERA, FrozenTree, project, rot_x, rot_y, rot_z
from .render import LABEL_STRIDE, Prim, background, encode_jpeg, finish, hsv, render, textured_patch

__all__ = ["SEGMENT_CLOSING", "STYLES", "Figure", "Scene", "Style", "make_scene", "segment_area"]

Palette = tuple[tuple[float, float, float, float, float, float], ...]

_NATURAL: Palette = ((0.0, 1.0, 0.05, 0.45, 0.25, 0.9),)
_SATURATED: Palette = ((0.0, 1.0, 0.5, 1.0, 0.5, 1.0),)
_SPORT: Palette = (
    (0.22, 0.4, 0.3, 0.8, 0.3, 0.8),
    (0.5, 0.65, 0.2, 0.7, 0.5, 0.95),
    (0.05, 0.12, 0.2, 0.6, 0.4, 0.9),
)
_INDOOR: Palette = ((0.0, 0.15, 0.05, 0.35, 0.2, 0.75), (0.5, 0.7, 0.0, 0.2, 0.3, 0.8))
_OUTDOOR: Palette = (
    (0.5, 0.62, 0.2, 0.6, 0.6, 1.0),
    (0.15, 0.35, 0.2, 0.6, 0.25, 0.7),
    (0.0, 1.0, 0.0, 0.1, 0.3, 0.8),
)
_NATURE: Palette = (
    (0.15, 0.38, 0.25, 0.75, 0.2, 0.8),
    (0.05, 0.13, 0.25, 0.6, 0.3, 0.8),
    (0.5, 0.62, 0.15, 0.5, 0.6, 0.95),
)
_STUDIO: Palette = ((0.0, 1.0, 0.0, 0.15, 0.02, 0.25),)


@dataclass(frozen=True)
class Style:
    """The look of one synthetic dataset (see the module docstring)."""

    name: str
    kind: str  # "human" | "quadruped"
    size: tuple[int, int]  # (W, H)
    n_figures: dict[int, float]
    size_frac: tuple[float, float]  # main figure height (humans) / extent (animals) ÷ H
    extra_small: float = 0.0
    truncation: float = 0.2
    occluders: float = 0.25
    crowd: float = 0.0
    backgrounds: tuple[str, ...] = ("gradient", "stripes", "checker", "noise", "horizon")
    palette: Palette = _NATURAL
    cloth_sat: tuple[float, float] = (0.2, 0.8)
    cloth_val: tuple[float, float] = (0.3, 0.95)
    limb_scale: float = 1.0
    discs: bool = True
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    motion_blur: tuple[int, int] | None = None
    motion_blur_prob: float = 0.0
    blur_prob: float = 0.1
    pose_modes: dict[str, float] = field(default_factory=dict)
    yaw_front: float = 0.6
    sequence: int = 1  # frames sharing background, looks and layout (video-like splits)


STYLES: dict[str, Style] = {
    "coco": Style(
        "coco", "human", (320, 240), {1: 0.45, 2: 0.35, 3: 0.2}, (0.45, 0.95),
        extra_small=0.35, truncation=0.25, occluders=0.3,
        pose_modes={
            "stand": 0.3, "walk": 0.25, "run": 0.1, "reach": 0.15, "crouch": 0.1, "sport": 0.1,
        },
    ),
    "aic": Style(
        "aic", "human", (320, 240), {1: 0.3, 2: 0.4, 3: 0.3}, (0.4, 0.9),
        extra_small=0.1, truncation=0.15, occluders=0.2,
        backgrounds=("stripes", "gradient", "checker"), palette=_SATURATED,
        cloth_sat=(0.6, 1.0), cloth_val=(0.5, 1.0), limb_scale=1.15, discs=False,
        gain=(1.08, 1.0, 0.9), gamma=0.9,
        pose_modes={"stand": 0.35, "walk": 0.3, "reach": 0.15, "crouch": 0.1, "run": 0.1},
    ),
    "mpii": Style(
        "mpii", "human", (320, 240), {1: 0.6, 2: 0.3, 3: 0.1}, (0.55, 0.95),
        extra_small=0.15, truncation=0.15, occluders=0.15,
        backgrounds=("horizon", "noise", "gradient"), palette=_SPORT, cloth_sat=(0.5, 0.95),
        limb_scale=0.95, gain=(0.95, 1.02, 1.05),
        pose_modes={
            "sport": 0.35, "run": 0.15, "reach": 0.2, "crouch": 0.15, "walk": 0.1, "stand": 0.05,
        },
    ),
    "ochuman": Style(
        "ochuman", "human", (256, 256), {2: 0.6, 3: 0.4}, (0.6, 0.95),
        truncation=0.1, occluders=0.1, crowd=1.0, backgrounds=("noise", "checker", "gradient"),
        palette=_INDOOR, cloth_sat=(0.1, 0.6), cloth_val=(0.3, 0.8), gain=(1.0, 0.97, 0.94),
        pose_modes={"reach": 0.3, "stand": 0.2, "walk": 0.2, "sport": 0.15, "crouch": 0.15},
    ),
    "pw3d": Style(
        "pw3d", "human", (192, 256), {1: 0.6, 2: 0.4}, (0.55, 0.9),
        truncation=0.15, occluders=0.1, backgrounds=("horizon", "gradient", "noise"),
        palette=_OUTDOOR, discs=False, gain=(1.0, 1.02, 1.0), gamma=1.05,
        pose_modes={"walk": 0.5, "stand": 0.3, "reach": 0.1, "crouch": 0.1}, sequence=8,
    ),
    "ap10k": Style(
        "ap10k", "quadruped", (320, 240), {1: 0.6, 2: 0.3, 3: 0.1}, (0.35, 0.85),
        truncation=0.15, occluders=0.3, backgrounds=("horizon", "noise", "gradient"),
        palette=_NATURE, blur_prob=0.15,
        pose_modes={
            "stand": 0.25, "walk": 0.3, "trot": 0.15, "gallop": 0.1, "graze": 0.15, "alert": 0.05,
        },
        yaw_front=0.2,
    ),
    "apt36k": Style(
        "apt36k", "quadruped", (320, 180), {1: 0.5, 2: 0.3, 3: 0.2}, (0.35, 0.8),
        truncation=0.2, occluders=0.25, backgrounds=("horizon", "noise"), palette=_NATURE,
        gain=(1.0, 1.0, 1.05), gamma=1.1, motion_blur=(2, 7), motion_blur_prob=0.7,
        pose_modes={"walk": 0.35, "trot": 0.25, "gallop": 0.15, "stand": 0.15, "graze": 0.1},
        yaw_front=0.2, sequence=8,
    ),
}  # fmt: skip


@dataclass
class Figure:
    """One drawn person / animal / hand and everything its annotations derive from.

    ``amodal_box`` is the (x, y, w, h) extent of all its shapes clipped to the image,
    ``visible_box`` / ``visible_area`` those of its unoccluded pixels (None / 0 if none);
    ``segment_area`` the area of an annotator's outline of those pixels
    (:func:`segment_area`); ``px_per_m`` = focal / root depth; ``height_px`` the unclipped
    amodal height.
    """

    kind: str
    index: int
    category_id: int
    uv: np.ndarray
    z: np.ndarray
    inside: np.ndarray
    front: np.ndarray
    visible: np.ndarray
    amodal_box: tuple[float, float, float, float]
    visible_box: tuple[float, float, float, float] | None
    visible_area: int
    px_per_m: float
    scale: float
    height_px: float
    segment_area: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


#: Radius of the closing disc of :func:`segment_area`, as a fraction of the box height.
SEGMENT_CLOSING = 0.05


def segment_area(mask: np.ndarray) -> int:
    """Pixels inside an annotator's outline of a figure's visible pixels ``mask`` [H, W] bool.

    COCO's ``area`` is the area of a hand-drawn segmentation polygon, which follows the
    person's outline coarsely: it bridges the narrow gaps between limbs and body and encloses
    holes.  Modelled as the binary closing of the mask with a disc of radius
    :data:`SEGMENT_CLOSING` × the mask's box height (at least 1 px), holes filled, clipped to
    the visible box.  On SynthPose people this is ≈ 1.15× the raw pixel count (area / box
    area ≈ 0.42 against ≈ 0.37; real COCO's ratio is ≈ 0.53, the factor xtcocotools uses when
    a file has no areas — cartoon figures are slimmer than clothed people).
    """
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return 0
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    r = max(1, round(SEGMENT_CLOSING * (y1 - y0)))
    crop = np.pad(mask[y0:y1, x0:x1], r)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    closed = ndimage.binary_closing(crop, structure=xx * xx + yy * yy <= r * r)
    return int(ndimage.binary_fill_holes(closed)[r:-r, r:-r].sum())


@dataclass
class Scene:
    """A rendered image (``jpeg`` bytes of ``width``×``height``) and its figures."""

    width: int
    height: int
    jpeg: bytes
    figures: list[Figure]
    meta: dict[str, Any] = field(default_factory=dict)


def _choice(rng: np.random.Generator, weights: dict[Any, float]) -> Any:
    keys = list(weights)
    p = np.asarray([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _prims_extent(prims: list[Prim]) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) covering every op of ``prims``."""
    xs: list[float] = []
    ys: list[float] = []
    for p in prims:
        for op in p.ops:
            if op[0] in ("poly", "line"):
                pts = np.asarray(op[1]).reshape(-1, 2)
                xs += [pts[:, 0].min(), pts[:, 0].max()]
                ys += [pts[:, 1].min(), pts[:, 1].max()]
            elif op[0] == "ellipse":
                cx, cy, rx, ry = op[1]
                xs += [cx - rx, cx + rx]
                ys += [cy - ry, cy + ry]
            elif op[0] == "capsule":
                for c, r in ((op[1], op[3]), (op[2], op[4])):
                    xs += [c[0] - r, c[0] + r]
                    ys += [c[1] - r, c[1] + r]
    return min(xs), min(ys), max(xs), max(ys)


def _clip_box(
    ext: tuple[float, float, float, float], w: int, h: int
) -> tuple[float, float, float, float]:
    x0, y0 = max(0.0, ext[0]), max(0.0, ext[1])
    x1, y1 = min(w - 1.0, ext[2]), min(h - 1.0, ext[3])
    return (round(x0, 2), round(y0, 2), round(max(0.0, x1 - x0), 2), round(max(0.0, y1 - y0), 2))


def _front(
    tree: FrozenTree, pos: np.ndarray, normals: np.ndarray, thresholds: dict[str, float]
) -> np.ndarray:
    """[N] bool: True for nodes without a normal, else cos(normal, to-camera) > threshold."""
    to_cam = -pos / np.maximum(np.linalg.norm(pos, axis=1, keepdims=True), 1e-9)
    cos = np.sum(normals * to_cam, axis=1)
    thr = np.zeros(len(tree))
    for name, v in thresholds.items():
        thr[tree.index[name]] = v
    return ~tree.has_normal | (cos > thr)


def node_visibility(
    tree: FrozenTree,
    uv: np.ndarray,
    inside: np.ndarray,
    front: np.ndarray,
    labels: np.ndarray,
    label_base: int,
) -> np.ndarray:
    """[N] bool: a node is visible when it is inside and front-facing and one of its owner
    parts shows in the 3×3 pixels around it."""
    h, w = labels.shape
    xi = np.clip(np.round(uv[:, 0]).astype(np.int64), 0, w - 1)
    yi = np.clip(np.round(uv[:, 1]).astype(np.int64), 0, h - 1)
    near = np.stack(
        [
            labels[np.clip(yi + dy, 0, h - 1), np.clip(xi + dx, 0, w - 1)]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ],
        axis=1,
    )
    owners = np.where(tree.owners >= 0, tree.owners + label_base, -1)
    hit = (near[:, :, None] == owners[:, None, :]).any(axis=(1, 2))
    return hit & inside & front


# ------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------


@dataclass
class _Placed:
    """A posed figure before rendering."""

    kind: str
    tree: FrozenTree
    pos: np.ndarray
    frames: np.ndarray
    uv: np.ndarray
    z: np.ndarray
    front: np.ndarray
    prims: list[Prim]
    category_id: int
    scale: float
    focal: float
    extra: dict[str, Any]


def _global_rotation(rng: np.random.Generator, style: Style, kind: str) -> np.ndarray:
    """Body → camera rotation: yaw about the body's up axis (frontal-biased for people,
    side-on-biased for animals), a small lean, and the camera's pitch."""
    if kind == "human":
        yaw = rng.normal(0, 35) if rng.random() < style.yaw_front else rng.uniform(-180, 180)
    else:
        yaw = (
            (90 if rng.random() < 0.5 else -90) + rng.normal(0, 30)
            if rng.random() > style.yaw_front
            else rng.uniform(-180, 180)
        )
    # Mostly upright; one figure in ten leans or tumbles sideways (in-plane rotation).
    roll = float(np.clip(rng.normal(0, 25), -45, 45)) if rng.random() < 0.1 else rng.normal(0, 4)
    lean = rot_x(rng.normal(0, 4)) @ rot_z(roll)
    pitch = rot_x(rng.uniform(-12, 18))
    return pitch @ FLIP_BODY_TO_CAMERA @ rot_y(yaw) @ lean


@dataclass
class _Identity:
    """What a figure keeps across the frames of a sequence: size, proportions, look."""

    kind: str
    scale: float
    offsets: np.ndarray
    look: Any
    species: A.Species | None = None


def _identity(rng: np.random.Generator, style: Style, kind: str) -> _Identity:
    if kind == "human":
        scale = rng.uniform(0.6, 0.75) if rng.random() < 0.08 else rng.uniform(0.88, 1.08)
        look = Hm.sample_human_look(
            rng, style.cloth_sat, style.cloth_val, style.limb_scale, style.discs
        )
        return _Identity(kind, scale, Hm.human_offsets(rng, scale), look)
    sp = A.SPECIES[int(rng.integers(len(A.SPECIES)))]
    scale = rng.uniform(0.8, 1.15)
    look = A.sample_animal_look(rng, sp, style.limb_scale)
    return _Identity(kind, scale, A.animal_offsets(sp, scale, rng), look, sp)


def _place(
    rng: np.random.Generator,
    style: Style,
    ident: _Identity,
    index: int,
    focal: float,
    target_px: float,
    centre: tuple[float, float],
) -> _Placed:
    """Pose a figure, set its depth so that its extent is ``target_px`` pixels, centre it at
    ``centre`` (pixels) and build its primitives."""
    w, h = style.size
    cx, cy = w / 2, h / 2
    mode = _choice(rng, style.pose_modes)
    if ident.kind == "human":
        tree = Hm.human_tree()
        local = Hm.pose_rotations(Hm.sample_human_pose(rng, mode))
    else:
        tree = A.animal_tree()
        local = A.pose_rotations(A.sample_animal_pose(rng, mode))
    rot = _global_rotation(rng, style, ident.kind)
    off = ident.offsets
    rel, frames, normals = tree.forward(off, local, rot, np.zeros(3))
    real = tree.rotates | tree.has_normal  # joints and landmarks, not drawing helpers
    ext_m = rel[real].max(0) - rel[real].min(0)
    size_m = ext_m[1] if ident.kind == "human" else max(ext_m[0], ext_m[1])
    depth = focal * max(size_m, 0.2) / max(target_px, 4.0)
    mid = (rel[real].max(0) + rel[real].min(0)) / 2
    root = np.array(
        [
            (centre[0] - cx) * depth / focal - mid[0],
            (centre[1] - cy) * depth / focal - mid[1],
            depth - mid[2],
        ]
    )
    # Keep every node comfortably in front of the camera.
    root[2] = max(root[2], 0.4 - rel[:, 2].min())
    pos = rel + root  # translating the root moves every node; frames and normals stay
    uv, z = project(pos, focal, cx, cy)
    label_base = (index + 1) * LABEL_STRIDE
    if ident.kind == "human":
        front = _front(tree, pos, normals, Hm.FRONT_THRESHOLDS)
        prims = Hm.human_prims(uv, z, front, focal, ident.scale, ident.look, label_base)
        cat = 1
    else:
        assert ident.species is not None
        front = _front(tree, pos, normals, A.FRONT_THRESHOLDS)
        prims = A.animal_prims(
            uv,
            z,
            pos,
            frames,
            front,
            focal,
            ident.species,
            ident.scale,
            ident.look,
            label_base,
            (cx, cy),
        )
        cat = ident.species.category_id
    return _Placed(ident.kind, tree, pos, frames, uv, z, front, prims, cat, ident.scale, focal, {})


def _occluder(rng: np.random.Generator, placed: _Placed, label: int, palette: Any) -> Prim:
    """A textured distractor shape in front of part of ``placed``."""
    x0, y0, x1, y1 = _prims_extent(placed.prims)
    fw, fh = max(4.0, x1 - x0), max(4.0, y1 - y0)
    if placed.kind == "quadruped" and rng.random() < 0.6:
        # Tall grass in front of the paws.
        ops: list[tuple] = []
        base = hsv(rng.uniform(0.2, 0.35), rng.uniform(0.4, 0.9), rng.uniform(0.25, 0.7))
        top = y1 - fh * rng.uniform(0.1, 0.35)
        for _ in range(int(rng.integers(15, 40))):
            x = rng.uniform(x0 - 0.1 * fw, x1 + 0.1 * fw)
            lean = rng.normal(0, 0.06 * fh)
            yb = y1 + rng.uniform(0, 0.05 * fh)
            yt = top + rng.uniform(0, 0.15 * fh)
            ops.append(
                ("line", np.array([[x, yb], [x + lean, yt]]), max(1, round(fw * 0.008)), base)
            )
        return Prim(float(placed.z.min() - 0.3), label, ops)
    ow = int(fw * rng.uniform(0.25, 0.6))
    oh = int(fh * rng.uniform(0.2, 0.5))
    node = int(rng.integers(len(placed.uv)))
    cxo, cyo = placed.uv[node] + rng.normal(0, 0.1, 2) * (fw, fh)
    h0, h1, s0, s1, v0, v1 = palette[int(rng.integers(len(palette)))]
    col = hsv(rng.uniform(h0, h1), rng.uniform(s0, s1), rng.uniform(v0, v1))
    tex, mask = textured_patch(rng, ow, oh, col, ("rect", "ellipse", "poly")[int(rng.integers(3))])
    return Prim(
        float(placed.z.min() - 0.3),
        label,
        [("patch", (int(cxo - ow / 2), int(cyo - oh / 2)), tex, mask)],
    )


def _clutter(rng: np.random.Generator, w: int, h: int, palette: Any) -> list[Prim]:
    """Background shapes (drawn first, label 0): boxes, poles, blobs, limb-like sticks."""
    prims = []
    for _ in range(int(rng.integers(2, 7))):
        h0, h1, s0, s1, v0, v1 = palette[int(rng.integers(len(palette)))]
        col = hsv(rng.uniform(h0, h1), rng.uniform(s0, s1), rng.uniform(v0, v1))
        kind = int(rng.integers(4))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if kind == 0:
            bw, bh = rng.uniform(10, w / 2), rng.uniform(10, h / 2)
            ops: list[tuple] = [
                ("poly", np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]]), col)
            ]
        elif kind == 1:
            ops = [
                (
                    "capsule",
                    np.array([x, 0.0]),
                    np.array([x + rng.normal(0, 5), h]),
                    rng.uniform(1, 5),
                    rng.uniform(1, 5),
                    col,
                )
            ]
        elif kind == 2:
            ops = [("ellipse", (x, y, rng.uniform(5, w / 6), rng.uniform(5, h / 6)), col)]
        else:
            # A skin-toned stick: a limb-like hard negative.
            skin = Hm.SKIN_TONES[int(rng.integers(len(Hm.SKIN_TONES)))]
            d = rng.normal(0, 1, 2)
            d = d / np.linalg.norm(d) * rng.uniform(10, 40)
            ops = [
                (
                    "capsule",
                    np.array([x, y]),
                    np.array([x, y]) + d,
                    rng.uniform(2, 5),
                    rng.uniform(2, 4),
                    skin,
                )
            ]
        prims.append(Prim(1e6, 0, ops))
    return prims


def _finalise(
    placed: list[_Placed],
    labels: np.ndarray,
    w: int,
    h: int,
) -> list[Figure]:
    """Visibility, boxes and areas of the placed figures from the rendered label buffer."""
    figs = []
    owner = labels // LABEL_STRIDE
    for i, p in enumerate(placed):
        base = (i + 1) * LABEL_STRIDE
        inside = (
            (p.uv[:, 0] >= 0)
            & (p.uv[:, 0] <= w - 1)
            & (p.uv[:, 1] >= 0)
            & (p.uv[:, 1] <= h - 1)
            & (p.pos[:, 2] > 0.05)
        )
        visible = node_visibility(p.tree, p.uv, inside, p.front, labels, base)
        mask = owner == i + 1
        ys, xs = np.nonzero(mask)
        vbox = None
        if xs.size:
            vbox = (
                float(xs.min()),
                float(ys.min()),
                float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1),
            )
        ext = _prims_extent(p.prims)
        root_z = float(p.z[0])
        figs.append(
            Figure(
                kind=p.kind,
                index=i,
                category_id=p.category_id,
                uv=p.uv,
                z=p.z,
                inside=inside,
                front=p.front,
                visible=visible,
                amodal_box=_clip_box(ext, w, h),
                visible_box=vbox,
                visible_area=int(xs.size),
                px_per_m=p.focal / root_z,
                scale=p.scale,
                height_px=float(ext[3] - ext[1]),
                segment_area=segment_area(mask),
                extra={k: v for k, v in p.extra.items() if k not in ("look", "species")},
            )
        )
    return figs


def _truncate(
    rng: np.random.Generator, centre: tuple[float, float], target: float, w: int, h: int
) -> tuple[float, float]:
    """Move a figure's centre so that it crosses one image border (left, right, bottom, top)."""
    side = int(rng.integers(4))
    x, y = centre
    if side == 0:
        x = rng.uniform(-0.05, 0.08) * w
    elif side == 1:
        x = rng.uniform(0.92, 1.05) * w
    elif side == 2:
        y = h - rng.uniform(0.1, 0.3) * target
    else:
        y = rng.uniform(0.1, 0.3) * target
    return (x, y)


def make_scene(
    rng: np.random.Generator, style: Style, seq_rng: np.random.Generator | None = None
) -> Scene:
    """Render one image of ``style``.

    ``seq_rng`` (video-like styles) fixes what a sequence shares — background, the figures'
    looks, count and rough layout — while ``rng`` draws the per-frame poses and noise.
    """
    w, h = style.size
    shared = seq_rng if seq_rng is not None else rng
    focal = float(shared.uniform(0.9, 1.4) * max(w, h))
    bg = background(shared, w, h, style.backgrounds, style.palette)
    prims: list[Prim] = _clutter(shared, w, h, style.palette)
    n = int(_choice(shared, style.n_figures))
    n_small = int(shared.random() < style.extra_small)
    idents = [_identity(shared, style, style.kind) for _ in range(n + n_small)]
    anchor = [
        (float(shared.uniform(0.15, 0.85) * w), float(shared.uniform(0.4, 0.6) * h))
        for _ in range(n)
    ]
    small_at = [
        (float(shared.uniform(0.05, 0.95) * w), float(shared.uniform(0.2, 0.6) * h))
        for _ in range(n_small)
    ]
    main_px = float(shared.uniform(*style.size_frac) * h)
    video = seq_rng is not None
    placed: list[_Placed] = []
    for i in range(n + n_small):
        if i >= n:
            # A small, far person/animal (COCO annotates such people with no keypoints).
            target = h * rng.uniform(0.1, 0.2)
            centre = small_at[i - n]
        elif style.crowd > 0 and i > 0:
            # OCHuman-like: overlap the first figure heavily, at a similar size.
            x0, y0, x1, y1 = _prims_extent(placed[0].prims)
            target = main_px * rng.uniform(0.8, 1.1)
            side = 1.0 if rng.random() < 0.5 else -1.0
            centre = (
                (x0 + x1) / 2 + side * rng.uniform(0.15, 0.45) * (x1 - x0),
                (y0 + y1) / 2 + rng.normal(0, 0.05) * h,
            )
        else:
            target = main_px * (1.0 if i == 0 else rng.uniform(0.6, 1.1))
            jitter = rng.normal(0, 0.03 if video else 0.1, 2) * (w, h)
            centre = (anchor[i][0] + jitter[0], anchor[i][1] + jitter[1])
            if rng.random() < style.truncation:
                centre = _truncate(rng, centre, target, w, h)
        placed.append(_place(rng, style, idents[i], i, focal, target, centre))
    for i, p in enumerate(placed):
        prims.extend(p.prims)
        if rng.random() < style.occluders:
            prims.append(_occluder(rng, p, 1 + i, style.palette))
    image, labels = render(bg, prims)
    figures = _finalise(placed, labels, w, h)
    motion = (
        style.motion_blur
        if (style.motion_blur is not None and rng.random() < style.motion_blur_prob)
        else None
    )
    image = finish(
        image,
        rng,
        gain=style.gain,
        gamma=style.gamma,
        blur_prob=style.blur_prob,
        motion_blur=motion,
    )
    return Scene(w, h, encode_jpeg(image), figures, {"style": style.name, "focal": focal})
