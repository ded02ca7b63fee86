"""The SynthPose human: one 3-D kinematic tree whose nodes are the union of every human
skeleton posebh knows (COCO 17, AIC 14, MPII 16, COCO-WholeBody 133, 3DPW/SMPL 24), plus each
dataset's own *definition* of the joints they share.

Frame and units: body frame x = the person's left, y = up, z = forward (face direction);
metres; the root is the pelvis. Pose rotations are Euler (x, y, z) degrees, applied as
Rz·Rx·Ry at each joint (flexion about x, twist about the bone, abduction about z); right-side
angles are the mirror of the left (see :mod:`~posebh.synth.kinematics`).

Definition offsets (:data:`DEFINITION_OFFSETS`) — real datasets disagree on where a joint is;
SynthPose reproduces that by annotating every dataset from its own landmark node, placed at a
fixed offset (lateral, up, forward; metres, in the frame of the bone the landmark sits on,
lateral = away from the body midline) from the anatomical joint:

====================  =================  ===================  ======================================
keypoint              dataset            offset (lat, up, fw)  meaning
====================  =================  ===================  ======================================
shoulder              coco, wholebody    (0, +0.025, 0)       acromion, above the joint centre
shoulder              aic                (+0.012, +0.04, 0)   higher and more lateral
shoulder              mpii               (0, +0.012, 0)
shoulder              pw3d               (−0.025, −0.01, 0)   SMPL joint: medial, inside the body
hip                   coco, wholebody    (+0.04, +0.02, 0)    greater trochanter
hip                   aic                (+0.035, +0.065, 0)  AIC hips sit higher (iliac crest)
hip                   mpii               (+0.03, +0.035, 0)
hip                   pw3d               (0, 0, 0)            SMPL: the rotation centre
ankle                 coco, wholebody    (+0.02, 0, 0)        lateral malleolus
neck (aic)            aic                (0, +0.03, 0)        from the neck base (SMPL neck)
thorax (mpii)         mpii               (0, −0.05, +0.02)    sternal notch, below the neck base
upper_neck (mpii)     mpii               at the head pivot    top of the neck (≠ AIC neck)
head_top              aic                (0, −0.012, +0.035)  front hairline, vs MPII's vertex
pelvis (mpii)         mpii               (0, −0.04, 0)        vs SMPL pelvis (0)
hand_root             wholebody          (0, −0.015, 0)       along the hand from the body wrist
thumb (pw3d)          pw3d               knuckle centre       SMPL "hand" joint (index/middle MCP)
====================  =================  ===================  ======================================

Elbows, wrists, knees (and the other ankles) are shared exactly. Cartoon proportions: the
head radius is 0.118 m and hands are scaled ×1.35 so that faces and fingers stay learnable at
~200 px figure heights.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from .hand import add_hand, hand_prims, sample_hand_pose
from .kinematics import FrozenTree, Tree, euler, mirror_euler
from .render import Color, Prim, convex_hull, hsv, mix

__all__ = [
    "DEFINITION_OFFSETS",
    "HEAD_RADIUS",
    "HUMAN_SKELETON_NODES",
    "HumanLook",
    "human_prims",
    "human_tree",
    "sample_human_look",
    "sample_human_pose",
]

HEAD_RADIUS = 0.118
HAND_SCALE = 1.35

# Render part ids (label = (figure + 1) * LABEL_STRIDE + part).
TORSO, PANTS, NECK, HEAD, HAIR, FACE, EAR_L, EAR_R = 1, 2, 3, 4, 5, 6, 7, 8
UARM_L, FARM_L, UARM_R, FARM_R = 9, 10, 11, 12
THIGH_L, SHIN_L, THIGH_R, SHIN_R, FOOT_L, FOOT_R = 13, 14, 15, 16, 17, 18
PALM_L, PALM_R = 19, 25
FING_L = (20, 21, 22, 23, 24)
FING_R = (26, 27, 28, 29, 30)

#: (keypoint, dataset) → (anatomical node, attach, (lateral, up, forward) metres). ``attach``
#: "parent" hangs the landmark on the anatomical joint's parent bone (it does not follow the
#: joint's own rotation), "self" on the joint's own frame.
DEFINITION_OFFSETS: dict[tuple[str, str], tuple[str, str, tuple[float, float, float]]] = {
    ("shoulder", "coco"): ("shoulder", "parent", (0.0, 0.025, 0.0)),
    ("shoulder", "aic"): ("shoulder", "parent", (0.012, 0.04, 0.0)),
    ("shoulder", "mpii"): ("shoulder", "parent", (0.0, 0.012, 0.0)),
    ("shoulder", "pw3d"): ("shoulder", "parent", (-0.025, -0.01, 0.0)),
    ("hip", "coco"): ("hip", "parent", (0.04, 0.02, 0.0)),
    ("hip", "aic"): ("hip", "parent", (0.035, 0.065, 0.0)),
    ("hip", "mpii"): ("hip", "parent", (0.03, 0.035, 0.0)),
    ("ankle", "coco"): ("ankle", "parent", (0.02, 0.0, 0.0)),
    ("neck", "aic"): ("neck_base", "parent", (0.0, 0.03, 0.0)),
    ("thorax", "mpii"): ("neck_base", "parent", (0.0, -0.05, 0.02)),
    ("head_top", "aic"): ("head_top", "parent", (0.0, -0.012, 0.035)),
    ("pelvis", "mpii"): ("pelvis", "self", (0.0, -0.04, 0.0)),
    ("hand_root", "coco_wholebody"): ("wrist", "self", (0.0, -0.015, 0.0)),
}
_PAIRED = ("shoulder", "hip", "ankle", "wrist")
# Landmarks whose anatomical node carries no offset in a dataset use the anatomical node.

_RING = 8  # points per torso cross-section ring


def _ring(tree: Tree, name: str, parent: str, y: float, half_w: float, half_d: float) -> None:
    for k in range(_RING):
        a = 2 * np.pi * k / _RING
        tree.add(f"{name}{k}", parent, (half_w * np.cos(a), y, half_d * np.sin(a)))


def _face_template() -> np.ndarray:
    """The 68 iBUG landmarks [68, 3] in head-radius units (x = subject's left, y up, z out).

    Point 0 is the subject's right jaw end (image-left in a frontal view), as in iBUG /
    COCO-WholeBody; the mirror pairs match ``posebh.skeletons``' face flip.
    """
    pts = np.zeros((68, 3))
    th = np.pi * np.arange(17) / 16
    pts[0:17, 0] = -0.78 * np.cos(th)
    pts[0:17, 1] = 0.08 - 0.83 * np.sin(th)
    t = np.linspace(0, 1, 5)
    pts[17:22, 0] = -0.62 + 0.5 * t
    pts[17:22, 1] = 0.42 + 0.07 * np.sin(np.pi * t)
    pts[22:27, 0] = -pts[21:16:-1, 0]
    pts[22:27, 1] = pts[21:16:-1, 1]
    pts[27:31, 1] = (0.30, 0.18, 0.06, -0.06)
    pts[31:36, 0] = (-0.16, -0.08, 0.0, 0.08, 0.16)
    pts[31:36, 1] = (-0.16, -0.19, -0.21, -0.19, -0.16)
    right_eye = np.array(
        [(-0.51, 0.24), (-0.41, 0.30), (-0.31, 0.30), (-0.21, 0.24), (-0.31, 0.19), (-0.41, 0.19)]
    )
    pts[36:42, :2] = right_eye
    for a, b in ((42, 39), (43, 38), (44, 37), (45, 36), (46, 41), (47, 40)):
        pts[a, :2] = (-pts[b, 0], pts[b, 1])
    outer = np.deg2rad([180, 150, 115, 90, 65, 30, 0, -30, -65, -90, -115, -150])
    pts[48:60, 0] = 0.30 * np.cos(outer)
    pts[48:60, 1] = -0.42 + np.where(np.sin(outer) > 0, 0.09, 0.12) * np.sin(outer)
    inner = np.deg2rad([180, 120, 90, 60, 0, -60, -90, -120])
    pts[60:68, 0] = 0.22 * np.cos(inner)
    pts[60:68, 1] = -0.42 + np.where(np.sin(inner) > 0, 0.035, 0.04) * np.sin(inner)
    # On the head sphere, with the nose bridge and tip standing out.
    pts[:, 2] = np.sqrt(np.maximum(1.0 - pts[:, 0] ** 2 - pts[:, 1] ** 2, 0.05))
    pts[27:31, 2] += (0.05, 0.1, 0.15, 0.2)
    pts[31:36, 2] += 0.08
    return pts


FACE_TEMPLATE = _face_template()


@cache
def human_tree() -> FrozenTree:
    """The human node tree (built once)."""
    t = Tree()
    r = HEAD_RADIUS
    t.add("pelvis", None, (0, 0, 0), rotates=True, owners=(TORSO, PANTS))
    t.add("spine1", "pelvis", (0, 0.11, -0.01), rotates=True, owners=(TORSO, PANTS))
    t.add("spine2", "spine1", (0, 0.13, 0.0), rotates=True, owners=(TORSO,))
    t.add("spine3", "spine2", (0, 0.13, 0.01), rotates=True, owners=(TORSO,))
    t.add("neck_base", "spine3", (0, 0.115, -0.01), rotates=True, owners=(TORSO, NECK))
    t.add("upper_neck", "neck_base", (0, 0.085, 0.015), rotates=True, owners=(NECK, HEAD))
    t.add("head_center", "upper_neck", (0, 0.075, 0.015), owners=(HEAD, HAIR))
    t.add("head_top", "head_center", (0, r, 0), owners=(HEAD, HAIR))
    t.add("jaw", "head_center", (0, -0.045, -0.01), owners=(NECK, HEAD))
    t.add("nose", "head_center", (0, -0.012, r * 1.1), normal=(0, 0, 1), owners=(HEAD, FACE))
    t.add_pair(
        "eye", "head_center", (0.037, 0.022, r * 0.9), normal=(0.3, 0.1, 1), owners=(HEAD, FACE)
    )
    t.add_pair(
        "ear",
        "head_center",
        (r * 0.97, -0.005, -0.01),
        normal=(1, 0, 0),
        owners_lr=((EAR_L, HEAD, HAIR), (EAR_R, HEAD, HAIR)),
    )
    for i, p in enumerate(FACE_TEMPLATE):
        t.add(f"face_{i}", "head_center", p * r, normal=p, owners=(HEAD, FACE))
    t.add("hair_c", "head_center", (0, 0.02, -0.035))
    # Torso outline rings (drawing only) and the shirt placket, whose normal says whether
    # the chest faces the camera.
    _ring(t, "ring_chest", "spine3", 0.02, 0.165, 0.10)
    _ring(t, "ring_waist", "spine1", 0.0, 0.14, 0.095)
    _ring(t, "ring_hip", "pelvis", -0.04, 0.165, 0.10)
    t.add_pair("shoulder_top", "spine3", (0.15, 0.105, -0.01))
    t.add_pair("neckline", "spine3", (0.06, 0.125, 0.0))
    t.add("crotch", "pelvis", (0, -0.13, 0.0))
    t.add("placket_top", "spine3", (0, 0.07, 0.105), normal=(0, 0, 1))
    t.add("placket_bot", "spine1", (0, -0.02, 0.1))
    # Arms and hands.
    t.add_pair("collar", "spine3", (0.035, 0.09, -0.005), rotates=True, owners=(TORSO, NECK))
    t.add_pair(
        "shoulder",
        "collar_l",
        (0.145, -0.005, -0.01),
        rotates=True,
        owners_lr=((TORSO, UARM_L), (TORSO, UARM_R)),
    )
    t.add_pair(
        "elbow",
        "shoulder_l",
        (0, -0.29, 0),
        rotates=True,
        owners_lr=((UARM_L, FARM_L), (UARM_R, FARM_R)),
    )
    t.add_pair(
        "wrist",
        "elbow_l",
        (0, -0.25, 0),
        rotates=True,
        owners_lr=((FARM_L, PALM_L), (FARM_R, PALM_R)),
    )
    add_hand(t, "l", "wrist_l", HAND_SCALE, PALM_L, FING_L)
    add_hand(t, "r", "wrist_r", HAND_SCALE, PALM_R, FING_R)
    # SMPL's "hand" joint (PoseBH's l/r_thumb): the knuckle centre between index and middle.
    t.add_pair(
        "thumb@pw3d",
        "wrist_l",
        (0.011 * HAND_SCALE, -0.07 * HAND_SCALE, 0.0),
        owners_lr=((FARM_L, PALM_L), (FARM_R, PALM_R)),
    )
    # Legs and feet.
    t.add_pair(
        "hip",
        "pelvis",
        (0.085, -0.075, 0),
        rotates=True,
        owners_lr=((PANTS, THIGH_L, TORSO), (PANTS, THIGH_R, TORSO)),
    )
    t.add_pair(
        "knee",
        "hip_l",
        (0, -0.42, 0),
        rotates=True,
        owners_lr=((THIGH_L, SHIN_L), (THIGH_R, SHIN_R)),
    )
    t.add_pair(
        "ankle",
        "knee_l",
        (0, -0.41, -0.01),
        rotates=True,
        owners_lr=((SHIN_L, FOOT_L), (SHIN_R, FOOT_R)),
    )
    for name, off in (
        ("heel", (0.0, -0.055, -0.055)),
        ("toe_base", (0.005, -0.07, 0.13)),
        ("big_toe", (-0.022, -0.075, 0.185)),
        ("small_toe", (0.045, -0.075, 0.155)),
    ):
        t.add_pair(name, "ankle_l", off, owners_lr=((FOOT_L,), (FOOT_R,)))
    # Dataset definition landmarks.
    for name, (base, attach, d) in variant_table().items():
        b = t.index(base)
        own = t.owners[b]
        if attach == "self":
            t.add(name, base, d, owners=own)
        else:
            t.add(name, t.names[t.parent[b]], t.offset[b] + d, owners=own)
    return t.frozen()


@cache
def variant_table() -> dict[str, tuple[str, str, np.ndarray]]:
    """Landmark node name (e.g. ``hip@aic_l``) → (anatomical node, attach, offset [3] metres in
    the body frame of that side, lateral already mirrored)."""
    out = {}
    for (kp, ds), (base, attach, delta) in DEFINITION_OFFSETS.items():
        for side in ("_l", "_r") if base in _PAIRED else ("",):
            m = np.array([-1.0, 1.0, 1.0]) if side == "_r" else np.ones(3)
            out[f"{kp}@{ds}{side}"] = (base + side, attach, np.asarray(delta, dtype=np.float64) * m)
    return out


def _wb_hand(side: str) -> list[str]:
    return [f"hand_root@coco_wholebody_{side}"] + [
        f"{f}{j}_{side}" for f in ("thumb", "index", "middle", "ring", "pinky") for j in range(1, 5)
    ]


_COCO_NODES = [
    "nose", "eye_l", "eye_r", "ear_l", "ear_r", "shoulder@coco_l", "shoulder@coco_r",
    "elbow_l", "elbow_r", "wrist_l", "wrist_r", "hip@coco_l", "hip@coco_r", "knee_l", "knee_r",
    "ankle@coco_l", "ankle@coco_r",
]  # fmt: skip

#: Skeleton name → the human node of each of its keypoints, in the skeleton's order.
HUMAN_SKELETON_NODES: dict[str, list[str]] = {
    "coco": _COCO_NODES,
    "ochuman": _COCO_NODES,
    "aic": [
        "shoulder@aic_r", "elbow_r", "wrist_r", "shoulder@aic_l", "elbow_l", "wrist_l",
        "hip@aic_r", "knee_r", "ankle_r", "hip@aic_l", "knee_l", "ankle_l", "head_top@aic",
        "neck@aic",
    ],
    "mpii": [
        "ankle_r", "knee_r", "hip@mpii_r", "hip@mpii_l", "knee_l", "ankle_l", "pelvis@mpii",
        "thorax@mpii", "upper_neck", "head_top", "wrist_r", "elbow_r", "shoulder@mpii_r",
        "shoulder@mpii_l", "elbow_l", "wrist_l",
    ],
    "pw3d": [
        "pelvis", "hip_l", "hip_r", "spine1", "knee_l", "knee_r", "spine2", "ankle_l",
        "ankle_r", "spine3", "toe_base_l", "toe_base_r", "neck_base", "collar_l", "collar_r",
        "jaw", "shoulder@pw3d_l", "shoulder@pw3d_r", "elbow_l", "elbow_r", "wrist_l", "wrist_r",
        "thumb@pw3d_l", "thumb@pw3d_r",
    ],
    "coco_wholebody": _COCO_NODES
    + ["big_toe_l", "small_toe_l", "heel_l", "big_toe_r", "small_toe_r", "heel_r"]
    + [f"face_{i}" for i in range(68)]
    + _wb_hand("l")
    + _wb_hand("r"),
}  # fmt: skip

# Whether a surface landmark faces the camera: cos(normal, direction to camera) > threshold.
# Ears stay labelled in a back view (annotators see them), eyes and nose do not.
FRONT_THRESHOLDS = {"ear_l": -0.35, "ear_r": -0.35, "nose": -0.1}


# ------------------------------------------------------------------------------------------
# Pose sampling
# ------------------------------------------------------------------------------------------

# Left-side joint limits (x, y, z) in degrees; see the module docstring for the axes.
LIMITS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "pelvis": ((-20, -25, -12), (35, 25, 12)),
    "spine1": ((-12, -20, -12), (35, 20, 12)),
    "spine2": ((-10, -20, -10), (30, 20, 10)),
    "spine3": ((-10, -20, -10), (25, 20, 10)),
    "neck_base": ((-30, -50, -25), (40, 50, 25)),
    "upper_neck": ((-30, -30, -15), (35, 30, 15)),
    "collar": ((-10, 0, -10), (10, 0, 20)),
    "shoulder": ((-175, -70, -15), (60, 70, 175)),
    "elbow": ((-150, -80, 0), (0, 80, 0)),
    "wrist": ((-70, -30, -25), (70, 30, 30)),
    "hip": ((-120, -40, -20), (30, 40, 50)),
    "knee": ((0, 0, 0), (140, 0, 0)),
    "ankle": ((-45, -20, -20), (30, 20, 20)),
}
_CENTRAL = ("pelvis", "spine1", "spine2", "spine3", "neck_base", "upper_neck")
_SIDED = ("collar", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")

#: Pose modes a style can weight.
HUMAN_POSE_MODES = ("stand", "walk", "run", "reach", "crouch", "sport")


def _clip(name: str, a: np.ndarray) -> np.ndarray:
    lo, hi = LIMITS[name]
    return np.clip(a, lo, hi)


def sample_human_pose(rng: np.random.Generator, mode: str) -> dict[str, np.ndarray]:
    """Joint-angle sample (node name → Euler (x, y, z) degrees) within :data:`LIMITS`.

    Modes: "stand", "walk" / "run" (left/right legs and arms in counter-phase), "reach" (one
    or both arms raised), "crouch", "sport" (anything within the limits, MPII-like).
    """
    n = rng.normal
    mean: dict[str, np.ndarray] = {}
    std: dict[str, np.ndarray] = {}
    for j in _CENTRAL:
        mean[j] = np.zeros(3)
        std[j] = np.array([4.0, 6.0, 3.0])
    std["neck_base"] = np.array([10.0, 22.0, 7.0])
    std["upper_neck"] = np.array([8.0, 10.0, 5.0])
    for j in _SIDED:
        for s in "lr":
            mean[f"{j}_{s}"] = np.zeros(3)
            std[f"{j}_{s}"] = np.array([6.0, 10.0, 4.0])
    for s in "lr":
        mean[f"shoulder_{s}"] = np.array([0.0, 0.0, 10.0])
        std[f"shoulder_{s}"] = np.array([12.0, 20.0, 6.0])
        mean[f"elbow_{s}"] = np.array([-15.0, 0.0, 0.0])
        std[f"elbow_{s}"] = np.array([12.0, 30.0, 0.0])
        mean[f"knee_{s}"] = np.array([6.0, 0.0, 0.0])
        mean[f"hip_{s}"] = np.array([-3.0, 0.0, 4.0])
    if mode in ("walk", "run"):
        amp = rng.uniform(15, 30) if mode == "walk" else rng.uniform(35, 55)
        ph = rng.uniform(0, 2 * np.pi)
        for s, sign in (("l", 1.0), ("r", -1.0)):
            swing = sign * np.sin(ph)
            mean[f"hip_{s}"] = np.array([-amp * swing, 0.0, 4.0])
            knee = (10 if mode == "walk" else 35) + (amp * 1.4) * max(0.0, np.sin(ph + sign * 1.2))
            mean[f"knee_{s}"] = np.array([knee, 0.0, 0.0])
            mean[f"shoulder_{s}"] = np.array([0.8 * amp * swing, 0.0, 8.0])
            mean[f"elbow_{s}"] = np.array([-25.0 if mode == "walk" else -90.0, 0.0, 0.0])
        if mode == "run":
            mean["spine1"] = np.array([12.0, 0.0, 0.0])
    elif mode == "reach":
        sides = ("l", "r") if rng.random() < 0.4 else (("l",) if rng.random() < 0.5 else ("r",))
        for s in sides:
            if rng.random() < 0.5:
                mean[f"shoulder_{s}"] = np.array([rng.uniform(-170, -60), 0.0, 10.0])
            else:
                mean[f"shoulder_{s}"] = np.array([rng.uniform(-30, 10), 0.0, rng.uniform(60, 170)])
            mean[f"elbow_{s}"] = np.array([rng.uniform(-70, 0), 0.0, 0.0])
    elif mode == "crouch":
        flex = rng.uniform(-110, -60)
        for s in "lr":
            mean[f"hip_{s}"] = np.array([flex + n(0, 10), 0.0, rng.uniform(0, 25)])
            mean[f"knee_{s}"] = np.array([rng.uniform(70, 130), 0.0, 0.0])
            mean[f"shoulder_{s}"] = np.array([rng.uniform(-80, 10), 0.0, rng.uniform(0, 40)])
            mean[f"elbow_{s}"] = np.array([rng.uniform(-120, -10), 0.0, 0.0])
        mean["spine1"] = np.array([rng.uniform(0, 30), 0.0, 0.0])
    pose: dict[str, np.ndarray] = {}
    for key in mean:
        base = key[:-2] if key.endswith(("_l", "_r")) else key
        if mode == "sport" and base in ("shoulder", "elbow", "hip", "knee", "wrist"):
            lo, hi = np.asarray(LIMITS[base][0]), np.asarray(LIMITS[base][1])
            # Uniform over 80 % of the range (the extremes look broken).
            c, h = (lo + hi) / 2, (hi - lo) / 2 * 0.8
            a = c + h * rng.uniform(-1, 1, 3)
        else:
            a = mean[key] + std[key] * n(0, 1, 3)
        a = _clip(base, a)
        pose[key] = mirror_euler(a) if key.endswith("_r") else a
    for s in "lr":
        pose.update(sample_hand_pose(rng, s))
    return pose


# ------------------------------------------------------------------------------------------
# Appearance and drawing
# ------------------------------------------------------------------------------------------

SKIN_TONES: tuple[Color, ...] = (
    (255, 224, 196), (241, 194, 160), (224, 172, 125), (198, 134, 90), (141, 85, 54), (92, 58, 38),
)  # fmt: skip
HAIR_COLOURS: tuple[Color, ...] = (
    (30, 25, 20),
    (70, 45, 25),
    (120, 80, 40),
    (200, 170, 110),
    (140, 140, 140),
    (150, 50, 30),
)


@dataclass(frozen=True)
class HumanLook:
    """How one person is drawn. Colours are RGB; ``limb_scale`` multiplies limb radii;
    ``discs`` draws darker joint discs; ``glove_tint`` is the finger-tint strength."""

    skin: Color
    hair: Color
    hair_style: str  # "short" | "long" | "bald" | "cap"
    shirt: Color
    long_sleeves: bool
    pants: Color
    shorts: bool
    shoes: Color
    accent: Color
    limb_scale: float
    discs: bool
    glove_tint: float


def sample_human_look(
    rng: np.random.Generator,
    sat: tuple[float, float],
    val: tuple[float, float],
    limb_scale: float,
    discs: bool,
) -> HumanLook:
    """A random person's look with clothes drawn in HSV saturation ``sat`` / value ``val``."""

    def cloth() -> Color:
        return hsv(rng.random(), rng.uniform(*sat), rng.uniform(*val))

    styles = ("short", "short", "long", "bald", "cap")
    return HumanLook(
        skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        hair=HAIR_COLOURS[int(rng.integers(len(HAIR_COLOURS)))],
        hair_style=styles[int(rng.integers(len(styles)))],
        shirt=cloth(),
        long_sleeves=bool(rng.random() < 0.5),
        pants=cloth(),
        shorts=bool(rng.random() < 0.25),
        shoes=hsv(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.1, 0.5)),
        accent=hsv(rng.random(), 0.9, 0.95),
        limb_scale=float(limb_scale * rng.uniform(0.9, 1.1)),
        discs=discs,
        glove_tint=float(rng.uniform(0.15, 0.4)),
    )


def _dark(c: Color, t: float = 0.35) -> Color:
    return mix(c, (0, 0, 0), t)


def human_prims(
    uv: np.ndarray,
    z: np.ndarray,
    front: np.ndarray,
    focal: float,
    scale: float,
    look: HumanLook,
    label_base: int,
) -> list[Prim]:
    """The depth-sortable primitives of one person from its projected nodes ``uv`` [N, 2] and
    depths ``z`` [N]; ``front`` [N] says which surface landmarks face the camera."""
    t = human_tree()
    ix = t.index
    prims: list[Prim] = []

    def px(node_ids: list[int]) -> float:
        return focal / float(np.mean(z[node_ids]))

    def limb(
        a: str, b: str, r0: float, r1: float, col: Color, part: int, disc: bool = True
    ) -> None:
        ia, ib = ix[a], ix[b]
        k = px([ia, ib]) * scale * look.limb_scale
        ops: list[tuple] = [("capsule", uv[ia], uv[ib], r0 * k, r1 * k, col)]
        if look.discs and disc:
            rr = 0.45 * r1 * k
            ops.append(("ellipse", (*uv[ib], rr, rr), _dark(col)))
        prims.append(Prim(float((z[ia] + z[ib]) / 2), label_base + part, ops))

    # Torso (shirt) and pelvis (pants): hulls of the outline rings; the placket marks the front.
    shirt_nodes = (
        [ix[f"ring_chest{k}"] for k in range(_RING)]
        + [ix[f"ring_waist{k}"] for k in range(_RING)]
        + [ix[n] for n in ("shoulder_top_l", "shoulder_top_r", "neckline_l", "neckline_r")]
    )
    ops: list[tuple] = [("poly", convex_hull(uv[shirt_nodes]), look.shirt)]
    if front[ix["placket_top"]]:
        w = max(1, round(0.012 * px([ix["spine2"]]) * scale))
        ops.append(("line", uv[[ix["placket_top"], ix["placket_bot"]]], w, look.accent))
    prims.append(Prim(float(z[ix["spine2"]]), label_base + TORSO, ops))
    pants_nodes = (
        [ix[f"ring_waist{k}"] for k in range(_RING)]
        + [ix[f"ring_hip{k}"] for k in range(_RING)]
        + [ix["crotch"]]
    )
    prims.append(
        Prim(
            float(z[ix["pelvis"]]),
            label_base + PANTS,
            [("poly", convex_hull(uv[pants_nodes]), look.pants)],
        )
    )
    limb("neck_base", "upper_neck", 0.05, 0.047, look.skin, NECK, disc=False)

    # Head: skin disc; hair behind (or in front of, when seen from the back) it; ears; face.
    hc = ix["head_center"]
    rh = HEAD_RADIUS * scale * focal / z[hc]
    prims.append(
        Prim(float(z[hc]), label_base + HEAD, [("ellipse", (*uv[hc], rh, rh * 1.06), look.skin)])
    )
    if look.hair_style != "bald":
        hh = ix["hair_c"]
        k = {"short": 0.97, "long": 1.08, "cap": 0.99}[look.hair_style]
        col = look.accent if look.hair_style == "cap" else look.hair
        prims.append(
            Prim(float(z[hh]), label_base + HAIR, [("ellipse", (*uv[hh], rh * k, rh * k), col)])
        )
    for s, part in (("l", EAR_L), ("r", EAR_R)):
        e = ix[f"ear_{s}"]
        re = 0.028 * scale * focal / z[e]
        prims.append(
            Prim(
                float(z[e]),
                label_base + part,
                [("ellipse", (*uv[e], re * 0.7, re), _dark(look.skin, 0.12))],
            )
        )
    face_ids = [ix[f"face_{i}"] for i in range(68)]
    if int(np.count_nonzero(front[face_ids])) >= 10:
        lw = max(1, round(0.006 * scale * focal / z[hc]))
        f_ops: list[tuple] = []

        def feat(ids: range, col: Color, closed: bool = False, fill: bool = False) -> None:
            sel = [face_ids[i] for i in ids if front[face_ids[i]]]
            if len(sel) < 2:
                return
            pts = uv[sel]
            if fill and len(sel) >= 3:
                f_ops.append(("poly", pts, col))
            else:
                if closed:
                    pts = np.vstack([pts, pts[:1]])
                f_ops.append(("line", pts, lw, col))

        feat(range(0, 17), _dark(look.skin, 0.3))
        feat(range(17, 22), look.hair)
        feat(range(22, 27), look.hair)
        feat(range(27, 31), _dark(look.skin, 0.4))
        feat(range(31, 36), _dark(look.skin, 0.45))
        feat(range(36, 42), (25, 20, 20), closed=True, fill=True)
        feat(range(42, 48), (25, 20, 20), closed=True, fill=True)
        feat(range(48, 60), (170, 60, 60), closed=True, fill=True)
        feat(range(60, 68), (90, 20, 30), closed=True, fill=True)
        prims.append(Prim(float(np.min(z[face_ids])), label_base + FACE, f_ops))

    # Arms, hands, legs, feet.
    for s, ua, fa, palm, fing in (
        ("l", UARM_L, FARM_L, PALM_L, FING_L),
        ("r", UARM_R, FARM_R, PALM_R, FING_R),
    ):
        limb(f"shoulder_{s}", f"elbow_{s}", 0.046, 0.039, look.shirt, ua)
        limb(
            f"elbow_{s}",
            f"wrist_{s}",
            0.037,
            0.029,
            look.shirt if look.long_sleeves else look.skin,
            fa,
        )
        prims.extend(
            hand_prims(
                uv,
                z,
                t,
                s,
                f"wrist_{s}",
                focal,
                scale * HAND_SCALE,
                look.skin,
                label_base,
                palm,
                fing,
                tint=look.glove_tint,
            )
        )
    for s, th, sh, ft in (("l", THIGH_L, SHIN_L, FOOT_L), ("r", THIGH_R, SHIN_R, FOOT_R)):
        limb(f"hip_{s}", f"knee_{s}", 0.075, 0.056, look.pants, th)
        limb(f"knee_{s}", f"ankle_{s}", 0.052, 0.04, look.skin if look.shorts else look.pants, sh)
        foot = [ix[f"{n}_{s}"] for n in ("heel", "small_toe", "big_toe", "toe_base")] + [
            ix[f"ankle_{s}"]
        ]
        prims.append(
            Prim(
                float(np.mean(z[foot])),
                label_base + ft,
                [("poly", convex_hull(uv[foot]), look.shoes)],
            )
        )
    return prims


def pose_rotations(pose: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Node-name → Euler angles ⇒ node-index → rotation matrix."""
    ix = human_tree().index
    return {ix[name]: euler(a) for name, a in pose.items()}


def human_offsets(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Per-person offsets [N, 3]: the tree's, × ``scale``, with ±4 % per-bone-group jitter
    (left and right bones jittered together, so people stay symmetric)."""
    t = human_tree()
    off = t.offset * scale
    for group in (("elbow", "wrist"), ("knee", "ankle"), ("spine1", "spine2", "spine3")):
        for g in group:
            f = rng.uniform(0.96, 1.04)
            for name in (g, f"{g}_l", f"{g}_r"):
                if name in t.index:
                    off[t.index[name]] *= f
    # Landmarks hung on a parent bone follow the jittered joint, keeping their exact offset.
    for name, (base, attach, d) in variant_table().items():
        if attach == "parent":
            off[t.index[name]] = off[t.index[base]] + d * scale
    return off
