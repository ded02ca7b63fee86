"""Evaluation metrics of the PoseBH / ViTPose++ protocol, without mmcv or xtcocotools.

* :mod:`~posebh.evaluation.coco`: OKS keypoint AP (:func:`oks_eval`, :func:`wholebody_eval`) on
  pycocotools with the xtcocotools rules, and :func:`write_coco_results`;
* :mod:`~posebh.evaluation.nms`: :func:`oks_iou`, :func:`oks_nms`, :func:`soft_oks_nms` and the
  top-down :func:`rescore_and_nms`;
* :mod:`~posebh.evaluation.keypoint`: :func:`pck_accuracy`, :func:`auc`, :func:`epe`,
  :func:`nme`, :func:`heatmap_pck`, :func:`mpjpe`;
* :mod:`~posebh.evaluation.mpii`: MPII :func:`pckh`.

**Provenance.** Every *result-level* metric (:func:`oks_eval`, each part of
:func:`wholebody_eval`, :func:`pckh`) returns a dict whose ``"meta"`` entry records what it ran
with: ``meta["versions"]`` (python, numpy, pycocotools, posebh; scipy when a ``.mat`` file was
read) and the protocol settings (``iou_type``, ``use_area``, ``sigmas``, score field,
xtcocotools semantics version, counts of GTs/ignored GTs/results/dropped detections; for PCKh
the thresholds, tie rule and SC_BIAS). ``meta`` is JSON-serialisable, so a result can be
stored as it is; it is the only non-float entry besides PCKh's per-joint lists. The
array-level primitives (PCK, AUC, EPE, NME, MPJPE, NMS) are pure NumPy functions of their
arguments and return bare numbers; the caller that aggregates them records
:func:`library_versions` alongside.
"""

from posebh.evaluation._meta import XTCOCOTOOLS_SEMANTICS, cpu_name, library_versions
from posebh.evaluation.coco import (
    CROWD_STAT_NAMES,
    IOU_TYPES,
    STAT_NAMES,
    WHOLEBODY_PARTS,
    oks_eval,
    wholebody_eval,
    write_coco_results,
)
from posebh.evaluation.keypoint import (
    auc,
    calc_distances,
    epe,
    heatmap_argmax,
    heatmap_pck,
    mpjpe,
    mpjpe_resampler,
    nme,
    nme_resampler,
    pck_accuracy,
    pck_auc_epe_resampler,
)
from posebh.evaluation.mpii import load_mpii_gt, mpii_gt_arrays, pckh, pckh_resampler
from posebh.evaluation.nms import oks_iou, oks_nms, rescore_and_nms, soft_oks_nms

__all__ = [
    "CROWD_STAT_NAMES",
    "IOU_TYPES",
    "STAT_NAMES",
    "WHOLEBODY_PARTS",
    "XTCOCOTOOLS_SEMANTICS",
    "auc",
    "calc_distances",
    "cpu_name",
    "epe",
    "heatmap_argmax",
    "heatmap_pck",
    "library_versions",
    "load_mpii_gt",
    "mpii_gt_arrays",
    "mpjpe",
    "mpjpe_resampler",
    "nme",
    "nme_resampler",
    "oks_eval",
    "oks_iou",
    "oks_nms",
    "pck_accuracy",
    "pck_auc_epe_resampler",
    "pckh",
    "pckh_resampler",
    "rescore_and_nms",
    "soft_oks_nms",
    "wholebody_eval",
    "write_coco_results",
]
