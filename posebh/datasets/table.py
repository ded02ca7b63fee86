"""Columnar storage of many :class:`~posebh.datasets.base.Instance` records.

A COCO-train-size file holds 150,000 persons; 150,000 ``Instance`` objects with three NumPy
arrays and an extras dict each cost more memory than the parsed file. :class:`InstanceTable`
keeps one array per field (``keypoints`` [N, K, 3] float32, ``center`` / ``scale`` [N, 2]
float32, ``bbox`` [N, 4] float64, ...) and builds item i on access, equal field for field to
the record a per-instance reader would have made (its arrays are read-only views).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from .base import Instance

__all__ = ["InstanceTable"]


def _readonly(arr: np.ndarray) -> np.ndarray:
    arr.setflags(write=False)
    return arr


def _item(column: np.ndarray | list[Any], i: int) -> Any:
    """Row ``i`` of a column as the Python object a per-record reader stores (int, float, ...)."""
    value = column[i]
    return value.item() if isinstance(value, np.generic) else value


class InstanceTable(Sequence[Instance]):
    """N instances of one dataset as columns; ``table[i]`` builds the ``Instance`` i.

    Columns (N rows): ``image_index`` [N] int into ``image_files`` / ``image_ids`` (one entry
    per image), ``ann_ids`` (ints as int64, else a list; ``None`` entries for detections),
    ``category_ids`` [N] int64, ``bboxes`` [N, 4] float64, ``centers`` / ``scales`` [N, 2]
    float32, ``keypoints`` [N, K, 3] float32, ``bbox_scores`` / ``areas`` [N] float64;
    ``extras`` is ``extras_constant`` plus, per row, each ``extras_columns[key][i]`` that is
    not ``None`` (or ``extras_rows[i]`` when the reader kept whole dicts). Slicing gives a
    table; ``+`` with a list or table gives a list; ``list(table)`` gives the instances.
    """

    def __init__(
        self,
        *,
        dataset: str,
        image_files: Sequence[str],
        image_ids: Sequence[Any],
        image_index: np.ndarray,
        ann_ids: np.ndarray | list[Any],
        category_ids: np.ndarray | list[Any],
        bboxes: np.ndarray,
        centers: np.ndarray,
        scales: np.ndarray,
        keypoints: np.ndarray,
        bbox_scores: np.ndarray,
        areas: np.ndarray,
        extras_constant: dict[str, Any] | None = None,
        extras_columns: dict[str, list[Any]] | None = None,
        extras_rows: list[dict[str, Any]] | None = None,
    ) -> None:
        n = len(image_index)
        self.dataset = dataset
        self.image_files = list(image_files)
        self.image_ids = list(image_ids)
        self.image_index = _readonly(np.asarray(image_index, dtype=np.int64))
        self.ann_ids = _readonly(ann_ids) if isinstance(ann_ids, np.ndarray) else ann_ids
        self.category_ids = (
            _readonly(category_ids) if isinstance(category_ids, np.ndarray) else category_ids
        )
        self.bboxes = _readonly(np.asarray(bboxes, dtype=np.float64).reshape(n, 4))
        self.centers = _readonly(np.asarray(centers, dtype=np.float32).reshape(n, 2))
        self.scales = _readonly(np.asarray(scales, dtype=np.float32).reshape(n, 2))
        if keypoints.ndim != 3 or keypoints.shape[0] != n or keypoints.shape[2] != 3:
            raise ValueError(f"keypoints must have shape ({n}, K, 3), got {keypoints.shape}")
        self.keypoints = _readonly(keypoints)
        self.bbox_scores = _readonly(np.asarray(bbox_scores, dtype=np.float64).reshape(n))
        self.areas = _readonly(np.asarray(areas, dtype=np.float64).reshape(n))
        self.extras_constant = dict(extras_constant or {})
        self.extras_columns = dict(extras_columns or {})
        self.extras_rows = extras_rows
        for name, col in (("ann_ids", self.ann_ids), ("category_ids", self.category_ids)):
            if len(col) != n:
                raise ValueError(f"{name} has {len(col)} rows, expected {n}")

    # ---------------------------------------------------------------------------------------
    # Sequence protocol

    def __len__(self) -> int:
        return len(self.image_index)

    @overload
    def __getitem__(self, index: int) -> Instance: ...

    @overload
    def __getitem__(self, index: slice) -> InstanceTable: ...

    def __getitem__(self, index: int | slice) -> Instance | InstanceTable:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"instance index {index} out of range for {n} instances")
        return self._row(i)

    def __iter__(self) -> Iterator[Instance]:
        for i in range(len(self)):
            yield self._row(i)

    def __eq__(self, other: object) -> bool:
        # As a list compares: same length and equal items (Instance compares by identity).
        if other is self:
            return True
        if not isinstance(other, (list, tuple, InstanceTable)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Sequence[Instance]) -> list[Instance]:
        return [*self, *other]

    def __radd__(self, other: Sequence[Instance]) -> list[Instance]:
        return [*other, *self]

    def __repr__(self) -> str:
        k = self.keypoints.shape[1]
        return f"InstanceTable({self.dataset!r}, {len(self)} instances, K={k})"

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickled arrays are writable copies: freeze them again.
        self.__dict__.update(state)
        for value in state.values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    # ---------------------------------------------------------------------------------------

    def _extras(self, i: int) -> dict[str, Any]:
        if self.extras_rows is not None:
            return self.extras_rows[i]
        extras = dict(self.extras_constant)
        for key, col in self.extras_columns.items():
            value = col[i]
            if value is not None:
                extras[key] = value
        return extras

    def _row(self, i: int) -> Instance:
        j = int(self.image_index[i])
        inst = Instance.__new__(Instance)
        # The columns are validated and read-only: set the fields without the per-record
        # checks of Instance.__post_init__ (the views it would freeze already are).
        inst.__dict__.update(
            dataset=self.dataset,
            image_file=self.image_files[j],
            image_id=self.image_ids[j],
            ann_id=_item(self.ann_ids, i),
            category_id=_item(self.category_ids, i),
            bbox=tuple(self.bboxes[i].tolist()),
            center=self.centers[i],
            scale=self.scales[i],
            keypoints=self.keypoints[i],
            bbox_score=float(self.bbox_scores[i]),
            area=float(self.areas[i]),
            extras=self._extras(i),
        )
        return inst

    def take(self, indices: Sequence[int] | np.ndarray) -> InstanceTable:
        """The rows ``indices`` (in that order) as a new table."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)

        def pick(col: np.ndarray | list[Any]) -> np.ndarray | list[Any]:
            return col[idx] if isinstance(col, np.ndarray) else [col[i] for i in idx.tolist()]

        return InstanceTable(
            dataset=self.dataset,
            image_files=self.image_files,
            image_ids=self.image_ids,
            image_index=self.image_index[idx],
            ann_ids=pick(self.ann_ids),
            category_ids=pick(self.category_ids),
            bboxes=self.bboxes[idx],
            centers=self.centers[idx],
            scales=self.scales[idx],
            keypoints=self.keypoints[idx],
            bbox_scores=self.bbox_scores[idx],
            areas=self.areas[idx],
            extras_constant=self.extras_constant,
            extras_columns={k: pick(v) for k, v in self.extras_columns.items()},  # type: ignore[misc]
            extras_rows=None if self.extras_rows is None else pick(self.extras_rows),  # type: ignore[arg-type]
        )

    @classmethod
    def from_instances(
        cls, instances: Sequence[Instance], dataset: str, num_keypoints: int
    ) -> InstanceTable:
        """A table holding ``instances`` (all of ``dataset``, K = ``num_keypoints``)."""
        files: dict[tuple[str, Any], int] = {}
        image_index = []
        for inst in instances:
            key = (inst.image_file, inst.image_id)
            image_index.append(files.setdefault(key, len(files)))
        n = len(instances)

        def stack(values: list[np.ndarray], shape: tuple[int, ...], dtype: type) -> np.ndarray:
            return np.stack(values).astype(dtype) if n else np.zeros((0, *shape), dtype)

        return cls(
            dataset=dataset,
            image_files=[f for f, _ in files],
            image_ids=[i for _, i in files],
            image_index=np.asarray(image_index, dtype=np.int64),
            ann_ids=[inst.ann_id for inst in instances],
            category_ids=[inst.category_id for inst in instances],
            bboxes=np.array([inst.bbox for inst in instances], dtype=np.float64).reshape(n, 4),
            centers=stack([inst.center for inst in instances], (2,), np.float32),
            scales=stack([inst.scale for inst in instances], (2,), np.float32),
            keypoints=stack([inst.keypoints for inst in instances], (num_keypoints, 3), np.float32),
            bbox_scores=np.array([inst.bbox_score for inst in instances], dtype=np.float64),
            areas=np.array([inst.area for inst in instances], dtype=np.float64),
            extras_rows=[inst.extras for inst in instances],
        )
