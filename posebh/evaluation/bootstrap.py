"""Per-image bootstrap intervals and paired comparisons for every metric posebh computes.

The evaluation images are the unit drawn independently, so a resample draws I images uniformly
with replacement (persons of one image stay together) and the metric is recomputed on that
multiset. A multiset is a vector ``counts`` [I] of non-negative integers summing to I
(``counts[i]`` copies of image ``i``); B resamples form a matrix [B, I].

A :class:`Resampler` is one metric family on one result set, in a form that recomputes on any
batch of multisets exactly as the full-set code would on a dataset with the images duplicated
accordingly (the tests check this against the full-set code itself: pycocotools for OKS AP,
:func:`~posebh.evaluation.pckh` for PCKh, …). Its ``full`` values are those of the full-set
code, not re-derived by the resample path.

* :func:`bootstrap` gives each metric's percentile 95 % interval;
* :func:`paired_bootstrap` compares two result sets on the same ground truth with the *same*
  resamples for both: per metric the values ``a``, ``b``, ``delta = b − a``, the interval of
  the delta and a two-sided bootstrap p-value.

Resamples are reproducible: resample ``b`` of seed ``s`` is the same whatever the chunking
(:func:`resample_counts`). A metric undefined on a resample (pycocotools' −1 when no ground
truth falls in an area range, a PCKh joint with no visible instance) is NaN there and left out
of that metric's interval; ``undefined`` counts how often.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_RESAMPLES",
    "Resampler",
    "bootstrap",
    "paired_bootstrap",
    "percentile_interval",
    "replicates",
    "resample_counts",
]

#: Resamples the reports use (``posebh eval --bootstrap``, the harness).
DEFAULT_RESAMPLES = 1000
#: Resamples per batch handed to a Resampler: bounds the [B, …] temporaries.
_CHUNK = 50


@dataclass(frozen=True)
class Resampler:
    """One metric family on one result set, recomputable on resampled image multisets.

    ``units``: the I image ids that ``counts`` index, in a fixed order (two result sets on the
    same ground truth have the same units); ``names``: the M metric keys (flat, as
    ``posebh.evaluate`` flattens a metrics dict: ``"AP"``, ``"body/AP"``, ``"PCKh"``);
    ``full``: [M] the full-set values from the full-set code; ``values``: counts [B, I] →
    [B, M] float64, NaN where a metric is undefined on a resample.
    """

    units: tuple[Any, ...]
    names: tuple[str, ...]
    full: np.ndarray
    values: Callable[[np.ndarray], np.ndarray]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.full):
            raise ValueError(f"{len(self.names)} names but {len(self.full)} full values")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"metric names repeat: {self.names}")

    @property
    def num_units(self) -> int:
        return len(self.units)

    @staticmethod
    def join(parts: Mapping[str, Resampler]) -> Resampler:
        """Resamplers of one ground truth under one name space: ``{"body": r, …}`` gives
        ``"body/AP"``, …; an empty prefix keeps the names as they are."""
        items = list(parts.items())
        if not items:
            raise ValueError("nothing to join")
        units = items[0][1].units
        for prefix, r in items[1:]:
            if r.units != units:
                raise ValueError(f"part {prefix!r} is resampled over other images")
        names = tuple(f"{p}/{n}" if p else n for p, r in items for n in r.names)
        full = np.concatenate([np.asarray(r.full, dtype=np.float64) for _, r in items])
        fns = [r.values for _, r in items]
        return Resampler(units, names, full, lambda c: np.concatenate([f(c) for f in fns], 1))


def resample_counts(
    num_units: int, num_resamples: int, seed: int, chunk: int = _CHUNK
) -> Iterator[np.ndarray]:
    """Batches [≤chunk, I] of image multisets: resample b draws I indices uniformly from
    ``default_rng(seed)``, row after row, so a resample does not depend on ``chunk``."""
    if num_units < 1:
        raise ValueError("no images to resample")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be ≥ 1, got {num_resamples}")
    rng = np.random.default_rng(seed)
    for start in range(0, num_resamples, chunk):
        b = min(chunk, num_resamples - start)
        draws = rng.integers(0, num_units, size=(b, num_units))
        flat = draws + (np.arange(b) * num_units)[:, None]
        yield np.bincount(flat.ravel(), minlength=b * num_units).reshape(b, num_units)


def _replicates(
    resamplers: Sequence[Resampler], num_resamples: int, seed: int, progress: bool = False
) -> list[np.ndarray]:
    """[N, M] resampled values of each resampler, all on the same multisets."""
    units = resamplers[0].units
    for r in resamplers[1:]:
        if r.units != units:
            raise ValueError(
                "the result sets are scored on different images; a paired comparison needs "
                "one ground truth"
            )
    batches: list[list[np.ndarray]] = [[] for _ in resamplers]
    chunks = resample_counts(len(units), num_resamples, seed)
    if progress:
        from tqdm import tqdm

        total = -(-num_resamples // _CHUNK)
        chunks = tqdm(chunks, total=total, desc="bootstrap", unit="chunk", leave=False)
    for counts in chunks:
        for out, r in zip(batches, resamplers, strict=True):
            out.append(np.asarray(r.values(counts), dtype=np.float64))
    return [np.concatenate(b, axis=0) for b in batches]


def replicates(
    resampler: Resampler, num_resamples: int, seed: int, *, progress: bool = False
) -> np.ndarray:
    """[N, M] the metrics on each of the N resamples (NaN where undefined): for statistics
    built from several independent image sets (a mean over datasets)."""
    return _replicates([resampler], num_resamples, seed, progress)[0]


def percentile_interval(samples: np.ndarray) -> list[float | None]:
    """Percentile 95 % interval of [N] replicates (NaNs left out; [None, None] if none)."""
    (ci,), _ = _interval(np.asarray(samples, dtype=np.float64)[:, None])
    return ci


def _interval(samples: np.ndarray) -> tuple[list[float | None], int]:
    """Percentile 95 % interval of each column of [N, M] (NaNs left out), and per column the
    number of NaNs. A column with no defined value has interval [None, None]."""
    out: list[list[float | None]] = []
    for column in samples.T:
        ok = column[~np.isnan(column)]
        if ok.size == 0:
            out.append([None, None])
        else:
            lo, hi = np.percentile(ok, [2.5, 97.5])
            out.append([float(lo), float(hi)])
    return out, np.isnan(samples).sum(axis=0)


def bootstrap(
    resampler: Resampler,
    num_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    *,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Per metric: ``value`` (the full-set value), ``ci95`` [lo, hi], ``std`` and
    ``undefined`` (resamples where the metric is undefined)."""
    (samples,) = _replicates([resampler], num_resamples, seed, progress)
    intervals, undefined = _interval(samples)
    out = {}
    for j, name in enumerate(resampler.names):
        column = samples[:, j]
        ok = column[~np.isnan(column)]
        out[name] = {
            "value": float(resampler.full[j]),
            "ci95": intervals[j],
            "std": float(np.std(ok, ddof=1)) if ok.size > 1 else None,
            "undefined": int(undefined[j]),
        }
    return out


def _two_sided_p(deltas: np.ndarray) -> float:
    """Bootstrap p-value of "delta = 0": twice the smaller tail beyond 0, with the +1
    correction so that it is never 0 from finitely many resamples; 1 when all deltas are 0."""
    n = deltas.size
    if n == 0:
        return float("nan")
    below = (1 + np.count_nonzero(deltas <= 0)) / (n + 1)
    above = (1 + np.count_nonzero(deltas >= 0)) / (n + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def paired_bootstrap(
    a: Resampler,
    b: Resampler,
    num_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    *,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """Per metric present in both: ``a``, ``b``, ``delta`` = b − a (full set), ``ci95`` of the
    delta over the same resamples, ``p`` (two-sided), ``ci95_a``, ``ci95_b``, ``undefined``."""
    common = [n for n in a.names if n in b.names]
    if not common:
        raise ValueError(f"no metric in common: {a.names} vs {b.names}")
    sa, sb = _replicates([a, b], num_resamples, seed, progress)
    ia = {n: i for i, n in enumerate(a.names)}
    ib = {n: i for i, n in enumerate(b.names)}
    out = {}
    for name in common:
        xa, xb = sa[:, ia[name]], sb[:, ib[name]]
        delta = xb - xa
        ok = ~np.isnan(delta)
        (ci,), _ = _interval(delta[:, None])
        (ci_a,), _ = _interval(xa[:, None])
        (ci_b,), _ = _interval(xb[:, None])
        va, vb = float(a.full[ia[name]]), float(b.full[ib[name]])
        out[name] = {
            "a": va,
            "b": vb,
            "delta": vb - va,
            "ci95": ci,
            "p": _two_sided_p(delta[ok]),
            "ci95_a": ci_a,
            "ci95_b": ci_b,
            "undefined": int((~ok).sum()),
        }
    return out
