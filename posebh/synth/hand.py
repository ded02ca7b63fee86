"""The 21-joint hand: geometry, pose sampling and drawing, shared by the WholeBody-like humans
and the InterHand-like splits.

Node names: ``{finger}{j}_{side}`` with finger in :data:`FINGERS` and j = 1 (thumb CMC /
finger MCP) … 4 (tip), the WholeBody / InterHand numbering; the hand root is the wrist node it
is attached to. Hand frame (= the wrist's frame): the hand extends along −y, the palm faces +z,
the left thumb lies at +x (anatomical position); the right hand is the mirror image.
Lengths are metres at ``scale`` 1 (an adult hand, ~19 cm wrist to middle tip).
"""

from __future__ import annotations

import numpy as np

from .kinematics import FrozenTree, Tree, euler, mirror_euler, rot_x, rot_z
from .render import Color, Prim, convex_hull, mix

__all__ = [
    "FINGERS",
    "HAND_NODE_NAMES",
    "add_hand",
    "hand_prims",
    "sample_hand_pose",
]

FINGERS = ("thumb", "index", "middle", "ring", "pinky")

# Left-hand joint-1 positions in the wrist frame and the three segment lengths per finger.
_BASE = {
    "thumb": (0.020, -0.028, 0.012),
    "index": (0.025, -0.088, 0.0),
    "middle": (0.005, -0.092, 0.0),
    "ring": (-0.014, -0.087, 0.0),
    "pinky": (-0.031, -0.078, 0.0),
}
_LENGTHS = {
    "thumb": (0.042, 0.032, 0.027),
    "index": (0.045, 0.026, 0.022),
    "middle": (0.050, 0.030, 0.024),
    "ring": (0.047, 0.028, 0.022),
    "pinky": (0.037, 0.021, 0.019),
}
#: Finger radii (metres at scale 1) used for drawing.
_RADII = {"thumb": 0.0105, "index": 0.0085, "middle": 0.0088, "ring": 0.0083, "pinky": 0.0072}
# The thumb's chain points laterally and slightly palm-wards at rest: its CMC frame is turned
# so that the chain's own −y axis follows the thumb.
_THUMB_REST = rot_z(50.0) @ rot_x(-20.0)
#: Per-finger tints (mixed lightly into the skin) so that fingers stay distinguishable.
FINGER_TINTS: dict[str, Color] = {
    "thumb": (230, 60, 60),
    "index": (240, 200, 40),
    "middle": (60, 200, 80),
    "ring": (60, 120, 240),
    "pinky": (200, 70, 220),
}


def _names(side: str) -> tuple[str, ...]:
    return tuple(f"{f}{j}_{side}" for f in FINGERS for j in range(1, 5))


#: The 20 non-root hand node names per side, finger by finger from the palm to the tip.
HAND_NODE_NAMES = {"l": _names("l"), "r": _names("r")}


def add_hand(
    tree: Tree,
    side: str,
    wrist: str,
    scale: float,
    palm_part: int,
    finger_parts: tuple[int, int, int, int, int],
) -> None:
    """Attach the 20 finger nodes of one hand (``side`` "l" or "r") under node ``wrist``.

    ``palm_part`` / ``finger_parts`` are the render part ids (owners for occlusion): joint 1
    lies on the palm and its finger, joints 2-4 on the finger.
    """
    m = np.diag([-1.0, 1.0, 1.0]) if side == "r" else np.eye(3)
    for f, part in zip(FINGERS, finger_parts, strict=True):
        base = m @ (np.asarray(_BASE[f]) * scale)
        rest = m @ _THUMB_REST @ m if f == "thumb" else None
        tree.add(f"{f}1_{side}", wrist, base, rotates=True, rest=rest, owners=(palm_part, part))
        for j, length in enumerate(_LENGTHS[f], start=2):
            tree.add(
                f"{f}{j}_{side}",
                f"{f}{j - 1}_{side}",
                (0.0, -length * scale, 0.0),
                rotates=j < 4,
                owners=(part,),
            )


def sample_hand_pose(
    rng: np.random.Generator, side: str, mode: str | None = None
) -> dict[str, np.ndarray]:
    """Euler angles (x, y, z degrees) of the 15 finger joints of one hand.

    Modes: "open", "relaxed", "fist", "point", "pinch", "spread", "random"; None picks one.
    Flexion is −x (towards the palm); limits MCP [−95, 20], PIP [−105, 0], DIP [−80, 0],
    abduction ±18 at the MCP; thumb CMC x [−45, 25], z [−25, 35].
    """
    modes = ("open", "relaxed", "relaxed", "fist", "point", "pinch", "spread", "random")
    mode = mode or modes[int(rng.integers(len(modes)))]
    grip = {"open": 0.05, "relaxed": 0.35, "fist": 0.95, "point": 0.9, "pinch": 0.55, "spread": 0.0}
    out: dict[str, np.ndarray] = {}
    for k, f in enumerate(FINGERS):
        g = rng.uniform(0, 1) if mode == "random" else grip[mode] + rng.normal(0, 0.08)
        if mode == "point" and f == "index":
            g = rng.uniform(0.0, 0.1)
        if mode == "pinch" and f in ("middle", "ring", "pinky"):
            g = rng.uniform(0.1, 0.6)
        g = float(np.clip(g, 0.0, 1.0))
        spread = (k - 2) * (9.0 if mode == "spread" else 3.0) + rng.normal(0, 3)
        if f == "thumb":
            angles = [
                (
                    float(np.clip(-45 * g + rng.normal(0, 8), -45, 25)),
                    0.0,
                    float(np.clip(-20 * g + rng.normal(5, 8), -25, 35)),
                ),
                (float(np.clip(-50 * g + rng.normal(0, 6), -60, 10)), 0.0, 0.0),
                (float(np.clip(-70 * g + rng.normal(0, 6), -80, 10)), 0.0, 0.0),
            ]
        else:
            mcp = float(np.clip(-85 * g + rng.normal(0, 6), -95, 20))
            pip = float(np.clip(-100 * g + rng.normal(0, 6), -105, 0))
            dip = float(np.clip(0.7 * pip + rng.normal(0, 5), -80, 0))
            # Abduction (z) spreads fingers away from the middle finger, towards the thumb
            # side for the index: +z moves the left hand's fingers towards +x (the thumb).
            angles = [
                (mcp, 0.0, float(np.clip(-spread, -18, 18))),
                (pip, 0.0, 0.0),
                (dip, 0.0, 0.0),
            ]
        for j, a in enumerate(angles, start=1):
            arr = np.asarray(a, dtype=np.float64)
            out[f"{f}{j}_{side}"] = mirror_euler(arr) if side == "r" else arr
    return out


def pose_to_local(tree: FrozenTree, pose: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Node-name → Euler angles ⇒ node-index → rotation matrix (for ``FrozenTree.forward``)."""
    return {tree.index[name]: euler(a) for name, a in pose.items()}


def hand_prims(
    uv: np.ndarray,
    z: np.ndarray,
    tree: FrozenTree,
    side: str,
    wrist: str,
    focal: float,
    scale: float,
    skin: Color,
    label_base: int,
    palm_part: int,
    finger_parts: tuple[int, int, int, int, int],
    tint: float = 0.3,
    outline: bool = True,
) -> list[Prim]:
    """Primitives of one hand: a palm polygon and three tapered segments per finger, each
    finger lightly tinted (``tint``) with its own colour and with darker knuckle discs.

    ``uv`` [N, 2] / ``z`` [N] are the projected nodes of the whole figure.
    """
    idx = tree.index
    w = idx[wrist]
    palm_nodes = [
        w,
        idx[f"thumb1_{side}"],
        idx[f"index1_{side}"],
        idx[f"middle1_{side}"],
        idx[f"pinky1_{side}"],
    ]
    palm_pts = uv[palm_nodes]
    prims = []
    zp = float(np.mean(z[palm_nodes]))
    px = focal / zp
    hull = convex_hull(palm_pts)
    prims.append(
        Prim(
            zp,
            label_base + palm_part,
            [
                ("poly", hull, skin),
                ("ellipse", (*uv[w], 0.022 * scale * px, 0.022 * scale * px), skin),
            ],
        )
    )
    if np.ptp(palm_pts[:, 0]) + np.ptp(palm_pts[:, 1]) < 3.0:
        return prims  # too small for fingers to be visible: the palm blob stands for the hand
    dark = mix(skin, (40, 20, 10), 0.35)
    for f, part in zip(FINGERS, finger_parts, strict=True):
        col = mix(skin, FINGER_TINTS[f], tint)
        for j in range(1, 4):
            a, b = idx[f"{f}{j}_{side}"], idx[f"{f}{j + 1}_{side}"]
            zm = 0.5 * (z[a] + z[b])
            r = _RADII[f] * scale * focal / zm
            ops: list[tuple] = [("capsule", uv[a], uv[b], r, r * 0.9, col)]
            if outline and r > 1.2:
                ops.append(("ellipse", (*uv[b], 0.35 * r, 0.35 * r), dark))
            prims.append(Prim(float(zm), label_base + part, ops))
    return prims
