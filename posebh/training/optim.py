"""Optimizer parameter groups (the official layer-wise lr decay) and the lr schedule.

Layer ids follow ``mmcv_custom/layer_decay_optimizer_constructor.py`` of the release: with L
ViT blocks, ``num_layers = L + 2``; ``backbone.pos_embed`` and ``backbone.patch_embed.*`` get
id 0, ``backbone.blocks.i.*`` id i + 1, everything else (last norm, heads, prototype head)
id L + 1.  Group lr = base lr × decay^(L + 1 − id).  No weight decay on 1-D tensors, on names
ending in ``.bias`` and on names containing ``pos_embed`` (the config's ``custom_keys`` are
ignored by that constructor, so these three rules are the whole story).

The schedule is mmcv's ``step`` policy with linear warm-up by iteration:
``lr(s) = base · γ^{#milestones ≤ t(s)} · w(s)``, t(s) the epoch (or step) of step s and
``w(s) = 1 − (1 − s / warmup_iters)(1 − warmup_ratio)`` for s < warmup_iters, else 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from posebh.training.config import OptimConfig

__all__ = ["build_optimizer", "layer_id", "lr_factor", "param_groups", "set_lr"]


def layer_id(name: str, num_layers: int) -> int:
    """Official ``get_num_layer_for_vit`` (``num_layers`` = blocks + 2)."""
    if name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    if name.startswith("backbone.patch_embed"):
        return 0
    if name.startswith("backbone.blocks."):
        return int(name.split(".")[2]) + 1
    return num_layers - 1


def param_groups(model: nn.Module, cfg: OptimConfig, depth: int) -> list[dict[str, Any]]:
    """Parameter groups with ``lr_scale``, ``weight_decay`` and ``group_name``.

    Every parameter is included, trainable or not: the official optimizer is built before
    the freeze hooks run, and a frozen parameter (grad None) is simply skipped by the step.
    """
    if cfg.layer_decay is None:
        return [
            {
                "params": [p for _, p in model.named_parameters()],
                "param_names": [n for n, _ in model.named_parameters()],
                "weight_decay": cfg.weight_decay,
                "lr_scale": 1.0,
                "group_name": "all",
            }
        ]
    num_layers = depth + 2
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        no_decay = param.ndim == 1 or name.endswith(".bias") or "pos_embed" in name
        lid = layer_id(name, num_layers)
        key = f"layer_{lid}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "weight_decay": 0.0 if no_decay else cfg.weight_decay,
                "lr_scale": cfg.layer_decay ** (num_layers - lid - 1),
                "group_name": key,
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig, depth: int) -> torch.optim.Optimizer:
    """AdamW (or Adam) over :func:`param_groups`; lrs are set each step by :func:`set_lr`."""
    groups = param_groups(model, cfg, depth)
    for g in groups:
        g["lr"] = cfg.lr * g["lr_scale"]
    # foreach=False: the single-tensor path is bit-reproducible whatever the group layout.
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, foreach=False
        )
    return torch.optim.Adam(
        groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, foreach=False
    )


def lr_factor(step: int, cfg: OptimConfig, steps_per_unit: int) -> float:
    """Multiplier of the base lr at (0-based) step ``step``; ``steps_per_unit`` is the epoch
    length in steps (1 for step-unit configs)."""
    t = step // max(1, steps_per_unit)
    factor = cfg.gamma ** sum(1 for m in cfg.milestones if t >= m)
    if cfg.warmup_iters > 0 and step < cfg.warmup_iters:
        k = (1.0 - step / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio)
        factor *= 1.0 - k
    return factor


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    """Write ``base_lr × lr_scale × factor`` into every group; returns the top-group lr."""
    for g in optimizer.param_groups:
        g["lr"] = base_lr * g.get("lr_scale", 1.0) * factor
    return base_lr * factor


def describe_groups(optimizer: torch.optim.Optimizer) -> Sequence[tuple[str, int, float, float]]:
    """(group, #tensors, lr scale, weight decay) per group, for the start-up report."""
    return [
        (g.get("group_name", str(i)), len(g["params"]), g.get("lr_scale", 1.0), g["weight_decay"])
        for i, g in enumerate(optimizer.param_groups)
    ]
