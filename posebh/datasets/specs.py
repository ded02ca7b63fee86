"""Where each dataset lives in the official ``data/`` tree, and one entry point to read it.

Relative paths are those of the official PoseBH configs (``uyoung-jeong/PoseBH`` @ 8f03438,
``configs/``), with their ``./data`` prefix replaced by ``data_root``:

* train: the multi-dataset training config ``body/.../mdt/vitb_posebh.py`` (COCO, AIC, MPII,
  AP-10K, APT-36K, WholeBody), the only config PoseBH trains those heads with;
  InterHand2D and 3DPW: their own fine-tuning configs;
* val / test: the single-dataset evaluation configs of PROTOCOL.md §6
  (``ViTPose_base_{coco,aic,mpii,ochuman}_256x192.py``, ``ViTPose_base_{ap10k,apt36k}_256x192.py``,
  ``ViTPose_base_wholebody_256x192.py``, ``vitb_posebh_interhand2d_256x192.py``,
  ``vitb_posebh_pw3d_2d_256x192.py``).

Where the two disagree (AIC and APT-36K train files) the mdt names are used; the alternatives
are noted in ``_LAYOUT``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from posebh.protocol import PROTOCOLS, UnknownDatasetError, get_protocol

from .base import DatasetError, Instance, ReadSummary
from .coco import read_coco_detections, read_coco_keypoints
from .interhand import read_interhand2d
from .mpii import mpii_gt_file, read_mpii

__all__ = ["DATASET_NAMES", "SPLITS", "DatasetSpec", "default_spec", "read_dataset"]

SPLITS = ("train", "val", "test", "test-dev")

_COCO_DET = "coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
_COCO_TESTDEV_DET = (
    "coco/person_detection_results/COCO_test-dev2017_detections_AP_H_609_person.json"
)
_IH = "interhand2.6m/annotations"
_MDT = "body/2d_kpt_sview_rgb_img/topdown_heatmap/mdt/vitb_posebh.py"

# name → split → (ann_file, img_prefix, extra fields, source config). Paths are relative to
# data_root. "use_gt_bbox": False marks the val/test configs evaluated on detection boxes.
_LAYOUT: dict[str, dict[str, tuple[str, str, dict[str, object], str]]] = {
    "coco": {
        "train": (
            "coco/annotations/person_keypoints_train2017.json",
            "coco/train2017/",
            {},
            _MDT,
        ),
        "val": (
            "coco/annotations/person_keypoints_val2017.json",
            "coco/val2017/",
            {"det_file": _COCO_DET, "use_gt_bbox": False},
            "body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/ViTPose_base_coco_256x192.py",
        ),
        # No public keypoint GT: image_info_test-dev2017.json lists the images, the
        # detection file gives the person boxes (60.9 AP); results go to the eval server.
        "test-dev": (
            "coco/annotations/image_info_test-dev2017.json",
            "coco/test2017/",
            {"det_file": _COCO_TESTDEV_DET, "use_gt_bbox": False},
            "body/2d_kpt_sview_rgb_img/topdown_heatmap/coco/ViTPose_base_coco_256x192.py",
        ),
    },
    "aic": {
        # aic/ViTPose_base_aic_256x192.py trains on aic/annotations/aic_train.json instead.
        "train": (
            "aic/annotations/person_keypoints_train2017.json",
            "aic/ai_challenger_keypoint_train_20170902/keypoint_train_images_20170902/",
            {},
            _MDT,
        ),
        "val": (
            "aic/annotations/aic_val.json",
            "aic/ai_challenger_keypoint_validation_20170911/keypoint_validation_images_20170911/",
            {},
            "body/2d_kpt_sview_rgb_img/topdown_heatmap/aic/ViTPose_base_aic_256x192.py",
        ),
    },
    "mpii": {
        "train": (
            "mpii/annotations/mpii_train.json",
            "mpii/images/",
            {},
            _MDT,
        ),
        "val": (
            "mpii/annotations/mpii_val.json",
            "mpii/images/",
            {},
            "body/2d_kpt_sview_rgb_img/topdown_heatmap/mpii/ViTPose_base_mpii_256x192.py",
        ),
    },
    "ap10k": {
        "train": (
            "ap10k/annotations/ap10k-train-split1.json",
            "ap10k/data/",
            {},
            _MDT,
        ),
        "val": (
            "ap10k/annotations/ap10k-val-split1.json",
            "ap10k/data/",
            {},
            "animal/2d_kpt_sview_rgb_img/topdown_heatmap/ap10k/ViTPose_base_ap10k_256x192.py",
        ),
        "test": (
            "ap10k/annotations/ap10k-test-split1.json",
            "ap10k/data/",
            {},
            "animal/2d_kpt_sview_rgb_img/topdown_heatmap/ap10k/ViTPose_base_ap10k_256x192.py",
        ),
    },
    "apt36k": {
        # apt36k/ViTPose_base_apt36k_256x192.py trains on ap36k/annotations/apt36k_train.json.
        "train": (
            "ap36k/annotations/train_annotations_1.json",
            "ap36k/images/",
            {},
            _MDT,
        ),
        "val": (
            "ap36k/annotations/apt36k_val.json",
            "ap36k/images/",
            {},
            "animal/2d_kpt_sview_rgb_img/topdown_heatmap/apt36k/ViTPose_base_apt36k_256x192.py",
        ),
        "test": (
            "ap36k/annotations/apt36k_test.json",
            "ap36k/images/",
            {},
            "animal/2d_kpt_sview_rgb_img/topdown_heatmap/apt36k/ViTPose_base_apt36k_256x192.py",
        ),
    },
    "coco_wholebody": {
        "train": (
            "coco/annotations/coco_wholebody_train_v1.0.json",
            "coco/train2017/",
            {},
            _MDT,
        ),
        "val": (
            "coco/annotations/coco_wholebody_val_v1.0.json",
            "coco/val2017/",
            {"det_file": _COCO_DET, "use_gt_bbox": False},
            "wholebody/2d_kpt_sview_rgb_img/topdown_heatmap/coco-wholebody/"
            "ViTPose_base_wholebody_256x192.py",
        ),
    },
    "ochuman": {
        # No train split: the OCHuman config trains on COCO train2017.
        "val": (
            "ochuman/annotations/ochuman_coco_format_val_range_0.00_1.00.json",
            "ochuman/images/",
            {},
            "body/2d_kpt_sview_rgb_img/topdown_heatmap/ochuman/ViTPose_base_ochuman_256x192.py",
        ),
        "test": (
            "ochuman/annotations/ochuman_coco_format_test_range_0.00_1.00.json",
            "ochuman/images/",
            {},
            "body/2d_kpt_sview_rgb_img/topdown_heatmap/ochuman/ViTPose_base_ochuman_256x192.py",
        ),
    },
    "interhand2d": {
        "train": (
            f"{_IH}/all/InterHand2.6M_train_data.json",
            "interhand2.6m/images/train/",
            {
                "camera_file": f"{_IH}/all/InterHand2.6M_train_camera.json",
                "joint_file": f"{_IH}/all/InterHand2.6M_train_joint_3d.json",
            },
            "hand/2d_kpt_sview_rgb_img/topdown_heatmap/interhand2d/"
            "vitb_posebh_interhand2d_256x192.py",
        ),
        "val": (
            f"{_IH}/machine_annot/InterHand2.6M_val_data.json",
            "interhand2.6m/images/val/",
            {
                "camera_file": f"{_IH}/machine_annot/InterHand2.6M_val_camera.json",
                "joint_file": f"{_IH}/machine_annot/InterHand2.6M_val_joint_3d.json",
            },
            "hand/2d_kpt_sview_rgb_img/topdown_heatmap/interhand2d/"
            "vitb_posebh_interhand2d_256x192.py",
        ),
        "test": (
            f"{_IH}/all/InterHand2.6M_test_data.json",
            "interhand2.6m/images/test/",
            {
                "camera_file": f"{_IH}/all/InterHand2.6M_test_camera.json",
                "joint_file": f"{_IH}/all/InterHand2.6M_test_joint_3d.json",
            },
            "hand/2d_kpt_sview_rgb_img/topdown_heatmap/interhand2d/"
            "vitb_posebh_interhand2d_256x192.py",
        ),
    },
    "pw3d": {
        # Written by PoseBH tools/dataset/preprocess_3dpw.py; val and test are both pw3d_test.
        "train": (
            "pw3d/annotations/pw3d_train.json",
            "pw3d/imageFiles/",
            {},
            "body/2d_kpt_sview_rgb_img/topdown_heatmap/pw3d/vitb_posebh_pw3d_2d_256x192.py",
        ),
        "val": (
            "pw3d/annotations/pw3d_test.json",
            "pw3d/imageFiles/",
            {},
            "body/2d_kpt_sview_rgb_img/topdown_heatmap/pw3d/vitb_posebh_pw3d_2d_256x192.py",
        ),
    },
}
# Configs whose test entry equals the val entry.
for _name in ("coco", "aic", "mpii", "coco_wholebody", "pw3d"):
    _LAYOUT[_name]["test"] = _LAYOUT[_name]["val"]

#: Dataset names accepted by :func:`default_spec` / :func:`read_dataset` (skeleton names).
DATASET_NAMES = tuple(_LAYOUT)
# Keyed by the records' names (posebh.protocol), which also resolve the aliases.
assert set(_LAYOUT) == set(PROTOCOLS), sorted(set(_LAYOUT) ^ set(PROTOCOLS))

# Datasets whose official loader asserts use_gt_bbox (no detection path).
_GT_ONLY = ("aic", "mpii", "ap10k", "apt36k", "ochuman", "interhand2d", "pw3d")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset split on disk: what :func:`read_dataset` needs.

    ``name`` is a skeleton name (``DATASET_NAMES``). ``det_file`` / ``det_bbox_thr`` are used
    when ``use_gt_bbox`` is False (COCO, COCO-WholeBody evaluation); ``camera_file`` /
    ``joint_file`` are InterHand's; ``gt_file`` is MPII's ``mpii_gt_val.mat`` (PCKh).
    ``source`` says which official config the layout came from.
    """

    name: str
    ann_file: str
    img_prefix: str
    det_file: str | None = None
    use_gt_bbox: bool = True
    det_bbox_thr: float = 0.0
    camera_file: str | None = None
    joint_file: str | None = None
    gt_file: str | None = None
    split: str | None = None
    source: str = ""
    check_images: bool = True


def _canonical(name: str) -> str:
    try:  # names and aliases resolve through the dataset records
        name = get_protocol(name).name
    except UnknownDatasetError:
        name = name.lower()
    if name not in _LAYOUT:
        raise DatasetError(f"unknown dataset {name!r}. Fix: use one of {', '.join(DATASET_NAMES)}.")
    return name


def default_spec(
    name: str,
    split: str,
    data_root: str | os.PathLike[str] = "data",
    *,
    use_gt_bbox: bool | None = None,
) -> DatasetSpec:
    """The official layout of dataset ``name``, ``split`` ("train" | "val" | "test", and
    "test-dev" for COCO: image list + detections, no keypoint GT) under ``data_root`` (the
    official ``data/`` folder).

    COCO and COCO-WholeBody val/test default to the detection boxes
    (``COCO_val2017_detections_AP_H_56_person.json``, ``det_bbox_thr`` 0.0) as the official
    configs; pass ``use_gt_bbox=True`` for GT boxes. OCHuman has no train split.
    """
    name = _canonical(name)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}. Fix: use one of {SPLITS}.")
    if split == "test-dev" and split not in _LAYOUT[name]:
        raise DatasetError(f"only COCO has a test-dev split, not {name}. Fix: use 'val' or 'test'.")
    if split not in _LAYOUT[name]:
        raise DatasetError(
            f"{name} has no {split} split in the official configs (OCHuman is evaluation-only; "
            "its config trains on COCO). Fix: use split='val' or 'test'."
        )
    ann, img, extra, source = _LAYOUT[name][split]
    root = Path(data_root)
    fields: dict[str, object] = {
        key: str(root / val) if isinstance(val, str) else val for key, val in extra.items()
    }
    if use_gt_bbox is not None:
        fields["use_gt_bbox"] = use_gt_bbox
    if split == "train":
        fields["use_gt_bbox"] = True
    if fields.get("use_gt_bbox", True) is False and "det_file" not in fields:
        raise DatasetError(
            f"{name} has no detection file in the official configs. Fix: use_gt_bbox=True."
        )
    if name == "mpii" and split != "train":
        # Head boxes (PCKh) exist for the evaluation records only; mpii_gt_val.mat does not
        # describe the training list.
        fields["gt_file"] = str(mpii_gt_file(root / ann))
    return DatasetSpec(
        name=name,
        ann_file=str(root / ann),
        img_prefix=str(root / img),
        split=split,
        source=f"uyoung-jeong/PoseBH configs/{source}",
        **fields,  # type: ignore[arg-type]
    )


def read_dataset(
    spec: DatasetSpec, *, show_progress: bool | None = None
) -> tuple[Sequence[Instance], ReadSummary]:
    """Read ``spec`` with the reader of its dataset; returns (instances, summary): a list, or an
    :class:`~posebh.datasets.table.InstanceTable` for the COCO-format readers."""
    name = _canonical(spec.name)
    common = {"check_images": spec.check_images, "show_progress": show_progress}
    if not spec.use_gt_bbox:
        if name in _GT_ONLY:
            raise DatasetError(
                f"{name}: the official loader only uses GT boxes (use_gt_bbox is asserted). "
                "Fix: set use_gt_bbox=True."
            )
        if spec.det_file is None:
            raise DatasetError(f"{name}: use_gt_bbox=False needs det_file. Fix: set det_file.")
        return read_coco_detections(
            spec.det_file,
            spec.ann_file,
            spec.img_prefix,
            name,
            det_bbox_thr=spec.det_bbox_thr,
            **common,
        )
    if name == "mpii":
        return read_mpii(spec.ann_file, spec.img_prefix, gt_mat=spec.gt_file, **common)
    if name == "interhand2d":
        if spec.camera_file is None or spec.joint_file is None:
            raise DatasetError(
                "interhand2d needs camera_file and joint_file. Fix: set both in the DatasetSpec."
            )
        return read_interhand2d(
            spec.ann_file, spec.camera_file, spec.joint_file, spec.img_prefix, **common
        )
    return read_coco_keypoints(spec.ann_file, spec.img_prefix, name, **common)
