"""COCO-style AP/AR re-accumulated on resampled image multisets, from one ``COCOeval.evaluate()``.

The bootstrap of a COCO keypoint metric resamples the evaluation images with replacement and
recomputes AP/AR on each resample. Running pycocotools per resample would cost one whole
evaluation each; but matching (OKS, greedy assignment per image) does not depend on which other
images are present, only the accumulation over images does. So :class:`CocoMatches` keeps the
per-image matches of one ``COCOeval.evaluate()`` run — detection scores, matched and ignore flags
at every OKS threshold, the count of non-ignored ground truths — and :meth:`CocoMatches.stats`
repeats pycocotools' ``accumulate()`` + ``summarize()`` arithmetic on any multiset of images
(``counts[i]`` copies of image ``i``), vectorised over the thresholds.

Equivalences (tests/test_coco_resample.py):

- ``counts = 1`` gives pycocotools' own ``stats`` bit for bit (the same operations in the same
  order);
- any ``counts`` gives the stats of pycocotools run on the dataset in which image ``i`` appears
  ``counts[i]`` times (its ground truths and detections copied under new ids that sort right
  after ``i``'s). The one convention: detections of *one* image with *equal* scores are
  ordered copy-major by pycocotools and detection-major here, which can move precision within
  that tie only; scores of real models are distinct.

Shapes: I images (pycocotools' sorted ``imgIds``), D detections kept (``maxDets`` per image),
T OKS thresholds, R = 101 recall points, A area ranges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from posebh.evaluation.bootstrap import Resampler
from posebh.evaluation.coco import (
    _CROWD_SPLITS,
    CROWD_STAT_NAMES,
    STAT_NAMES,
    oks_eval,
    wholebody_eval,
)

__all__ = ["CocoMatches", "oks_resampler", "wholebody_resampler"]

#: Largest [B, T, S, R] comparison done in one go (bytes of booleans); above it, per row.
_COMPARE_AT_ONCE = 1 << 24


@dataclass(frozen=True)
class _AreaMatches:
    """One area range, its detections in pycocotools' global order (score descending, stable).

    Only the *mixed* detections (S of them: a true positive or ignored at some threshold) are
    kept one by one. The others are either a false positive at every threshold — they enter
    only through the weighted count of false positives before each kept detection,
    ``fp_before`` [S + 1, I] (sparse: how many of image i's lie before kept detection s) — or
    ignored at every threshold, which changes no sum at all.
    """

    has_entry: np.ndarray  # [I] the image has an evalImgs entry (a range with none is skipped)
    detections: np.ndarray  # [I] detections per image in the range's list (any kind)
    gt_counted: np.ndarray  # [I] non-ignored ground truths per image
    image: np.ndarray  # [S] image index of each kept detection
    tps: np.ndarray  # [T, S] matched and not ignored
    fps: np.ndarray  # [T, S] unmatched and not ignored
    fp_before: Any  # scipy.sparse CSR [S + 1, I]


@dataclass(frozen=True)
class CocoMatches:
    """Per-image matches of a ``COCOeval`` run (one ``maxDets``: COCO keypoints; K categories,
    one for persons, one per species for AP-10K / APT-36K)."""

    num_images: int
    iou_thrs: np.ndarray  # [T]
    rec_thrs: np.ndarray  # [R]
    areas: tuple[tuple[_AreaMatches, ...], ...]  # [K][A]

    @classmethod
    def from_cocoeval(cls, ev) -> CocoMatches:
        """From a ``COCOeval`` after ``evaluate()`` (keypoints: maxDets [20])."""
        p = ev.params
        cat_ids = p.catIds if p.useCats else [-1]
        if len(p.maxDets) != 1:
            raise ValueError(f"one maxDets expected (COCO keypoints), got {p.maxDets}")
        num_images, num_areas = len(p.imgIds), len(p.areaRng)

        def entries(k: int, a: int) -> list:  # pycocotools' evalImgs order: category, area, image
            start = (k * num_areas + a) * num_images
            return ev.evalImgs[start : start + num_images]

        areas = tuple(
            tuple(_area_matches(entries(k, a), p.maxDets[0], len(p.iouThrs))
                  for a in range(num_areas))
            for k in range(len(cat_ids))
        )  # fmt: skip
        thrs = np.asarray(p.iouThrs, dtype=np.float64)
        return cls(num_images, thrs, np.asarray(p.recThrs, dtype=np.float64), areas)

    def accumulate(self, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """pycocotools' ``precision`` [B, T, R, K, A] and ``recall`` [B, T, K, A] (−1 where
        undefined) on the multisets ``counts`` [B, I] (None: every image once, B = 1)."""
        counts = self._check(counts)
        num_b, num_thrs, num_rec = counts.shape[0], self.iou_thrs.size, self.rec_thrs.size
        num_k, num_a = len(self.areas), len(self.areas[0])
        precision = -np.ones((num_b, num_thrs, num_rec, num_k, num_a))
        recall = -np.ones((num_b, num_thrs, num_k, num_a))
        for k in range(num_k):
            self._accumulate_category(k, counts, precision[:, :, :, k], recall[:, :, k])
        return precision, recall

    def _accumulate_category(
        self, k: int, counts: np.ndarray, precision: np.ndarray, recall: np.ndarray
    ) -> None:
        for a, m in enumerate(self.areas[k]):
            # pycocotools skips a range whose images all lack an evalImgs entry, or without GT.
            npig = counts @ m.gt_counted
            active = (counts[:, m.has_entry] > 0).any(axis=1) & (npig > 0)
            empty = active & (counts @ m.detections == 0)
            precision[empty, :, :, a] = 0.0
            recall[empty, :, a] = 0.0
            rows = np.flatnonzero(active & ~empty)
            if rows.size:
                p, r = _accumulate_area(m, counts[rows], npig[rows], self.rec_thrs)
                precision[rows, :, :, a] = p
                recall[rows, :, a] = r

    def stats(self, counts: np.ndarray | None = None) -> np.ndarray:
        """pycocotools' keypoint ``stats`` [B, 10] (AP, AP50, AP75, AP medium, AP large, AR,
        AR50, AR75, AR medium, AR large) on the multisets ``counts`` [B, I]; −1 where
        undefined, as pycocotools."""
        precision, recall = self.accumulate(counts)

        def mean(values: np.ndarray) -> np.ndarray:
            flat = values.reshape(values.shape[0], -1)
            ok = flat > -1
            n = ok.sum(axis=1)
            total = np.where(ok, flat, 0.0).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(n > 0, total / np.maximum(n, 1), -1.0)

        def at(thr: float) -> int:
            return int(np.where(self.iou_thrs == thr)[0][0])  # pycocotools' exact lookup

        cols = [
            mean(precision[..., 0]),
            mean(precision[:, at(0.5), ..., 0]),
            mean(precision[:, at(0.75), ..., 0]),
            mean(precision[..., 1]),
            mean(precision[..., 2]),
            mean(recall[..., 0]),
            mean(recall[:, at(0.5), ..., 0]),
            mean(recall[:, at(0.75), ..., 0]),
            mean(recall[..., 1]),
            mean(recall[..., 2]),
        ]
        return np.stack(cols, axis=1)

    def _check(self, counts: np.ndarray | None) -> np.ndarray:
        if counts is None:
            return np.ones((1, self.num_images), dtype=np.int64)
        counts = np.asarray(counts)
        if counts.ndim == 1:
            counts = counts[None]
        if counts.ndim != 2 or counts.shape[1] != self.num_images or (counts < 0).any():
            raise ValueError(
                f"counts must be [B, {self.num_images}] non-negative integers (one column per "
                f"image of the evaluation), got shape {counts.shape}"
            )
        return counts.astype(np.int64, copy=False)


def _area_matches(entries: list, max_det: int, num_thrs: int) -> _AreaMatches:
    from scipy.sparse import csr_matrix

    num_images = len(entries)
    has_entry = np.array([e is not None for e in entries], dtype=bool)
    gt_counted = np.zeros(num_images, dtype=np.int64)
    detections = np.zeros(num_images, dtype=np.int64)
    scores, image, dtm, dtig = [], [], [], []
    for i, e in enumerate(entries):
        if e is None:
            continue
        s = np.asarray(e["dtScores"][:max_det], dtype=np.float64)
        detections[i] = s.size
        scores.append(s)
        image.append(np.full(s.size, i, dtype=np.int64))
        dtm.append(np.asarray(e["dtMatches"])[:, :max_det].reshape(num_thrs, -1))
        dtig.append(np.asarray(e["dtIgnore"])[:, :max_det].reshape(num_thrs, -1))
        gt_counted[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
    if scores:
        order = np.argsort(-np.concatenate(scores), kind="mergesort")  # pycocotools' sort
        matched = np.concatenate(dtm, axis=1)[:, order].astype(bool)
        ignored = np.concatenate(dtig, axis=1)[:, order].astype(bool)
        image_of = np.concatenate(image)[order]
    else:
        matched = ignored = np.zeros((num_thrs, 0), dtype=bool)
        image_of = np.zeros(0, dtype=np.int64)
    tps, fps = matched & ~ignored, ~matched & ~ignored
    always_fp = fps.all(axis=0)
    kept = np.flatnonzero(~always_fp & ~ignored.all(axis=0))
    fp_pos = np.flatnonzero(always_fp)
    # Segment j of an always-false positive = the number of kept detections before it.
    segment = np.searchsorted(kept, fp_pos)
    fp_before = csr_matrix(
        (np.ones(fp_pos.size, dtype=np.int64), (segment, image_of[fp_pos])),
        shape=(kept.size + 1, num_images),
    )
    return _AreaMatches(
        has_entry=has_entry,
        detections=detections,
        gt_counted=gt_counted,
        image=image_of[kept],
        tps=tps[:, kept],
        fps=fps[:, kept],
        fp_before=fp_before,
    )


def _accumulate_area(
    m: _AreaMatches, counts: np.ndarray, npig: np.ndarray, rec_thrs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """precision [B, T, R] and recall [B, T] of one area range on multisets with ≥ 1 detection.

    In the duplicated dataset the copies of one detection are adjacent in the sorted list, so
    every cumulative sum pycocotools forms is, at the last copy of kept detection s, a sum of
    ``counts[image] × flag`` over detections up to s. The precision envelope only peaks at the
    last copy of a true positive and a recall threshold is first reached inside a run of true
    positive copies, whose envelope is that of the run's last copy; so the S kept positions
    reproduce pycocotools' precision at its 101 recall points exactly.
    """
    num_b, num_thrs, num_s = counts.shape[0], m.tps.shape[0], m.tps.shape[1]
    num_rec = rec_thrs.size
    precision = np.zeros((num_b, num_thrs, num_rec))
    if num_s == 0:
        return precision, np.zeros((num_b, num_thrs))
    weight = counts[:, m.image]  # [B, S]
    # False positives of the always-false kind up to each kept detection.
    fp_outside = np.cumsum((m.fp_before @ counts.T).T, axis=1)[:, :num_s]  # [B, S]
    tp_sum = np.cumsum(weight[:, None, :] * m.tps[None], axis=2).astype(np.float64)
    fp_sum = (np.cumsum(weight[:, None, :] * m.fps[None], axis=2)
              + fp_outside[:, None, :]).astype(np.float64)  # fmt: skip
    rc = tp_sum / npig[:, None, None]
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    envelope = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
    if num_b * num_thrs * num_s * num_rec <= _COMPARE_AT_ONCE:
        # searchsorted(side="left") on a sorted row is the count of entries below the value:
        # the same float comparisons, for every row at once (small S: the synthetic tables).
        inds = (rc[:, :, :, None] < rec_thrs).sum(axis=2)  # [B, T, R]
        found = np.take_along_axis(envelope, np.minimum(inds, num_s - 1), axis=2)
        return np.where(inds < num_s, found, 0.0), rc[:, :, -1]
    for b in range(num_b):
        for t in range(num_thrs):
            inds = np.searchsorted(rc[b, t], rec_thrs, side="left")
            valid = inds < num_s
            precision[b, t, valid] = envelope[b, t, inds[valid]]
    return precision, rc[:, :, -1]


# ------------------------------------------------------------------------------------------
# Resamplers (posebh.evaluation.bootstrap) of oks_eval and wholebody_eval
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Matched:
    """What the bootstrap keeps of a ``COCOeval`` right after ``evaluate()`` (the crowd
    splits re-run it on other images afterwards)."""

    matches: CocoMatches
    units: tuple[Any, ...]
    crowd_index: np.ndarray | None  # [I] CrowdPose's per-image crowd index

    @classmethod
    def of(cls, ev) -> _Matched:
        ids = list(ev.params.imgIds)
        imgs = ev.cocoGt.imgs
        crowd = [imgs[i].get("crowdIndex") for i in ids]
        index = None if any(c is None for c in crowd) else np.asarray(crowd, dtype=np.float64)
        return cls(CocoMatches.from_cocoeval(ev), tuple(ids), index)


def _stats_resampler(matched: _Matched, stats: Mapping[str, Any], iou_type: str) -> Resampler:
    """The Resampler of one evaluation whose full-set stats dict ``stats``
    :func:`~posebh.evaluation.oks_eval` returned."""
    matches, units = matched.matches, matched.units
    if iou_type != "keypoints_crowd":
        names = STAT_NAMES

        def values(counts: np.ndarray) -> np.ndarray:
            return _undefined_as_nan(matches.stats(counts))
    else:
        names = CROWD_STAT_NAMES
        split_of = _crowd_splits(matched.crowd_index)

        def values(counts: np.ndarray) -> np.ndarray:
            s = matches.stats(counts)[:, [0, 1, 2, 5, 6, 7]]
            # xtcocotools' per-crowd-index split AP: the plain mean of precision (−1 included)
            # over the split's images, rounded to 4 decimals.
            splits = [np.round(matches.accumulate(counts * mask)[0][..., 0].mean(axis=(1, 2, 3)),
                               4) for mask in split_of]  # fmt: skip
            return _undefined_as_nan(np.column_stack([s, *splits]))

    full = np.array([stats[n] for n in names], dtype=np.float64)
    return Resampler(units, tuple(names), full, values)


def _undefined_as_nan(values: np.ndarray) -> np.ndarray:
    return np.where(values == -1.0, np.nan, values)


def _crowd_splits(index: np.ndarray | None) -> list[np.ndarray]:
    """Masks [I] of the easy / medium / hard crowd-index images (as ``coco._run_cocoeval``)."""
    if index is None:
        raise ValueError("keypoints_crowd needs every image's 'crowdIndex'")
    lo, hi = _CROWD_SPLITS
    return [(index < lo).astype(np.int64), ((index >= lo) & (index < hi)).astype(np.int64),
            (index >= hi).astype(np.int64)]  # fmt: skip


def oks_resampler(
    gt: Any, results: Any, *, sigmas: Any, use_area: bool = True, iou_type: str = "keypoints"
) -> tuple[dict[str, Any], Resampler]:
    """:func:`~posebh.evaluation.oks_eval`'s stats and their :class:`Resampler` (over the GT's
    images), from one pycocotools evaluation."""
    seen: list[_Matched] = []
    stats = oks_eval(gt, results, sigmas=sigmas, use_area=use_area, iou_type=iou_type,
                     on_matched=lambda ev: seen.append(_Matched.of(ev)))  # fmt: skip
    return stats, _stats_resampler(seen[0], stats, iou_type)


def wholebody_resampler(
    gt: Any, results: Any, *, sigmas: Any = None
) -> tuple[dict[str, dict[str, Any]], Resampler]:
    """:func:`~posebh.evaluation.wholebody_eval`'s stats and one :class:`Resampler` for every
    part (names ``"<part>/AP"``, …), all on the same image multisets."""
    seen: dict[str, _Matched] = {}

    def keep(part: str, ev: Any) -> None:
        seen[part] = _Matched.of(ev)

    stats = wholebody_eval(gt, results, sigmas=sigmas, on_matched=keep)
    parts = {p: _stats_resampler(seen[p], stats[p], f"keypoints_{p}") for p in stats}
    return stats, Resampler.join(parts)
