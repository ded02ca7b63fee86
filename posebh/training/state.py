"""The state a training run carries: process ranks, the random generators, the checkpoint
payload (what :class:`~posebh.training.Trainer` saves and resumes from) and its checks.

Determinism: every step reseeds the global generators from (seed, step, rank) and draws its
samples from :class:`~posebh.training.data.StepSampler` (pure in (seed, step, rank)), so the
only state a resumed run needs is the checkpoint's model, optimizer, scaler, cluster bank and
step; the generator states are saved as well and restored.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from posebh.checkpoint import TRAIN_CHECKPOINT_FORMAT, model_record
from posebh.cps import ClusterPrototypes
from posebh.models import PoseBH
from posebh.training.config import TrainConfig, TrainConfigError
from posebh.training.optim import lr_factor
from posebh.training.schedule import StageState, stage_at

__all__ = [
    "RESUME_FREE",
    "check_restorable",
    "check_resume_config",
    "check_schedule",
    "checkpoint_payload",
    "derived_seed",
    "dist_info",
    "restore_cluster_bank",
    "rng_state",
    "seed_everything",
    "set_rng_state",
    "state_digest",
    "sync_buffers",
]

#: Fields that may differ between a checkpoint and a resumed run (they do not change the
#: trajectory).
RESUME_FREE = frozenset(
    {
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
)


# ------------------------------------------------------------------------------------------
# Ranks and random generators
# ------------------------------------------------------------------------------------------


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return (
        int(os.environ.get("RANK", "0")),
        int(os.environ.get("WORLD_SIZE", "1")),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def derived_seed(*key: int) -> int:
    """A 32-bit seed that is a pure function of ``key`` (e.g. (seed, step, rank))."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global generators' states, in types ``torch.load(weights_only=True)`` reads."""
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


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(_to_tuple(state["python"]))
    name, key, *rest = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def sync_buffers(model: nn.Module, world_size: int) -> None:
    """Average the BatchNorm statistics over ranks (each rank's differ, since DDP runs
    with ``broadcast_buffers=False``); they only matter for evaluation, so this does not
    change training.  The prototype banks are kept equal by the losses already."""
    if world_size == 1:
        return
    for name, buf in model.named_buffers():
        if buf.is_floating_point() and "prototypes" not in name:
            dist.all_reduce(buf)
            buf.div_(world_size)


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


# ------------------------------------------------------------------------------------------
# The checkpoint payload
# ------------------------------------------------------------------------------------------


def checkpoint_payload(
    *,
    config: TrainConfig,
    model: PoseBH,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    step: int,
    total_steps: int,
    steps_per_epoch: int,
    lr_unit: int,
    stage: StageState,
    cluster_info: Mapping[str, Any] | None,
    world_size: int,
    global_batch: int,
) -> dict[str, Any]:
    """Everything needed to continue exactly (the module docstring), plus the model's
    architecture record so that any command rebuilds the model without guessing."""
    bank = model.cluster_prototypes
    protos = model.keypoint_prototypes
    return {
        "format": TRAIN_CHECKPOINT_FORMAT,
        "step": step,
        "epoch": step // steps_per_epoch,
        "total_steps": total_steps,
        "config": config.to_dict(),
        "model_config": model_record(model, preset=config.model),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "scheduler": {
            "step": step,
            "lr_factor": lr_factor(step, config.optim, lr_unit),
            "base_lr": config.optim.lr,
        },
        "schedule": {
            "frozen": sorted(stage.frozen),
            "css": stage.css,
            "cps": stage.cps,
            "prototypes_frozen": bool(protos.frozen) if protos is not None else None,
        },
        "clusters": None
        if bank is None
        else {
            "num_clusters": bank.num_clusters,
            "centroids": bank.prototypes.detach().cpu(),
            "closest_keypoint": bank.closest_keypoint.detach().cpu(),
            "info": cluster_info,
        },
        "rng": rng_state(),
        "world_size": world_size,
        "global_batch": global_batch,
        "steps_per_epoch": steps_per_epoch,
    }


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as ``--set`` keys (``optim.lr``), the spelling of RESUME_FREE."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume_config(config: TrainConfig, saved: Mapping[str, Any]) -> None:
    """Raise :class:`TrainConfigError` naming every field (up to 10) on which ``config``
    differs from a checkpoint's recorded ``config`` (:data:`RESUME_FREE` fields aside)."""
    now = _flat(config.to_dict())
    before = _flat(saved)
    diff = sorted(
        k
        for k in set(now) | set(before)
        if now.get(k) != before.get(k) and k not in RESUME_FREE and k != "preset"
    )
    if diff:
        lines = [f"{k}: checkpoint {before.get(k)!r} → now {now.get(k)!r}" for k in diff[:10]]
        raise TrainConfigError(
            "the run in the work dir was made with another configuration; resume with "
            "the same preset and --set options, or use a new --work-dir:\n  " + "\n  ".join(lines)
        )


def check_restorable(
    ckpt: Mapping[str, Any], config: TrainConfig, *, global_batch: int, steps_per_epoch: int
) -> None:
    """A :func:`checkpoint_payload` that this run can continue: same recipe, same global
    batch, same training set size."""
    if ckpt.get("format") != TRAIN_CHECKPOINT_FORMAT:
        raise TrainConfigError("not a posebh training checkpoint (no 'format' marker)")
    check_resume_config(config, ckpt["config"])
    if ckpt["global_batch"] != global_batch:
        raise TrainConfigError(
            f"the checkpoint was trained with a global batch of {ckpt['global_batch']} "
            f"({ckpt['world_size']} ranks); now {global_batch}: resume with "
            "the same batch size × ranks"
        )
    if ckpt["steps_per_epoch"] != steps_per_epoch:
        raise TrainConfigError(
            f"the training set changed: {ckpt['steps_per_epoch']} steps per epoch in the "
            f"checkpoint, {steps_per_epoch} now"
        )


def restore_cluster_bank(model: PoseBH, clusters: Mapping[str, Any], device: torch.device) -> None:
    """Install the cluster bank a checkpoint saved (it exists only after CPS init)."""
    protos = model.keypoint_prototypes
    bank = ClusterPrototypes(
        clusters["num_clusters"],
        protos.num_prototypes,
        protos.dim,
        protos.num_keypoints,
        compat=protos.compat,
    ).to(device)
    bank.set_clusters(clusters["centroids"].to(device), clusters["closest_keypoint"].to(device))
    model.cluster_prototypes = bank


def check_schedule(ckpt: Mapping[str, Any], config: TrainConfig, steps_per_epoch: int) -> None:
    """The checkpoint holds the state of its last completed step; replaying the events
    must agree with it."""
    step = int(ckpt["step"])
    before = stage_at(config.events, max(step - 1, 0), config.unit, steps_per_epoch)
    saved = ckpt["schedule"]
    if step > 0 and (sorted(before.frozen), before.css, before.cps) != (
        list(saved["frozen"]),
        saved["css"],
        saved["cps"],
    ):
        raise TrainConfigError(
            f"schedule state mismatch at step {step}: checkpoint {saved}, replayed {before}"
        )
