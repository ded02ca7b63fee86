"""Starting weights of a run (``--init``): a checkpoint loaded non-strictly into the model the
recipe built, read and matched by :mod:`posebh.checkpoint`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from posebh.checkpoint import (
    CheckpointError,
    match_keys,
    official_to_posebh,
    read_state_dict,
    remove_prototypes,
    split_official,
    to_official,
)
from posebh.models import PoseBH
from posebh.training.config import TrainConfig

__all__ = ["load_init"]


def load_init(model: PoseBH, path: str | os.PathLike[str], config: TrainConfig) -> list[str]:
    """Load starting weights (``--init``) into ``model``, non-strictly, and report.

    Accepts an official checkpoint (mmcv naming), a posebh state dict, or a training
    checkpoint of this trainer (its ``model``).  A multi-expert checkpoint loaded into a
    plain ViT is first split for ``config.init_split`` (the official ``model_split.py``);
    ``init_remove_prototypes`` drops the keypoint bank (``remove_proto.py``).  The cluster
    bank is never loaded: CPS builds its own.  Tensors whose shapes differ (a new keypoint
    set) are skipped, as mmcv's non-strict loading does; fp16 / bf16 tensors are cast to
    the model's dtype.  Returns the report lines.
    """
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
    found = match_keys(model, sd)
    if not found.usable:
        raise CheckpointError(f"{path}: no tensor fits the model (is it a pose checkpoint?)")
    model.load_state_dict(found.usable, strict=False)
    total = len(model.state_dict())
    notes.append(f"loaded {len(found.usable)}/{total} tensors")
    for what, keys in (("missing", found.missing), ("shape mismatch", found.mismatched)):
        if keys:
            notes.append(f"{what} (kept initial values): {_summarise_keys(sorted(keys))}")
    if found.unexpected:
        notes.append(f"unused from the checkpoint: {_summarise_keys(sorted(found.unexpected))}")
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
