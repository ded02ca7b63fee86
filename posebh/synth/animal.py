"""The SynthPose quadruped: a species-parameterised 3-D tree annotated with the AP-10K /
APT-36K 17 keypoints.

Body frame: x = the animal's left, y = up, z = forward (snout); metres; the root is the middle
of the spine. Each species (:data:`SPECIES`) sets the proportions; joint angles come from a
gait phase (stand / walk / trot / gallop) or a head-down "graze" / head-up "alert" posture.

Definition offsets (APT-36K vs AP-10K, both in the frame of the bone they sit on; G is the
species' body girth, s the animal's scale):

* Neck: AP-10K at 35 % of the way up the neck, APT-36K at 10 % (the neck base);
* Root of tail: APT-36K (0, +0.05·G, −0.08·G) from AP-10K's;
* Shoulders: APT-36K (0, +0.15·G, 0) higher; hips: APT-36K (0, +0.12·G, 0) higher.

Eyes, nose, elbows, knees and paws are shared exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from .kinematics import FrozenTree, Tree, euler, mirror_euler
from .render import Color, Prim, convex_hull, hsv, mix

__all__ = [
    "ANIMAL_SKELETON_NODES",
    "SPECIES",
    "AnimalLook",
    "Species",
    "animal_prims",
    "animal_tree",
    "sample_animal_pose",
]

# Render part ids.
BODY, NECK, HEAD, EARS, TAIL = 1, 2, 3, 4, 5
LEG_PARTS = {"fl": (6, 7), "fr": (8, 9), "bl": (10, 11), "br": (12, 13)}


@dataclass(frozen=True)
class Species:
    """Proportions (metres) and colours of one species; ``category_id`` is the annotation's.

    ``body`` withers-to-hips length, ``leg`` leg length, ``neck`` neck length, ``neck_angle``
    its rest elevation (degrees), ``head`` head length, ``girth`` body depth, ``tail`` tail
    length; ``hue`` / ``sat`` / ``val`` ranges of the coat colour; ``spots`` the chance of a
    spotted coat.
    """

    category_id: int
    name: str
    supercategory: str
    body: float
    leg: float
    neck: float
    neck_angle: float
    head: float
    girth: float
    tail: float
    hue: tuple[float, float]
    sat: tuple[float, float]
    val: tuple[float, float]
    spots: float


#: The synthetic species (ids 1-8; names only loosely follow AP-10K's categories).
SPECIES: tuple[Species, ...] = (
    Species(
        1,
        "dog",
        "Canidae",
        0.55,
        0.45,
        0.22,
        40,
        0.2,
        0.18,
        0.33,
        (0.05, 0.12),
        (0.2, 0.7),
        (0.3, 0.9),
        0.2,
    ),
    Species(
        2,
        "cat",
        "Felidae",
        0.40,
        0.26,
        0.11,
        45,
        0.13,
        0.13,
        0.32,
        (0.0, 0.12),
        (0.0, 0.6),
        (0.2, 0.95),
        0.3,
    ),
    Species(
        3,
        "horse",
        "Equidae",
        1.10,
        1.00,
        0.62,
        50,
        0.52,
        0.36,
        0.55,
        (0.03, 0.1),
        (0.3, 0.8),
        (0.2, 0.7),
        0.1,
    ),
    Species(
        4,
        "cow",
        "Bovidae",
        1.20,
        0.75,
        0.36,
        25,
        0.46,
        0.48,
        0.60,
        (0.0, 0.1),
        (0.0, 0.5),
        (0.15, 0.95),
        0.6,
    ),
    Species(
        5,
        "sheep",
        "Bovidae",
        0.70,
        0.45,
        0.20,
        35,
        0.26,
        0.34,
        0.12,
        (0.08, 0.15),
        (0.0, 0.2),
        (0.7, 0.95),
        0.0,
    ),
    Species(
        6,
        "bear",
        "Ursidae",
        1.00,
        0.55,
        0.25,
        20,
        0.32,
        0.45,
        0.08,
        (0.05, 0.1),
        (0.3, 0.7),
        (0.1, 0.4),
        0.0,
    ),
    Species(
        7,
        "deer",
        "Cervidae",
        0.85,
        0.85,
        0.42,
        55,
        0.30,
        0.26,
        0.12,
        (0.06, 0.1),
        (0.4, 0.7),
        (0.4, 0.7),
        0.3,
    ),
    Species(
        8,
        "giraffe",
        "Giraffidae",
        1.30,
        1.50,
        1.60,
        70,
        0.52,
        0.40,
        0.70,
        (0.09, 0.13),
        (0.5, 0.8),
        (0.6, 0.9),
        1.0,
    ),
)

#: Landmark node → (anatomical node, attach, offset as a fraction of girth G (x, y, z)).
#: "neck" landmarks are fractions of the neck vector instead (see :func:`animal_offsets`).
_VARIANTS = {
    "tail_root@apt36k": ("tail_root", "parent", (0.0, 0.05, -0.08)),
    "shoulder@apt36k_l": ("shoulder_l", "parent", (0.0, 0.15, 0.0)),
    "shoulder@apt36k_r": ("shoulder_r", "parent", (0.0, 0.15, 0.0)),
    "hip@apt36k_l": ("hip_l", "parent", (0.0, 0.12, 0.0)),
    "hip@apt36k_r": ("hip_r", "parent", (0.0, 0.12, 0.0)),
}
_NECK_FRACTIONS = {"neck@ap10k": 0.35, "neck@apt36k": 0.10}


@cache
def animal_tree() -> FrozenTree:
    """The quadruped node tree at unit proportions (offsets are set per animal)."""
    t = Tree()
    t.add("root", None, (0, 0, 0), rotates=True, owners=(BODY,))
    t.add("withers", "root", (0, 0, 0), rotates=True, owners=(BODY,))
    t.add("hip_c", "root", (0, 0, 0), rotates=True, owners=(BODY,))
    t.add("neck_base", "withers", (0, 0, 0), rotates=True, owners=(BODY, NECK))
    t.add("head_j", "neck_base", (0, 0, 0), rotates=True, owners=(NECK, HEAD))
    t.add("head_c", "head_j", (0, 0, 0), owners=(HEAD,))
    t.add("nose", "head_c", (0, 0, 0), normal=(0, -0.2, 1), owners=(HEAD,))
    t.add_pair("eye", "head_c", (0, 0, 0), normal=(1, 0.2, 0.6), owners=(HEAD,))
    t.add_pair("ear", "head_c", (0, 0, 0))
    for s in "lr":
        fu, fl = LEG_PARTS["f" + s]
        bu, bl = LEG_PARTS["b" + s]
        t.add(f"shoulder_{s}", "withers", (0, 0, 0), rotates=True, owners=(BODY, fu))
        t.add(f"elbow_{s}", f"shoulder_{s}", (0, 0, 0), rotates=True, owners=(fu, fl))
        t.add(f"fpaw_{s}", f"elbow_{s}", (0, 0, 0), owners=(fl,))
        t.add(f"hip_{s}", "hip_c", (0, 0, 0), rotates=True, owners=(BODY, bu))
        t.add(f"knee_{s}", f"hip_{s}", (0, 0, 0), rotates=True, owners=(bu, bl))
        t.add(f"bpaw_{s}", f"knee_{s}", (0, 0, 0), owners=(bl,))
    t.add("tail_root", "hip_c", (0, 0, 0), rotates=True, owners=(BODY, TAIL))
    t.add("tail_1", "tail_root", (0, 0, 0), rotates=True, owners=(TAIL,))
    t.add("tail_2", "tail_1", (0, 0, 0), rotates=True, owners=(TAIL,))
    t.add("tail_3", "tail_2", (0, 0, 0), owners=(TAIL,))
    for end, parent in (("front", "withers"), ("back", "hip_c")):
        for k in range(8):
            t.add(f"ring_{end}{k}", parent, (0, 0, 0))
    for name, (base, _, _) in _VARIANTS.items():
        t.add(name, t.names[t.parent[t.index(base)]], (0, 0, 0), owners=t.owners[t.index(base)])
    for name in _NECK_FRACTIONS:
        t.add(name, "neck_base", (0, 0, 0), owners=(BODY, NECK))
    return t.frozen()


def animal_offsets(sp: Species, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Offsets [N, 3] of one animal of species ``sp`` (±5 % proportion jitter)."""
    t = animal_tree()
    j = rng.uniform(0.95, 1.05, 4)
    length, leg, neck, head = (
        sp.body * j[0] * scale,
        sp.leg * j[1] * scale,
        sp.neck * j[2] * scale,
        sp.head * j[3] * scale,
    )
    g = sp.girth * scale
    a = np.deg2rad(sp.neck_angle)
    neck_vec = neck * np.array([0.0, np.sin(a), np.cos(a)])
    off = np.zeros((len(t), 3))

    def put(name: str, v: tuple[float, float, float] | np.ndarray) -> None:
        off[t.index[name]] = v

    put("withers", (0, 0.05 * g, length / 2))
    put("hip_c", (0, 0, -length / 2))
    put("neck_base", (0, 0.3 * g, 0.15 * g))
    put("head_j", neck_vec)
    put("head_c", (0, 0.1 * head, 0.25 * head))
    put("nose", (0, -0.15 * head, 0.75 * head))
    put("tail_root", (0, 0.3 * g, -0.1 * g))
    for k in (1, 2, 3):
        put(f"tail_{k}", (0, 0, -sp.tail * scale / 3))
    for s, m in (("l", 1.0), ("r", -1.0)):
        put(f"eye_{s}", (m * 0.2 * head, 0.18 * head, 0.22 * head))
        put(f"ear_{s}", (m * 0.22 * head, 0.42 * head, -0.12 * head))
        put(f"shoulder_{s}", (m * 0.4 * g, -0.45 * g, 0.05 * g))
        put(f"elbow_{s}", (0, -0.5 * leg, -0.03 * leg))
        put(f"fpaw_{s}", (0, -0.5 * leg + 0.0, 0.02 * leg))
        put(f"hip_{s}", (m * 0.4 * g, -0.4 * g, 0))
        put(f"knee_{s}", (0, -0.5 * leg, 0.06 * leg))
        put(f"bpaw_{s}", (0, -0.5 * leg, -0.06 * leg))
    for end in ("front", "back"):
        for k in range(8):
            ang = 2 * np.pi * k / 8
            put(f"ring_{end}{k}", (0.5 * g * np.cos(ang), 0.5 * g * np.sin(ang), 0))
    for name, (base, _, frac) in _VARIANTS.items():
        off[t.index[name]] = off[t.index[base]] + np.asarray(frac) * g
    for name, f in _NECK_FRACTIONS.items():
        put(name, f * neck_vec)
    return off


ANIMAL_SKELETON_NODES: dict[str, list[str]] = {
    "ap10k": [
        "eye_l", "eye_r", "nose", "neck@ap10k", "tail_root", "shoulder_l", "elbow_l", "fpaw_l",
        "shoulder_r", "elbow_r", "fpaw_r", "hip_l", "knee_l", "bpaw_l", "hip_r", "knee_r",
        "bpaw_r",
    ],
    "apt36k": [
        "eye_l", "eye_r", "nose", "neck@apt36k", "tail_root@apt36k", "shoulder@apt36k_l",
        "elbow_l", "fpaw_l", "shoulder@apt36k_r", "elbow_r", "fpaw_r", "hip@apt36k_l", "knee_l",
        "bpaw_l", "hip@apt36k_r", "knee_r", "bpaw_r",
    ],
}  # fmt: skip

FRONT_THRESHOLDS = {"nose": -0.2}

ANIMAL_POSE_MODES = ("stand", "walk", "trot", "gallop", "graze", "alert")


def sample_animal_pose(rng: np.random.Generator, mode: str) -> dict[str, np.ndarray]:
    """Node name → Euler (x, y, z) degrees. Legs swing about x (+x moves a paw backwards);
    the front elbow folds backwards (x ∈ [0, 90]), the back knee forwards (x ∈ [−80, 10])."""
    n = rng.normal
    amp = {"stand": 4, "walk": 18, "trot": 28, "gallop": 40, "graze": 6, "alert": 4}[mode]
    ph = rng.uniform(0, 2 * np.pi)
    # Diagonal pairs in phase for walk/trot; front and back pairs together for a gallop.
    phase = (
        {"fl": 0.0, "br": 0.0, "fr": np.pi, "bl": np.pi}
        if mode != "gallop"
        else {"fl": 0.0, "fr": 0.4, "bl": np.pi, "br": np.pi + 0.4}
    )
    out: dict[str, np.ndarray] = {}
    for leg, p in phase.items():
        s = leg[1]
        swing = np.sin(ph + p)
        fold = max(0.0, np.sin(ph + p + 1.3))
        if leg[0] == "f":
            up = np.array(
                [np.clip(-amp * swing + n(0, 4), -50, 50), n(0, 3), np.clip(n(0, 3), -8, 8)]
            )
            low = np.array([np.clip(amp * 1.8 * fold + abs(n(0, 4)), 0, 90), 0.0, 0.0])
            names = (f"shoulder_{s}", f"elbow_{s}")
        else:
            up = np.array(
                [np.clip(-amp * swing + n(0, 4), -50, 50), n(0, 3), np.clip(n(0, 3), -8, 8)]
            )
            low = np.array([np.clip(-amp * 1.5 * fold - abs(n(0, 4)), -80, 10), 0.0, 0.0])
            names = (f"hip_{s}", f"knee_{s}")
        for name, a in zip(names, (up, low), strict=True):
            out[name] = mirror_euler(a) if s == "r" else a
    neck_x = {"graze": rng.uniform(45, 85), "alert": rng.uniform(-30, -10)}.get(mode, n(0, 12))
    out["neck_base"] = np.array([neck_x, np.clip(n(0, 20), -45, 45), n(0, 5)])
    out["head_j"] = np.array([np.clip(n(0, 15), -35, 35), np.clip(n(0, 12), -30, 30), n(0, 4)])
    out["root"] = np.array([n(0, 3), n(0, 4), n(0, 2)])
    out["withers"] = np.array([n(0, 3), n(0, 5), 0.0])
    out["hip_c"] = np.array([n(0, 3), n(0, 5), 0.0])
    out["tail_root"] = np.array([rng.uniform(-50, 40), n(0, 20), 0.0])
    out["tail_1"] = np.array([n(0, 15), n(0, 15), 0.0])
    out["tail_2"] = np.array([n(0, 15), n(0, 15), 0.0])
    return out


def pose_rotations(pose: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Node-name → Euler angles ⇒ node-index → rotation matrix."""
    ix = animal_tree().index
    return {ix[k]: euler(v) for k, v in pose.items()}


@dataclass(frozen=True)
class AnimalLook:
    """Coat colour, belly colour, leg/paw colour, spot colour (or None) and spot layout
    ([k, 3] points on the body in the root frame, unit girth), line ``limb_scale``."""

    coat: Color
    belly: Color
    legs: Color
    spots: Color | None
    spot_pts: tuple[tuple[float, float, float], ...]
    limb_scale: float


def sample_animal_look(rng: np.random.Generator, sp: Species, limb_scale: float) -> AnimalLook:
    """A random coat for species ``sp``."""
    coat = hsv(rng.uniform(*sp.hue), rng.uniform(*sp.sat), rng.uniform(*sp.val))
    spots = None
    pts: tuple[tuple[float, float, float], ...] = ()
    if rng.random() < sp.spots:
        spots = mix(coat, (20, 15, 10) if sum(coat) > 300 else (240, 235, 225), 0.7)
        k = int(rng.integers(4, 10))
        pts = tuple(
            (float(a), float(b), float(c))
            for a, b, c in zip(
                rng.uniform(-1, 1, k),
                rng.uniform(-0.3, 0.5, k),
                rng.uniform(-0.5, 0.5, k),
                strict=True,
            )
        )
    return AnimalLook(
        coat=coat,
        belly=mix(coat, (235, 225, 210), rng.uniform(0.1, 0.5)),
        legs=mix(coat, (20, 15, 10), rng.uniform(0.0, 0.4)),
        spots=spots,
        spot_pts=pts,
        limb_scale=float(limb_scale * rng.uniform(0.9, 1.1)),
    )


def animal_prims(
    uv: np.ndarray,
    z: np.ndarray,
    pos: np.ndarray,
    frames: np.ndarray,
    front: np.ndarray,
    focal: float,
    sp: Species,
    scale: float,
    look: AnimalLook,
    label_base: int,
    cam: tuple[float, float],
) -> list[Prim]:
    """Primitives of one animal (projected nodes ``uv`` [N, 2], depths ``z`` [N], camera-space
    positions ``pos`` [N, 3] and frames [N, 3, 3] for the coat spots)."""
    t = animal_tree()
    ix = t.index
    g = sp.girth * scale * look.limb_scale
    prims: list[Prim] = []

    def k(ids: list[int]) -> float:
        return focal / float(np.mean(z[ids]))

    ring = [ix[f"ring_front{i}"] for i in range(8)] + [ix[f"ring_back{i}"] for i in range(8)]
    ops: list[tuple] = [("poly", convex_hull(uv[ring]), look.coat)]
    if look.spots is not None:
        # Spots sit on the flank that faces the camera (lateral side ±x of the root frame).
        root = ix["root"]
        for p in look.spot_pts:
            side = 1.0 if p[0] >= 0 else -1.0
            local = (
                np.array([side * 0.45 * sp.girth, p[1] * 0.5 * sp.girth, p[2] * 0.9 * sp.body])
                * scale
            )
            q = pos[root] + frames[root] @ local
            normal = frames[root] @ np.array([side, 0.0, 0.0])
            if q[2] <= 0.05 or float(normal @ q) > 0:
                continue
            rs = 0.09 * sp.girth * scale * focal / q[2]
            c = (focal * q[0] / q[2] + cam[0], focal * q[1] / q[2] + cam[1])
            ops.append(("ellipse", (*c, rs, rs * 0.8), look.spots))
    prims.append(Prim(float(z[ix["root"]]), label_base + BODY, ops))

    def seg(a: str, b: str, r0: float, r1: float, col: Color, part: int, paw: bool = False) -> None:
        ia, ib = ix[a], ix[b]
        kk = k([ia, ib])
        o: list[tuple] = [("capsule", uv[ia], uv[ib], r0 * kk, r1 * kk, col)]
        if paw:
            rr = 1.3 * r1 * kk
            o.append(("ellipse", (*uv[ib], rr, rr * 0.8), mix(col, (10, 10, 10), 0.5)))
        prims.append(Prim(float((z[ia] + z[ib]) / 2), label_base + part, o))

    seg("neck_base", "head_j", 0.32 * g, 0.22 * g, look.coat, NECK)
    for s in "lr":
        fu, fl = LEG_PARTS["f" + s]
        bu, bl = LEG_PARTS["b" + s]
        seg(f"shoulder_{s}", f"elbow_{s}", 0.2 * g, 0.12 * g, look.coat, fu)
        seg(f"elbow_{s}", f"fpaw_{s}", 0.11 * g, 0.08 * g, look.legs, fl, paw=True)
        seg(f"hip_{s}", f"knee_{s}", 0.24 * g, 0.13 * g, look.coat, bu)
        seg(f"knee_{s}", f"bpaw_{s}", 0.11 * g, 0.08 * g, look.legs, bl, paw=True)
    seg("tail_root", "tail_1", 0.09 * g, 0.07 * g, look.coat, TAIL)
    seg("tail_1", "tail_2", 0.07 * g, 0.05 * g, look.coat, TAIL)
    seg("tail_2", "tail_3", 0.05 * g, 0.03 * g, mix(look.coat, (20, 15, 10), 0.3), TAIL)
    # Head: skull ellipse, snout capsule, ears, eyes.
    hc, nose = ix["head_c"], ix["nose"]
    hk = k([hc])
    hr = 0.28 * sp.head * scale * hk
    h_ops: list[tuple] = [
        ("ellipse", (*uv[hc], hr, hr), look.coat),
        ("capsule", uv[hc], uv[nose], 0.7 * hr, 0.38 * hr, look.belly),
        ("ellipse", (*uv[nose], 0.22 * hr, 0.2 * hr), (30, 25, 25)),
    ]
    for s in "lr":
        e = ix[f"eye_{s}"]
        if front[e]:
            h_ops.append(("ellipse", (*uv[e], 0.16 * hr, 0.16 * hr), (15, 12, 10)))
    prims.append(Prim(float(z[hc]), label_base + HEAD, h_ops))
    for s in "lr":
        e = ix[f"ear_{s}"]
        base = uv[hc] + 0.55 * (uv[e] - uv[hc])
        d = uv[e] - base
        perp = np.array([-d[1], d[0]]) * 0.6
        prims.append(
            Prim(
                float(z[e]),
                label_base + EARS,
                [
                    (
                        "poly",
                        np.stack([base + perp, uv[e], base - perp]),
                        mix(look.coat, (30, 20, 15), 0.25),
                    )
                ],
            )
        )
    return prims
