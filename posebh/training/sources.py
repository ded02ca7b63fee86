"""What a run trains on: the model head of each training dataset, the annotation files under
the data root, and each dataset's training pipeline."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from posebh.datasets import DatasetError, DatasetSpec, default_spec, read_dataset
from posebh.models import PoseBH
from posebh.pipeline import TopDownDataset, TopDownPipeline, per_dataset_pipeline
from posebh.skeletons import get_skeleton
from posebh.training.config import TrainConfig, TrainConfigError
from posebh.training.state import derived_seed

__all__ = ["SYNTH_HINT", "TrainDataError", "build_datasets", "map_heads", "train_spec"]

SYNTH_HINT = (
    "Make a synthetic world with `posebh synth --out {root} --preset mini`, or point "
    "--data-root at the official data/ tree (coco/, aic/, mpii/, ap10k/, ap36k/, ...)."
)


class TrainDataError(DatasetError):
    """Training data missing or unusable; the message says where it was looked for."""


def map_heads(config: TrainConfig, model: PoseBH) -> tuple[list[int], dict[int, str]]:
    """Head index of each training dataset, checked against the model, and the dataset
    name of each trained head."""
    heads: list[int] = []
    for i, name in enumerate(config.data.datasets):
        try:
            skel = get_skeleton(name)
        except KeyError as err:
            raise TrainConfigError(str(err.args[0])) from None
        if config.data.heads is not None:
            h = config.data.heads[i]
        elif model.num_datasets == 6 and skel.dataset_index is not None:
            h = skel.dataset_index
        elif model.num_datasets == len(config.data.datasets):
            h = i
        else:
            raise TrainConfigError(
                f"dataset {name!r} is not one of the heads of model {config.model!r} "
                f"({model.num_datasets} heads with {[hd.num_keypoints for hd in model.heads]} "
                "keypoints); set data.heads to map it, or use a preset built for it"
            )
        if not 0 <= h < model.num_datasets:
            raise TrainConfigError(
                f"dataset {name!r} mapped to head {h}, but the model has {model.num_datasets} heads"
            )
        k = model.heads[h].num_keypoints
        if k != skel.num_keypoints:
            raise TrainConfigError(
                f"dataset {name!r} has {skel.num_keypoints} keypoints but head {h} of "
                f"model {config.model!r} predicts {k}: it is not among the model's heads "
                "(set model.num_keypoints or data.heads)"
            )
        protos = model.keypoint_prototypes
        if protos is not None and protos.num_keypoints[h] != k:
            raise TrainConfigError(
                f"prototype block {h} has {protos.num_keypoints[h]} classes, head {h} {k}"
            )
        if h in heads:
            raise TrainConfigError(f"two training datasets share head {h}")
        heads.append(h)
    names = {h: config.data.datasets[i] for i, h in enumerate(heads)}
    return heads, names


def train_spec(name: str, config: TrainConfig, data_root: Path) -> DatasetSpec:
    """The training split of dataset ``name`` under ``data_root`` (official layout)."""
    root = data_root
    if not root.is_dir():
        raise TrainDataError(f"data root {root} does not exist. " + SYNTH_HINT.format(root=root))
    spec = default_spec(name, config.data.split, root)
    if spec.gt_file is not None:
        # MPII's head boxes (mpii_gt_val.mat) belong to the val records; training does
        # not use them, and checking them against the train records would fail.
        spec = dataclasses.replace(spec, gt_file=None)
    if not Path(spec.ann_file).is_file():
        raise TrainDataError(
            f"{name} {config.data.split} annotations not found: {spec.ann_file} "
            f"(official layout under --data-root {root}). " + SYNTH_HINT.format(root=root)
        )
    return spec


def _pipeline(name: str, config: TrainConfig, model: PoseBH, max_joints: int) -> TopDownPipeline:
    h_in, w_in = model.config.img_size
    h_hm, w_hm = model.config.heatmap_size
    sizes = dict(image_size=(w_in, h_in), heatmap_size=(w_hm, h_hm))
    overrides = dict(config.data.pipeline.get(name, {}))
    try:
        return per_dataset_pipeline(
            name, train=True, max_num_joints=max_joints, **sizes, **overrides
        )
    except ValueError:
        # Transfer datasets have no multi-dataset training pipeline: the plain one plus
        # the recipe's overrides.
        return TopDownPipeline(train=True, max_num_joints=max_joints, **sizes, **overrides)


def build_datasets(
    config: TrainConfig,
    model: PoseBH,
    head_of: list[int],
    data_root: Path,
    log: Callable[[str], None],
) -> tuple[list[TopDownDataset], int]:
    """The training datasets (in ``config.data.datasets`` order) and the keypoint count
    their batches are padded to."""
    max_joints = max(model.heads[h].num_keypoints for h in head_of)
    out = []
    for i, (name, h) in enumerate(zip(config.data.datasets, head_of, strict=True)):
        spec = train_spec(name, config, data_root)
        instances, summary = read_dataset(spec, show_progress=False)
        log(str(summary).splitlines()[0])
        if not instances:
            raise TrainDataError(f"{spec.ann_file}: no usable training instance ({summary})")
        out.append(
            TopDownDataset(
                instances,
                name,
                _pipeline(name, config, model, max_joints),
                dataset_idx=h,
                seed=derived_seed(config.seed, 0xA0, i),
            )
        )
    return out, max_joints
