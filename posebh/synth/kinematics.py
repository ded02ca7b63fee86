"""3-D kinematic trees, rotations and the pinhole camera behind every SynthPose figure.

Shapes: a tree has N nodes; ``offsets`` [N, 3] (metres, in the parent node's frame at rest),
``rest`` [N, 3, 3], local pose rotations [N, 3, 3]; forward kinematics returns positions
[N, 3] and global frames [N, 3, 3] in *camera* coordinates (x right, y down, z forward, metres).
Projection gives pixels [N, 2] (0-based, pixel centres at integers) and depths [N].

Body frames of all models: x = the figure's own left, y = up, z = forward (the way the face /
snout / palm points at rest). Right-side nodes are built as the mirror (x → −x) of the left
ones, and their Euler angles are mirrored (y and z angles negated), so one set of joint limits
describes both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FLIP_BODY_TO_CAMERA",
    "Tree",
    "euler",
    "look_at",
    "mirror_euler",
    "project",
    "rot_x",
    "rot_y",
    "rot_z",
]


def rot_x(deg: float) -> np.ndarray:
    """[3, 3] rotation about +x by ``deg`` degrees (right-hand rule)."""
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(deg: float) -> np.ndarray:
    """[3, 3] rotation about +y by ``deg`` degrees."""
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(deg: float) -> np.ndarray:
    """[3, 3] rotation about +z by ``deg`` degrees."""
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def euler(angles: np.ndarray | tuple[float, float, float]) -> np.ndarray:
    """Angles (x, y, z) in degrees → Rz · Rx · Ry: twist about the bone (y) first, then flexion
    (x), then abduction (z) — the order in which the joint limits below are meaningful."""
    x, y, z = (float(a) for a in angles)
    return rot_z(z) @ rot_x(x) @ rot_y(y)


def mirror_euler(angles: np.ndarray) -> np.ndarray:
    """(x, y, z) angles of a left joint → those of the mirrored right joint (y, z negated)."""
    out = np.array(angles, dtype=np.float64)
    out[..., 1:] *= -1.0
    return out


# Body frame (x left, y up, z forward) → camera frame (x right, y down, z away) for a figure
# that faces the camera: a 180° turn about x (a proper rotation, det +1). The figure's left
# then appears on the image's right, as for a real person facing the photographer.
FLIP_BODY_TO_CAMERA = np.diag([1.0, -1.0, -1.0])


@dataclass
class Tree:
    """A kinematic tree built node by node (parents before children).

    ``rotates[n]`` marks a joint that has its own pose rotation; ``normal[n]`` (optional) is a
    unit outward surface normal in the parent's frame, used to decide whether a surface landmark
    (an eye, a face contour point) faces the camera; ``owners[n]`` are the part ids of the
    rendered shapes on which the node lies (occlusion test).
    """

    names: list[str] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    offset: list[np.ndarray] = field(default_factory=list)
    rest: list[np.ndarray] = field(default_factory=list)
    rotates: list[bool] = field(default_factory=list)
    normal: list[np.ndarray | None] = field(default_factory=list)
    owners: list[tuple[int, ...]] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        name: str,
        parent: str | None,
        offset: tuple[float, float, float] | np.ndarray,
        *,
        rotates: bool = False,
        rest: np.ndarray | None = None,
        normal: tuple[float, float, float] | np.ndarray | None = None,
        owners: tuple[int, ...] = (),
    ) -> int:
        """Append one node; returns its index."""
        if name in self._index:
            raise ValueError(f"duplicate node {name!r}")
        p = -1 if parent is None else self._index[parent]
        self._index[name] = len(self.names)
        self.names.append(name)
        self.parent.append(p)
        self.offset.append(np.asarray(offset, dtype=np.float64))
        self.rest.append(np.eye(3) if rest is None else np.asarray(rest, dtype=np.float64))
        self.rotates.append(rotates)
        if normal is not None:
            n = np.asarray(normal, dtype=np.float64)
            normal = n / np.linalg.norm(n)
        self.normal.append(normal)
        self.owners.append(tuple(owners))
        return self._index[name]

    def add_pair(
        self,
        name: str,
        parent: str | None,
        offset: tuple[float, float, float],
        **kwargs: object,
    ) -> None:
        """Add ``name_l`` (offset as given) and its mirror ``name_r`` (x negated).

        ``parent`` ending in ``_l`` is paired the same way; ``owners`` may be a pair
        ``(left_owners, right_owners)`` given as ``owners_lr``; ``rest`` and ``normal`` are
        mirrored.
        """
        owners_lr = kwargs.pop("owners_lr", None)
        rest = kwargs.pop("rest", None)
        normal = kwargs.pop("normal", None)
        m = np.diag([-1.0, 1.0, 1.0])
        for side in ("l", "r"):
            par = parent
            if parent is not None and parent.endswith("_l"):
                par = parent[:-2] + "_" + side
            off = np.asarray(offset, dtype=np.float64)
            rs = None if rest is None else np.asarray(rest, dtype=np.float64)
            nm = None if normal is None else np.asarray(normal, dtype=np.float64)
            if side == "r":
                off = m @ off
                rs = None if rs is None else m @ rs @ m
                nm = None if nm is None else m @ nm
            own = kwargs.get("owners", ())
            if owners_lr is not None:
                own = owners_lr[0] if side == "l" else owners_lr[1]  # type: ignore[index]
            extra = {k: v for k, v in kwargs.items() if k != "owners"}
            self.add(f"{name}_{side}", par, off, rest=rs, normal=nm, owners=own, **extra)  # type: ignore[arg-type]

    def index(self, name: str) -> int:
        """Index of node ``name`` (``KeyError`` if absent)."""
        return self._index[name]

    def indices(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Indices of several nodes, as an int array [len(names)]."""
        return np.array([self._index[n] for n in names], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.names)

    def frozen(self) -> FrozenTree:
        """The tree as arrays (what forward kinematics consumes)."""
        n = len(self.names)
        max_own = max((len(o) for o in self.owners), default=1) or 1
        owners = np.full((n, max_own), -1, dtype=np.int64)
        for i, o in enumerate(self.owners):
            owners[i, : len(o)] = o
        normal = np.zeros((n, 3))
        has_normal = np.zeros(n, dtype=bool)
        for i, v in enumerate(self.normal):
            if v is not None:
                normal[i] = v
                has_normal[i] = True
        return FrozenTree(
            names=tuple(self.names),
            parent=np.array(self.parent, dtype=np.int64),
            offset=np.stack(self.offset),
            rest=np.stack(self.rest),
            rotates=np.array(self.rotates, dtype=bool),
            normal=normal,
            has_normal=has_normal,
            owners=owners,
            index=dict(self._index),
        )


@dataclass(frozen=True)
class FrozenTree:
    """Array form of a :class:`Tree` (see there). ``owners`` [N, M] is −1-padded."""

    names: tuple[str, ...]
    parent: np.ndarray
    offset: np.ndarray
    rest: np.ndarray
    rotates: np.ndarray
    normal: np.ndarray
    has_normal: np.ndarray
    owners: np.ndarray
    index: dict[str, int]

    def __len__(self) -> int:
        return len(self.names)

    def idx(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """Indices of ``names`` as an int array."""
        return np.array([self.index[n] for n in names], dtype=np.int64)

    def forward(
        self,
        offsets: np.ndarray,
        local: dict[int, np.ndarray],
        root_rot: np.ndarray,
        root_pos: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forward kinematics.

        Args:
            offsets: [N, 3] per-figure offsets (the tree's, scaled/jittered).
            local: node index → [3, 3] pose rotation (joints absent from it stay at rest).
            root_rot: [3, 3] body → camera rotation of the root; root_pos: [3] its position.

        Returns:
            ``(positions [N, 3], frames [N, 3, 3], normals [N, 3])`` in camera coordinates;
            ``frames[n]`` maps node n's local frame (the frame its children's offsets live in)
            to the camera, ``normals`` are the nodes' surface normals (zero when undefined).
        """
        n = len(self.names)
        pos = np.zeros((n, 3))
        frames = np.zeros((n, 3, 3))
        normals = np.zeros((n, 3))
        for i in range(n):
            p = self.parent[i]
            base = root_rot if p < 0 else frames[p]
            pos[i] = root_pos if p < 0 else pos[p] + base @ offsets[i]
            rot = self.rest[i]
            if i in local:
                rot = rot @ local[i]
            frames[i] = base @ rot
            if self.has_normal[i]:
                normals[i] = base @ self.normal[i]
        return pos, frames, normals


def project(
    pos: np.ndarray, focal: float, cx: float, cy: float, min_depth: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection: positions [N, 3] (camera, metres) → (pixels [N, 2], depth [N]).

    u = f·x/z + cx, v = f·y/z + cy; z is clamped at ``min_depth`` so that a node behind the
    camera cannot produce infinities (such nodes are never inside the image anyway).
    """
    z = np.maximum(pos[:, 2], min_depth)
    uv = np.stack([focal * pos[:, 0] / z + cx, focal * pos[:, 1] / z + cy], axis=1)
    return uv, z


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """World → camera rotation [3, 3] (rows = camera x, y, z axes in world coordinates) for a
    camera at ``eye`` looking at ``target`` with world ``up`` appearing upwards (camera y down)."""
    z = np.asarray(target, np.float64) - np.asarray(eye, np.float64)
    z /= np.linalg.norm(z)
    down = -np.asarray(up, np.float64)
    y = down - np.dot(down, z) * z
    y /= np.linalg.norm(y)
    x = np.cross(y, z)
    return np.stack([x, y, z])
