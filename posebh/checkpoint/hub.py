"""Transformers model folders: the ``config.json`` of ``VitPoseForPoseEstimation`` and
posebh's architecture, both ways.

:func:`hf_config` writes the ``config.json`` of a :class:`~posebh.models.PoseBHConfig`;
:func:`arch_from_hf_config` reads one back (the fields the tensor shapes cannot tell:
attention heads, input size) after checking it against the weights, so a config that
contradicts them raises a :class:`CheckpointError` naming the field;
:func:`official_state_dict` turns whatever :func:`~posebh.checkpoint.io.read_checkpoint`
returned (any naming, any format) into an official-naming state dict and those fields.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor

from posebh.checkpoint.arch import infer_arch
from posebh.checkpoint.hf import from_hf, to_hf
from posebh.checkpoint.io import HF_CONFIG_KEY, CheckpointError, StateDict, read_state_dict
from posebh.checkpoint.naming import is_posebh_naming, to_official
from posebh.checkpoint.record import recorded_config
from posebh.models import PoseBHConfig
from posebh.models.vit_moe import LAYER_NORM_EPS

__all__ = [
    "arch_from_hf_config",
    "hf_config",
    "hf_folder_tensors",
    "is_hf_naming",
    "official_state_dict",
]

# The classic decoder of transformers (VitPoseClassicDecoder): two 4×4 deconvs of 256 filters.
_HF_CLASSIC = {"head_filters": 256, "num_deconv": 2, "head_kernel": 4}


def is_hf_naming(state_dict: Mapping[str, Tensor]) -> bool:
    """True for a state dict in transformers' VitPose naming."""
    return any(
        k.startswith(("backbone.embeddings.", "backbone.encoder.layer.")) for k in state_dict
    )


def hf_config(config: PoseBHConfig) -> dict[str, Any]:
    """The ``config.json`` of ``VitPoseForPoseEstimation`` for ``config``'s main head (the
    first dataset's: its keypoints are ``num_labels``)."""
    if config.num_experts == 1:
        raise CheckpointError(
            "a backbone with exactly one expert has no transformers counterpart "
            "(num_experts=1 means a plain MLP there); merge it with posebh convert --split"
        )
    simple = config.num_deconv == 0
    if not simple and any(getattr(config, f) != v for f, v in _HF_CLASSIC.items()):
        raise CheckpointError(
            f"head (filters {config.head_filters}, {config.num_deconv} deconvs of kernel "
            f"{config.head_kernel}) has no transformers counterpart: VitPoseClassicDecoder "
            "is 2 deconvs of kernel 4 with 256 filters"
        )
    if config.mlp_ratio != int(config.mlp_ratio):
        raise CheckpointError(f"mlp_ratio {config.mlp_ratio}: transformers takes an integer")
    k = config.num_keypoints[0]
    return {
        "architectures": ["VitPoseForPoseEstimation"],
        "model_type": "vitpose",
        "backbone_config": {
            "model_type": "vitpose_backbone",
            "image_size": list(config.img_size),
            "patch_size": [config.patch_size, config.patch_size],
            "num_channels": 3,
            "hidden_size": config.embed_dim,
            "num_hidden_layers": config.depth,
            "num_attention_heads": config.num_heads,
            "mlp_ratio": int(config.mlp_ratio),
            "num_experts": max(config.num_experts, 1),
            "part_features": config.part_features,
            "hidden_act": "gelu",
            "layer_norm_eps": LAYER_NORM_EPS,
            "qkv_bias": config.qkv_bias,
            "out_indices": [config.depth],
            "out_features": [f"stage{config.depth}"],
        },
        "scale_factor": 4,
        "use_simple_decoder": simple,
        "id2label": {str(i): f"LABEL_{i}" for i in range(k)},
        "label2id": {f"LABEL_{i}": i for i in range(k)},
    }


def hf_folder_tensors(state_dict: Mapping[str, Tensor]) -> tuple[StateDict, StateDict]:
    """(``model.safetensors``, posebh extras) of an official-naming state dict: exactly the
    keys ``VitPoseForPoseEstimation`` has, and the other heads / prototype head beside."""
    full = to_hf(dict(state_dict))
    main = to_hf(dict(state_dict), extra_heads=False, prototype_head=False)
    return main, {k: v for k, v in full.items() if k not in main}


def _pair(value: Any, field: str, where: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return int(value[0]), int(value[1])
    raise CheckpointError(f"{where}: {field} is {value!r}, expected an integer or [H, W]")


def _read_fields(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """config.json field (transformers' name) → value, in posebh's vocabulary."""
    backbone = config.get("backbone_config")
    if not isinstance(backbone, Mapping):
        raise CheckpointError(
            f"{where}: no 'backbone_config' object; not a VitPose config.json (model_type "
            f"{config.get('model_type')!r}); download config.json from the same Hub repository"
        )
    fields: dict[str, Any] = {}
    ints = {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_experts": 1,
        "part_features": 256,
    }
    for name, default in ints.items():
        value = backbone.get(name, default)  # transformers' defaults for absent fields
        if not isinstance(value, int) or value < 0:
            raise CheckpointError(f"{where}: backbone_config.{name} is {value!r}, not an integer")
        fields[f"backbone_config.{name}"] = value
    patch = _pair(backbone.get("patch_size", 16), "backbone_config.patch_size", where)
    if patch[0] != patch[1]:
        raise CheckpointError(f"{where}: backbone_config.patch_size {list(patch)} is not square")
    fields["backbone_config.patch_size"] = patch[0]
    fields["backbone_config.image_size"] = _pair(
        backbone.get("image_size", [256, 192]), "backbone_config.image_size", where
    )
    fields["backbone_config.mlp_ratio"] = float(backbone.get("mlp_ratio", 4))
    fields["backbone_config.qkv_bias"] = bool(backbone.get("qkv_bias", True))
    labels = config.get("id2label")
    num_labels = config.get("num_labels", len(labels) if isinstance(labels, Mapping) else None)
    if not isinstance(num_labels, int) or num_labels < 1:
        raise CheckpointError(f"{where}: no keypoint count (num_labels / id2label)")
    fields["num_labels"] = num_labels
    fields["use_simple_decoder"] = bool(config.get("use_simple_decoder", True))
    return fields


def arch_from_hf_config(
    config: Mapping[str, Any],
    state_dict: Mapping[str, Tensor],
    name: str,
    given: Iterable[str] = (),
) -> dict[str, Any]:
    """The :class:`~posebh.models.PoseBHConfig` fields a model folder's ``config.json``
    adds to the tensor shapes (``num_heads``, ``img_size``), after checking every field
    the shapes show against the weights (``state_dict``, official naming).  Fields in
    ``given`` (passed by the caller) are not checked."""
    where = os.path.join(name, "config.json")
    f = _read_fields(config, where)
    arch = {
        "num_heads": f["backbone_config.num_attention_heads"],
        "img_size": f["backbone_config.image_size"],
    }
    seen = infer_arch(state_dict, **arch)
    experts = f["backbone_config.num_experts"]
    pairs = [  # (config.json field, posebh field, config value in posebh terms)
        ("backbone_config.hidden_size", "embed_dim", f["backbone_config.hidden_size"]),
        ("backbone_config.num_hidden_layers", "depth", f["backbone_config.num_hidden_layers"]),
        ("backbone_config.patch_size", "patch_size", f["backbone_config.patch_size"]),
        ("backbone_config.num_experts", "num_experts", experts if experts > 1 else 0),
        ("backbone_config.mlp_ratio", "mlp_ratio", f["backbone_config.mlp_ratio"]),
        ("backbone_config.qkv_bias", "qkv_bias", f["backbone_config.qkv_bias"]),
        ("num_labels", "num_keypoints", f["num_labels"]),
        ("use_simple_decoder", "num_deconv", f["use_simple_decoder"]),
    ]
    if experts > 1 and seen["num_experts"]:
        part = f["backbone_config.part_features"]
        pairs.append(("backbone_config.part_features", "part_features", part))
    in_weights = {
        **seen,
        "num_keypoints": seen["num_keypoints"][0],
        "num_deconv": seen["num_deconv"] == 0,  # simple decoder: no deconvs
    }
    skip = set(given)
    wrong = [
        (field, value, in_weights[ours])
        for field, ours, value in pairs
        if ours not in skip and value != in_weights[ours]
    ]
    h, w = arch["img_size"]
    p = seen["patch_size"]
    tokens = state_dict["backbone.pos_embed"].shape[1] - 1
    if "img_size" not in skip and (h // p) * (w // p) != tokens:
        wrong.append(("backbone_config.image_size", [h, w], f"{tokens} patch positions"))
    if wrong:
        lines = "\n  ".join(f"{fld}: config.json {c!r}, weights {t!r}" for fld, c, t in wrong)
        raise CheckpointError(
            f"{where} contradicts the weights beside it:\n  {lines}\n"
            f"Fix: set {wrong[0][0]} in config.json to what the weights hold (or download "
            "config.json from the same Hub repository as the weights)."
        )
    return {k: v for k, v in arch.items() if k not in skip}


def official_state_dict(raw: Any, name: str) -> tuple[StateDict, dict[str, Any]]:
    """What :func:`~posebh.checkpoint.io.read_checkpoint` returned (or a dict), as an
    official-naming state dict and the fields its shapes cannot tell (``num_heads``,
    ``img_size``), taken from the file's architecture record or a folder's config.json."""
    record = recorded_config(raw, name)
    hub = raw.get(HF_CONFIG_KEY) if isinstance(raw, Mapping) else None
    sd = read_state_dict(raw)
    if is_hf_naming(sd):
        sd = from_hf(sd)
    elif is_posebh_naming(sd):
        sd = to_official(sd)
    known: dict[str, Any] = {}
    if hub is not None:
        known.update(arch_from_hf_config(hub, sd, name))
    if record is not None:
        known.update(num_heads=record.num_heads, img_size=record.img_size)
    return sd, known
