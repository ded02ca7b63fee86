"""The trainer: builds the run of a recipe (model, data, optimizer) and runs its loop: the
staged schedule, one optimizer step per mixed multi-dataset batch, checkpoints that resume
bit for bit, DDP, logging and periodic evaluation.

The pieces it composes: :mod:`~posebh.training.sources` (datasets and heads),
:mod:`~posebh.training.objective` (the loss of a step), :mod:`~posebh.training.state`
(generators, ranks, the checkpoint payload and its checks), :mod:`~posebh.training.schedule`
(stages), :mod:`~posebh.training.optim` (optimizer, lr) and
:mod:`~posebh.training.warm_start` (``--init``).

DDP runs without buffer broadcast as the release, and the BatchNorm statistics (which only
evaluation reads) are averaged over ranks at every checkpoint, so all ranks and the saved
file agree.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
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

from posebh.checkpoint import MODEL_RECORD_KEY, read_checkpoint, save_atomically, to_official
from posebh.cps import ClusterPrototypes, choose_num_clusters
from posebh.models import build_model
from posebh.pipeline import multi_dataset_collate
from posebh.prototypes import use_similarity_backend
from posebh.training.config import TrainConfig, TrainConfigError
from posebh.training.data import MixedDataset, StepBatches, StepSampler, seed_worker
from posebh.training.evaluation import evaluate_val_splits, headline_metric
from posebh.training.objective import Objective
from posebh.training.optim import build_optimizer, describe_groups, lr_factor, set_lr
from posebh.training.precision import autocast_dtype, grad_scaler
from posebh.training.schedule import StageState, apply_state, events_at, plan_table, stage_at
from posebh.training.sources import build_datasets, map_heads
from posebh.training.state import (
    check_restorable,
    check_schedule,
    checkpoint_payload,
    derived_seed,
    dist_info,
    restore_cluster_bank,
    seed_everything,
    set_rng_state,
    state_digest,
    sync_buffers,
)
from posebh.training.warm_start import load_init

__all__ = [
    "DEBUG_EXIT_ENV",
    "DIGEST_ENV",
    "RunOptions",
    "TrainResult",
    "Trainer",
]

#: Test hook: ``os._exit(137)`` right after this many steps (simulates a killed job).
DEBUG_EXIT_ENV = "POSEBH_DEBUG_EXIT_AFTER_STEP"
#: Test hook: each rank writes ``<dir>/rank<r>.json`` with SHA-1s of its state at the end.
DIGEST_ENV = "POSEBH_DEBUG_STATE_DIGEST"


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
        self.rank, self.world_size, local_rank = dist_info()
        self.is_main = self.rank == 0
        self._log_fn = options.log or (lambda msg: print(msg, flush=True))
        self._bar: tqdm | None = None
        self.device = self._init_device(options.device, local_rank)
        self.amp_dtype = autocast_dtype(config.precision, self.device)  # refuses fp16 on CPU
        self.use_amp = self.amp_dtype is not None
        self.work_dir = Path(options.work_dir)
        self.data_root = Path(options.data_root)
        self._owns_group = False
        self.floors: dict[str, tuple[str, float]] = {}  # dataset → mean-pose floor (final eval)
        if self.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, device_id=self.device if backend == "nccl" else None)
            self._owns_group = True

        # Same seed on every rank: identical initial weights (DDP also broadcasts them).
        seed_everything(config.seed)
        self.model = build_model(config.model, **dict(config.model_overrides)).to(self.device)
        self.depth = self.model.config.depth
        self._check_losses()
        self.head_of, self.names_of_head = map_heads(config, self.model)
        self.datasets, self.max_joints = build_datasets(
            config, self.model, self.head_of, self.data_root, self.log
        )
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
        self.scaler = grad_scaler(self.amp_dtype, config.init_loss_scale)
        self.objective = Objective(self.model, config.loss)
        self.objective.on_css_skipped = self._warn_css_skipped
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
        use_similarity_backend(self.model, self.config.prototype_backend)  # a new bank too
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

    def save(self, name: str, payload: dict[str, Any] | None = None) -> Path:
        path = self.work_dir / name
        if self.is_main:
            save_atomically(payload if payload is not None else self.checkpoint(), path)
        return path

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to continue exactly (:func:`.state.checkpoint_payload`)."""
        return checkpoint_payload(
            config=self.config,
            model=self.model,
            optimizer=self.optimizer,
            scaler=self.scaler,
            step=self.step,
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            lr_unit=self.lr_unit,
            stage=self.state,
            cluster_info=self.cluster_info,
            world_size=self.world_size,
            global_batch=self.sampler.global_batch,
        )

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Continue from a :meth:`checkpoint` dict."""
        cfg, spe = self.config, self.steps_per_epoch
        check_restorable(ckpt, cfg, global_batch=self.sampler.global_batch, steps_per_epoch=spe)
        clusters = ckpt.get("clusters")
        if clusters is not None:
            restore_cluster_bank(self.model, clusters, self.device)
            self.cluster_info = clusters.get("info")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        check_schedule(ckpt, cfg, spe)
        self.state = StageState()  # forces the re-wrap in _enter_state
        # Events due right at the resume step (a CPS initialisation included) run here,
        # exactly as the uninterrupted run runs them before that step.
        self._enter_state(stage_at(cfg.events, self.step, cfg.unit, spe))
        set_rng_state(ckpt["rng"])

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
        """The loss terms of this step's stage (:class:`~posebh.training.objective.Objective`);
        returns (total, detached terms)."""
        return self.objective(
            out,
            batch,
            heads=self.names_of_head,
            cps=self.state.cps,
            css=self._css_active(),
            head_rows=head_rows,
        )

    def _warn_css_skipped(self, css_terms: Mapping[str, Tensor]) -> None:
        """Once per run: a CSS term was not finite and its step went on without CSS (the
        prototypes are frozen while CSS runs, so nothing else is touched)."""
        if self._css_warned:
            return
        parts = {k: v for k, v in css_terms.items() if k != "css"}
        self.log(
            f"warning: non-finite CSS loss at step {self.step} ({_fmt_logs(parts)}); "
            "CSS is skipped for such steps (counted as css_skipped in log.jsonl)"
        )
        self._css_warned = True

    # ---------------------------------------------------------------- one step

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Forward, losses, backward, clip, optimizer step (the lr is set by the caller)."""
        total, logs = self.forward_losses(batch)
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

    def forward_losses(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        """The model's forward (under the run's autocast) and this stage's losses (float32)
        on ``batch``: (total, detached terms). Moves the prototypes; no backward."""
        dev = self.device
        images = batch["img"].to(dev, non_blocking=True)
        dataset_idx = batch["dataset_idx"].to(dev)
        batch = {
            "dataset_idx": dataset_idx,
            "target": batch["target"].to(dev, non_blocking=True),
            "target_weight": batch["target_weight"].to(dev, non_blocking=True),
        }
        self.model.train()
        amp = torch.autocast(device_type=dev.type, dtype=self.amp_dtype, enabled=self.use_amp)
        head_rows = None
        if self.config.heads_on_own_images and not self._css_active():
            head_rows = [
                torch.nonzero(dataset_idx == h).squeeze(1) for h in range(len(self.model.heads))
            ]
        with amp:
            out = self.ddp(images, dataset_idx, head_rows=head_rows)
        with torch.autocast(device_type=dev.type, enabled=False):
            return self.compute_losses(out, batch, head_rows=head_rows)

    # ---------------------------------------------------------------- evaluation

    def evaluate(self, tag: str) -> dict[str, dict[str, Any]]:
        """Evaluate on the val splits (rank 0; the others wait).  Returns metrics per
        dataset (missing val files are skipped with a note)."""
        results: dict[str, dict[str, Any]] = {}
        if self.is_main:
            self.model.eval()
            results, floors = evaluate_val_splits(
                self.model,
                self.config,
                data_root=self.data_root,
                device=self.device,
                work_dir=self.work_dir,
                step=self.step,
                tag=tag,
                log=self.log,
                record=self._jsonl,
            )
            self.floors.update(floors)
            self.model.train()
        if self.world_size > 1:
            dist.barrier()
        return results

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
            ckpt = read_checkpoint(latest, map_location=self.device)
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
                seed_everything(derived_seed(cfg.seed, step, self.rank))
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
                    sync_buffers(self.model, self.world_size)
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
                        sync_buffers(self.model, self.world_size)
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
        ckpt = self.checkpoint()
        self.save("final.pth", ckpt)
        meta = {
            "posebh_train": {
                "preset": self.config.preset,
                "step": self.step,
                "model": self.config.model,
                "model_overrides": _jsonable(dict(self.config.model_overrides)),
                "num_heads": self.model.config.num_heads,
            },
            MODEL_RECORD_KEY: ckpt[MODEL_RECORD_KEY],
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
