"""Tests for posebh.skeletons.

Sigmas, flip indices, keypoint orders and sizes are checked against ``PROTOCOL.md`` §1, parsed
here at test time, so the reference does not depend on the module under test.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from posebh import skeletons
from posebh.skeletons import (
    NUM_KEYPOINTS,
    SKELETONS,
    TOTAL_TRAINING_KEYPOINTS,
    TRAINING_SKELETONS,
    Skeleton,
    class_offsets,
    get_skeleton,
)

ALL_NAMES = (
    "coco",
    "aic",
    "mpii",
    "ap10k",
    "apt36k",
    "coco_wholebody",
    "ochuman",
    "interhand2d",
    "pw3d",
)

# Which PROTOCOL.md §1 block (bold title, parenthetical removed) describes each skeleton.
PROTOCOL_BLOCK = {
    "coco": "COCO / OCHuman",
    "ochuman": "COCO / OCHuman",
    "aic": "AIC",
    "mpii": "MPII",
    "ap10k": "AP-10K / APT-36K",
    "apt36k": "AP-10K / APT-36K",
    "coco_wholebody": "COCO-WholeBody",
    "pw3d": "3DPW",
    "interhand2d": "InterHand2D",
}

COCO_NAMES = [
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
]


# --------------------------------------------------------------------------------------------
# A small parser for the bullet lists of PROTOCOL.md §1
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Block:
    """One top-level bullet of §1: its header text and its sub-bullet items by key."""

    header: str
    items: dict[str, str]


_NUMBER_RUN = re.compile(r"\s*(\d+(?:\.\d+)?(?:\s*,\s*\d+(?:\.\d+)?)*)")


def _item_key(text: str) -> str:
    """The label of a sub-bullet: the text before the first ':' or '[', minus parentheticals."""
    cut = min((i for i in (text.find(":"), text.find("[")) if i >= 0), default=len(text))
    return re.sub(r"\s*\(.*?\)", "", text[:cut]).strip()


def parse_protocol_section1(text: str) -> dict[str, _Block]:
    """Parse the '## 1.' section into blocks keyed by bold title (parenthetical removed)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## 1."))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("## "))
    blocks: dict[str, _Block] = {}
    # Each entry is [block, list of pieces]; continuation lines extend the last piece list.
    headers: dict[str, list[str]] = {}
    items: dict[str, list[list[str]]] = {}
    current: str | None = None
    pieces: list[str] | None = None
    for line in lines[start + 1 : end]:
        if line.startswith("* **"):
            title = re.match(r"\* \*\*(.+?)\*\*", line).group(1)
            current = re.sub(r"\s*\(.*", "", title).strip().rstrip(":.")
            headers[current] = [line[2:]]
            items[current] = []
            pieces = headers[current]
        elif line.startswith("  * ") and current is not None:
            pieces = [line[4:]]
            items[current].append(pieces)
        elif line.startswith("  ") and line.strip() and pieces is not None:
            pieces.append(line.strip())
        elif not line.strip():
            pieces = None
    for title, header in headers.items():
        by_key = {}
        for item in items[title]:
            joined = " ".join(item)
            by_key[_item_key(joined)] = joined
        blocks[title] = _Block(header=" ".join(header), items=by_key)
    return blocks


def numbers_of(item: str) -> list[float]:
    """The number list of an item: a bracketed list, or the leading run after the label."""
    cut = min(i for i in (item.find(":"), item.find("[")) if i >= 0)
    if item[cut] == "[":
        inner = item[cut + 1 : item.index("]", cut)]
        return [float(x) for x in inner.split(",")]
    match = _NUMBER_RUN.match(item[cut + 1 :])
    assert match, f"no number list in {item!r}"
    return [float(x) for x in match.group(1).split(",")]


def names_of(item: str) -> list[str]:
    """The comma-separated name list after 'Order:' (final full stop dropped)."""
    body = item.split(":", 1)[1].strip().rstrip(".")
    return [n.strip() for n in body.split(",")]


def normalize_name(name: str) -> str:
    """Compare names across spellings: 'r-shoulder', 'R_Shoulder', 'right_shoulder' agree."""
    n = name.strip().lower()
    n = re.sub(r"^l[-_]", "left_", n)
    n = re.sub(r"^r[-_]", "right_", n)
    return n.replace("-", "_")


@pytest.fixture(scope="module")
def protocol(shared_dir: Path) -> dict[str, _Block]:
    blocks = parse_protocol_section1((shared_dir / "PROTOCOL.md").read_text(encoding="utf-8"))
    # Guard the parser itself: every block we rely on must have been found.
    assert set(PROTOCOL_BLOCK.values()) <= set(blocks), sorted(blocks)
    return blocks


def protocol_sigmas(blocks: dict[str, _Block], name: str) -> tuple[float, ...]:
    block = blocks[PROTOCOL_BLOCK[name]]
    if name == "coco_wholebody":
        assert "body = the COCO 17" in " ".join(block.items.values())
        wb = block.items
        body = protocol_sigmas(blocks, "coco")
        hand = numbers_of(wb["each hand"])
        return tuple(body) + tuple(numbers_of(wb["foot"]) + numbers_of(wb["face"]) + hand + hand)
    if "sigmas" not in block.items:
        assert "the sigmas list is empty" in block.header
        return ()
    return tuple(numbers_of(block.items["sigmas"]))


def protocol_flip(blocks: dict[str, _Block], name: str, k: int) -> tuple[int, ...]:
    block = blocks[PROTOCOL_BLOCK[name]]
    for key in ("flip_indices", "flip"):
        if key in block.items:
            return tuple(int(x) for x in numbers_of(block.items[key]))
    assert "the flip is the identity" in block.header
    return tuple(range(k))


def protocol_size(blocks: dict[str, _Block], name: str) -> int:
    title = re.search(r"\*\*(.+?)\*\*", blocks[PROTOCOL_BLOCK[name]].header).group(1)
    return int(re.findall(r"\b\d+\b", title)[-1])


# The WholeBody face mirror from the brief (standard 68-point iBUG), written out independently.
IBUG_FACE_PAIRS = [
    *[(i, 16 - i) for i in range(8)],
    (17, 26), (18, 25), (19, 24), (20, 23), (21, 22),
    (31, 35), (32, 34),
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
    (48, 54), (49, 53), (50, 52), (55, 59), (56, 58),
    (60, 64), (61, 63), (65, 67),
]  # fmt: skip
IBUG_FACE_SELF = [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


def expected_wholebody_flip() -> list[int]:
    flip = list(range(133))
    pairs = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]
    pairs += [(17 + a, 17 + b) for a, b in [(0, 3), (1, 4), (2, 5)]]
    pairs += [(23 + a, 23 + b) for a, b in IBUG_FACE_PAIRS]
    pairs += [(91 + j, 112 + j) for j in range(21)]
    for a, b in pairs:
        flip[a], flip[b] = b, a
    return flip


# --------------------------------------------------------------------------------------------
# The parser on a tiny sample, so a parser bug cannot hide a module bug
# --------------------------------------------------------------------------------------------

_SAMPLE = """\
# title

## 1. Sigma arrays

* **Foo (3):**
  * sigmas: 0.1, 0.2,
    0.3. The comment says delta = 2·sigma.
  * flip [2,1,0].
  * Order: l-a, r_b, Root of c.
* **Bar (PoseBH `x.py`, 2 things).** prose
  * sigmas (only for NMS): 1.5, 2.
* **Baz (4):** the sigmas list is empty; the flip is the identity.

## 2. Next
* **Ignored (9):**
"""


def test_parser_on_sample() -> None:
    blocks = parse_protocol_section1(_SAMPLE)
    assert set(blocks) == {"Foo", "Bar", "Baz"}
    assert numbers_of(blocks["Foo"].items["sigmas"]) == [0.1, 0.2, 0.3]
    assert numbers_of(blocks["Foo"].items["flip"]) == [2, 1, 0]
    assert [normalize_name(n) for n in names_of(blocks["Foo"].items["Order"])] == [
        "left_a",
        "right_b",
        "root of c",
    ]
    assert numbers_of(blocks["Bar"].items["sigmas"]) == [1.5, 2.0]
    assert "the sigmas list is empty" in blocks["Baz"].header
    assert blocks["Baz"].items == {}


# --------------------------------------------------------------------------------------------
# Per-skeleton structure
# --------------------------------------------------------------------------------------------


def test_all_skeletons_present() -> None:
    assert tuple(SKELETONS) == ALL_NAMES
    for name, sk in SKELETONS.items():
        assert isinstance(sk, Skeleton)
        assert sk.name == name


@pytest.mark.parametrize("name", ALL_NAMES)
def test_lengths_and_unique_names(name: str, protocol: dict[str, _Block]) -> None:
    sk = SKELETONS[name]
    k = protocol_size(protocol, name)
    assert sk.num_keypoints == k
    assert len(sk.keypoint_names) == k
    assert len(set(sk.keypoint_names)) == k
    assert len(sk.flip_indices) == k
    assert len(sk.joint_weights) == k
    assert len(sk.sigmas) == (0 if name == "interhand2d" else k)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_sigmas_match_protocol(name: str, protocol: dict[str, _Block]) -> None:
    sk = SKELETONS[name]
    expected = protocol_sigmas(protocol, name)
    assert sk.sigmas == expected
    arr = sk.sigmas_array()
    assert arr.dtype == np.float64
    assert arr.shape == (len(expected),)
    np.testing.assert_array_equal(arr, np.array(expected, dtype=np.float64))


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n != "coco_wholebody"])
def test_flip_matches_protocol(name: str, protocol: dict[str, _Block]) -> None:
    sk = SKELETONS[name]
    assert sk.flip_indices == protocol_flip(protocol, name, sk.num_keypoints)


def test_wholebody_flip_matches_spec() -> None:
    # PROTOCOL.md has no WholeBody flip list; the reference is the brief's spec above.
    assert list(SKELETONS["coco_wholebody"].flip_indices) == expected_wholebody_flip()


def test_ibug_face_spec_is_consistent() -> None:
    touched = [i for pair in IBUG_FACE_PAIRS for i in pair]
    assert len(touched) == len(set(touched))
    assert sorted(touched + IBUG_FACE_SELF) == list(range(68))


@pytest.mark.parametrize("name", ["aic", "mpii", "ap10k", "apt36k", "pw3d"])
def test_order_matches_protocol(name: str, protocol: dict[str, _Block]) -> None:
    expected = names_of(protocol[PROTOCOL_BLOCK[name]].items["Order"])
    got = SKELETONS[name].keypoint_names
    assert [normalize_name(n) for n in got] == [normalize_name(n) for n in expected]


@pytest.mark.parametrize("name", ["coco", "ochuman"])
def test_coco_names(name: str) -> None:
    assert list(SKELETONS[name].keypoint_names) == COCO_NAMES


def test_interhand_names() -> None:
    fingers = ["thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger"]
    expected = [f"{f}{j}" for f in fingers for j in (4, 3, 2, 1)] + ["wrist"]
    assert list(SKELETONS["interhand2d"].keypoint_names) == expected


@pytest.mark.parametrize("name", ALL_NAMES)
def test_flip_is_involution(name: str) -> None:
    flip = SKELETONS[name].flip_indices
    assert sorted(flip) == list(range(len(flip)))
    assert [flip[flip[i]] for i in range(len(flip))] == list(range(len(flip)))


def _side(name: str) -> tuple[str, str] | None:
    n = normalize_name(name)
    for side in ("left", "right"):
        if n.startswith(side + "_"):
            return side, n[len(side) + 1 :]
    return None


@pytest.mark.parametrize("name", ALL_NAMES)
def test_flip_swaps_sides_by_name(name: str) -> None:
    sk = SKELETONS[name]
    names = sk.keypoint_names
    sided = 0
    for i, j in enumerate(sk.flip_indices):
        side = _side(names[i])
        if side is None:
            # Only the face carries no side in its names and still mirrors.
            if not names[i].startswith("face-"):
                assert j == i, f"{names[i]} -> {names[j]}"
            continue
        sided += 1
        other = "right" if side[0] == "left" else "left"
        assert _side(names[j]) == (other, side[1]), f"{names[i]} -> {names[j]}"
    if name != "interhand2d":
        assert sided > 0  # guards the side detection itself


@pytest.mark.parametrize("name", ALL_NAMES)
def test_flip_pairs(name: str) -> None:
    sk = SKELETONS[name]
    pairs = sk.flip_pairs
    assert all(i < j and sk.flip_indices[i] == j for i, j in pairs)
    moved = sum(1 for i, j in enumerate(sk.flip_indices) if i != j)
    assert 2 * len(pairs) == moved


def test_flip_pairs_coco_explicit() -> None:
    assert SKELETONS["coco"].flip_pairs == [
        (1, 2),
        (3, 4),
        (5, 6),
        (7, 8),
        (9, 10),
        (11, 12),
        (13, 14),
        (15, 16),
    ]
    assert SKELETONS["interhand2d"].flip_pairs == []


@pytest.mark.parametrize("name", ["coco", "ochuman"])
def test_coco_joint_weights_match_protocol(name: str, protocol: dict[str, _Block]) -> None:
    expected = numbers_of(protocol["COCO / OCHuman"].items["joint_weights"])
    assert list(SKELETONS[name].joint_weights) == expected


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n not in ("coco", "ochuman")])
def test_other_joint_weights_are_one(name: str) -> None:
    assert SKELETONS[name].joint_weights == (1.0,) * SKELETONS[name].num_keypoints


@pytest.mark.parametrize("name", ALL_NAMES)
def test_half_body_ids(name: str) -> None:
    sk = SKELETONS[name]
    upper, lower = set(sk.upper_body_ids), set(sk.lower_body_ids)
    assert not upper & lower
    assert all(0 <= i < sk.num_keypoints for i in upper | lower)
    assert list(sk.upper_body_ids) == sorted(upper)
    assert list(sk.lower_body_ids) == sorted(lower)
    if name in ("coco", "ochuman", "aic", "mpii", "ap10k", "apt36k", "pw3d"):
        assert upper | lower == set(range(sk.num_keypoints))
    for i in sk.lower_body_ids:
        assert not re.search(r"eye|ear|nose|shoulder|elbow|wrist|neck|head", sk.keypoint_names[i])


def test_half_body_ids_coco_and_wholebody() -> None:
    assert SKELETONS["coco"].upper_body_ids == tuple(range(11))
    assert SKELETONS["coco"].lower_body_ids == tuple(range(11, 17))
    wb = SKELETONS["coco_wholebody"]
    assert wb.upper_body_ids == tuple(range(11))
    assert wb.lower_body_ids == tuple(range(11, 23))  # body legs + feet; face/hands excluded
    assert SKELETONS["interhand2d"].upper_body_ids == ()
    assert SKELETONS["interhand2d"].lower_body_ids == ()


# --------------------------------------------------------------------------------------------
# COCO-WholeBody parts
# --------------------------------------------------------------------------------------------


def test_wholebody_parts_partition(protocol: dict[str, _Block]) -> None:
    wb = SKELETONS["coco_wholebody"]
    parts = wb.parts
    assert list(parts) == ["body", "foot", "face", "lefthand", "righthand"]
    # Contiguous, in order, covering 0..133 exactly.
    edges = [0]
    for start, end in parts.values():
        assert start == edges[-1] and end > start
        edges.append(end)
    assert edges[-1] == wb.num_keypoints == 133
    # Sizes from PROTOCOL.md's "body 17 | foot 6 | face 68 | left hand 21 | right hand 21".
    layout = re.search(r"body \d+(?: \| [a-z ]+ \d+)+", protocol["COCO-WholeBody"].header)
    sizes = {
        m.group(1).replace(" ", ""): int(m.group(2))
        for m in re.finditer(r"([a-z ]+?) (\d+)", layout.group(0).replace("|", ""))
    }
    assert {p: e - s for p, (s, e) in parts.items()} == sizes


def test_wholebody_names_per_part() -> None:
    wb = SKELETONS["coco_wholebody"]
    names = wb.keypoint_names

    def part(p: str) -> tuple[str, ...]:
        start, end = wb.parts[p]
        return names[start:end]

    assert list(part("body")) == COCO_NAMES
    assert part("foot") == (
        "left_big_toe",
        "left_small_toe",
        "left_heel",
        "right_big_toe",
        "right_small_toe",
        "right_heel",
    )
    assert list(part("face")) == [f"face-{i}" for i in range(68)]
    fingers = ["thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger"]
    stems = ["hand_root"] + [f"{f}{j}" for f in fingers for j in (1, 2, 3, 4)]
    assert list(part("lefthand")) == [f"left_{s}" for s in stems]
    assert list(part("righthand")) == [f"right_{s}" for s in stems]


def test_parts_empty_elsewhere() -> None:
    for name, sk in SKELETONS.items():
        if name != "coco_wholebody":
            assert dict(sk.parts) == {}


# --------------------------------------------------------------------------------------------
# Multi-dataset layout and lookup
# --------------------------------------------------------------------------------------------


def test_training_order() -> None:
    assert [s.name for s in TRAINING_SKELETONS] == [
        "coco",
        "aic",
        "mpii",
        "ap10k",
        "apt36k",
        "coco_wholebody",
    ]
    for i, sk in enumerate(TRAINING_SKELETONS):
        assert sk.dataset_index == i
    for name in ("ochuman", "interhand2d", "pw3d"):
        assert SKELETONS[name].dataset_index is None


def test_num_keypoints_and_offsets() -> None:
    assert NUM_KEYPOINTS == (17, 14, 16, 17, 17, 133)
    assert TOTAL_TRAINING_KEYPOINTS == 214
    assert class_offsets() == (0, 17, 31, 47, 64, 81)
    offsets = class_offsets()
    for i, k in enumerate(NUM_KEYPOINTS[:-1]):
        assert offsets[i] + k == offsets[i + 1]
    assert offsets[-1] + NUM_KEYPOINTS[-1] == TOTAL_TRAINING_KEYPOINTS


@pytest.mark.parametrize("name", ALL_NAMES)
def test_get_skeleton_by_name(name: str) -> None:
    assert get_skeleton(name) is SKELETONS[name]


def test_get_skeleton_by_index() -> None:
    for i, sk in enumerate(TRAINING_SKELETONS):
        assert get_skeleton(i) is sk


@pytest.mark.parametrize("bad", ["foo", "COCO", "", 6, -1, True, None, 1.0])
def test_get_skeleton_errors(bad: object) -> None:
    with pytest.raises(KeyError) as info:
        get_skeleton(bad)  # type: ignore[arg-type]
    message = str(info.value)
    for name in ALL_NAMES:
        assert name in message


# --------------------------------------------------------------------------------------------
# Immutability and validation
# --------------------------------------------------------------------------------------------


def test_frozen_and_read_only_parts() -> None:
    sk = SKELETONS["coco_wholebody"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sk.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        sk.parts["body"] = (0, 1)  # type: ignore[index]
    assert hash(sk) == hash(sk)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_pickle_and_deepcopy(name: str) -> None:
    sk = SKELETONS[name]
    for copied in (pickle.loads(pickle.dumps(sk)), copy.deepcopy(sk)):
        assert copied == sk
        assert hash(copied) == hash(sk)
        assert dict(copied.parts) == dict(sk.parts)


def _tiny(**overrides: object) -> Skeleton:
    kwargs: dict[str, object] = {
        "name": "tiny",
        "keypoint_names": ("left_a", "right_a", "c"),
        "flip_indices": (1, 0, 2),
        "sigmas": (0.1, 0.1, 0.2),
        "joint_weights": (1.0, 1.0, 1.0),
        "dataset_index": None,
        "upper_body_ids": (0, 1),
        "lower_body_ids": (2,),
    }
    kwargs.update(overrides)
    return Skeleton(**kwargs)  # type: ignore[arg-type]


def test_tiny_skeleton_is_valid() -> None:
    sk = _tiny()
    assert sk.num_keypoints == 3
    assert sk.flip_pairs == [(0, 1)]
    assert sk.index("c") == 2


@pytest.mark.parametrize(
    "overrides",
    [
        {"flip_indices": (1, 2, 0)},  # a permutation but not an involution
        {"flip_indices": (0, 0, 2)},  # not a permutation
        {"flip_indices": (1, 0)},  # wrong length
        {"keypoint_names": ("a", "a", "c")},  # duplicate name
        {"sigmas": (0.1, 0.2)},  # wrong length
        {"joint_weights": (1.0,)},  # wrong length
        {"upper_body_ids": (0, 2)},  # overlaps lower
        {"lower_body_ids": (3,)},  # out of range
        {"parts": {"x": (2, 4)}},  # out of range
    ],
)
def test_invalid_skeletons_rejected(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        _tiny(**overrides)


def test_module_exports() -> None:
    assert set(skeletons.__all__) >= {
        "Skeleton",
        "TRAINING_SKELETONS",
        "NUM_KEYPOINTS",
        "TOTAL_TRAINING_KEYPOINTS",
        "SKELETONS",
        "class_offsets",
        "get_skeleton",
    }
