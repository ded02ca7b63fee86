"""Keypoint definitions of every dataset posebh trains on or evaluates.

This module is the single source of truth for keypoint names, flip indices, OKS sigmas,
joint weights and the multi-dataset class layout of the PoseBH / ViTPose++ model.

Sources (cited per array below):

* ``PROTOCOL.md §1`` is section 1 of the shared ``PROTOCOL.md`` (``../shared`` beside the
  repository). It transcribes the official ``configs/_base_/datasets/*.py`` of the PoseBH
  release (mmpose 0.x fork) and is the reference for sigmas, orders and flip indices;
  ``tests/test_skeletons.py`` parses it at test time.
* Keypoint *spellings* (e.g. ``right_shoulder`` rather than PROTOCOL.md's ``r-shoulder``) and the
  upper/lower ``type`` of each joint come from the same dataset configs (mmpose ``aic.py``,
  ``mpii.py``, ``coco.py``; PoseBH ``ap10k.py``, ``coco_wholebody.py``, ``pw3d_info.py``,
  ``interhand2d_info.py``).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

__all__ = [
    "AIC",
    "AP10K",
    "APT36K",
    "COCO",
    "COCO_WHOLEBODY",
    "INTERHAND2D",
    "MPII",
    "NUM_KEYPOINTS",
    "OCHUMAN",
    "PW3D",
    "SKELETONS",
    "SKELETON_LINKS",
    "TOTAL_TRAINING_KEYPOINTS",
    "TRAINING_SKELETONS",
    "Skeleton",
    "class_offsets",
    "get_skeleton",
]


@dataclass(frozen=True)
class Skeleton:
    """The keypoint definition of one dataset.

    ``flip_indices[i]`` is the index of the joint that joint ``i`` becomes in a horizontally
    mirrored image. ``sigmas`` are the per-joint OKS constants (empty when the dataset is not
    scored with OKS). ``dataset_index`` is the dataset's position in the multi-dataset model
    (``None`` for evaluation/transfer-only datasets). ``upper_body_ids``/``lower_body_ids`` are
    the joints that half-body augmentation picks from; joints in neither (face, hands) are never
    used by it. ``parts`` maps a part name to its ``[start, end)`` index range (COCO-WholeBody).
    """

    name: str
    keypoint_names: tuple[str, ...]
    flip_indices: tuple[int, ...]
    sigmas: tuple[float, ...]
    joint_weights: tuple[float, ...]
    dataset_index: int | None
    upper_body_ids: tuple[int, ...]
    lower_body_ids: tuple[int, ...]
    # Excluded from hashing: a mapping is not hashable, and the other fields identify the
    # skeleton anyway. Wrapped read-only in __post_init__ so the frozen object stays immutable.
    parts: Mapping[str, tuple[int, int]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # Validate at construction so a typo in a table below fails at import, not mid-training.
        k = len(self.keypoint_names)
        if len(set(self.keypoint_names)) != k:
            raise ValueError(f"{self.name}: duplicate keypoint names")
        if len(self.flip_indices) != k:
            raise ValueError(f"{self.name}: {len(self.flip_indices)} flip indices for {k} joints")
        if sorted(self.flip_indices) != list(range(k)):
            raise ValueError(f"{self.name}: flip_indices is not a permutation")
        if any(self.flip_indices[j] != i for i, j in enumerate(self.flip_indices)):
            raise ValueError(f"{self.name}: flip_indices is not an involution")
        if len(self.sigmas) not in (0, k):
            raise ValueError(f"{self.name}: {len(self.sigmas)} sigmas for {k} joints")
        if len(self.joint_weights) != k:
            raise ValueError(f"{self.name}: {len(self.joint_weights)} joint weights for {k}")
        ids = self.upper_body_ids + self.lower_body_ids
        if len(set(ids)) != len(ids) or any(not 0 <= i < k for i in ids):
            raise ValueError(f"{self.name}: upper/lower body ids overlap or are out of range")
        for part, (start, end) in self.parts.items():
            if not 0 <= start < end <= k:
                raise ValueError(f"{self.name}: part {part!r} range [{start}, {end}) invalid")
        object.__setattr__(self, "parts", types.MappingProxyType(dict(self.parts)))

    def __reduce__(self) -> tuple[type[Skeleton], tuple[object, ...]]:
        # A mappingproxy cannot be pickled; rebuild from plain values so skeletons can cross
        # process boundaries (DataLoader workers) and be deep-copied.
        values = tuple(
            dict(self.parts) if f.name == "parts" else getattr(self, f.name) for f in fields(self)
        )
        return (type(self), values)

    @property
    def num_keypoints(self) -> int:
        """Number of keypoints K."""
        return len(self.keypoint_names)

    @property
    def flip_pairs(self) -> list[tuple[int, int]]:
        """Mirrored joint pairs ``(i, j)`` with ``i < j``; self-symmetric joints are left out."""
        return [(i, j) for i, j in enumerate(self.flip_indices) if i < j]

    def sigmas_array(self) -> np.ndarray:
        """The OKS sigmas as a float64 array of shape (K,), or (0,) when there are none."""
        return np.asarray(self.sigmas, dtype=np.float64)

    def index(self, keypoint_name: str) -> int:
        """Index of a keypoint by name (``ValueError`` if absent)."""
        return self.keypoint_names.index(keypoint_name)


def _ones(k: int) -> tuple[float, ...]:
    return (1.0,) * k


# --------------------------------------------------------------------------------------------
# COCO (also OCHuman, and the body of COCO-WholeBody)
# --------------------------------------------------------------------------------------------

_COCO_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
# PROTOCOL.md §1 "COCO / OCHuman", from the official configs/_base_/datasets/coco.py.
_COCO_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107,
    0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip
# PROTOCOL.md §1 "COCO / OCHuman" flip_indices.
_COCO_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
# PROTOCOL.md §1 "COCO / OCHuman" joint_weights (coco.py).
_COCO_JOINT_WEIGHTS = (
    1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5,
)  # fmt: skip
# coco.py types: face and arms (0-10) are 'upper', hips, knees, ankles (11-16) 'lower'.
_COCO_UPPER = tuple(range(11))
_COCO_LOWER = tuple(range(11, 17))

COCO = Skeleton(
    name="coco",
    keypoint_names=_COCO_NAMES,
    flip_indices=_COCO_FLIP,
    sigmas=_COCO_SIGMAS,
    joint_weights=_COCO_JOINT_WEIGHTS,
    dataset_index=0,
    upper_body_ids=_COCO_UPPER,
    lower_body_ids=_COCO_LOWER,
)

# OCHuman is annotated in the COCO 17-keypoint format and scored with COCO sigmas (PROTOCOL.md
# §1 "COCO / OCHuman"). Evaluation only, hence no dataset_index.
OCHUMAN = Skeleton(
    name="ochuman",
    keypoint_names=_COCO_NAMES,
    flip_indices=_COCO_FLIP,
    sigmas=_COCO_SIGMAS,
    joint_weights=_COCO_JOINT_WEIGHTS,
    dataset_index=None,
    upper_body_ids=_COCO_UPPER,
    lower_body_ids=_COCO_LOWER,
)

# --------------------------------------------------------------------------------------------
# AI Challenger (14)
# --------------------------------------------------------------------------------------------

# Order: PROTOCOL.md §1 "AIC"; spellings from configs/_base_/datasets/aic.py.
_AIC_NAMES = (
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "head_top",
    "neck",
)

# PROTOCOL.md §1 "AIC" sigmas (aic.py; AIC's own evaluator uses delta = 2·sigma).
_AIC_SIGMAS = (
    0.01388152, 0.01515228, 0.01057665, 0.01417709, 0.01497891, 0.01402144, 0.03909642,
    0.03686941, 0.01981803, 0.03843971, 0.03412318, 0.02415081, 0.01291456, 0.01236173,
)  # fmt: skip

AIC = Skeleton(
    name="aic",
    keypoint_names=_AIC_NAMES,
    # PROTOCOL.md §1 "AIC" flip.
    flip_indices=(3, 4, 5, 0, 1, 2, 9, 10, 11, 6, 7, 8, 12, 13),
    sigmas=_AIC_SIGMAS,
    # Not given in PROTOCOL.md: 1.0 per joint (the brief's default). The upstream aic.py lists
    # (1, 1.2, 1.5)×4 + (1, 1), used only when a pipeline sets use_different_joint_weights.
    joint_weights=_ones(14),
    dataset_index=1,
    # aic.py types: arms, head_top, neck 'upper'; hips, knees, ankles 'lower'.
    upper_body_ids=(0, 1, 2, 3, 4, 5, 12, 13),
    lower_body_ids=(6, 7, 8, 9, 10, 11),
)

# --------------------------------------------------------------------------------------------
# MPII (16)
# --------------------------------------------------------------------------------------------

# Order: PROTOCOL.md §1 "MPII"; spellings from configs/_base_/datasets/mpii.py.
_MPII_NAMES = (
    "right_ankle",
    "right_knee",
    "right_hip",
    "left_hip",
    "left_knee",
    "left_ankle",
    "pelvis",
    "thorax",
    "upper_neck",
    "head_top",
    "right_wrist",
    "right_elbow",
    "right_shoulder",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
)

# PROTOCOL.md §1 "MPII" sigmas (mpii.py, adapted from COCO; PCKh does not use them).
_MPII_SIGMAS = (
    0.089, 0.083, 0.107, 0.107, 0.083, 0.089, 0.026, 0.026, 0.026, 0.026, 0.062, 0.072,
    0.179, 0.179, 0.072, 0.062,
)  # fmt: skip

MPII = Skeleton(
    name="mpii",
    keypoint_names=_MPII_NAMES,
    # PROTOCOL.md §1 "MPII" flip.
    flip_indices=(5, 4, 3, 2, 1, 0, 6, 7, 8, 9, 15, 14, 13, 12, 11, 10),
    sigmas=_MPII_SIGMAS,
    # Not given in PROTOCOL.md: 1.0 per joint (the brief's default). Upstream mpii.py has
    # 1.5/1.2 on ankles, knees, wrists and elbows.
    joint_weights=_ones(16),
    dataset_index=2,
    # mpii.py types: legs and pelvis 'lower'; thorax, neck, head and arms 'upper'.
    upper_body_ids=(7, 8, 9, 10, 11, 12, 13, 14, 15),
    lower_body_ids=(0, 1, 2, 3, 4, 5, 6),
)

# --------------------------------------------------------------------------------------------
# AP-10K and APT-36K (17 animal keypoints)
# --------------------------------------------------------------------------------------------

# Order: PROTOCOL.md §1 "AP-10K / APT-36K"; the spellings are the dataset's own (ap10k.py).
_AP10K_NAMES = (
    "L_Eye",
    "R_Eye",
    "Nose",
    "Neck",
    "Root of tail",
    "L_Shoulder",
    "L_Elbow",
    "L_F_Paw",
    "R_Shoulder",
    "R_Elbow",
    "R_F_Paw",
    "L_Hip",
    "L_Knee",
    "L_B_Paw",
    "R_Hip",
    "R_Knee",
    "R_B_Paw",
)
# PROTOCOL.md §1 "AP-10K / APT-36K" flip.
_AP10K_FLIP = (1, 0, 2, 3, 4, 8, 9, 10, 5, 6, 7, 14, 15, 16, 11, 12, 13)
# PROTOCOL.md §1 "AP-10K / APT-36K" sigmas (PoseBH ap10k.py). Older mmpose 0.x copies of
# ap10k.py carry the COCO-ordered list instead; PoseBH and PROTOCOL.md use this one.
_AP10K_SIGMAS = (
    0.025, 0.025, 0.026, 0.035, 0.035, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107,
    0.087, 0.089, 0.107, 0.087, 0.089,
)  # fmt: skip
# PoseBH ap10k.py types, copied as is so half-body augmentation matches the official training:
# head, neck, shoulders, elbows and L_F_Paw are 'upper', but R_F_Paw (10) is typed 'lower'
# upstream (an asymmetry in the official config, kept deliberately).
_AP10K_UPPER = (0, 1, 2, 3, 5, 6, 7, 8, 9)
_AP10K_LOWER = (4, 10, 11, 12, 13, 14, 15, 16)

AP10K = Skeleton(
    name="ap10k",
    keypoint_names=_AP10K_NAMES,
    flip_indices=_AP10K_FLIP,
    sigmas=_AP10K_SIGMAS,
    # Not given in PROTOCOL.md: 1.0 per joint (the brief's default). Upstream ap10k.py copies
    # COCO's weight list verbatim, which does not line up with the animal joint order.
    joint_weights=_ones(17),
    dataset_index=3,
    upper_body_ids=_AP10K_UPPER,
    lower_body_ids=_AP10K_LOWER,
)

# PROTOCOL.md §1: PoseBH's APT-36K config uses the ap10k.py base, so the definition is shared.
APT36K = Skeleton(
    name="apt36k",
    keypoint_names=_AP10K_NAMES,
    flip_indices=_AP10K_FLIP,
    sigmas=_AP10K_SIGMAS,
    joint_weights=_ones(17),
    dataset_index=4,
    upper_body_ids=_AP10K_UPPER,
    lower_body_ids=_AP10K_LOWER,
)

# --------------------------------------------------------------------------------------------
# COCO-WholeBody (133 = body 17 | foot 6 | face 68 | left hand 21 | right hand 21)
# --------------------------------------------------------------------------------------------

_FOOT_NAMES = (
    "left_big_toe",
    "left_small_toe",
    "left_heel",
    "right_big_toe",
    "right_small_toe",
    "right_heel",
)
_FACE_NAMES = tuple(f"face-{i}" for i in range(68))
_FINGERS = ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
# Root first, then each finger from the palm (1) to the tip (4): coco_wholebody.py order.
_HAND_STEMS = ("hand_root", *(f"{f}{j}" for f in _FINGERS for j in range(1, 5)))

# PROTOCOL.md §1 "COCO-WholeBody" foot, face and (per) hand sigmas.
_FOOT_SIGMAS = (0.068, 0.066, 0.066, 0.092, 0.094, 0.094)
_FACE_SIGMAS = (
    0.042, 0.043, 0.044, 0.043, 0.040, 0.035, 0.031, 0.025, 0.020, 0.023, 0.029, 0.032,
    0.037, 0.038, 0.043, 0.041, 0.045, 0.013, 0.012, 0.011, 0.011, 0.012, 0.012, 0.011, 0.011,
    0.013, 0.015, 0.009, 0.007, 0.007, 0.007, 0.012, 0.009, 0.008, 0.016, 0.010, 0.017, 0.011,
    0.009, 0.011, 0.009, 0.007, 0.013, 0.008, 0.011, 0.012, 0.010, 0.034, 0.008, 0.008, 0.009,
    0.008, 0.008, 0.007, 0.010, 0.008, 0.009, 0.009, 0.009, 0.007, 0.007, 0.008, 0.011, 0.008,
    0.008, 0.008, 0.01, 0.008,
)  # fmt: skip
_HAND_SIGMAS = (
    0.029, 0.022, 0.035, 0.037, 0.047, 0.026, 0.025, 0.024, 0.035, 0.018, 0.024,
    0.022, 0.026, 0.017, 0.021, 0.021, 0.032, 0.02, 0.019, 0.022, 0.031,
)  # fmt: skip

# The 68-point iBUG face mirror (the swap fields of coco_wholebody.py): jaw, eyebrows,
# nostrils, eyes, outer and inner lips. Points not listed (8, 27-30, 33, 51, 57, 62, 66) lie on
# the symmetry axis and map to themselves.
_FACE_MIRROR_PAIRS = (
    *((i, 16 - i) for i in range(8)),  # jaw 0-16
    *((17 + i, 26 - i) for i in range(5)),  # eyebrows 17-26
    (31, 35), (32, 34),  # nostrils
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),  # eyes
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),  # outer lips
    (60, 64), (61, 63), (65, 67),  # inner lips
)  # fmt: skip


def _face_flip() -> tuple[int, ...]:
    flip = list(range(68))
    for a, b in _FACE_MIRROR_PAIRS:
        flip[a], flip[b] = b, a
    return tuple(flip)


_WB_PARTS = {
    "body": (0, 17),
    "foot": (17, 23),
    "face": (23, 91),
    "lefthand": (91, 112),
    "righthand": (112, 133),
}


def _wholebody_flip() -> tuple[int, ...]:
    body = _COCO_FLIP
    foot = tuple(17 + j for j in (3, 4, 5, 0, 1, 2))
    face = tuple(23 + j for j in _face_flip())
    # Left hand joint j swaps with right hand joint j.
    left_hand = tuple(range(112, 133))
    right_hand = tuple(range(91, 112))
    return body + foot + face + left_hand + right_hand


_WB_NAMES = (
    _COCO_NAMES
    + _FOOT_NAMES
    + _FACE_NAMES
    + tuple(f"left_{s}" for s in _HAND_STEMS)
    + tuple(f"right_{s}" for s in _HAND_STEMS)
)

COCO_WHOLEBODY = Skeleton(
    name="coco_wholebody",
    keypoint_names=_WB_NAMES,
    # Not listed in PROTOCOL.md; built from the swap fields of coco_wholebody.py (see above).
    flip_indices=_wholebody_flip(),
    # PROTOCOL.md §1 "COCO-WholeBody": body = COCO's 17, then foot, face, hand, hand.
    sigmas=_COCO_SIGMAS + _FOOT_SIGMAS + _FACE_SIGMAS + _HAND_SIGMAS + _HAND_SIGMAS,
    # coco_wholebody.py: joint_weights = [1.] * 133.
    joint_weights=_ones(133),
    dataset_index=5,
    # coco_wholebody.py types: body as COCO, the feet 'lower'; face and hands untyped, so
    # half-body augmentation never selects them.
    upper_body_ids=_COCO_UPPER,
    lower_body_ids=(*_COCO_LOWER, *range(17, 23)),
    parts=_WB_PARTS,
)

# --------------------------------------------------------------------------------------------
# InterHand2.6M 2-D (21, one hand)
# --------------------------------------------------------------------------------------------

INTERHAND2D = Skeleton(
    name="interhand2d",
    # PoseBH interhand2d_info.py (same as mmpose interhand2d.py): each finger from the tip (4)
    # to the palm (1), then the wrist last.
    keypoint_names=(*(f"{f}{j}" for f in _FINGERS for j in range(4, 0, -1)), "wrist"),
    # PROTOCOL.md §1 "InterHand2D": a single hand has no mirrored partner, flip is identity.
    flip_indices=tuple(range(21)),
    # PROTOCOL.md §1 "InterHand2D": the sigmas list is empty (scored by PCK/AUC/EPE).
    sigmas=(),
    # interhand2d_info.py: joint_weights = [1.] * 21.
    joint_weights=_ones(21),
    dataset_index=None,
    # All joints are untyped upstream: no half-body augmentation on hands.
    upper_body_ids=(),
    lower_body_ids=(),
)

# --------------------------------------------------------------------------------------------
# 3DPW (24 SMPL joints, scored as COCO-style 2-D keypoint AP)
# --------------------------------------------------------------------------------------------

# Order: PROTOCOL.md §1 "3DPW"; spellings from PoseBH pw3d_info.py (l_/r_ spelled out).
_PW3D_NAMES = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "jaw",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_thumb",
    "right_thumb",
)

# PROTOCOL.md §1 "3DPW" flip.
_PW3D_FLIP = (
    0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22,
)  # fmt: skip
# PROTOCOL.md §1 "3DPW" sigmas (PoseBH pw3d_info.py).
_PW3D_SIGMAS = (
    0.107, 0.107, 0.107, 0.107, 0.087, 0.087, 0.107, 0.089, 0.089, 0.107, 0.089, 0.089,
    0.079, 0.079, 0.079, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.062, 0.062,
)  # fmt: skip

PW3D = Skeleton(
    name="pw3d",
    keypoint_names=_PW3D_NAMES,
    flip_indices=_PW3D_FLIP,
    sigmas=_PW3D_SIGMAS,
    # Not given in PROTOCOL.md: 1.0 per joint (the brief's default). Upstream pw3d_info.py has
    # 1.2 on knees/elbows and 1.5 on ankles, feet, wrists and thumbs.
    joint_weights=_ones(24),
    dataset_index=None,
    # pw3d_info.py types: pelvis, hips, knees, ankles, feet 'lower'; spine and up 'upper'.
    upper_body_ids=(3, 6, 9, *range(12, 24)),
    lower_body_ids=(0, 1, 2, 4, 5, 7, 8, 10, 11),
)

# --------------------------------------------------------------------------------------------
# Multi-dataset layout
# --------------------------------------------------------------------------------------------

# Dataset order of the official multi-dataset model (PoseBH mdt/vitb_posebh.py): one head (and
# one block of keypoint classes) per dataset, in this order.
TRAINING_SKELETONS: tuple[Skeleton, ...] = (COCO, AIC, MPII, AP10K, APT36K, COCO_WHOLEBODY)
NUM_KEYPOINTS: tuple[int, ...] = tuple(s.num_keypoints for s in TRAINING_SKELETONS)
TOTAL_TRAINING_KEYPOINTS: int = sum(NUM_KEYPOINTS)

SKELETONS: dict[str, Skeleton] = {
    s.name: s for s in (*TRAINING_SKELETONS, OCHUMAN, INTERHAND2D, PW3D)
}

# Guard the layout the checkpoints were trained with; a mismatch here would silently misroute
# keypoint classes.
assert NUM_KEYPOINTS == (17, 14, 16, 17, 17, 133), NUM_KEYPOINTS
assert TOTAL_TRAINING_KEYPOINTS == 214, TOTAL_TRAINING_KEYPOINTS
assert all(s.dataset_index == i for i, s in enumerate(TRAINING_SKELETONS))


# --------------------------------------------------------------------------------------------
# Links (limbs), for drawing only
# --------------------------------------------------------------------------------------------

# COCO: the ``skeleton`` field of the person category in person_keypoints_*.json (1-based there),
# in the order of mmpose coco.py ``skeleton_info``.
_COCO_LINKS = (
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_eye", "right_eye"),
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
    ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
)  # fmt: skip
_LINK_NAMES: dict[str, tuple[tuple[str, str], ...]] = {
    "coco": _COCO_LINKS,
    "ochuman": _COCO_LINKS,
    # mmpose configs/_base_/datasets/aic.py skeleton_info.
    "aic": (
        ("right_wrist", "right_elbow"), ("right_elbow", "right_shoulder"),
        ("right_shoulder", "neck"), ("neck", "left_shoulder"), ("left_shoulder", "left_elbow"),
        ("left_elbow", "left_wrist"), ("right_ankle", "right_knee"), ("right_knee", "right_hip"),
        ("right_hip", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
        ("head_top", "neck"), ("right_shoulder", "right_hip"), ("left_shoulder", "left_hip"),
    ),
    # mmpose configs/_base_/datasets/mpii.py skeleton_info.
    "mpii": (
        ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "pelvis"),
        ("pelvis", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
        ("pelvis", "thorax"), ("thorax", "upper_neck"), ("upper_neck", "head_top"),
        ("upper_neck", "right_shoulder"), ("right_shoulder", "right_elbow"),
        ("right_elbow", "right_wrist"), ("upper_neck", "left_shoulder"),
        ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ),
    # mmpose configs/_base_/datasets/ap10k.py skeleton_info (APT-36K uses the same base).
    "ap10k": (
        ("L_Eye", "R_Eye"), ("L_Eye", "Nose"), ("R_Eye", "Nose"), ("Nose", "Neck"),
        ("Neck", "Root of tail"), ("Neck", "L_Shoulder"), ("L_Shoulder", "L_Elbow"),
        ("L_Elbow", "L_F_Paw"), ("Neck", "R_Shoulder"), ("R_Shoulder", "R_Elbow"),
        ("R_Elbow", "R_F_Paw"), ("Root of tail", "L_Hip"), ("L_Hip", "L_Knee"),
        ("L_Knee", "L_B_Paw"), ("Root of tail", "R_Hip"), ("R_Hip", "R_Knee"),
        ("R_Knee", "R_B_Paw"),
    ),
    # mmpose configs/_base_/datasets/coco_wholebody.py skeleton_info: COCO's 19 body links,
    # ankle → big toe / small toe / heel per foot, and root → finger1 → … → finger4 per finger
    # of each hand. The face has no links there (drawn as points).
    "coco_wholebody": (
        *_COCO_LINKS,
        *((f"{s}_ankle", f"{s}_{toe}") for s in ("left", "right")
          for toe in ("big_toe", "small_toe", "heel")),
        *((f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for f in _FINGERS
          for a, b in zip(("hand_root", *(f"{f}{j}" for j in range(1, 4))),
                          (f"{f}{j}" for j in range(1, 5)), strict=True)),
    ),
}  # fmt: skip
_LINK_NAMES["apt36k"] = _LINK_NAMES["ap10k"]

#: Links ``(i, j)`` (keypoint indices) per skeleton name, for drawing; skeletons absent here
#: (interhand2d, pw3d) are drawn as points only.
SKELETON_LINKS: dict[str, tuple[tuple[int, int], ...]] = {
    name: tuple((SKELETONS[name].index(a), SKELETONS[name].index(b)) for a, b in pairs)
    for name, pairs in _LINK_NAMES.items()
}


def class_offsets() -> tuple[int, ...]:
    """Start index of each training dataset's keypoint classes in the concatenated 214."""
    starts = [0]
    for k in NUM_KEYPOINTS[:-1]:
        starts.append(starts[-1] + k)
    return tuple(starts)


def get_skeleton(name_or_index: str | int) -> Skeleton:
    """Look a skeleton up by name (any of ``SKELETONS``) or by training dataset index (0-5).

    Raises ``KeyError`` listing the valid names and indices when nothing matches.
    """
    # bool is an int subclass; True/False as a dataset index is surely a bug.
    if isinstance(name_or_index, int) and not isinstance(name_or_index, bool):
        if 0 <= name_or_index < len(TRAINING_SKELETONS):
            return TRAINING_SKELETONS[name_or_index]
    elif isinstance(name_or_index, str) and name_or_index in SKELETONS:
        return SKELETONS[name_or_index]
    raise KeyError(
        f"unknown skeleton {name_or_index!r}; valid names: {', '.join(SKELETONS)}; "
        f"valid training indices: 0-{len(TRAINING_SKELETONS) - 1}"
    )
