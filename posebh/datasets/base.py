"""Record type, read summary, error type and the box → (center, scale) rule shared by all readers.

Shapes: ``Instance.center`` [2] and ``Instance.scale`` [2] (float32, scale in units of 200 px),
``Instance.keypoints`` [K, 3] float32 (x, y, visibility) with K from ``posebh.skeletons``.

Conventions follow the official mmpose 0.x loaders of PoseBH (``uyoung-jeong/PoseBH``
``mmpose/datasets/datasets/``, base class ``Kpt2dSviewRgbImgTopDownDataset`` as stored in
``ViTAE-Transformer/ViTPose``); see ``PROTOCOL.md`` §3.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson

__all__ = [
    "DEFAULT_ASPECT_RATIO",
    "DatasetError",
    "ImageChecker",
    "Instance",
    "ReadSummary",
    "box_to_center_scale",
    "check_image",
    "clean_bbox",
    "load_json",
    "parse_json",
    "read_json_bytes",
]

#: Input width / height of every PoseBH / ViTPose++ config (``image_size=[192, 256]``).
DEFAULT_ASPECT_RATIO = 192 / 256

#: Loops longer than this show a tqdm bar (when stderr is a terminal).
PROGRESS_MIN_ITEMS = 5000

T = TypeVar("T")


class DatasetError(ValueError):
    """An annotation/detection file cannot be read as the dataset it is declared to be.

    The message names the file, the record (annotation/image id or list index) and the field,
    and says how to fix it.
    """


@dataclass(frozen=True, eq=False)
class Instance:
    """One top-down sample: one person/animal/hand box in one image.

    Shapes: ``center`` [2] float32 (x, y) in pixels; ``scale`` [2] float32 (w, h) in units of
    200 px, already aspect-fixed to the network input and padded (×1.25, InterHand ×1.5, MPII
    as the HRNet recipe); ``keypoints`` [K, 3] float32: x, y in pixels (0-based) and the
    official ``joints_3d_visible`` value (0 or 1); all zeros for detection boxes.

    ``bbox`` is (x, y, w, h): the cleaned GT box (0.x rule, see :func:`clean_bbox`), the raw
    detection box, the tight joint box (InterHand) or the square crop box implied by the
    centre/scale (MPII, which has no box). ``area`` is the annotation's ``area`` when present,
    else ``bbox`` w·h. ``ann_id`` is ``None`` for detection boxes; for MPII it is the record's
    index in the JSON list. ``extras`` holds dataset-specific values (see each reader).
    The arrays are read-only: copy before modifying.
    """

    dataset: str
    image_file: str
    image_id: int | str
    ann_id: int | None
    category_id: int
    bbox: tuple[float, float, float, float]
    center: np.ndarray
    scale: np.ndarray
    keypoints: np.ndarray
    bbox_score: float
    area: float
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.center.shape != (2,) or self.scale.shape != (2,):
            raise ValueError(
                f"center/scale must have shape (2,), got {self.center.shape}/{self.scale.shape}"
            )
        if self.keypoints.ndim != 2 or self.keypoints.shape[1] != 3:
            raise ValueError(f"keypoints must have shape (K, 3), got {self.keypoints.shape}")
        for arr in (self.center, self.scale, self.keypoints):
            arr.setflags(write=False)

    @property
    def num_keypoints(self) -> int:
        """K, the number of keypoints of the instance's skeleton."""
        return int(self.keypoints.shape[0])

    @property
    def is_detection(self) -> bool:
        """True for a box from a detection results file (no GT keypoints)."""
        return self.ann_id is None


@dataclass
class ReadSummary:
    """What a reader did with each record of its input: ``read == kept + sum(skipped)``.

    ``unit`` names what was counted ("annotation", "detection", "record", "hand"); ``skipped``
    maps a reason to a count; ``notes`` lists anything else worth knowing (e.g. an evaluation
    file that is missing); ``eval_files`` names the files evaluation will need.
    """

    dataset: str
    source: str
    unit: str
    read: int = 0
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    images: int = 0
    notes: list[str] = field(default_factory=list)
    eval_files: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, count: int = 1) -> None:
        """Count ``count`` records skipped for ``reason``."""
        self.skipped[reason] += count

    @property
    def num_skipped(self) -> int:
        """Total number of skipped records over all reasons."""
        return sum(self.skipped.values())

    def check(self) -> None:
        """Raise ``AssertionError`` if a record went uncounted (a reader bug)."""
        assert self.read == self.kept + self.num_skipped, (
            f"{self.dataset}: read {self.read} != kept {self.kept} + skipped {self.num_skipped}"
        )

    def __str__(self) -> str:
        lines = [
            f"{self.dataset}: {self.read} {self.unit}s read from {self.source} -> "
            f"{self.kept} kept, {self.num_skipped} skipped ({self.images} images)"
        ]
        for reason, n in sorted(self.skipped.items()):
            lines.append(f"  skipped {n}: {reason}")
        lines.extend(f"  note: {note}" for note in self.notes)
        lines.extend(f"  eval file {k}: {v}" for k, v in self.eval_files.items())
        return "\n".join(lines)


def box_to_center_scale(
    bbox: Iterable[float],
    aspect_ratio: float = DEFAULT_ASPECT_RATIO,
    padding: float = 1.25,
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, w, h) box → (center [2], scale [2]) float32, scale in units of 200 px.

    The official 0.x ``_xywh2cs`` without its training-time centre jitter (that belongs to the
    pipeline): centre = (x + w/2, y + h/2); the shorter side is grown to the input aspect ratio
    ``aspect_ratio`` = width/height; scale = (w, h)/200 × ``padding``. Arithmetic is float64,
    then float32 as upstream (``np.float32`` arrays, padding applied to the float32 scale).
    """
    x, y, w, h = (float(v) for v in bbox)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / 200.0, h / 200.0], dtype=np.float32)
    scale = scale * padding
    return center, scale.astype(np.float32, copy=False)


def clean_bbox(
    bbox: Iterable[float], width: float, height: float
) -> tuple[float, float, float, float] | None:
    """The 0.x GT box sanitising: clip (x, y, w, h) to the image; ``None`` if it degenerates.

    x1 = max(0, x), x2 = min(W − 1, x1 + max(0, w − 1)) (likewise y); the box is kept when
    x2 > x1 and y2 > y1 and returned as (x1, y1, x2 − x1, y2 − y1). (The ``area > 0`` part of
    the official rule is checked by the caller, which has the annotation.)
    """
    x, y, w, h = bbox
    x1 = max(0, x)
    y1 = max(0, y)
    x2 = min(width - 1, x1 + max(0, w - 1))
    y2 = min(height - 1, y1 + max(0, h - 1))
    if x2 > x1 and y2 > y1:
        return (float(x1), float(y1), float(x2 - x1), float(y2 - y1))
    return None


def read_json_bytes(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of a JSON file; ``DatasetError`` naming the file if it is missing or empty."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(
            f"{what} file not found: {p}. Fix: check the dataset root and the relative path "
            "(see posebh.datasets.default_spec for the official layout)."
        )
    if p.stat().st_size == 0:
        raise DatasetError(
            f"{what} file {p} is empty (0 bytes). Fix: the download or copy was interrupted; "
            "download or regenerate it."
        )
    return p.read_bytes()


# Every decimal digit → "0", to find long digit runs with one bytes.find.
_DIGITS_TO_ZERO = bytes(48 if 48 <= b <= 57 else b for b in range(256))


def orjson_is_exact(raw: bytes) -> bool:
    """True if orjson reads ``raw`` to the same values as Python's ``json`` when it reads it.

    The one difference on valid JSON: an integer outside the 64-bit range (19+ digits) is a
    float for orjson and an int for ``json``. (orjson also rejects what ``json`` accepts beyond
    strict JSON, such as NaN, Infinity or lone surrogates; callers fall back on an error.)
    """
    return raw.translate(_DIGITS_TO_ZERO).find(b"0" * 19) < 0


def parse_json(raw: bytes, path: str | os.PathLike[str], what: str) -> Any:
    """Parse JSON ``raw`` (the bytes of ``path``); ``DatasetError`` naming the file (and
    line/column) if it is not JSON.

    orjson first (about twice as fast as ``json`` and it builds the same objects); on any
    orjson error, or when ``raw`` has integers orjson would read as floats, Python's ``json``
    decides, so that NaN / Infinity tokens still read (the readers then name the field with the
    non-finite value) and a truly invalid file is reported with ``json``'s line and column.
    """
    if orjson_is_exact(raw):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    p = Path(path)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{what} file {p} is not valid JSON: line {e.lineno} column {e.colno}: {e.msg}. "
            "Fix: the file is truncated or corrupt; download or regenerate it."
        ) from e
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{what} file {p} is not UTF-8 JSON ({e}). Fix: download or regenerate it."
        ) from e


def load_json(path: str | os.PathLike[str], what: str) -> Any:
    """Load a JSON file; ``DatasetError`` naming the file (and line/column) if it cannot be."""
    return parse_json(read_json_bytes(path, what), path, what)


class ImageChecker:
    """Checks once per path that a referenced image exists (no-op when ``enabled`` is False)."""

    def __init__(self, enabled: bool, source: str | os.PathLike[str]) -> None:
        self.enabled = enabled
        self.source = str(source)
        self._seen: set[str] = set()

    def __call__(self, image_file: str, image_id: Any, record: str) -> None:
        """Raise ``DatasetError`` if ``image_file`` is missing; ``record`` names the referrer."""
        if not self.enabled or image_file in self._seen:
            return
        if not os.path.isfile(image_file):
            raise DatasetError(
                f"{self.source}: {record} (image_id={image_id!r}) refers to image "
                f"{image_file}, which does not exist. Fix: check img_prefix / the dataset root, "
                "or pass check_images=False to read anyway and check later with check_image()."
            )
        self._seen.add(image_file)


def check_image(instance: Instance) -> None:
    """Lazy form of the image check: ``DatasetError`` if ``instance.image_file`` is missing."""
    if not os.path.isfile(instance.image_file):
        ann = "detection box" if instance.ann_id is None else f"annotation id={instance.ann_id}"
        raise DatasetError(
            f"{instance.dataset}: {ann} (image_id={instance.image_id!r}) refers to image "
            f"{instance.image_file}, which does not exist. Fix: check img_prefix / the dataset "
            "root."
        )


def progress(items: Iterable[T], total: int, desc: str, enabled: bool | None = None) -> Iterator[T]:
    """Wrap ``items`` in a tqdm bar when long (≥ PROGRESS_MIN_ITEMS) and stderr is a terminal.

    ``enabled`` forces the bar on or off.
    """
    if enabled is None:
        enabled = total >= PROGRESS_MIN_ITEMS and sys.stderr.isatty()
    if not enabled:
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, unit="rec", leave=False)


def require(record: Mapping[str, Any], key: str, where: str, source: str | Path) -> Any:
    """``record[key]``, or ``DatasetError`` naming the file, the record and the missing field."""
    if not isinstance(record, Mapping):
        raise DatasetError(
            f"{source}: {where} is a {type(record).__name__}, expected a JSON object. "
            "Fix: the file does not have the expected format."
        )
    try:
        return record[key]
    except KeyError:
        raise DatasetError(
            f"{source}: {where} has no field '{key}'. Fix: the file is not in the expected "
            "format for this dataset (or was truncated); use the official annotation file."
        ) from None


def as_floats(
    value: Any, n: int | None, field_name: str, where: str, source: str | Path
) -> np.ndarray:
    """``value`` as a float64 array (flattened); ``DatasetError`` if not numeric, not n long or
    not finite (Python's ``json`` reads ``NaN`` / ``Infinity``, which strict JSON lacks; a NaN
    coordinate or box turns every crop, target and metric built from it into garbage).
    """
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DatasetError(
            f"{source}: {where} field '{field_name}' is not a list of numbers. "
            "Fix: repair or regenerate the annotation file."
        ) from None
    if n is not None and arr.size != n:
        raise DatasetError(
            f"{source}: {where} field '{field_name}' has {arr.size} values, expected {n}. "
            "Fix: repair or regenerate the annotation file."
        )
    if not np.isfinite(arr).all():
        j = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise DatasetError(
            f"{source}: {where} field '{field_name}' has a non-finite value ({arr[j]}) at "
            f"position {j}. Fix: repair or regenerate the file; drop the record if the value "
            "is unknown."
        )
    return arr
