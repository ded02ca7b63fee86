"""Helpers shared by the per-image bootstrap Resamplers of the non-COCO metrics.

PCKh, PCK, AUC, EPE, NME and MPJPE score *instances* (persons, hands, faces), but the unit a
bootstrap draws is the *image* (:mod:`posebh.evaluation.bootstrap`): persons of one image stay
together. A multiset of images, ``counts [B, I]``, therefore weights every instance by the
count of its image; a resample equals the full-set metric on the arrays in which instance ``n``
is repeated in place ``counts[image of n]`` times (``np.repeat`` order, zero copies dropped).

* :func:`image_units` maps per-instance image ids to the sorted unit ids and an index;
* :func:`check_counts` validates a batch of multisets;
* :func:`image_sums` and :func:`weighted_sum` sum 0/1 (or integer) per-instance indicators over
  the copies, exactly: per image once, then one ``[B, I] @ [I, C]`` product per batch;
* :func:`instance_counts` turns image multisets into per-instance copy counts;
* :func:`masked_row_mean` is ``values[valid].mean()`` per row with the full-set rounding;
* :func:`repeated_index` is the instance order of one resample's duplicated arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "check_counts",
    "image_sums",
    "image_units",
    "instance_counts",
    "masked_row_mean",
    "repeated_index",
    "weighted_sum",
]


def image_units(image_ids: Any, num_instances: int, caller: str) -> tuple[tuple, np.ndarray]:
    """Sorted unique image ids (the bootstrap units) and, per instance, its unit's index.

    ``caller`` names the function in the error for a length mismatch.
    """
    ids = np.asarray(image_ids)
    if ids.ndim != 1 or len(ids) != num_instances:
        raise ValueError(
            f"{caller}: image_ids has shape {ids.shape} but there are {num_instances} "
            "instances. Fix: pass one image id per instance (the image each prediction "
            "belongs to), in the order of pred."
        )
    if num_instances == 0:
        raise ValueError(f"{caller}: no instances to resample. Fix: pass a non-empty pred.")
    units, inverse = np.unique(ids, return_inverse=True)
    return tuple(units.tolist()), inverse.reshape(-1)


def check_counts(counts: Any, num_units: int) -> np.ndarray:
    """``counts`` as an int64 ``[B, I]`` array, or a ValueError naming the expected shape."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != num_units:
        raise ValueError(
            f"counts has shape {counts.shape}; expected [B, {num_units}] (one column per "
            "image of the Resampler's units)"
        )
    return counts.astype(np.int64, copy=False)


def instance_counts(counts: Any, inverse: np.ndarray, num_units: int) -> np.ndarray:
    """Per-instance copies ``[B, N]`` (int64) from image multisets ``counts [B, I]``."""
    return check_counts(counts, num_units)[:, inverse]


def image_sums(indicator: np.ndarray, inverse: np.ndarray, num_units: int) -> np.ndarray:
    """Per-image sums ``[I, C]`` (float64) of per-instance integer indicators ``[N, C]``."""
    out = np.zeros((num_units, indicator.shape[1]))
    np.add.at(out, inverse, indicator.astype(np.float64))
    return out


def weighted_sum(counts: Any, per_image: np.ndarray) -> np.ndarray:
    """``counts [B, I] @ per_image [I, C]`` in float64: integer-valued terms, so the sums are
    exact (< 2**53) and equal to summing the indicators over the duplicated instances."""
    return check_counts(counts, len(per_image)).astype(np.float64) @ per_image


def masked_row_mean(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per row, ``values[row][valid[row]].mean()``; NaN for a row with nothing valid.

    Rows are grouped by their ``valid`` pattern so that each mean runs over exactly the valid
    entries, in order (NumPy's pairwise sum, as the full-set ``arr[valid].mean()``), rather
    than over zero-filled rows, whose rounding would differ in the last bits.
    """
    out = np.full(values.shape[0], np.nan)
    patterns, group = np.unique(valid, axis=0, return_inverse=True)
    group = group.reshape(-1)
    for g, pattern in enumerate(patterns):
        if pattern.any():
            rows = np.flatnonzero(group == g)
            out[rows] = values[np.ix_(rows, np.flatnonzero(pattern))].mean(axis=1)
    return out


def repeated_index(copies_row: np.ndarray) -> np.ndarray:
    """Instance indices of one resample's duplicated arrays: ``n`` repeated ``copies_row[n]``
    times, in instance order."""
    return np.repeat(np.arange(len(copies_row)), copies_row)
