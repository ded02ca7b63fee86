"""The one model loader: :func:`load_model` builds a :class:`~posebh.models.PoseBH` from
any checkpoint posebh knows (official, split, trainer, posebh-written) and fills it strictly.

Also the fitting of a state dict to a model it relies on: :func:`match_keys` /
:class:`KeyMatch` (which tensors load), ``_match`` (the mismatch report, raised or warned)
with ``_diagnose`` (the likely cause in words), and ``_drop_split_leftovers`` (the only
tensors ever dropped: the leftovers of the official split script and an unused
``backbone.cls_token``, each drop announced with :func:`warnings.warn`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from posebh.checkpoint.arch import infer_config, is_official_split
from posebh.checkpoint.hf import from_hf
from posebh.checkpoint.hub import arch_from_hf_config, is_hf_naming
from posebh.checkpoint.io import (
    _MAX_LISTED,
    HF_CONFIG_KEY,
    CheckpointError,
    Source,
    StateDict,
    _list_keys,
    read_checkpoint,
    read_state_dict,
)
from posebh.checkpoint.naming import (
    _ASSOC_RE,
    _EXPERT_RE,
    _OFFICIAL_CLUSTER_PROTO,
    _OFFICIAL_KPT_PROTO,
    _posebh_key_to_official,
    is_posebh_naming,
    official_to_posebh,
    to_official,
)
from posebh.checkpoint.record import _check_record, _legacy_arch, _with_fields, recorded_config
from posebh.checkpoint.split import split_official
from posebh.models import PoseBH, PoseBHConfig

__all__ = ["KeyMatch", "load_model", "match_keys"]


def _drop_split_leftovers(sd: StateDict, policy: str) -> StateDict:
    """Apply the ``split_quirks`` policy to the output of the official split script, and
    drop an unused ``backbone.cls_token``; warn about every tensor dropped."""
    dropped: list[str] = []
    reasons: list[str] = []
    if "backbone.cls_token" in sd:
        dropped.append("backbone.cls_token")
        reasons.append("the official ViTPose forward never reads backbone.cls_token")
    if is_official_split(sd):
        if policy == "error":
            raise CheckpointError(
                "expert tensors present but every mlp.fc2 already has embed_dim rows: this is "
                "an official model_split.py output, which leaves the merged experts (and, for "
                "coco, the associate heads) behind; load it with split_quirks='ignore'"
            )
        dropped += [k for k in sd if _EXPERT_RE.match(k) or _ASSOC_RE.match(k)]
        reasons.append(
            "an official model_split.py output: its experts are already merged into mlp.fc2, "
            "and the other datasets' heads do not fit the merged backbone"
        )
    if dropped:
        warnings.warn(
            f"load_model dropped {len(dropped)} tensors the model does not use: "
            f"{_list_keys(dropped, 8)} ({'; '.join(reasons)})",
            stacklevel=3,
        )
        gone = set(dropped)
        sd = {k: v for k, v in sd.items() if k not in gone}
    return sd


def _diagnose(
    ckpt: Mapping[str, Tensor],
    missing: list[str],
    unexpected: list[str],
    config: PoseBHConfig,
) -> list[str]:
    """Likely causes of a key mismatch, in words (keys in official naming)."""
    hints = []
    miss_heads = sorted({int(m.group(1)) for k in missing if (m := _ASSOC_RE.match(k))})
    has_assoc = any(_ASSOC_RE.match(k) for k in ckpt)
    if miss_heads and not has_assoc:
        hints.append(
            f"the model has {len(config.num_keypoints)} heatmap heads but the checkpoint only "
            "keypoint_head and no associate_keypoint_heads: it looks like a split "
            "single-dataset checkpoint; load it as a single-dataset model (do not pass "
            "num_keypoints=..., load_model infers one head)"
        )
    if any(_EXPERT_RE.match(k) for k in unexpected):
        hints.append(
            "expert tensors present but the model has no experts"
            + (
                " (num_experts=0 was passed?)"
                if not is_official_split(ckpt)
                else ": an official split leaves them behind; use split_quirks='ignore'"
            )
        )
    if any(_EXPERT_RE.match(k) for k in missing):
        hints.append(
            "the model expects mlp.experts.* but the checkpoint has none (or fewer): a plain or "
            "merged ViT backbone; do not pass num_experts"
        )
    if _OFFICIAL_KPT_PROTO in missing and any(k.startswith("proto_head.") for k in ckpt):
        hints.append(
            "the checkpoint has a prototype head without keypoint prototypes (remove_prototypes "
            "output, as for transfer learning): load with strict=False to keep fresh prototypes"
        )
    if any(k.startswith("proto_head.") for k in missing) and not any(
        k.startswith("proto_head.") for k in ckpt
    ):
        hints.append("the checkpoint has no prototype head (ViTPose++?): pass proto_head=False")
    if any(k.startswith("proto_head.") for k in unexpected) and not config.proto_head:
        hints.append("the checkpoint has a prototype head but the model was built without one")
    if _OFFICIAL_CLUSTER_PROTO in missing:
        hints.append(
            f"num_clusters={config.num_clusters} but the checkpoint has no cluster "
            "prototypes (num_clusters=0?)"
        )
    return hints


@dataclass(frozen=True)
class KeyMatch:
    """How a state dict (posebh naming) lines up with a model's: the tensors that load, and
    the keys that do not (in the model's / the state dict's order)."""

    usable: StateDict
    missing: list[str]  # in the model, not in the state dict
    unexpected: list[str]  # in the state dict, not in the model
    mismatched: list[str]  # in both, with different shapes


def match_keys(model: nn.Module, state_dict: Mapping[str, Tensor]) -> KeyMatch:
    """Line ``state_dict`` (posebh naming) up with ``model.state_dict()``.  Dtypes are not
    compared: ``load_state_dict`` copies a fp16/bf16 tensor into a fp32 parameter by casting."""
    target = model.state_dict()
    mismatched = [k for k in state_dict if k in target and state_dict[k].shape != target[k].shape]
    bad = set(mismatched)
    return KeyMatch(
        usable={k: v for k, v in state_dict.items() if k in target and k not in bad},
        missing=[k for k in target if k not in state_dict],
        unexpected=[k for k in state_dict if k not in target],
        mismatched=mismatched,
    )


def _match(
    model: PoseBH, ckpt: StateDict, strict: bool, name: str = "checkpoint"
) -> tuple[StateDict, list[str]]:
    """Map ``ckpt`` (official naming) onto ``model``; raise or warn on every mismatch."""
    mapped = official_to_posebh(ckpt)
    found = match_keys(model, mapped)
    target = model.state_dict()
    lines = [
        f"shape mismatch for {_posebh_key_to_official(k)}: checkpoint "
        f"{list(mapped[k].shape)} vs model {list(target[k].shape)}"
        for k in found.mismatched
    ]
    if len(lines) > _MAX_LISTED:
        lines = [*lines[:_MAX_LISTED], f"... and {len(lines) - _MAX_LISTED} more shape mismatches"]
    miss_off = [_posebh_key_to_official(k) or k for k in found.missing]
    unex_off = [_posebh_key_to_official(k) or k for k in found.unexpected]
    if miss_off:
        lines.append(f"missing in the checkpoint ({len(miss_off)}): {_list_keys(miss_off)}")
    if unex_off:
        lines.append(f"unexpected in the checkpoint ({len(unex_off)}): {_list_keys(unex_off)}")
    if any("pos_embed" in k for k in found.mismatched):
        lines.append("pos_embed differs: the checkpoint was trained for another img_size")
    lines += _diagnose(ckpt, miss_off, unex_off, model.config)
    if lines and strict:
        raise CheckpointError(f"{name} does not fit the model:\n  " + "\n  ".join(lines))
    return found.usable, lines


# Fields the tensors of a single-dataset split cannot tell; a record supplies them.
_UNSEEN_FIELDS = ("num_heads", "compat", "drop_path_rate", "img_size")


def load_model(
    source: Source,
    *,
    dataset: str | int | None = None,
    split_quirks: str = "ignore",
    strict: bool = True,
    **arch: Any,
) -> PoseBH:
    """A :class:`~posebh.models.PoseBH` (in ``eval()`` mode) holding a checkpoint: the one
    loader of every command (``posebh eval``, ``crosstype``, ``visualize``, the reproduce
    harness, ablations and regression).

    ``source``: a ``.pth`` or ``.safetensors`` path or a transformers model folder
    (``config.json`` + weights; read with :func:`read_checkpoint`), or what such a file
    holds: a trainer checkpoint (``latest.pth``, ``step_N.pth``, ``final.pth``: posebh naming
    under ``model``), an mmcv ``{"state_dict": ..., "meta": ...}`` dict (``model.pth``,
    official releases) or a bare state dict in official or posebh naming, with or without a
    DDP ``module.`` prefix.

    The architecture: ``arch`` (any :class:`~posebh.models.PoseBHConfig` field) wins; then
    the file's architecture record (:func:`model_record`, written by posebh since the record
    exists; checked against the tensor shapes, a contradiction raises); then, for files
    without one, the tensor shapes (:func:`infer_arch`) with the attention-head count and
    ``compat`` of an older posebh file's recipe or ``meta.posebh_train``.

    ``dataset``: load a multi-dataset checkpoint directly as that dataset's single-head
    plain-ViT model (:func:`split_official` with the prototype head kept).

    ``split_quirks`` (what to do with an official ``tools/model_split.py`` output, which
    keeps the merged experts and, for coco, the other datasets' heads):

    - ``"ignore"`` (default): when *every* ``mlp.fc2`` already has ``embed_dim`` rows and
      expert tensors are still present, drop the expert tensors and any
      ``associate_keypoint_heads.*`` and say so with :func:`warnings.warn`.  The prototype
      head of a split is kept and loaded: with the backbone fixed to one expert it still
      sees the features it was trained on for that dataset.
    - ``"error"``: refuse such a checkpoint.

    An unused ``backbone.cls_token`` (older ViTPose files) is dropped with a warning too.
    Nothing else is ever dropped: with ``strict=True`` any missing, unexpected or misshapen
    tensor raises :class:`CheckpointError` listing the keys and the likely cause.  With
    ``strict=False`` those tensors are skipped (the model keeps its initial values) and the
    same report is issued as a warning, as mmcv's non-strict loading does (fine-tuning on
    a new keypoint set).  fp16 / bf16 tensors are cast to the model's fp32.
    """
    if split_quirks not in ("ignore", "error"):
        raise ValueError(f"split_quirks must be 'ignore' or 'error', got {split_quirks!r}")
    raw: Any = source
    name = "checkpoint"
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        raw = read_checkpoint(name)
    hub = raw.get(HF_CONFIG_KEY) if isinstance(raw, Mapping) else None
    record = recorded_config(raw, name)
    if record is None:
        arch = {**_legacy_arch(raw), **arch}
    if isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping) and "config" in raw:
        raw = {"state_dict": raw["model"]}  # a trainer checkpoint, with or without its marker
    sd = read_state_dict(raw)
    if is_hf_naming(sd):  # a transformers model folder or file
        sd = from_hf(sd)
    elif is_posebh_naming(sd):  # a PoseBH.state_dict() saved by this package
        sd = to_official(sd)
    if record is not None:
        _check_record(record, sd, name, given=arch)
    if hub is not None:  # config.json: checked against the shapes, then what they cannot tell
        told = arch_from_hf_config(hub, sd, name, given=arch)
        if record is None:
            arch = {**told, **arch}
    if dataset is not None:
        sd = split_official(sd, dataset, keep_prototype_head=True)
    sd = _drop_split_leftovers(sd, split_quirks)
    if record is None:
        config = infer_config(sd, **arch)
    elif dataset is None:
        config = _with_fields(record, arch)
    else:  # the split's shapes, and what they cannot tell from the record
        unseen = {f: getattr(record, f) for f in _UNSEEN_FIELDS}
        if record.proto_head:
            unseen["proto_keypoints"] = record.proto_keypoints
        config = infer_config(sd, **{**unseen, **arch})
    model = PoseBH(config)
    usable, report = _match(model, sd, strict, name)
    if report:
        warnings.warn("non-strict load:\n  " + "\n  ".join(report), stacklevel=2)
    model.load_state_dict(usable, strict=strict)
    return model.eval()
