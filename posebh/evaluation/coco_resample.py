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

from dataclasses import dataclass

import numpy as np

__all__ = ["CocoMatches"]


@dataclass(frozen=True)
class _AreaMatches:
    """One area range: detections in pycocotools' global order (score descending, stable)."""

    has_entry: np.ndarray  # [I] the image has an evalImgs entry (a range with none is skipped)
    image: np.ndarray  # [D] image index of each detection
    tps: np.ndarray  # [T, D] matched and not ignored
    fps: np.ndarray  # [T, D] unmatched and not ignored
    gt_counted: np.ndarray  # [I] non-ignored ground truths per image


@dataclass(frozen=True)
class CocoMatches:
    """Per-image matches of a ``COCOeval`` run (one category, one ``maxDets``; COCO keypoints)."""

    num_images: int
    iou_thrs: np.ndarray  # [T]
    rec_thrs: np.ndarray  # [R]
    areas: tuple[_AreaMatches, ...]  # [A]

    @classmethod
    def from_cocoeval(cls, ev) -> CocoMatches:
        """From a ``COCOeval`` after ``evaluate()`` (keypoints: one category, maxDets [20])."""
        p = ev.params
        cat_ids = p.catIds if p.useCats else [-1]
        if len(cat_ids) != 1 or len(p.maxDets) != 1:
            raise ValueError(
                f"one category and one maxDets expected (COCO keypoints), got catIds {cat_ids} "
                f"and maxDets {p.maxDets}"
            )
        max_det = p.maxDets[0]
        num_images, num_thrs = len(p.imgIds), len(p.iouThrs)
        areas = []
        for a in range(len(p.areaRng)):
            entries = ev.evalImgs[a * num_images : (a + 1) * num_images]
            has_entry = np.array([e is not None for e in entries], dtype=bool)
            scores, image, dtm, dtig = [], [], [], []
            gt_counted = np.zeros(num_images, dtype=np.int64)
            for i, e in enumerate(entries):
                if e is None:
                    continue
                s = np.asarray(e["dtScores"][:max_det], dtype=np.float64)
                scores.append(s)
                image.append(np.full(s.size, i, dtype=np.int64))
                dtm.append(np.asarray(e["dtMatches"])[:, :max_det].reshape(num_thrs, -1))
                dtig.append(np.asarray(e["dtIgnore"])[:, :max_det].reshape(num_thrs, -1))
                gt_counted[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
            if scores:
                all_scores = np.concatenate(scores)
                order = np.argsort(-all_scores, kind="mergesort")  # pycocotools' sort
                matched = np.concatenate(dtm, axis=1)[:, order].astype(bool)
                ignored = np.concatenate(dtig, axis=1)[:, order].astype(bool)
                image_of = np.concatenate(image)[order]
            else:
                matched = ignored = np.zeros((num_thrs, 0), dtype=bool)
                image_of = np.zeros(0, dtype=np.int64)
            areas.append(
                _AreaMatches(
                    has_entry=has_entry,
                    image=image_of,
                    tps=matched & ~ignored,
                    fps=~matched & ~ignored,
                    gt_counted=gt_counted,
                )
            )
        thrs = np.asarray(p.iouThrs, dtype=np.float64)
        return cls(num_images, thrs, np.asarray(p.recThrs, dtype=np.float64), tuple(areas))

    def accumulate(self, counts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """pycocotools' ``precision`` [T, R, A] and ``recall`` [T, A] (−1 where undefined) on the
        multiset with ``counts[i]`` copies of image ``i`` (None: every image once)."""
        num_thrs = self.areas[0].tps.shape[0] if self.areas else 0
        num_rec = self.rec_thrs.size
        precision = -np.ones((num_thrs, num_rec, len(self.areas)))
        recall = -np.ones((num_thrs, len(self.areas)))
        if counts is not None:
            counts = np.asarray(counts, dtype=np.int64)
            if counts.shape != (self.num_images,) or (counts < 0).any():
                raise ValueError(
                    f"counts must be {self.num_images} non-negative integers, got shape "
                    f"{counts.shape}"
                )
        for a, m in enumerate(self.areas):
            if counts is None:
                keep = bool(m.has_entry.any())
                npig = int(m.gt_counted.sum())
                tps, fps = m.tps, m.fps
            else:
                # pycocotools skips a range whose images all lack an evalImgs entry.
                keep = bool((counts[m.has_entry] > 0).any())
                npig = int(counts @ m.gt_counted)
                reps = counts[m.image]
                tps = np.repeat(m.tps, reps, axis=1)
                fps = np.repeat(m.fps, reps, axis=1)
            if not keep or npig == 0:
                continue
            tp_sum = np.cumsum(tps, axis=1).astype(float)
            fp_sum = np.cumsum(fps, axis=1).astype(float)
            nd = tp_sum.shape[1]
            if nd == 0:
                recall[:, a] = 0.0
                precision[:, :, a] = 0.0
                continue
            rc = tp_sum / npig
            pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
            recall[:, a] = rc[:, -1]
            # pycocotools' backward pass pr[i-1] = max(pr[i-1], pr[i]): a reversed running max.
            envelope = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            for t in range(num_thrs):
                inds = np.searchsorted(rc[t], self.rec_thrs, side="left")
                q = np.zeros(num_rec)
                valid = inds < nd
                q[valid] = envelope[t, inds[valid]]
                precision[t, :, a] = q
        return precision, recall

    def stats(self, counts: np.ndarray | None = None) -> np.ndarray:
        """pycocotools' keypoint ``stats`` (AP, AP50, AP75, AP medium, AP large, AR, AR50, AR75,
        AR medium, AR large) on the multiset ``counts``."""
        precision, recall = self.accumulate(counts)

        def mean(values: np.ndarray) -> float:
            values = values[values > -1]
            return -1.0 if values.size == 0 else float(np.mean(values))

        def at(thr: float) -> int:
            return int(np.where(self.iou_thrs == thr)[0][0])  # pycocotools' exact lookup

        ap = [
            mean(precision[:, :, 0]),
            mean(precision[at(0.5), :, 0]),
            mean(precision[at(0.75), :, 0]),
            mean(precision[:, :, 1]),
            mean(precision[:, :, 2]),
        ]
        ar = [mean(recall[:, 0]), mean(recall[at(0.5), 0]), mean(recall[at(0.75), 0]),
              mean(recall[:, 1]), mean(recall[:, 2])]  # fmt: skip
        return np.asarray(ap + ar)
