"""The architecture record of posebh-written checkpoints.

:func:`model_record` is what posebh writes under
:data:`~posebh.checkpoint.io.MODEL_RECORD_KEY` (every :class:`~posebh.models.PoseBHConfig`
field); :func:`recorded_config` reads it back, naming the field when it cannot;
``_check_record`` raises when the record contradicts the tensor shapes; ``_legacy_arch``
reads the attention heads and ``compat`` of posebh files written before the record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor

from posebh.checkpoint.arch import infer_arch
from posebh.checkpoint.io import MODEL_RECORD_KEY, CheckpointError
from posebh.checkpoint.naming import _OFFICIAL_KPT_PROTO
from posebh.models import PoseBH, PoseBHConfig
from posebh.models.posebh import PRESETS

__all__ = ["model_record", "recorded_config"]


_RECORD_VERSION = 1


def model_record(model: PoseBH, *, preset: str | None = None) -> dict[str, Any]:
    """The architecture record posebh writes into its checkpoints (under
    :data:`MODEL_RECORD_KEY`): every :class:`~posebh.models.PoseBHConfig` field, so that
    :func:`load_model` rebuilds exactly this model instead of guessing from tensor shapes.

    ``num_clusters`` is the size of the cluster bank the model holds now (CPS installs it
    after the model was built); ``heatmap_size`` is stored for readers and checked on load.
    Only plain containers: ``torch.load(weights_only=True)`` reads it back.
    """
    bank = model.cluster_prototypes
    config = dataclasses.replace(
        model.config, num_clusters=bank.num_clusters if bank is not None else 0
    )
    fields = {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }
    return {
        "version": _RECORD_VERSION,
        "preset": preset,
        "config": fields,
        "heatmap_size": list(config.heatmap_size),
    }


def _find_record(checkpoint: object) -> object | None:
    if not isinstance(checkpoint, Mapping):
        return None
    if MODEL_RECORD_KEY in checkpoint:
        return checkpoint[MODEL_RECORD_KEY]
    meta = checkpoint.get("meta")
    return meta.get(MODEL_RECORD_KEY) if isinstance(meta, Mapping) else None


def recorded_config(checkpoint: object, name: str = "checkpoint") -> PoseBHConfig | None:
    """The :class:`~posebh.models.PoseBHConfig` a posebh-written checkpoint records
    (:func:`model_record`), or None when it has no record (official files, older posebh
    files).  A record that cannot be read raises :class:`CheckpointError` naming the field."""
    record = _find_record(checkpoint)
    if record is None:
        return None
    fix = (
        f"remove the '{MODEL_RECORD_KEY}' entry from the file (load_model then reads the "
        "architecture off the tensor shapes)"
    )
    if not isinstance(record, Mapping) or not isinstance(record.get("config"), Mapping):
        raise CheckpointError(f"{name}: '{MODEL_RECORD_KEY}' has no 'config' mapping; {fix}")
    if record.get("version") != _RECORD_VERSION:
        raise CheckpointError(
            f"{name}: '{MODEL_RECORD_KEY}' version {record.get('version')!r}, this posebh "
            f"reads version {_RECORD_VERSION}; {fix}"
        )
    fields = dict(record["config"])
    known = {f.name for f in dataclasses.fields(PoseBHConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise CheckpointError(
            f"{name}: '{MODEL_RECORD_KEY}' has fields {unknown} that PoseBHConfig does not "
            f"know (written by a newer posebh?); {fix}"
        )
    try:
        config = PoseBHConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        )
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{name}: '{MODEL_RECORD_KEY}' is not a valid config ({err}); {fix}"
        ) from None
    heatmap = record.get("heatmap_size")
    if heatmap is not None and tuple(heatmap) != config.heatmap_size:
        raise CheckpointError(
            f"{name}: '{MODEL_RECORD_KEY}' says heatmap_size={list(heatmap)} but its img_size, "
            f"patch_size and num_deconv give {list(config.heatmap_size)}; {fix}"
        )
    return config


def _record_contradictions(
    config: PoseBHConfig, sd: Mapping[str, Tensor], given: Iterable[str]
) -> list[tuple[str, Any, Any]]:
    """(field, recorded, in the tensors) for every shape-visible field on which the record
    and the tensors (official naming) disagree; fields the caller passes are not checked."""
    seen = infer_arch(
        sd,
        num_heads=config.num_heads,
        img_size=config.img_size,
        proto_keypoints=config.proto_keypoints,
    )
    tokens = sd["backbone.pos_embed"].shape[1] - 1
    rec = dataclasses.asdict(config)
    fields = ["embed_dim", "depth", "patch_size", "qkv_bias", "num_experts", "num_keypoints"]
    # head_filters means something for the classic decoder only.
    both_classic = config.decoder == seen["decoder"] == "classic"
    fields += ["decoder", *(["head_filters"] if both_classic else []), "num_deconv", "proto_head"]
    if config.num_experts and seen["num_experts"]:
        fields.append("part_features")
    if config.num_deconv and seen["num_deconv"]:
        fields.append("head_kernel")
    if config.proto_head and seen["proto_head"]:
        fields += ["proto_channels", "proto_dim", "num_clusters"]
        if "num_prototypes" in seen:  # the keypoint bank is there
            fields.append("num_prototypes")
    out = [(f, rec[f], seen[f]) for f in fields if rec[f] != seen[f]]
    hidden = int(seen["embed_dim"] * seen["mlp_ratio"])
    if int(config.embed_dim * config.mlp_ratio) != hidden:
        out.append(("mlp_ratio", config.mlp_ratio, seen["mlp_ratio"]))
    h, w = config.img_size
    if (h // config.patch_size) * (w // config.patch_size) != tokens:
        out.append(("img_size", config.img_size, f"{tokens} patch positions"))
    bank = sd.get(_OFFICIAL_KPT_PROTO)
    if config.proto_head and bank is not None and sum(config.proto_keypoints) != bank.shape[0]:
        out.append(("proto_keypoints", config.proto_keypoints, f"{bank.shape[0]} classes"))
    skip = set(given)
    return [c for c in out if c[0] not in skip]


def _check_record(
    config: PoseBHConfig, sd: Mapping[str, Tensor], name: str, given: Iterable[str]
) -> None:
    wrong = _record_contradictions(config, sd, given)
    if not wrong:
        return
    lines = "\n  ".join(f"{f}: record {r!r}, tensors {t!r}" for f, r, t in wrong)
    first = wrong[0][0]
    raise CheckpointError(
        f"{name}: its architecture record ('{MODEL_RECORD_KEY}') contradicts its tensors:\n"
        f"  {lines}\n"
        "The record does not describe these weights (edited tensors, or a record copied from "
        f"another run).  Fix: if the weights are right, delete the record (ckpt"
        f"['{MODEL_RECORD_KEY}'] of a training checkpoint, ckpt['meta']['{MODEL_RECORD_KEY}'] "
        "of a model.pth) and save the file again, so load_model reads the architecture off "
        f"the tensor shapes; or override the field, e.g. load_model(path, {first}=...)."
    )


def _legacy_arch(raw: object) -> dict[str, Any]:
    """The fields a posebh file written before the architecture record holds elsewhere:
    a trainer checkpoint's recipe (``config.model`` preset and ``model_overrides``: the
    attention heads, ``compat``), a ``model.pth``'s ``meta.posebh_train.num_heads``."""
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, Any] = {}
    recipe = raw.get("config")
    if isinstance(raw.get("model"), Mapping) and isinstance(recipe, Mapping):
        overrides = dict(recipe.get("model_overrides") or {})
        preset = PRESETS.get(str(recipe.get("model")), {})
        heads = overrides.get("num_heads", preset.get("num_heads"))
        if heads is not None:
            out["num_heads"] = int(heads)
        if overrides.get("compat") in ("paper", "official"):
            out["compat"] = overrides["compat"]
    meta = raw.get("meta")
    train = meta.get("posebh_train") if isinstance(meta, Mapping) else None
    heads = train.get("num_heads") if isinstance(train, Mapping) else None
    if isinstance(heads, int):
        out["num_heads"] = heads
    return out


def _with_fields(config: PoseBHConfig, arch: Mapping[str, Any]) -> PoseBHConfig:
    fields = {f.name for f in dataclasses.fields(PoseBHConfig)}
    unknown = set(arch) - fields
    if unknown:
        raise TypeError(f"unknown config fields {sorted(unknown)}; valid: {sorted(fields)}")
    return dataclasses.replace(config, **arch)
