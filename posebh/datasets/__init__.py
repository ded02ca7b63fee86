"""Dataset readers for the real on-disk formats of the PoseBH / ViTPose++ datasets.

Every reader returns ``(instances, summary)``: a sequence of :class:`Instance` (a list, or
for the COCO-format readers an :class:`InstanceTable` that stores columns) (one top-down box
with ``center`` [2], ``scale`` [2], ``keypoints`` [K, 3]) and a :class:`ReadSummary` that
counts what was read, kept and skipped per reason. Bad input raises :class:`DatasetError`.
:func:`default_spec` gives the official ``data/`` layout; :func:`read_dataset` dispatches.
"""

from .base import (
    DEFAULT_ASPECT_RATIO,
    DatasetError,
    Instance,
    ReadSummary,
    box_to_center_scale,
    check_image,
    clean_bbox,
)
from .coco import (
    COCO_STYLE_DATASETS,
    read_aic,
    read_ap10k,
    read_apt36k,
    read_coco,
    read_coco_detections,
    read_coco_keypoints,
    read_coco_wholebody,
    read_ochuman,
    read_pw3d,
)
from .interhand import project_world_to_pixel, read_interhand2d
from .mpii import load_mpii_gt, mpii_gt_file, read_mpii
from .specs import DATASET_NAMES, SPLITS, DatasetSpec, default_spec, read_dataset
from .table import InstanceTable

__all__ = [
    "COCO_STYLE_DATASETS",
    "DATASET_NAMES",
    "DEFAULT_ASPECT_RATIO",
    "SPLITS",
    "DatasetError",
    "DatasetSpec",
    "Instance",
    "InstanceTable",
    "ReadSummary",
    "box_to_center_scale",
    "check_image",
    "clean_bbox",
    "default_spec",
    "load_mpii_gt",
    "mpii_gt_file",
    "project_world_to_pixel",
    "read_aic",
    "read_ap10k",
    "read_apt36k",
    "read_coco",
    "read_coco_detections",
    "read_coco_keypoints",
    "read_coco_wholebody",
    "read_dataset",
    "read_interhand2d",
    "read_mpii",
    "read_ochuman",
    "read_pw3d",
]
