"""InterHand2.6M-like captures: one or two posed 3-D hands per frame (world millimetres),
seen by a ring of calibrated cameras.

Shapes: a frame's ``world`` [42, 3] mm holds the right hand's 21 joints then the left hand's,
each in the InterHand order (every finger from the tip to the palm, thumb first, wrist last);
a camera is ``campos`` [3] mm (its centre in the world), ``camrot`` [3, 3] (world → camera
rows), ``focal`` [2] and ``princpt`` [2] pixels, so that X_cam = R (X − T) — exactly what
``posebh.datasets.interhand`` reads and projects.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from posebh.datasets.interhand import project_world_to_pixel

from .hand import FINGERS, add_hand, hand_prims, pose_to_local, sample_hand_pose
from .kinematics import FrozenTree, Tree, look_at
from .render import LABEL_STRIDE, Color, Prim, background, encode_jpeg, finish, render
from .scene import Figure, Scene, _clutter, node_visibility, segment_area

__all__ = [
    "Camera",
    "HandFrame",
    "interhand_nodes",
    "make_hand_scene",
    "sample_cameras",
    "sample_frame",
]

IMAGE_SIZE = (256, 256)
PALM, FOREARM = 1, 7
FING = (2, 3, 4, 5, 6)
_SKIN: tuple[Color, ...] = (
    (241, 194, 160),
    (224, 172, 125),
    (198, 134, 90),
    (255, 224, 196),
    (141, 85, 54),
)
_STUDIO = ((0.0, 1.0, 0.0, 0.15, 0.02, 0.25),)


@cache
def hand_tree(side: str) -> FrozenTree:
    """One hand (``side`` "r" / "l") as its own tree: wrist root, forearm stub, 20 finger nodes."""
    t = Tree()
    t.add(f"wrist_{side}", None, (0, 0, 0), rotates=True, owners=(PALM, FOREARM))
    t.add(f"forearm_{side}", f"wrist_{side}", (0, 0.16, 0), owners=(FOREARM,))
    add_hand(t, side, f"wrist_{side}", 1.0, PALM, FING)
    return t.frozen()


def interhand_nodes(side: str) -> list[str]:
    """The InterHand keypoint order of one hand as node names of :func:`hand_tree`."""
    return [f"{f}{j}_{side}" for f in FINGERS for j in (4, 3, 2, 1)] + [f"wrist_{side}"]


@dataclass
class Camera:
    """A calibrated camera (see the module docstring); ``name`` is its id string."""

    name: str
    campos: np.ndarray
    camrot: np.ndarray
    focal: np.ndarray
    princpt: np.ndarray


@dataclass
class HandFrame:
    """A captured frame: ``hand_type`` ("right" / "left" / "interacting"), ``world`` [42, 3]
    mm (absent hands are zeros), ``present`` (right, left), the per-hand world node positions
    (mm, [N, 3] of :func:`hand_tree`) and the skin colour."""

    hand_type: str
    world: np.ndarray
    present: tuple[bool, bool]
    nodes: dict[str, np.ndarray]
    skin: Color


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def sample_cameras(rng: np.random.Generator, n: int, first_id: int) -> list[Camera]:
    """``n`` cameras on a ring around the capture volume (550-800 mm away, all looking at the
    origin), ids ``first_id`` … as InterHand-style strings."""
    cams = []
    w, h = IMAGE_SIZE
    for k in range(n):
        az = 2 * np.pi * (k + rng.uniform(-0.3, 0.3)) / n
        el = np.deg2rad(rng.uniform(-25, 35))
        dist = rng.uniform(550, 800)
        eye = dist * np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
        rot = look_at(eye, rng.normal(0, 15, 3), np.array([0.0, 1.0, 0.0]))
        f = rng.uniform(420, 560)
        cams.append(
            Camera(
                name=str(first_id + k),
                campos=eye,
                camrot=rot,
                focal=np.array([f, f * rng.uniform(0.995, 1.005)]),
                princpt=np.array([w / 2 + rng.normal(0, 4), h / 2 + rng.normal(0, 4)]),
            )
        )
    return cams


def sample_frame(rng: np.random.Generator) -> HandFrame:
    """One frame: which hands are there, where, and how they are posed (world mm)."""
    hand_type = ("right", "left", "interacting")[int(rng.choice(3, p=[0.35, 0.25, 0.4]))]
    present = (hand_type != "left", hand_type != "right")
    world = np.zeros((42, 3))
    nodes: dict[str, np.ndarray] = {}
    anchor = np.zeros(3)
    for k, side in enumerate("rl"):
        if not present[k]:
            continue
        tree = hand_tree(side)
        local = pose_to_local(tree, sample_hand_pose(rng, side))
        pos_m = anchor / 1000.0
        if hand_type == "interacting" and side == "l":
            d = rng.normal(0, 1, 3)
            pos_m = pos_m + d / np.linalg.norm(d) * rng.uniform(0.06, 0.13)
        scale = rng.uniform(0.9, 1.1)
        pos, _, _ = tree.forward(tree.offset * scale, local, _random_rotation(rng), pos_m)
        nodes[side] = pos * 1000.0
    # Centre the hands on the capture volume (the cameras look at the origin).
    centre = np.mean(np.concatenate([v for v in nodes.values()]), axis=0) - rng.normal(0, 15, 3)
    for k, side in enumerate("rl"):
        if side in nodes:
            nodes[side] = nodes[side] - centre
            world[21 * k : 21 * (k + 1)] = nodes[side][hand_tree(side).idx(interhand_nodes(side))]
    return HandFrame(hand_type, world, present, nodes, _SKIN[int(rng.integers(len(_SKIN)))])


def _to_camera(p_mm: np.ndarray, cam: Camera) -> np.ndarray:
    """World mm [N, 3] → camera-frame metres [N, 3] (X_cam = R (X − T), then ÷ 1000)."""
    return (cam.camrot @ (p_mm - cam.campos).T).T / 1000.0


def make_hand_scene(
    rng: np.random.Generator, frame: HandFrame, cam: Camera
) -> tuple[Scene, np.ndarray]:
    """Render ``frame`` through ``cam``; returns (scene, joint_valid [42] uint8).

    joint_valid marks the present hands' joints that project inside the image (computed with
    the reader's float32 projection, so the reader sees exactly these joints inside); a random
    1 % of joints are additionally left unannotated, as in the real (machine-)annotated data.
    """
    w, h = IMAGE_SIZE
    f = float(cam.focal[0])
    bg = background(rng, w, h, ("noise", "gradient"), _STUDIO, noise=4.0)
    prims: list[Prim] = _clutter(rng, w, h, _STUDIO) if rng.random() < 0.3 else []
    placed = []
    for k, side in enumerate("rl"):
        if not frame.present[k]:
            continue
        tree = hand_tree(side)
        cam_pos = _to_camera(frame.nodes[side], cam)
        z = np.maximum(cam_pos[:, 2], 0.05)
        uv = np.stack(
            [
                cam.focal[0] * cam_pos[:, 0] / z + cam.princpt[0],
                cam.focal[1] * cam_pos[:, 1] / z + cam.princpt[1],
            ],
            1,
        )
        base = (len(placed) + 1) * LABEL_STRIDE
        ix = tree.index
        fa, wr = ix[f"forearm_{side}"], ix[f"wrist_{side}"]
        rr = 0.03 * f / float(np.mean(z[[fa, wr]]))
        sleeve = (60, 60, 70) if side == "r" else (70, 60, 60)
        prims.append(
            Prim(
                float(np.mean(z[[fa, wr]])),
                base + FOREARM,
                [("capsule", uv[wr], uv[fa], rr * 0.9, rr * 1.1, sleeve)],
            )
        )
        prims.extend(
            hand_prims(
                uv, z, tree, side, f"wrist_{side}", f, 1.0, frame.skin, base, PALM, FING, tint=0.35
            )
        )
        placed.append((side, tree, uv, z, cam_pos))
    image, labels = render(bg, prims)
    image = finish(image, rng, noise=2.0, blur_prob=0.1)
    joint_valid = np.zeros(42, dtype=np.uint8)
    figures = []
    for i, (side, tree, uv, z, cam_pos) in enumerate(placed):
        k = "rl".index(side)
        kp = project_world_to_pixel(
            frame.world[21 * k : 21 * (k + 1)], cam.campos, cam.camrot, cam.focal, cam.princpt
        )
        inside_kp = (kp[:, 0] >= 0) & (kp[:, 0] <= w - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= h - 1)
        inside_kp &= rng.random(21) >= 0.01
        joint_valid[21 * k : 21 * (k + 1)] = inside_kp
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
        order = tree.idx(interhand_nodes(side))
        inside[order] = inside_kp  # the annotation's notion of "inside" wins
        # The keypoints are the reader's float32 projection, so cross GT equals the file.
        uv = uv.copy()
        uv[order] = kp
        front = np.ones(len(tree), dtype=bool)
        visible = node_visibility(tree, uv, inside, front, labels, (i + 1) * LABEL_STRIDE)
        pts = uv[order][inside_kp]
        box = (0.0, 0.0, 0.0, 0.0)
        if pts.size:
            x0, y0 = pts.min(0)
            x1, y1 = pts.max(0)
            box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
        figures.append(
            Figure(
                kind="hand",
                index=i,
                category_id=1,
                uv=uv,
                z=z,
                inside=inside,
                front=front,
                visible=visible,
                amodal_box=box,
                visible_box=box,
                visible_area=int(np.count_nonzero(labels // LABEL_STRIDE == i + 1)),
                segment_area=segment_area(labels // LABEL_STRIDE == i + 1),
                px_per_m=f / float(np.mean(cam_pos[:, 2])),
                scale=1.0,
                height_px=float(box[3]),
                extra={"hand": "right" if side == "r" else "left"},
            )
        )
    return Scene(
        w, h, encode_jpeg(image), figures, {"style": "interhand2d", "camera": cam.name}
    ), joint_valid
