"""The top-down training / evaluation data pipeline: one :class:`Instance` → one network sample.

Shape vocabulary: an input crop is ``img`` [3, h, w] float32 (normalised RGB, h×w = 256×192),
``target`` [K, H, W] float32 heatmaps (H×W = 64×48) and ``target_weight`` [K, 1] float32, with
K the dataset's keypoint count (or ``max_num_joints`` after padding); a batch adds a leading N.
``center`` [2] is in pixels, ``scale`` [2] in units of 200 px, ``rotation`` in degrees; sizes
are (w, h) as in the configs.

The steps and their order are the official mmpose 0.x ones of the PoseBH multi-dataset config
(``mdt/vitb_posebh.py``)::

    LoadImageFromFile → [centre jitter] → TopDownRandomFlip → TopDownHalfBodyTransform →
    TopDownGetRandomScaleRotation → TopDownAffine → ToTensor → NormalizeTensor →
    TopDownGenerateTarget

(evaluation: LoadImageFromFile → TopDownAffine → ToTensor → NormalizeTensor). The centre jitter
is the training-time part of the official ``_xywh2cs`` (p = 0.3, ±0.2·(w, h) of the box); the
official loaders apply it once, when the annotation database is built, so by default it is drawn
here from (seed, index) only and stays fixed across epochs.

Randomness: every sample draws from its own ``numpy.random.Generator`` seeded from
(seed, epoch, index) — never the global RNG — so a sample is reproducible whatever the
DataLoader worker layout. Call :meth:`TopDownDataset.set_epoch` before each epoch (with
non-persistent workers, which receive a fresh copy of the dataset every epoch).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from posebh.codecs import ENCODINGS, decoding_codec, generate_target
from posebh.datasets import Instance, InstanceTable
from posebh.image_io import load_image
from posebh.ops.warp import warp_normalize_batch
from posebh.protocol import TRAINING_DATASETS, DatasetProtocol, get_protocol
from posebh.skeletons import Skeleton, get_skeleton
from posebh.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_joints,
    crop_matrix,
    flip_image,
    fliplr_joints,
    half_body_center_scale,
    normalize_image,
    random_scale_rotation,
    top_down_affine,
)

__all__ = [
    "MDT_VAL",
    "ImageLoadError",
    "ImageRunDataset",
    "TopDownDataset",
    "TopDownPipeline",
    "image_runs",
    "load_image",
    "multi_dataset_collate",
    "per_dataset_pipeline",
]

#: How many image paths a dataset remembers (COCO train has 118,000 images).
_PATH_CACHE_SIZE = 200_000

#: The channel count of the multi-dataset model's padded targets (COCO-WholeBody's 133).
MAX_NUM_JOINTS = 133


class ImageLoadError(OSError):
    """An image could not be read; the message names the file and the instance."""


@dataclass(frozen=True)
class TopDownPipeline:
    """Settings of the top-down pipeline (the official config values are the defaults).

    * ``use_udp``: the affine crop — UDP (``get_warp_matrix``) or plain
      (``get_affine_transform``); ``encoding``: the target — ``"UDP"`` Gaussian, ``"MSRA"``
      Gaussian (``unbiased_encoding`` = DARK) or ``"Megvii"``; ``sigma`` in heatmap pixels.
    * ``train``: apply the random augmentations (flip with ``flip_prob``; half-body with
      ``prob_half_body`` when more than ``num_joints_half_body`` joints are visible; scale
      ×clip(1 + ``scale_factor``·N, 1 ± ``scale_factor``); rotation clip(``rot_factor``·N,
      ±2·``rot_factor``) with probability ``rot_prob``; centre jitter with
      ``center_jitter_prob`` by ``center_jitter_factor``·(U − 0.5)·(box w, h)).
    * ``with_target``: render targets (``None`` = when training, as the official pipelines).
    * ``max_num_joints``: pad targets and weights to this many channels (PoseBH: 133).
    * ``warp_method``: the OpenCV arithmetic to reproduce (see ``transforms.warp_affine``).
    """

    image_size: tuple[int, int] = (192, 256)
    heatmap_size: tuple[int, int] = (48, 64)
    use_udp: bool = True
    encoding: Literal["UDP", "MSRA", "Megvii"] = "UDP"
    sigma: float = 2.0
    unbiased_encoding: bool = False
    use_different_joint_weights: bool = False
    train: bool = True
    flip_prob: float = 0.5
    half_body: bool = True
    num_joints_half_body: int = 8
    prob_half_body: float = 0.3
    half_body_padding: float = 1.5
    rot_factor: float = 40.0
    scale_factor: float = 0.5
    rot_prob: float = 0.6
    center_jitter_prob: float = 0.3
    center_jitter_factor: float = 0.4
    center_jitter_per_epoch: bool = False
    with_target: bool | None = None
    max_num_joints: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    warp_method: Literal["fixed", "float"] = "fixed"

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be 'UDP', 'MSRA' or 'Megvii', got {self.encoding!r}")
        for name in ("flip_prob", "prob_half_body", "rot_prob", "center_jitter_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.image_size) != 2 or len(self.heatmap_size) != 2:
            raise ValueError("image_size and heatmap_size are (w, h) pairs")

    @property
    def targets(self) -> bool:
        """Whether samples carry ``target`` / ``target_weight``."""
        return self.train if self.with_target is None else self.with_target

    def evaluation(self) -> TopDownPipeline:
        """The same crop settings with augmentation and targets off (``train=False``)."""
        return replace(self, train=False, with_target=None)


#: The multi-dataset config's own val/test pipeline ("mdt_val"): COCO's evaluation crop.
MDT_VAL = "mdt_val"
_MDT_VAL_DATASET = "coco"


def per_dataset_pipeline(
    name: str | DatasetProtocol,
    train: bool = True,
    max_num_joints: int | None = MAX_NUM_JOINTS,
    **overrides: Any,
) -> TopDownPipeline:
    """The official pipeline settings for dataset ``name`` (a name, alias or record of
    :mod:`posebh.protocol`, or ``"mdt_val"``).

    Training (the six PoseBH training sets): the record's :class:`~posebh.protocol.TrainSettings`
    — COCO and MPII use the UDP affine and the UDP Gaussian target, AIC / AP-10K / APT-36K /
    COCO-WholeBody the plain affine and the MSRA target (σ 2); MPII has no half-body step and
    no centre jitter; targets are padded to ``max_num_joints`` (133, the multi-dataset
    setting; ``None`` for none). Evaluation: the crop of the record's evaluation decode — UDP
    for COCO, MPII and ``"mdt_val"``, plain for every other dataset — and the encoding that
    decode reads (the heatmap oracle's targets). ``overrides`` replace any field.
    """
    if train:
        record = None if name == MDT_VAL else get_protocol(name)
        if record is None or record.train is None:
            raise ValueError(
                f"no official training pipeline for {name!r}; training datasets: "
                f"{', '.join(p.name for p in TRAINING_DATASETS)}"
            )
        cfg = TopDownPipeline(
            train=True, max_num_joints=max_num_joints, **record.train.pipeline_fields()
        )
    else:
        record = get_protocol(_MDT_VAL_DATASET if name == MDT_VAL else name)
        use_udp = record.decode.use_udp
        cfg = TopDownPipeline(
            train=False,
            use_udp=use_udp,
            encoding=decoding_codec(use_udp).encoding,  # type: ignore[arg-type]
            max_num_joints=max_num_joints,
        )
    return replace(cfg, **overrides) if overrides else cfg


def _seed_rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


@dataclass
class _Sample:
    """The state threaded through the steps (mmpose's ``results`` dict)."""

    image: np.ndarray
    joints: np.ndarray  # [K, 3] float32
    visible: np.ndarray  # [K, 3] float32
    center: np.ndarray  # [2] float32
    scale: np.ndarray  # [2] float32
    rotation: float = 0.0
    flipped: bool = False
    half_body: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


class TopDownDataset(Dataset):
    """``torch`` dataset of top-down samples from a list of :class:`Instance`.

    ``skeleton`` gives the flip indices, the upper-body joints and the joint weights;
    ``dataset_idx`` the expert / head index of the multi-dataset model (default: the
    skeleton's ``dataset_index``, else 0). Instances' ``image_file`` is read as is, or under
    ``image_root`` when relative. ``seed`` and the epoch (:meth:`set_epoch`) fix every random
    draw.

    An item is a dict: ``img`` [3, h, w] float32; when the pipeline renders targets,
    ``target`` [K, H, W] and ``target_weight`` [K, 1] float32 (K = ``max_num_joints`` if set);
    ``dataset_idx`` int; ``meta``: ``image_file``, ``image_id``, ``ann_id``, ``dataset``,
    ``index``, ``center`` / ``scale`` (after augmentation, the crop's), ``rotation``,
    ``flipped``, ``half_body``, ``bbox_score``, ``bbox``, ``category_id``, ``num_joints``,
    ``flip_indices``, ``joints_3d`` / ``joints_3d_visible`` (in crop pixels), ``use_udp``.
    """

    def __init__(
        self,
        instances: Sequence[Instance],
        skeleton: Skeleton | str,
        pipeline: TopDownPipeline,
        dataset_idx: int | None = None,
        *,
        seed: int = 0,
        image_root: str | os.PathLike[str] | None = None,
    ) -> None:
        # A reader's InstanceTable stays columnar (an Instance is built per item): a list of
        # 150,000 Instances costs ~1 s and several hundred MB in every worker.
        self.instances = instances if isinstance(instances, InstanceTable) else list(instances)
        self.skeleton = get_skeleton(skeleton) if isinstance(skeleton, str) else skeleton
        self.pipeline = pipeline
        if dataset_idx is None:
            dataset_idx = self.skeleton.dataset_index or 0
        self.dataset_idx = int(dataset_idx)
        self.seed = int(seed)
        self.epoch = 0
        self.image_root = Path(image_root) if image_root is not None else None
        self._paths: dict[str, Path] = {}
        k = len(self.skeleton.keypoint_names)
        if isinstance(self.instances, InstanceTable):
            rows = self.instances[:1] if self.instances.keypoints.shape[1] != k else ()
        else:
            rows = self.instances
        for i, inst in enumerate(rows):
            if inst.num_keypoints != k:
                raise ValueError(
                    f"instance {i} ({inst.dataset}, image {inst.image_file}) has "
                    f"{inst.num_keypoints} keypoints; skeleton {self.skeleton.name!r} has {k}"
                )
        if pipeline.max_num_joints is not None and pipeline.max_num_joints < k:
            raise ValueError(f"max_num_joints={pipeline.max_num_joints} < {k} keypoints")

    def __len__(self) -> int:
        return len(self.instances)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch``."""
        self.epoch = int(epoch)

    def image_path(self, inst: Instance) -> Path:
        """Where the instance's image is read from."""
        return self.image_path_of(inst.image_file)

    def image_path_of(self, image_file: str) -> Path:
        """Where an instance with this ``image_file`` reads its image from."""
        cached = self._paths.get(image_file)
        if cached is not None:  # building a Path costs more than a crop's bookkeeping
            return cached
        p = Path(image_file)
        if self.image_root is not None and not p.is_absolute():
            p = self.image_root / p
        if len(self._paths) < _PATH_CACHE_SIZE:
            self._paths[image_file] = p
        return p

    def _load(self, index: int, inst: Instance) -> np.ndarray:
        path = self.image_path(inst)
        try:
            return load_image(path)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            what = "detection box" if inst.ann_id is None else f"annotation id {inst.ann_id}"
            raise ImageLoadError(
                f"cannot load image {path} for instance {index} ({inst.dataset}, image_id="
                f"{inst.image_id!r}, {what}): {type(e).__name__}: {e}"
            ) from e

    def _initial(self, image: np.ndarray, inst: Instance) -> _Sample:
        k = inst.num_keypoints
        joints = np.zeros((k, 3), dtype=np.float32)
        joints[:, :2] = inst.keypoints[:, :2]
        visible = np.zeros((k, 3), dtype=np.float32)
        visible[:, :2] = np.minimum(1.0, inst.keypoints[:, 2:3])
        return _Sample(
            image=image,
            joints=joints,
            visible=visible,
            center=np.array(inst.center, dtype=np.float32),
            scale=np.array(inst.scale, dtype=np.float32),
        )

    def augment(self, s: _Sample, inst: Instance, index: int) -> _Sample:
        """The random steps (training only), drawing from (seed, epoch, index)."""
        p = self.pipeline
        jitter_key = (
            (self.seed, 1, self.epoch, index)
            if p.center_jitter_per_epoch
            else (
                self.seed,
                1,
                index,
            )
        )
        jitter_rng = _seed_rng(*jitter_key)
        if p.center_jitter_prob > 0 and jitter_rng.random() < p.center_jitter_prob:
            wh = np.array(inst.bbox[2:4], dtype=np.float64)
            shift = p.center_jitter_factor * (jitter_rng.random(2) - 0.5) * wh
            s.center = (s.center + shift).astype(np.float32)

        rng = _seed_rng(self.seed, 0, self.epoch, index)
        if rng.random() <= p.flip_prob:
            width = s.image.shape[1]
            s.image = flip_image(s.image)
            s.joints, s.visible = fliplr_joints(
                s.joints, s.visible, width, self.skeleton.flip_indices
            )
            s.center = s.center.copy()
            s.center[0] = width - s.center[0] - 1
            s.flipped = True
        if (
            p.half_body
            and float(s.visible[:, 0].sum()) > p.num_joints_half_body
            and rng.random() < p.prob_half_body
        ):
            box = half_body_center_scale(
                s.joints,
                s.visible,
                self.skeleton.upper_body_ids,
                rng,
                p.image_size,
                p.half_body_padding,
            )
            if box is not None:
                s.center, s.scale = box
                s.half_body = True
        s.scale, s.rotation = random_scale_rotation(
            s.scale, rng, p.scale_factor, p.rot_factor, p.rot_prob
        )
        return s

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.instances):
            raise IndexError(f"index {index} out of range for {len(self.instances)} instances")
        inst = self.instances[index]
        return self.sample(index, self._load(index, inst), inst)

    def samples_of(
        self, indices: Sequence[int], image: np.ndarray | None = None
    ) -> list[dict[str, Any]]:
        """The items ``indices`` of instances that share one image file, that image decoded
        once (or ``image``, already decoded): each equals ``self[i]``."""
        indices = [int(i) for i in indices]
        if not indices:
            return []
        for i in indices:
            if not 0 <= i < len(self.instances):
                raise IndexError(f"index {i} out of range for {len(self.instances)} instances")
        insts = [self.instances[i] for i in indices]
        path = self.image_path(insts[0])
        for i, inst in zip(indices[1:], insts[1:], strict=True):
            if self.image_path(inst) != path:
                raise ValueError(
                    f"samples_of: instance {i} reads {self.image_path(inst)}, "
                    f"instance {indices[0]} reads {path}; pass the instances of one image"
                )
        if image is None:
            image = self._load(indices[0], insts[0])
        if not self.pipeline.train and not self.pipeline.targets:
            return self._evaluation_items(indices, insts, image)
        return [self.sample(i, image, inst) for i, inst in zip(indices, insts, strict=True)]

    def sample(self, index: int, image: np.ndarray, inst: Instance | None = None) -> dict[str, Any]:
        """Item ``index`` from its decoded ``image`` [H, W, 3] uint8 (read, not modified);
        ``inst`` is ``self.instances[index]`` when the caller already holds it."""
        p = self.pipeline
        if inst is None:
            inst = self.instances[index]
        s = self._initial(image, inst)
        if p.train:
            s = self.augment(s, inst, index)
        crop, joints, _ = top_down_affine(
            s.image,
            s.joints,
            s.visible,
            s.center,
            s.scale,
            s.rotation,
            p.image_size,
            p.use_udp,
            p.warp_method,
        )
        return self._item(index, inst, s, joints, normalize_image(crop, p.mean, p.std))

    def _evaluation_items(
        self, indices: Sequence[int], insts: Sequence[Instance], image: np.ndarray
    ) -> list[dict[str, Any]]:
        """:meth:`sample` of each index for an evaluation pipeline (no augmentation, no
        targets): the same items, every crop of the image cut and normalised in one call."""
        p = self.pipeline
        states = [self._initial(image, inst) for inst in insts]
        matrices = [
            crop_matrix(s.center, s.scale, s.rotation, p.image_size, p.use_udp) for s in states
        ]
        size = (int(p.image_size[0]), int(p.image_size[1]))
        crops = warp_normalize_batch(image, matrices, size, p.warp_method, p.mean, p.std)
        items = zip(indices, insts, states, matrices, crops.unbind(0), strict=True)
        return [
            self._item(i, inst, s, crop_joints(s.joints, s.visible, m, p.use_udp), img)
            for i, inst, s, m, img in items
        ]

    def _item(
        self, index: int, inst: Instance, s: _Sample, joints: np.ndarray, img: Tensor
    ) -> dict[str, Any]:
        """The item dict of a sample whose crop is ``img`` and moved joints ``joints``."""
        p = self.pipeline
        out: dict[str, Any] = {"img": img}
        if p.targets:
            target, weight = generate_target(
                joints,
                s.visible,
                encoding=p.encoding,
                sigma=p.sigma,
                image_size=p.image_size,
                heatmap_size=p.heatmap_size,
                unbiased_encoding=p.unbiased_encoding,
                joint_weights=self.skeleton.joint_weights,
                use_different_joint_weights=p.use_different_joint_weights,
                max_num_joints=p.max_num_joints,
            )
            out["target"] = torch.from_numpy(target)
            out["target_weight"] = torch.from_numpy(weight)
        out["dataset_idx"] = self.dataset_idx
        out["meta"] = {
            "image_file": str(self.image_path(inst)),
            "image_id": inst.image_id,
            "ann_id": inst.ann_id,
            "dataset": inst.dataset,
            "index": index,
            "center": s.center,
            "scale": s.scale,
            "rotation": float(s.rotation),
            "flipped": s.flipped,
            "half_body": s.half_body,
            "bbox_score": float(inst.bbox_score),
            "bbox": inst.bbox,
            "category_id": inst.category_id,
            "num_joints": inst.num_keypoints,
            "flip_indices": self.skeleton.flip_indices,
            "joints_3d": joints,
            "joints_3d_visible": s.visible,
            "use_udp": p.use_udp,
            "dataset_idx": self.dataset_idx,
        }
        return out


def image_runs(dataset: TopDownDataset) -> list[range]:
    """The maximal runs of consecutive instances that read the same image file.

    Detection files and annotation readers list boxes image by image, so a run is normally
    all the boxes of one image; an image whose boxes are not consecutive gives several runs.
    """
    runs: list[range] = []
    start, previous = 0, None
    for i, path in enumerate(_image_paths(dataset)):
        if i and path != previous:
            runs.append(range(start, i))
            start = i
        previous = path
    if dataset.instances:
        runs.append(range(start, len(dataset.instances)))
    return runs


def _image_paths(dataset: TopDownDataset) -> Iterator[Path]:
    """Each instance's image path, from the table's columns when it is one (no Instance built)."""
    table = dataset.instances
    if not isinstance(table, InstanceTable):
        yield from (dataset.image_path(inst) for inst in table)
        return
    paths: dict[int, Path] = {}
    for index in table.image_index.tolist():
        path = paths.get(index)
        if path is None:
            path = paths[index] = dataset.image_path_of(table.image_files[index])
        yield path


class ImageRunDataset(Dataset):
    """Item ``r`` = the samples of run ``r`` of ``dataset`` (:func:`image_runs`), the image
    decoded once: ``dataset.samples_of(runs[r])``, a list of :class:`TopDownDataset` items.

    Concatenated in order, the items are ``dataset[0], dataset[1], …`` — the evaluation
    reads them this way and cuts the stream into the same batches as a per-box loader.
    """

    def __init__(self, dataset: TopDownDataset, runs: Sequence[range] | None = None) -> None:
        self.dataset = dataset
        self.runs = list(image_runs(dataset) if runs is None else runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: int) -> list[dict[str, Any]]:
        return self.dataset.samples_of(self.runs[index])


def _pad_channels(t: Tensor, n: int, what: str) -> Tensor:
    k = t.shape[0]
    if k > n:
        raise ValueError(f"{what} has {k} channels, more than max_num_joints={n}")
    if k == n:
        return t
    return torch.cat([t, t.new_zeros((n - k, *t.shape[1:]))])


def multi_dataset_collate(
    samples: Sequence[Mapping[str, Any]], max_num_joints: int | None = MAX_NUM_JOINTS
) -> dict[str, Any]:
    """Batch samples of possibly different datasets for the multi-dataset model.

    Returns ``img`` [N, 3, h, w]; ``target`` [N, M, H, W] and ``target_weight`` [N, M, 1],
    zero-padded to M = ``max_num_joints`` channels (133; ``None`` = the largest K in the batch)
    — padded channels have weight 0, so they add nothing to the weighted MSE; ``dataset_idx``
    int64 [N] (the routing of each image); ``num_joints`` int64 [N] (each sample's own K); and
    ``img_metas``, the list of per-sample ``meta`` dicts. Samples without targets (evaluation)
    give a batch without ``target`` / ``target_weight``.
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch: dict[str, Any] = {"img": torch.stack([s["img"] for s in samples])}
    has_target = ["target" in s for s in samples]
    if any(has_target) and not all(has_target):
        raise ValueError("a batch mixes samples with and without targets")
    if all(has_target):
        m = max_num_joints
        if m is None:
            m = max(int(s["target"].shape[0]) for s in samples)
        batch["target"] = torch.stack([_pad_channels(s["target"], m, "target") for s in samples])
        batch["target_weight"] = torch.stack(
            [_pad_channels(s["target_weight"], m, "target_weight") for s in samples]
        )
    batch["dataset_idx"] = torch.tensor([int(s["dataset_idx"]) for s in samples], dtype=torch.int64)
    num_joints = [
        int(s.get("meta", {}).get("num_joints", s["target"].shape[0] if "target" in s else 0))
        for s in samples
    ]
    batch["num_joints"] = torch.tensor(num_joints, dtype=torch.int64)
    batch["img_metas"] = [s.get("meta", {}) for s in samples]
    return batch
