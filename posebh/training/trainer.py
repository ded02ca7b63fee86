"""The training loop: mixed multi-dataset batches, the PoseBH loss composition, the staged
schedule, checkpoints that resume bit for bit, DDP, logging and periodic evaluation.

Loss of one step (official ``TopDownMoEProto.forward_train`` + ``KptProtoHead.get_loss``):

* every heatmap head d runs on every image; ``hm/<dataset>`` = JointsMSE(head_d, targets of
  d's images, weights of d's images) with the other images' targets and weights zeroed, i.e.
  averaged over the whole batch as officially (with ``heads_on_own_images``, the tiny
  recipes' setting, head d runs only on d's images while CSS is off, and the loss is rescaled
  to the same whole-batch mean: identical values but for the heads' BatchNorm statistics);
* ``proto`` (PPC + PPD) and ``proto_heatmap`` (prototype-heatmap MSE × λ) per dataset present
  (:func:`posebh.losses.prototype_losses`), the prototypes moving on the way;
* ``cps`` once the cluster bank exists (:func:`posebh.cps.cps_loss`);
* ``css`` while CSS is on (:func:`posebh.css.css_loss`), which moves the prototypes too;
* then the prototypes are averaged across ranks once.

The total is the plain sum; the weights live inside each term, as in the release.  Heads
that no training dataset maps to (a ``--datasets`` subset) are left out of the total, so
AdamW's weight decay does not erode them.

Departures from the release, none of which changes a loss value:

* without CSS only each image's own class block of the prototype heatmaps is computed;
* DDP runs without buffer broadcast as the release, and the BatchNorm statistics (which
  only evaluation reads) are averaged over ranks at every checkpoint, so all ranks and the
  saved file agree;
* a non-finite CSS term skips CSS for that step (the release exits).

Determinism: every step reseeds the global generators from (seed, step, rank) and draws its
samples from :class:`~posebh.training.data.StepSampler` (pure in (seed, step, rank)), so the
only state a resumed run needs is the checkpoint's model, optimizer, scaler, cluster bank and
step; the generator states are saved as well and restored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from posebh.checkpoint import TRAIN_CHECKPOINT_FORMAT
from posebh.cli import save_atomically
from posebh.cps import ClusterPrototypes, choose_num_clusters, cps_loss
from posebh.css import css_loss
from posebh.datasets import DatasetError, DatasetSpec, default_spec, read_dataset
from posebh.losses import JointsMSELoss, PixelPrototypeLoss, prototype_losses
from posebh.models import PoseBH, build_model
from posebh.pipeline import (
    TopDownDataset,
    TopDownPipeline,
    multi_dataset_collate,
    per_dataset_pipeline,
)
from posebh.skeletons import get_skeleton
from posebh.training.config import TrainConfig, TrainConfigError
from posebh.training.data import MixedDataset, StepBatches, StepSampler, seed_worker
from posebh.training.optim import build_optimizer, describe_groups, lr_factor, set_lr
from posebh.training.schedule import StageState, apply_state, events_at, plan_table, stage_at

__all__ = [
    "CHECKPOINT_FORMAT",
    "DEBUG_EXIT_ENV",
    "DIGEST_ENV",
    "RunOptions",
    "TrainResult",
    "Trainer",
    "headline_metric",
    "load_init",
    "state_digest",
]

CHECKPOINT_FORMAT = TRAIN_CHECKPOINT_FORMAT
#: Test hook: ``os._exit(137)`` right after this many steps (simulates a killed job).
DEBUG_EXIT_ENV = "POSEBH_DEBUG_EXIT_AFTER_STEP"
#: Test hook: each rank writes ``<dir>/rank<r>.json`` with SHA-1s of its state at the end.
DIGEST_ENV = "POSEBH_DEBUG_STATE_DIGEST"

SYNTH_HINT = (
    "Make a synthetic world with `posebh synth --out {root} --preset mini`, or point "
    "--data-root at the official data/ tree (coco/, aic/, mpii/, ap10k/, ap36k/, ...)."
)

# Fields that may differ between a checkpoint and a resumed run (they do not change the
# trajectory).
_RESUME_FREE = {
    "description",
    "log_every",
    "ckpt_every",
    "keep_every",
    "eval_every",
    "eval_at_end",
    "data.num_workers",
    "data.eval_batch_size",
    "data.val_datasets",
    "data.val_split",
    "data.eval_gt_bbox",
}


class TrainDataError(DatasetError):
    """Training data missing or unusable; the message says where it was looked for."""


@dataclass
class RunOptions:
    """Per-invocation settings (not part of the recipe)."""

    data_root: Path = Path("data")
    work_dir: Path = Path("work_dirs/run")
    init: str | None = None  # path, "scratch", or None
    resume: bool = False
    max_steps: int | None = None
    max_minutes: float | None = None
    device: str | None = None
    progress: bool = True
    log: Callable[[str], None] | None = None


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns."""

    step: int
    total_steps: int
    completed: bool
    work_dir: Path
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    images_per_s: float = 0.0


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def _dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def _derived_seed(*key: int) -> int:
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]).generate_state(1)[0])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = np.random.get_state()
    out: dict[str, Any] = {
        "python": random.getstate(),
        # torch.load(weights_only=True) refuses numpy arrays: keep the key as a tensor.
        "numpy": [state[0], torch.from_numpy(state[1].astype(np.int64)), *state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def headline_metric(metrics: Mapping[str, Any]) -> tuple[str, float] | None:
    """The number a dataset is ranked by: OKS AP, WholeBody whole-body AP, MPII PCKh,
    InterHand AUC."""
    if "wholebody" in metrics and isinstance(metrics["wholebody"], Mapping):
        return "AP(wholebody)", float(metrics["wholebody"]["AP"])
    for key in ("AP", "PCKh", "AUC", "PCK"):
        if key in metrics:
            return key, float(metrics[key])
    return None


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ------------------------------------------------------------------------------------------
# Initial weights
# ------------------------------------------------------------------------------------------


def load_init(model: PoseBH, path: str | os.PathLike[str], config: TrainConfig) -> list[str]:
    """Load starting weights (``--init``) into ``model``, non-strictly, and report.

    Accepts an official checkpoint (mmcv naming), a posebh state dict, or a training
    checkpoint of this trainer (its ``model``).  A multi-expert checkpoint loaded into a
    plain ViT is first split for ``config.init_split`` (the official ``model_split.py``);
    ``init_remove_prototypes`` drops the keypoint bank (``remove_proto.py``).  The cluster
    bank is never loaded: CPS builds its own.  Tensors whose shapes differ (a new keypoint
    set) are skipped, as mmcv's non-strict loading does.  Returns the report lines.
    """
    from posebh.checkpoint import (
        CheckpointError,
        official_to_posebh,
        read_state_dict,
        remove_prototypes,
        split_official,
        to_official,
    )

    path = os.fspath(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"--init checkpoint not found: {path}")
    sd = read_state_dict(path)  # also reads this trainer's own checkpoints (their 'model')
    if not any(k.startswith("heads.") for k in sd):
        sd = official_to_posebh(sd)
    notes = [f"init: {path}"]
    has_experts = any(".mlp.experts." in k for k in sd)
    if has_experts and model.backbone.num_experts == 0:
        split = config.init_split or "coco"
        sd = official_to_posebh(split_official(to_official(sd), split, keep_prototype_head=True))
        notes.append(f"split for {split!r} (its expert merged into fc2, its head kept)")
    if config.init_remove_prototypes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sd = remove_prototypes(sd, clusters=True)
        notes.append("prototype banks removed (remove_proto.py)")
    sd.pop("cluster_prototypes.prototypes", None)
    target = model.state_dict()
    usable = {k: v for k, v in sd.items() if k in target and v.shape == target[k].shape}
    mismatched = sorted(k for k in sd if k in target and sd[k].shape != target[k].shape)
    unexpected = sorted(k for k in sd if k not in target)
    missing = sorted(k for k in target if k not in sd)
    if not usable:
        raise CheckpointError(f"{path}: no tensor fits the model (is it a pose checkpoint?)")
    model.load_state_dict(usable, strict=False)
    notes.append(f"loaded {len(usable)}/{len(target)} tensors")
    for what, keys in (("missing", missing), ("shape mismatch", mismatched)):
        if keys:
            notes.append(f"{what} (kept initial values): {_summarise_keys(keys)}")
    if unexpected:
        notes.append(f"unused from the checkpoint: {_summarise_keys(unexpected)}")
    return notes


def _summarise_keys(keys: Sequence[str]) -> str:
    """``proto_head.* (23), heads.0.final_layer.weight`` style summary."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        parts = k.split(".")
        prefix = ".".join(parts[:2]) if parts[0] == "heads" else parts[0]
        groups.setdefault(prefix, []).append(k)
    out = [
        (f"{p}.* ({len(ks)})" if len(ks) > 2 else ", ".join(ks)) for p, ks in sorted(groups.items())
    ]
    return "; ".join(out)


# ------------------------------------------------------------------------------------------
# The trainer
# ------------------------------------------------------------------------------------------


class Trainer:
    """Builds everything for ``config`` and runs it: ``Trainer(config, options).train()``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised here (NCCL on
    CUDA, gloo on CPU) and destroyed by :meth:`close`.
    """

    def __init__(self, config: TrainConfig, options: RunOptions) -> None:
        self.config = config
        self.options = options
        self.rank, self.world_size, local_rank = _dist_info()
        self.is_main = self.rank == 0
        self._log_fn = options.log or (lambda msg: print(msg, flush=True))
        self._bar: tqdm | None = None
        self.device = self._init_device(options.device, local_rank)
        self.work_dir = Path(options.work_dir)
        self.data_root = Path(options.data_root)
        self._owns_group = False
        self.floors: dict[str, tuple[str, float]] = {}  # dataset → mean-pose floor (final eval)
        if self.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, device_id=self.device if backend == "nccl" else None)
            self._owns_group = True

        # Same seed on every rank: identical initial weights (DDP also broadcasts them).
        _seed_everything(config.seed)
        self.model = build_model(config.model, **dict(config.model_overrides)).to(self.device)
        self.depth = self.model.config.depth
        self._check_losses()
        self.head_of, self.names_of_head = self._map_heads()
        self.datasets = self._build_datasets()
        sizes = [len(ds) for ds in self.datasets]
        self.sampler = StepSampler(
            sizes,
            config.data.ratios,
            config.batch_size,
            self.world_size,
            self.rank,
            config.seed,
        )
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = (
            config.length * self.steps_per_epoch if config.unit == "epoch" else config.length
        )
        # lr milestones count epochs for epoch-unit recipes, steps otherwise.
        self.lr_unit = self.steps_per_epoch if config.unit == "epoch" else 1
        self.optimizer = build_optimizer(self.model, config.optim, self.depth)
        cuda = self.device.type == "cuda"
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.precision)
        self.use_amp = cuda and self.amp_dtype is not None
        self.scaler = torch.amp.GradScaler(
            "cuda",
            init_scale=config.init_loss_scale,
            enabled=self.use_amp and self.amp_dtype == torch.float16,
        )
        self.mse = JointsMSELoss(use_target_weight=True)
        m = self.model.config.num_prototypes
        lc = config.loss
        self.proto_criterion = PixelPrototypeLoss(
            weight=lc.proto_weight, ppc_weight=lc.ppc_weight, ppd_weight=lc.ppd_weight,
            num_prototypes=m,
        )  # fmt: skip
        self.step = 0
        self.state = StageState()
        self.ddp: nn.Module = self.model
        self.cluster_info: dict[str, Any] | None = None
        self._css_warned = False

    # ---------------------------------------------------------------- set-up

    def log(self, msg: str) -> None:
        if not self.is_main:
            return
        bar = self._bar
        if bar is not None and not bar.disable and self.options.log is None:
            bar.write(msg, file=sys.stderr)  # keeps the progress bar intact
        else:
            self._log_fn(msg)

    def _init_device(self, device: str | None, local_rank: int) -> torch.device:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise TrainConfigError("--device cuda but CUDA is not available")
            if dev.index is None:
                dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        return dev

    def _check_losses(self) -> None:
        cfg = self.config
        has_protos = self.model.keypoint_prototypes is not None
        needs = [e.describe() for e in cfg.events if e.action in ("cps_init", "css_on")] + [
            e.describe() for e in cfg.events if e.target in ("proto_head", "prototypes")
        ]
        if needs and not has_protos:
            raise TrainConfigError(
                f"events {needs} need a prototype head, but model {cfg.model!r} has none "
                "(a vitpose_plus_* model?); use a posebh_* model or drop those events"
            )
        if has_protos and any(e.action == "cps_init" for e in cfg.events):
            j = self.model.keypoint_prototypes.num_classes
            if not any(c < j for c in cfg.loss.cps_options):
                raise TrainConfigError(
                    f"every CPS cluster option {cfg.loss.cps_options} is ≥ J = {j} keypoint "
                    "classes; set e.g. --set 'loss.cps_options=[{}]'".format(max(1, j // 2))
                )

    def _map_heads(self) -> tuple[list[int], dict[int, str]]:
        """Head index of each training dataset, checked against the model."""
        cfg, model = self.config, self.model
        heads: list[int] = []
        for i, name in enumerate(cfg.data.datasets):
            try:
                skel = get_skeleton(name)
            except KeyError as err:
                raise TrainConfigError(str(err.args[0])) from None
            if cfg.data.heads is not None:
                h = cfg.data.heads[i]
            elif model.num_datasets == 6 and skel.dataset_index is not None:
                h = skel.dataset_index
            elif model.num_datasets == len(cfg.data.datasets):
                h = i
            else:
                raise TrainConfigError(
                    f"dataset {name!r} is not one of the heads of model {cfg.model!r} "
                    f"({model.num_datasets} heads with {[hd.num_keypoints for hd in model.heads]} "
                    "keypoints); set data.heads to map it, or use a preset built for it"
                )
            if not 0 <= h < model.num_datasets:
                raise TrainConfigError(
                    f"dataset {name!r} mapped to head {h}, but the model has "
                    f"{model.num_datasets} heads"
                )
            k = model.heads[h].num_keypoints
            if k != skel.num_keypoints:
                raise TrainConfigError(
                    f"dataset {name!r} has {skel.num_keypoints} keypoints but head {h} of "
                    f"model {cfg.model!r} predicts {k}: it is not among the model's heads "
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
        names = {h: cfg.data.datasets[i] for i, h in enumerate(heads)}
        return heads, names

    def _pipeline(self, name: str, max_joints: int) -> TopDownPipeline:
        h_in, w_in = self.model.config.img_size
        h_hm, w_hm = self.model.config.heatmap_size
        sizes = dict(image_size=(w_in, h_in), heatmap_size=(w_hm, h_hm))
        overrides = dict(self.config.data.pipeline.get(name, {}))
        try:
            return per_dataset_pipeline(
                name, train=True, max_num_joints=max_joints, **sizes, **overrides
            )
        except ValueError:
            # Transfer datasets have no multi-dataset training pipeline: the plain one plus
            # the recipe's overrides.
            return TopDownPipeline(train=True, max_num_joints=max_joints, **sizes, **overrides)

    def _train_spec(self, name: str) -> DatasetSpec:
        root = self.data_root
        if not root.is_dir():
            raise TrainDataError(
                f"data root {root} does not exist. " + SYNTH_HINT.format(root=root)
            )
        spec = default_spec(name, self.config.data.split, root)
        if spec.gt_file is not None:
            # MPII's head boxes (mpii_gt_val.mat) belong to the val records; training does
            # not use them, and checking them against the train records would fail.
            spec = dataclasses.replace(spec, gt_file=None)
        if not Path(spec.ann_file).is_file():
            raise TrainDataError(
                f"{name} {self.config.data.split} annotations not found: {spec.ann_file} "
                f"(official layout under --data-root {root}). " + SYNTH_HINT.format(root=root)
            )
        return spec

    def _build_datasets(self) -> list[TopDownDataset]:
        cfg = self.config
        max_joints = max(self.model.heads[h].num_keypoints for h in self.head_of)
        out = []
        for i, (name, h) in enumerate(zip(cfg.data.datasets, self.head_of, strict=True)):
            spec = self._train_spec(name)
            instances, summary = read_dataset(spec, show_progress=False)
            self.log(str(summary).splitlines()[0])
            if not instances:
                raise TrainDataError(f"{spec.ann_file}: no usable training instance ({summary})")
            out.append(
                TopDownDataset(
                    instances,
                    name,
                    self._pipeline(name, max_joints),
                    dataset_idx=h,
                    seed=_derived_seed(cfg.seed, 0xA0, i),
                )
            )
        self.max_joints = max_joints
        return out

    # ---------------------------------------------------------------- state

    def _stage_label(self) -> str:
        return self.state.label(prototypes=self.model.keypoint_prototypes is not None)

    def _wrap(self) -> None:
        """(Re)wrap the model in DDP for the current trainable set.

        DDP registers its gradient hooks for the parameters that require grad when it is
        built, so every freeze/thaw rebuilds the wrapper.  ``find_unused_parameters``:
        experts and heads of datasets absent from a rank's batch get no gradient.
        """
        if self.world_size == 1:
            self.ddp = self.model
            return
        if not any(p.requires_grad for p in self.model.parameters()):
            self.ddp = self.model
            return
        model = self.model
        # Parameters that may miss a gradient on some rank: the experts of datasets absent
        # from its batch, and heads without a training dataset (a subset run).
        unused = (model.backbone.num_experts > 0 and "backbone" not in self.state.frozen) or (
            "heads" not in self.state.frozen and len(self.names_of_head) < model.num_datasets
        )
        # As the release: no buffer broadcast in forward (BN statistics stay per rank and
        # are averaged at checkpoints).  Newer torch spells it forward_sync_buffers.
        sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False}
        )
        self.ddp = DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=unused,
            **sync,
        )

    def _enter_state(self, state: StageState) -> None:
        """Apply ``state`` (and run a pending CPS initialisation) before a step."""
        if state.cps and self.model.cluster_prototypes is None:
            self._cps_init()
        apply_state(self.model, state)
        changed = state != self.state or self.ddp is self.model
        self.state = state
        if changed:
            self._wrap()

    @torch.no_grad()
    def _cps_init(self) -> None:
        """Official ``CPSInitHook``: cluster the keypoint prototypes, install the bank."""
        cfg, model = self.config, self.model
        protos = model.keypoint_prototypes
        t0 = time.perf_counter()
        result = choose_num_clusters(
            protos.prototypes.detach(),
            cfg.loss.cps_options,
            iters=cfg.loss.cps_iters,
            beta=cfg.loss.cps_beta,
            compat=protos.compat,
        )
        bank = ClusterPrototypes.from_result(result, protos.num_keypoints, protos.compat)
        bank = bank.to(self.device)
        if self.world_size > 1:
            # Every rank clusters the same (synchronised) prototypes; rank 0's result rules
            # so that no rounding difference can split the banks.
            dist.broadcast(bank.prototypes, 0)
            dist.broadcast(bank.closest_keypoint, 0)
        model.cluster_prototypes = bank
        self.cluster_info = {
            "num_clusters": bank.num_clusters,
            "error": result.error,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        self.log(
            f"CPS: {bank.num_clusters} clusters chosen from {cfg.loss.cps_options} "
            f"(error {result.error:.4g}, {self.cluster_info['seconds']} s)"
        )

    def _sync_buffers(self) -> None:
        """Average the BatchNorm statistics over ranks (each rank's differ, since DDP runs
        with ``broadcast_buffers=False``); they only matter for evaluation, so this does not
        change training.  The prototype banks are kept equal by the losses already."""
        if self.world_size == 1:
            return
        for name, buf in self.model.named_buffers():
            if buf.is_floating_point() and "prototypes" not in name:
                dist.all_reduce(buf)
                buf.div_(self.world_size)

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to continue exactly (see the module docstring)."""
        model = self.model
        bank = model.cluster_prototypes
        protos = model.keypoint_prototypes
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "total_steps": self.total_steps,
            "config": self.config.to_dict(),
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": {
                "step": self.step,
                "lr_factor": lr_factor(self.step, self.config.optim, self.lr_unit),
                "base_lr": self.config.optim.lr,
            },
            "schedule": {
                "frozen": sorted(self.state.frozen),
                "css": self.state.css,
                "cps": self.state.cps,
                "prototypes_frozen": bool(protos.frozen) if protos is not None else None,
            },
            "clusters": None
            if bank is None
            else {
                "num_clusters": bank.num_clusters,
                "centroids": bank.prototypes.detach().cpu(),
                "closest_keypoint": bank.closest_keypoint.detach().cpu(),
                "info": self.cluster_info,
            },
            "rng": _rng_state(),
            "world_size": self.world_size,
            "global_batch": self.sampler.global_batch,
            "steps_per_epoch": self.steps_per_epoch,
        }

    def save(self, name: str, payload: dict[str, Any] | None = None) -> Path:
        path = self.work_dir / name
        if self.is_main:
            save_atomically(payload if payload is not None else self.checkpoint(), path)
        return path

    def _check_resume_config(self, saved: Mapping[str, Any]) -> None:
        now = _flat(self.config.to_dict())
        before = _flat(saved)
        diff = sorted(
            k
            for k in set(now) | set(before)
            if now.get(k) != before.get(k) and k not in _RESUME_FREE and k != "preset"
        )
        if diff:
            lines = [f"{k}: checkpoint {before.get(k)!r} → now {now.get(k)!r}" for k in diff[:10]]
            raise TrainConfigError(
                "the run in the work dir was made with another configuration; resume with "
                "the same preset and --set options, or use a new --work-dir:\n  "
                + "\n  ".join(lines)
            )

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` dict."""
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise TrainConfigError("not a posebh training checkpoint (no 'format' marker)")
        self._check_resume_config(ckpt["config"])
        if ckpt["global_batch"] != self.sampler.global_batch:
            raise TrainConfigError(
                f"the checkpoint was trained with a global batch of {ckpt['global_batch']} "
                f"({ckpt['world_size']} ranks); now {self.sampler.global_batch}: resume with "
                "the same batch size × ranks"
            )
        if ckpt["steps_per_epoch"] != self.steps_per_epoch:
            raise TrainConfigError(
                f"the training set changed: {ckpt['steps_per_epoch']} steps per epoch in the "
                f"checkpoint, {self.steps_per_epoch} now"
            )
        model = self.model
        clusters = ckpt.get("clusters")
        if clusters is not None:
            protos = model.keypoint_prototypes
            bank = ClusterPrototypes(
                clusters["num_clusters"],
                protos.num_prototypes,
                protos.dim,
                protos.num_keypoints,
                compat=protos.compat,
            ).to(self.device)
            bank.set_clusters(
                clusters["centroids"].to(self.device), clusters["closest_keypoint"].to(self.device)
            )
            model.cluster_prototypes = bank
            self.cluster_info = clusters.get("info")
        model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        cfg, spe = self.config, self.steps_per_epoch
        # The checkpoint holds the state of its last completed step; replaying the events
        # must agree with it.
        before = stage_at(cfg.events, max(self.step - 1, 0), cfg.unit, spe)
        saved = ckpt["schedule"]
        if self.step > 0 and (sorted(before.frozen), before.css, before.cps) != (
            list(saved["frozen"]),
            saved["css"],
            saved["cps"],
        ):
            raise TrainConfigError(
                f"schedule state mismatch at step {self.step}: checkpoint {saved}, "
                f"replayed {before}"
            )
        self.state = StageState()  # forces the re-wrap in _enter_state
        # Events due right at the resume step (a CPS initialisation included) run here,
        # exactly as the uninterrupted run runs them before that step.
        self._enter_state(stage_at(cfg.events, self.step, cfg.unit, spe))
        _set_rng_state(ckpt["rng"])

    # ---------------------------------------------------------------- losses

    def _css_active(self) -> bool:
        """CSS runs this step (it reads every head on every image)."""
        return bool(self.state.css and self.config.loss.css_weight > 0)

    def compute_losses(
        self,
        out: Any,
        batch: Mapping[str, Any],
        head_rows: Sequence[Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss terms of one step (module docstring); returns (total, detached terms).
        ``head_rows``: head d's heatmaps cover only the rows ``head_rows[d]`` of the batch
        (``heads_on_own_images``); its loss is rescaled to the official whole-batch mean."""
        model, lc = self.model, self.config.loss
        dataset_idx = batch["dataset_idx"]
        target, target_weight = batch["target"], batch["target_weight"]
        targets: list[Tensor] = []
        weights: list[Tensor] = []
        logs: dict[str, Tensor] = {}
        total = target.new_zeros(())
        for h, head in enumerate(model.heads):
            k = head.num_keypoints
            mask = (dataset_idx == h).to(target.dtype)
            t = target[:, :k] * mask[:, None, None, None]
            w = target_weight[:, :k] * mask[:, None, None]
            targets.append(t)
            weights.append(w)
            if h not in self.names_of_head:
                continue
            hm = out.heatmaps[h].float()
            rows = None if head_rows is None else head_rows[h]
            if rows is None:
                loss = self.mse(hm, t, w)
            elif rows.numel() == 0:
                loss = hm.sum() * 0.0  # keeps the head in the graph (DDP)
            else:
                # The other rows would add zeros (their weights are zeroed): same mean.
                loss = self.mse(hm, t[rows], w[rows]) * (rows.numel() / t.shape[0])
            logs[f"hm/{self.names_of_head[h]}"] = loss.detach()
            total = total + loss
        protos = model.keypoint_prototypes
        if protos is None:
            logs["loss"] = total.detach()
            return total, logs
        emb = out.embeddings.float()
        # Before any update, as the release.  CSS reads every dataset's classes on every
        # image; without it only each image's own block is ever read, so only those are
        # computed (the same values, ~D× less work on the largest tensor of the step).
        use_css = self._css_active()
        proto_hm = protos.heatmaps(emb, -1) if use_css else self._own_heatmaps(emb, dataset_idx)
        pl = prototype_losses(
            emb,
            targets,
            weights,
            dataset_idx,
            protos,
            prototype_heatmaps=proto_hm,
            criterion=self.proto_criterion,
            heatmap_criterion=self.mse,
            threshold=lc.sample_threshold,
            phm_weight=lc.phm_weight,
            synchronize=False,
        )
        total = total + pl["proto"] + pl["proto_heatmap"]
        logs["proto"] = pl["proto"].detach()
        logs["proto_heatmap"] = pl["proto_heatmap"].detach()
        logs["ppc"], logs["ppd"] = pl["ppc"], pl["ppd"]
        if self.state.cps and model.cluster_prototypes is not None:
            c = cps_loss(
                emb,
                targets,
                weights,
                dataset_idx,
                model.cluster_prototypes,
                criterion=self.proto_criterion,
                heatmap_criterion=self.mse,
                threshold=lc.sample_threshold,
                phm_weight=lc.phm_weight,
                weight=lc.cps_weight,
            )
            total = total + c["cps"]
            logs["cps"] = c["cps"].detach()
        if use_css:
            c = css_loss(
                [hm.float() for hm in out.heatmaps],
                emb,
                dataset_idx,
                protos,
                proto_heatmaps=proto_hm,
                conf_thr=lc.css_conf_thr,
                match_dist=lc.css_match_dist,
                phm_weight=lc.phm_weight,
                weight=lc.css_weight,
                threshold=lc.sample_threshold,
                criterion=self.proto_criterion,
                heatmap_criterion=self.mse,
            )
            # Safety net: the known cause of a non-finite CSS term (a singular DARK-UDP step at
            # a border peak, NaN · 0 in a zero-weight map; the release stops training there)
            # is handled in posebh.css.finite_peaks.  Should another appear, the step goes on
            # without CSS and says so once — the prototypes are frozen while CSS runs, so
            # nothing else is touched.
            skipped = not bool(torch.isfinite(c["css"]))
            if skipped:
                if not self._css_warned:
                    self.log(
                        f"warning: non-finite CSS loss at step {self.step} "
                        f"({_fmt_logs({k: v for k, v in c.items() if k != 'css'})}); "
                        "CSS is skipped for such steps (counted as css_skipped in log.jsonl)"
                    )
                    self._css_warned = True
            else:
                total = total + c["css"]
            logs["css"] = c["css"].detach() if not skipped else total.new_zeros(())
            logs["css_skipped"] = total.new_tensor(float(skipped))
            logs["css_pseudo_labels"] = c["css_pseudo_labels"].to(total.dtype)
        # One cross-rank average per step, after every update of the step (the release's
        # all_reduce at the end of get_loss); a no-op on one rank or when frozen.
        protos.synchronize()
        logs["loss"] = total.detach()
        return total, logs

    def _own_heatmaps(self, emb: Tensor, dataset_idx: Tensor) -> Tensor:
        """[B, J, H, W] prototype heatmaps holding, for each image, only its own dataset's
        class block (zeros elsewhere); ``heatmaps(x, d)`` equals the block of
        ``heatmaps(x, -1)`` bit for bit."""
        protos = self.model.keypoint_prototypes
        b, _, h, w = emb.shape
        out = emb.new_zeros(b, protos.num_classes, h, w)
        for d in range(len(protos.num_keypoints)):
            rows = (dataset_idx == d).nonzero().squeeze(1)
            if rows.numel():
                cls = protos.class_slice(d)
                out[rows, cls] = protos.heatmaps(emb[rows], d)
        return out

    # ---------------------------------------------------------------- one step

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Forward, losses, backward, clip, optimizer step (the lr is set by the caller)."""
        dev = self.device
        images = batch["img"].to(dev, non_blocking=True)
        dataset_idx = batch["dataset_idx"].to(dev)
        batch = {
            "dataset_idx": dataset_idx,
            "target": batch["target"].to(dev, non_blocking=True),
            "target_weight": batch["target_weight"].to(dev, non_blocking=True),
        }
        self.model.train()
        amp = (
            torch.autocast(device_type="cuda", dtype=self.amp_dtype)
            if self.use_amp
            else nullcontext()
        )
        head_rows = None
        if self.config.heads_on_own_images and not self._css_active():
            head_rows = [
                torch.nonzero(dataset_idx == h).squeeze(1) for h in range(len(self.model.heads))
            ]
        with amp:
            out = self.ddp(images, dataset_idx, head_rows=head_rows)
        with torch.autocast(device_type=dev.type, enabled=False):
            total, logs = self.compute_losses(out, batch, head_rows=head_rows)
        if total.requires_grad:
            self.scaler.scale(total).backward()
            clip = self.config.optim.grad_clip
            if clip is not None and clip > 0:
                self.scaler.unscale_(self.optimizer)
                params = [p for p in self.model.parameters() if p.grad is not None]
                if params:
                    norm = nn.utils.clip_grad_norm_(params, clip)
                    logs["grad_norm"] = norm.detach().float()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return logs

    # ---------------------------------------------------------------- evaluation

    def evaluate(self, tag: str) -> dict[str, dict[str, Any]]:
        """Evaluate on the val splits (rank 0; the others wait).  Returns metrics per
        dataset (missing val files are skipped with a note)."""
        from posebh.evaluate import evaluate

        results: dict[str, dict[str, Any]] = {}
        if self.is_main:
            cfg = self.config.data
            names = cfg.val_datasets if cfg.val_datasets is not None else cfg.datasets
            self.model.eval()
            for name in names:
                try:
                    spec = default_spec(
                        name,
                        cfg.val_split,
                        self.data_root,
                        use_gt_bbox=True if cfg.eval_gt_bbox else None,
                    )
                except DatasetError as err:
                    self.log(f"eval {name}: skipped ({err})")
                    continue
                missing = [
                    p
                    for p in (spec.ann_file, None if spec.use_gt_bbox else spec.det_file)
                    if p and not Path(p).is_file()
                ]
                if missing:
                    self.log(f"eval {name}: skipped, {missing[0]} not found")
                    continue
                res = evaluate(
                    self.model,
                    spec,
                    batch_size=cfg.eval_batch_size,
                    device=self.device,
                    out_dir=self.work_dir / "eval" / tag / name,
                    checkpoint=f"{self.work_dir} @ step {self.step}",
                    progress=False,
                    log=None,
                )
                results[name] = res.metrics
                head = headline_metric(res.metrics)
                msg = f"{head[0]} {head[1]:.4f}" if head else "done"
                floor = self._floor(spec) if tag == "final" else None
                if floor is not None:
                    self.floors[name] = floor
                    msg += f" (mean-pose floor {floor[1]:.4f})"
                self.log(f"eval {name} ({cfg.val_split}) at step {self.step}: {msg}")
                self._jsonl(
                    {
                        "type": "eval",
                        "step": self.step,
                        "tag": tag,
                        "dataset": name,
                        "split": cfg.val_split,
                        "headline": head,
                        "mean_pose_floor": floor,
                        "metrics": res.metrics,
                    }
                )
            self.model.train()
        if self.world_size > 1:
            dist.barrier()
        return results

    def _floor(self, spec: DatasetSpec) -> tuple[str, float] | None:
        """The no-model floor of ``spec``: the training split's mean pose in every val box
        (:func:`posebh.evaluate.mean_pose_predictions`), or None with a note if it cannot
        be computed (e.g. no train annotations next to the val ones)."""
        from posebh.evaluate import evaluate

        try:
            ref = self._train_spec(spec.name)
            res = evaluate(None, spec, mean_pose_from=ref, progress=False, log=None)
        except (DatasetError, OSError, ValueError) as err:
            self.log(f"eval {spec.name}: no mean-pose floor ({err})")
            return None
        return headline_metric(res.metrics)

    # ---------------------------------------------------------------- logging

    def _jsonl(self, record: Mapping[str, Any]) -> None:
        if not self.is_main:
            return
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")

    def _reduce_window(self, sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
        """Mean of each logged term over the window and over ranks (every rank logs the same
        terms at the same steps, so one all_reduce serves)."""
        keys = sorted(sums)
        vec = torch.tensor(
            [sums[k] for k in keys] + [float(counts[k]) for k in keys], dtype=torch.float64
        )
        if self.world_size > 1:
            vec = vec.to(self.device)
            dist.all_reduce(vec)
            vec = vec.cpu()
        n = len(keys)
        return {k: vec[i].item() / max(vec[n + i].item(), 1.0) for i, k in enumerate(keys)}

    # ---------------------------------------------------------------- main loop

    def _prepare(self) -> int:
        """Init or resume; returns the first step to run."""
        opts = self.options
        latest = self.work_dir / "latest.pth"
        if opts.resume and latest.is_file():
            ckpt = torch.load(latest, map_location=self.device, weights_only=True)
            self.restore(ckpt)
            self.log(f"resumed from {latest} at step {self.step}/{self.total_steps}")
            return self.step
        if latest.is_file() and not opts.resume:
            raise TrainConfigError(
                f"{self.work_dir} already holds a run ({latest}); pass --resume to continue "
                "it, or choose another --work-dir"
            )
        if opts.resume:
            self.log(f"--resume: no {latest} yet, starting from step 0")
        init = opts.init
        if init is None and self.config.requires_init:
            raise TrainConfigError(
                f"preset {self.config.preset!r} starts from a ViTPose++ multi-head checkpoint "
                "(the official model.multihead_pretrained): pass --init CHECKPOINT (e.g. the "
                "final.pth of a vitpose_plus_* run), or --init scratch to start from random "
                "weights"
            )
        if init not in (None, "scratch"):
            for line in load_init(self.model, init, self.config):
                self.log(line)
        self._enter_state(stage_at(self.config.events, 0, self.config.unit, self.steps_per_epoch))
        return 0

    def _report_start(self, start: int, stop: int) -> None:
        cfg = self.config
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"posebh train: preset {cfg.preset} — {cfg.description}\n"
            f"model {cfg.model} {dict(cfg.model_overrides) or ''} ({n_params / 1e6:.2f} M "
            f"parameters, input {self.model.config.img_size}, heatmaps "
            f"{self.model.config.heatmap_size}); device {self.device}, {self.world_size} "
            f"rank(s), batch {cfg.batch_size}/rank (global {self.sampler.global_batch})"
        )
        shares = ", ".join(
            f"{n} {len(ds)} inst. ({float(s):.1%})"
            for n, ds, s in zip(cfg.data.datasets, self.datasets, self.sampler.shares, strict=True)
        )
        self.log(f"data ({self.data_root}): {shares}")
        if cfg.heads_on_own_images:
            self.log(
                "heads: each heatmap head runs on its own dataset's images while CSS is off "
                "(heads_on_own_images; official: every head on every image)"
            )
        self.log(
            f"schedule: {cfg.length} {cfg.unit}s = {self.total_steps} steps "
            f"(an epoch of the mixed set = {self.steps_per_epoch} steps); running steps "
            f"{start}–{stop - 1}\n" + plan_table(cfg, self.steps_per_epoch, self.total_steps)
        )
        groups = describe_groups(self.optimizer)
        self.log(
            f"optimizer {cfg.optim.name}: lr {cfg.optim.lr}, wd {cfg.optim.weight_decay}, "
            f"{len(groups)} groups (lr scale {min(g[2] for g in groups):.3g}–"
            f"{max(g[2] for g in groups):.3g}), grad clip {cfg.optim.grad_clip}, warm-up "
            f"{cfg.optim.warmup_iters} steps, ×{cfg.optim.gamma} at {cfg.unit}s "
            f"{list(cfg.optim.milestones)}; precision "
            f"{cfg.precision if self.use_amp else 'fp32'}"
        )

    def _loader(self, start: int, stop: int) -> DataLoader:
        workers = self.config.data.num_workers
        return DataLoader(
            MixedDataset(self.datasets),
            batch_sampler=StepBatches(self.sampler, start, stop),
            collate_fn=partial(multi_dataset_collate, max_num_joints=self.max_joints),
            num_workers=workers,
            worker_init_fn=seed_worker if workers else None,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=2 if workers else None,
        )

    def _intervals(self) -> tuple[int, int, int]:
        cfg, spe = self.config, self.steps_per_epoch
        ckpt = cfg.ckpt_every or spe
        keep = cfg.keep_every or 10 * spe
        ev = cfg.eval_every if cfg.eval_every != 0 else 10 * spe
        return ckpt, keep, ev

    def train(self) -> TrainResult:
        """Run (or continue) the schedule; returns where it stopped and the final metrics."""
        cfg, opts = self.config, self.options
        start = self._prepare()
        stop = self.total_steps if opts.max_steps is None else min(self.total_steps, opts.max_steps)
        if self.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            (self.work_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        self._report_start(start, stop)
        self._jsonl(
            {
                "type": "start",
                "step": start,
                "total_steps": self.total_steps,
                "world_size": self.world_size,
                "device": str(self.device),
                "config": cfg.to_dict(),
            }
        )
        debug_exit = int(os.environ.get(DEBUG_EXIT_ENV, "0") or 0)
        ckpt_every, keep_every, eval_every = self._intervals()
        deadline = None if opts.max_minutes is None else time.time() + 60 * opts.max_minutes
        t_start = time.perf_counter()
        window: dict[str, float] = {}
        counts: dict[str, int] = {}
        window_images, window_t = 0, time.perf_counter()
        total_images = 0
        last_logged: dict[str, float] = {}
        bar = tqdm(
            total=stop,
            initial=start,
            desc=cfg.preset,
            unit="step",
            disable=not (self.is_main and opts.progress),
            dynamic_ncols=True,
            mininterval=1.0,
            file=sys.stderr,
        )
        self._bar = bar
        stopped_early = False
        step = start
        try:
            for batch in self._loader(start, stop):
                step = self.step
                fired = events_at(cfg.events, step, cfg.unit, self.steps_per_epoch)
                if fired and step > start:
                    new = stage_at(cfg.events, step, cfg.unit, self.steps_per_epoch)
                    self._enter_state(new)
                if fired:
                    self.log(
                        f"step {step} (epoch {step / self.steps_per_epoch:.4g}): "
                        f"{', '.join(e.describe() for e in fired)} → training {self._stage_label()}"
                    )
                    self._jsonl(
                        {
                            "type": "stage",
                            "step": step,
                            "events": [e.describe() for e in fired],
                            "stage": self._stage_label(),
                            "clusters": self.cluster_info,
                        }
                    )
                # Global generators (drop-path, Gumbel draws) as a pure function of
                # (seed, step, rank): a resumed run draws what the uninterrupted one drew.
                _seed_everything(_derived_seed(cfg.seed, step, self.rank))
                lr = set_lr(self.optimizer, cfg.optim.lr, lr_factor(step, cfg.optim, self.lr_unit))
                logs = self.train_step(batch)
                self.step = step + 1
                n_img = int(batch["img"].shape[0])
                total_images += n_img * self.world_size
                window_images += n_img * self.world_size
                for k, v in logs.items():
                    window[k] = window.get(k, 0.0) + float(v)
                    counts[k] = counts.get(k, 0) + 1
                loss_value = float(logs["loss"])
                if not math.isfinite(loss_value):
                    raise FloatingPointError(
                        f"loss is {loss_value} at step {step}: {_fmt_logs(logs)}"
                    )
                if self.step % cfg.log_every == 0 or self.step == stop:
                    means = self._reduce_window(window, counts)
                    elapsed = time.perf_counter() - window_t
                    ips = window_images / max(elapsed, 1e-9)
                    last_logged = {**means, "images_per_s": ips}
                    self._jsonl(
                        {
                            "type": "train",
                            "step": self.step,
                            "epoch": round(self.step / self.steps_per_epoch, 4),
                            "lr": lr,
                            "loss": means.get("loss"),
                            "losses": {k: v for k, v in means.items() if k != "loss"},
                            "images_per_s": round(ips, 2),
                            "stage": self._stage_label(),
                            "time": round(time.perf_counter() - t_start, 2),
                        }
                    )
                    window, counts, window_images = {}, {}, 0
                    window_t = time.perf_counter()
                bar.update(1)
                if self.is_main and opts.progress:
                    bar.set_postfix_str(
                        f"loss {loss_value:.3g} | {last_logged.get('images_per_s', 0):.1f} img/s"
                        f" | {self._stage_label()}",
                        refresh=False,
                    )
                at_end = self.step == self.total_steps
                if self.step % ckpt_every == 0 or at_end or self.step == stop:
                    self._sync_buffers()
                    self.save("latest.pth")
                    if self.step % keep_every == 0 and not at_end:
                        name = (
                            f"epoch_{self.step // self.steps_per_epoch}.pth"
                            if cfg.unit == "epoch" and self.step % self.steps_per_epoch == 0
                            else f"step_{self.step}.pth"
                        )
                        self.save(name)
                if eval_every > 0 and self.step % eval_every == 0 and not at_end:
                    self.evaluate(f"step_{self.step}")
                if debug_exit and self.step == debug_exit:
                    bar.close()
                    os._exit(137)
                if deadline is not None and self._time_up(deadline):
                    stopped_early = self.step < self.total_steps
                    if self.step % ckpt_every and not at_end:
                        self._sync_buffers()
                        self.save("latest.pth")
                    self.log(f"--max-minutes reached after step {self.step}")
                    break
        finally:
            bar.close()
            self._bar = None
        seconds = time.perf_counter() - t_start
        completed = self.step >= self.total_steps and not stopped_early
        result = TrainResult(
            step=self.step,
            total_steps=self.total_steps,
            completed=completed,
            work_dir=self.work_dir,
            seconds=seconds,
            images_per_s=total_images / max(seconds, 1e-9),
        )
        digest_dir = os.environ.get(DIGEST_ENV)
        if digest_dir:
            Path(digest_dir).mkdir(parents=True, exist_ok=True)
            (Path(digest_dir) / f"rank{self.rank}.json").write_text(
                json.dumps({"step": self.step, "state": state_digest(self.model)}, indent=1)
            )
        if completed:
            self._finish(result)
        else:
            self.log(
                f"stopped at step {self.step}/{self.total_steps}; continue with --resume "
                f"(work dir {self.work_dir})"
            )
        self._jsonl(
            {
                "type": "end",
                "step": self.step,
                "completed": completed,
                "seconds": round(seconds, 2),
                "images_per_s": round(result.images_per_s, 2),
            }
        )
        return result

    def _time_up(self, deadline: float) -> bool:
        flag = torch.tensor([1.0 if time.time() >= deadline else 0.0], device=self.device)
        if self.world_size > 1:
            # Rank 0's clock decides, so every rank stops after the same step.
            dist.broadcast(flag, 0)
        return bool(flag.item())

    def _finish(self, result: TrainResult) -> None:
        from posebh.checkpoint import to_official

        ckpt = self.checkpoint()
        self.save("final.pth", ckpt)
        meta = {
            "posebh_train": {
                "preset": self.config.preset,
                "step": self.step,
                "model": self.config.model,
                "model_overrides": _jsonable(dict(self.config.model_overrides)),
                "num_heads": self.model.config.num_heads,
            }
        }
        self.save("model.pth", {"state_dict": to_official(self.model), "meta": meta})
        self.log(
            f"finished {self.total_steps} steps in {result.seconds / 60:.1f} min "
            f"({result.images_per_s:.1f} img/s); wrote {self.work_dir / 'final.pth'} and "
            f"{self.work_dir / 'model.pth'} (official naming: posebh eval --checkpoint "
            f"{self.work_dir / 'model.pth'} --num-heads {self.model.config.num_heads} ...)"
        )
        if self.config.eval_at_end:
            result.metrics = self.evaluate("final")
            if self.is_main and result.metrics:
                summary = {
                    name: {
                        "headline": headline_metric(m),
                        "mean_pose_floor": self.floors.get(name),
                        "metrics": m,
                    }
                    for name, m in result.metrics.items()
                }
                (self.work_dir / "metrics.json").write_text(
                    json.dumps(_jsonable(summary), indent=2)
                )

    def close(self) -> None:
        """Destroy the process group this trainer created."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


def state_digest(model: nn.Module) -> dict[str, str]:
    """SHA-1 of every tensor of the state dict (cross-rank and resume checks)."""
    out = {}
    for name, t in model.state_dict().items():
        data = t.detach().cpu().contiguous()
        out[name] = hashlib.sha1(
            data.numpy().tobytes()
            if data.dtype != torch.bfloat16
            else data.float().numpy().tobytes()
        ).hexdigest()
    return out


def _fmt_logs(logs: Mapping[str, Tensor]) -> str:
    return ", ".join(f"{k} {float(v):.4g}" for k, v in logs.items())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    return obj
