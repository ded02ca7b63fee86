"""Official checkpoints in and out: mmcv/mmpose PoseBH and ViTPose++ files, their split
single-dataset variants, and the Hugging Face ``transformers`` VitPose naming.

Shape vocabulary: C backbone channels (``embed_dim``), T = h·w patch tokens, E experts of P
``part_features`` channels, D heatmap heads with K_d keypoints, J prototype classes with M
prototypes of F dimensions each, and C_cl cluster prototypes.

Three namings meet here:

- **official** (what ``mmcv.runner.save_checkpoint`` wrote for ``TopDownMoEProto``):
  ``backbone.*``, ``keypoint_head.*``, ``associate_keypoint_heads.{i}.*``, ``proto_head.*``
  including ``proto_head.kpt_prototype.prototypes`` [J, M, F] and, once clustering has run,
  ``proto_head.cluster_prototype.prototypes`` [C_cl, M, F];
- **posebh** (:class:`posebh.models.PoseBH`): the same except ``heads.{d}.*`` for all heads
  (``keypoint_head`` is ``heads.0``) and the two prototype banks moved out of the head:
  ``keypoint_prototypes.prototypes`` and ``cluster_prototypes.prototypes``;
- **hf** (``transformers``' ``VitPoseForPoseEstimation``): ``backbone.embeddings.*``,
  ``backbone.encoder.layer.{i}.*`` with q/k/v split, ``head.{deconv1,batchnorm1,...,conv}``.

Public API: :func:`load_model` (the one way every command builds a model from a file),
:func:`read_checkpoint` / :func:`save_atomically` (every checkpoint file read and written by
posebh goes through these two), :func:`model_record` / :func:`recorded_config` (the
architecture record of posebh-written files), :func:`match_keys`, :func:`infer_arch` /
:func:`infer_config`, :func:`read_state_dict`, :func:`to_official`,
:func:`official_to_posebh`, :func:`split_official`, :func:`is_official_split`,
:func:`remove_prototypes`, :func:`to_hf`, :func:`from_hf`, :class:`CheckpointError`.

Everything here is strict: every checkpoint tensor is consumed and every model tensor filled,
or a :class:`CheckpointError` says which keys and why.  The only tensors ever dropped are
the leftovers of the official split script (see :func:`load_model`) and an unused
``backbone.cls_token``, and each drop is announced with :func:`warnings.warn`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from posebh.models import PoseBH, PoseBHConfig
from posebh.models.posebh import _WIDTHS, NUM_HEADS_BY_WIDTH, PRESETS
from posebh.protocol import TRAINING_DATASETS, UnknownDatasetError, get_protocol

__all__ = [
    "DATASET_ORDERS",
    "MODEL_RECORD_KEY",
    "TRAIN_CHECKPOINT_FORMAT",
    "CheckpointError",
    "KeyMatch",
    "from_hf",
    "infer_arch",
    "infer_config",
    "is_official_split",
    "is_posebh_naming",
    "load_model",
    "match_keys",
    "model_record",
    "official_to_posebh",
    "read_checkpoint",
    "read_state_dict",
    "recorded_config",
    "remove_prototypes",
    "save_atomically",
    "split_official",
    "to_hf",
    "to_official",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


StateDict = dict[str, Tensor]
Source = str | os.PathLike | Mapping[str, Any]

# Keypoint counts of the released 6-dataset training (coco, aic, mpii, ap10k, apt36k,
# coco-wholebody): the class blocks of a 214-class prototype bank.  A split checkpoint keeps
# that bank next to a single heatmap head, so the blocks cannot be read off its heads.
_RELEASE_KEYPOINTS: tuple[int, ...] = tuple(p.skeleton.num_keypoints for p in TRAINING_DATASETS)

# Dataset order of each ``--datasets`` choice of the official tools/model_split.py: the
# expert and head index of each dataset (expert 0 and keypoint_head are COCO's).
DATASET_ORDERS: dict[str, tuple[str, ...]] = {
    "human_animal": ("coco", "aic", "mpii", "ap10k", "apt36k", "wholebody"),
    "human_wholebody": ("coco", "aic", "mpii", "wholebody"),
    "8dset": ("coco", "aic", "mpii", "ap10k", "apt36k", "wholebody", "interhand", "pw3d"),
}

#: The ``format`` marker of the trainer's own checkpoints (weights under ``model``).
TRAIN_CHECKPOINT_FORMAT = "posebh-train-v1"
#: Where posebh-written files keep their architecture record (:func:`model_record`): at the
#: top level of a trainer checkpoint, under ``meta`` of an official-naming ``model.pth``.
MODEL_RECORD_KEY = "model_config"
_RECORD_VERSION = 1
_MAX_LISTED = 12  # keys listed per category in an error message before "... and N more"

_BLOCK_RE = re.compile(r"^backbone\.blocks\.(\d+)\.")
_EXPERT_RE = re.compile(r"^backbone\.blocks\.(\d+)\.mlp\.experts\.(\d+)\.(weight|bias)$")
_ASSOC_RE = re.compile(r"^associate_keypoint_heads\.(\d+)\.(.+)$")
_HEADS_RE = re.compile(r"^heads\.(\d+)\.(.+)$")

_OFFICIAL_KPT_PROTO = "proto_head.kpt_prototype.prototypes"
_OFFICIAL_CLUSTER_PROTO = "proto_head.cluster_prototype.prototypes"
_POSEBH_KPT_PROTO = "keypoint_prototypes.prototypes"
_POSEBH_CLUSTER_PROTO = "cluster_prototypes.prototypes"


# --------------------------------------------------------------------------------------
# Reading files and dicts
# --------------------------------------------------------------------------------------


def _list_keys(keys: Iterable[str], limit: int = _MAX_LISTED) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


def read_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> Any:
    """What a checkpoint file holds, read with ``torch.load(weights_only=True)`` (no code
    from the file runs); its failures become :class:`CheckpointError` messages that say
    what is wrong with the file and how to fix it.  The only place posebh reads a
    checkpoint file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no such file (a posebh train final.pth / model.pth, or an official .pth)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (IsADirectoryError, PermissionError):
        raise
    except pickle.UnpicklingError as err:
        text = str(err)
        # torch names the offending global ("Unsupported global: GLOBAL mmcv...ConfigDict")
        # or type ("Can only build Tensor, ... but got <class ...>"); anything else is a
        # damaged pickle stream.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(
            r"but got (<class [^>]+>)", text
        )
        if found:
            raise CheckpointError(
                f"{path}: refusing to load: the file pickles a Python object that is not a "
                f"tensor or a plain container ({found.group(1)}), and unpickling it would run "
                "code from the file; posebh loads checkpoints only with "
                "torch.load(weights_only=True).  Official mmcv checkpoints can carry such "
                "objects in 'meta' (an mmcv ConfigDict, numpy scalars).  If you trust the "
                "file, re-save its weights once, in an environment that can unpickle it:\n"
                "    import torch\n"
                "    ckpt = torch.load('in.pth', map_location='cpu', weights_only=False)\n"
                "    torch.save({'state_dict': ckpt['state_dict']}, 'in_weights.pth')\n"
                "and load 'in_weights.pth' instead."
            ) from None
        # torch wraps the unpickler's own complaint in advice about weights_only; keep
        # only the complaint ("Unsupported operand 103").
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        raise CheckpointError(
            f"{path}: not a readable checkpoint: the file is truncated or corrupt, or not a "
            f"torch.save file (unpickler: {detail[0][:200] if detail else text[:200]})"
        ) from None
    except Exception as err:  # zip/EOF/index errors of a truncated or foreign file
        first = str(err).strip().split(". ")[0][:200]
        raise CheckpointError(
            f"{path}: not a readable checkpoint: the file is truncated or corrupt "
            f"({type(err).__name__}: {first})"
        ) from None


def save_atomically(obj: object, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``, so
    an interrupted write never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_state_dict(source: Source) -> StateDict:
    """The flat tensor dict of a checkpoint: ``source`` is a path (``.pth``), a
    ``{"state_dict": ..., "meta": ...}`` wrapper or a bare state dict.  A DDP ``module.``
    prefix on every key is removed.  Raises :class:`CheckpointError` on unreadable files,
    pickles that need code, and non-tensor entries.
    """
    name = "state dict"
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if name.endswith(".safetensors"):
            raise CheckpointError(
                f"{name}: a safetensors file; read it with safetensors.torch.load_file() and "
                "pass the dict (posebh does not depend on safetensors)"
            )
        source = read_checkpoint(name)
    if not isinstance(source, Mapping):
        raise CheckpointError(f"{name}: expected a dict of tensors, got {type(source).__name__}")
    if source.get("format") == TRAIN_CHECKPOINT_FORMAT and isinstance(source.get("model"), Mapping):
        # a trainer checkpoint (latest.pth, step_N.pth, final.pth): its weights are 'model'
        source = {"state_dict": source["model"]}
    sd = source.get("state_dict", source)
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{name}: 'state_dict' is a {type(sd).__name__}, not a dict")
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{name}: entries that are not tensors: {_list_keys(bad)} (expected a state dict, "
            f"or a dict with the state dict under 'state_dict'; top-level keys: "
            f"{_list_keys(map(str, source))})"
        )
    if not sd:
        raise CheckpointError(f"{name}: the state dict is empty")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


# --------------------------------------------------------------------------------------
# official <-> posebh key mapping
# --------------------------------------------------------------------------------------


def _official_key_to_posebh(key: str) -> str | None:
    """The posebh name of an official key, or None if the key is not an official one."""
    if key.startswith("backbone."):
        return key
    if key.startswith("keypoint_head."):
        return "heads.0." + key[len("keypoint_head.") :]
    m = _ASSOC_RE.match(key)
    if m:
        return f"heads.{int(m.group(1)) + 1}.{m.group(2)}"
    if key == _OFFICIAL_KPT_PROTO:
        return _POSEBH_KPT_PROTO
    if key == _OFFICIAL_CLUSTER_PROTO:
        return _POSEBH_CLUSTER_PROTO
    if key.startswith("proto_head."):
        return key
    return None


def _posebh_key_to_official(key: str) -> str | None:
    """The official name of a posebh key, or None if the key is not a posebh one."""
    if key.startswith(("backbone.", "proto_head.")):
        return key
    m = _HEADS_RE.match(key)
    if m:
        d = int(m.group(1))
        return (
            f"keypoint_head.{m.group(2)}"
            if d == 0
            else (f"associate_keypoint_heads.{d - 1}.{m.group(2)}")
        )
    if key == _POSEBH_KPT_PROTO:
        return _OFFICIAL_KPT_PROTO
    if key == _POSEBH_CLUSTER_PROTO:
        return _OFFICIAL_CLUSTER_PROTO
    return None


def official_to_posebh(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Rename official keys to :class:`~posebh.models.PoseBH` names (tensors shared, order
    kept).  Raises :class:`CheckpointError` listing any key that is not an official one."""
    out, unknown = {}, []
    for k, v in state_dict.items():
        new = _official_key_to_posebh(k)
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    if unknown:
        raise CheckpointError(
            "keys outside the official PoseBH / ViTPose++ layout (backbone.*, keypoint_head.*, "
            f"associate_keypoint_heads.*, proto_head.*): {_list_keys(unknown)}"
        )
    return out


def is_posebh_naming(keys: Iterable[str]) -> bool:
    """True when the keys use posebh naming (``heads.*`` or a moved prototype bank)."""
    return any(
        k.startswith("heads.") or k in (_POSEBH_KPT_PROTO, _POSEBH_CLUSTER_PROTO) for k in keys
    )


def to_official(model_or_state_dict: nn.Module | Mapping[str, Tensor]) -> StateDict:
    """The official (mmcv) state dict of a :class:`~posebh.models.PoseBH` or of a state dict
    in posebh naming: the inverse of :func:`official_to_posebh`.

    Save it as ``torch.save({"state_dict": sd, "meta": {}}, path)`` for the official code.
    Tensors are shared with the model, not copied.
    """
    if isinstance(model_or_state_dict, nn.Module):
        sd: Mapping[str, Tensor] = model_or_state_dict.state_dict()
    else:
        sd = read_state_dict(model_or_state_dict)
    out, unknown = {}, []
    for k, v in sd.items():
        new = _posebh_key_to_official(k)
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    if unknown:
        hint = ""
        if any(k.startswith(("keypoint_head.", "associate_keypoint_heads.")) for k in unknown):
            hint = " (this looks like a state dict that is already in official naming)"
        raise CheckpointError(f"keys outside the posebh layout{hint}: {_list_keys(unknown)}")
    return out


# --------------------------------------------------------------------------------------
# Architecture inference
# --------------------------------------------------------------------------------------


def _expert_layout(sd: Mapping[str, Tensor]) -> tuple[int, int, int, int]:
    """(depth, num_experts, part_features, fc2_rows) of an official backbone."""
    blocks = sorted({int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k))})
    if not blocks:
        raise CheckpointError("no backbone.blocks.* tensors: not a ViT pose checkpoint")
    if blocks != list(range(len(blocks))):
        raise CheckpointError(f"backbone blocks are not numbered 0..{len(blocks) - 1}: {blocks}")
    experts = sorted(
        {int(m.group(2)) for k in sd if (m := _EXPERT_RE.match(k)) and m.group(1) == "0"}
    )
    if experts != list(range(len(experts))):
        raise CheckpointError(f"experts of block 0 are not numbered 0..E-1: {experts}")
    part = sd["backbone.blocks.0.mlp.experts.0.weight"].shape[0] if experts else 0
    fc2 = sd.get("backbone.blocks.0.mlp.fc2.weight")
    if fc2 is None:
        raise CheckpointError("backbone.blocks.0.mlp.fc2.weight is missing")
    return len(blocks), len(experts), part, fc2.shape[0]


def is_official_split(state_dict: Mapping[str, Tensor]) -> bool:
    """True for the output of the official ``tools/model_split.py``: expert tensors are
    present although every ``mlp.fc2`` already has ``embed_dim`` rows (one expert merged)."""
    if "backbone.pos_embed" not in state_dict:
        return False
    c = state_dict["backbone.pos_embed"].shape[-1]
    depth, n_exp, _, _ = _expert_layout(state_dict)
    return n_exp > 0 and all(
        state_dict[f"backbone.blocks.{i}.mlp.fc2.weight"].shape[0] == c
        for i in range(depth)
        if f"backbone.blocks.{i}.mlp.fc2.weight" in state_dict
    )


def _head_layout(sd: Mapping[str, Tensor], prefix: str) -> tuple[int, int, int, int]:
    """(num_keypoints, filters, num_deconv, kernel) of a TopdownHeatmapSimpleHead."""
    w = sd.get(prefix + "final_layer.weight")
    if w is None:
        raise CheckpointError(f"{prefix}final_layer.weight is missing")
    if w.ndim != 4 or w.shape[-2:] != (1, 1):
        raise CheckpointError(
            f"{prefix}final_layer.weight has shape {list(w.shape)}; only the 1×1 final conv "
            "(extra=dict(final_conv_kernel=1)) is supported"
        )
    deconvs = sorted(
        int(m.group(1))
        for k in sd
        if (m := re.match(re.escape(prefix) + r"deconv_layers\.(\d+)\.weight$", k))
        and sd[k].ndim == 4
    )
    if deconvs != [3 * i for i in range(len(deconvs))]:
        raise CheckpointError(f"{prefix}deconv_layers: unexpected layout {deconvs}")
    kernel = sd[f"{prefix}deconv_layers.0.weight"].shape[-1] if deconvs else 4
    return w.shape[0], w.shape[1], len(deconvs), kernel


def _grid_from_tokens(tokens: int) -> tuple[int, int] | None:
    """The h×w grid with h·w = tokens and h:w = 4:3 (the 256×192 family), if one exists."""
    w = round(math.sqrt(tokens * 3 / 4))
    h = tokens // w if w else 0
    return (h, w) if h * w == tokens and 3 * h == 4 * w else None


def infer_arch(source: Source, **arch: Any) -> dict[str, Any]:
    """The :class:`~posebh.models.PoseBHConfig` fields of an official checkpoint, read off
    its tensor shapes; any field given in ``arch`` wins.

    Inferred: ``embed_dim``, ``depth``, ``patch_size``, ``img_size`` (patch grid from
    ``pos_embed``, assuming 4:3 unless ``img_size`` is given), ``mlp_ratio``, ``qkv_bias``,
    ``num_experts``/``part_features`` (0 experts for plain or merged backbones),
    ``num_keypoints`` (one per head), ``head_filters``/``num_deconv``/``head_kernel``,
    ``proto_head``/``proto_channels``/``proto_dim``/``num_prototypes``/``proto_keypoints``
    and ``num_clusters``.  ``num_heads`` (not visible in shapes) and ``drop_path_rate``
    come from the preset table by ``embed_dim``.  Leftover tensors of an official split
    are ignored here (see :func:`load_model`).
    """
    sd = read_state_dict(source)
    if "backbone.pos_embed" not in sd or "backbone.patch_embed.proj.weight" not in sd:
        raise CheckpointError(
            "no backbone.pos_embed / backbone.patch_embed.proj.weight: not a ViTPose / PoseBH "
            f"checkpoint in official naming (first keys: {_list_keys(list(sd)[:5])})"
        )
    pos, proj = sd["backbone.pos_embed"], sd["backbone.patch_embed.proj.weight"]
    if pos.ndim != 3 or proj.ndim != 4:
        raise CheckpointError(
            f"backbone.pos_embed {list(pos.shape)} / patch_embed.proj.weight "
            f"{list(proj.shape)}: expected [1, 1+T, C] and [C, 3, p, p]"
        )
    c = pos.shape[-1]
    tokens = pos.shape[1] - 1
    patch = proj.shape[-1]
    if proj.shape[-2] != patch:
        raise CheckpointError(f"non-square patch embedding {list(proj.shape)} is not supported")
    out: dict[str, Any] = {"embed_dim": c, "patch_size": patch}
    if "img_size" not in arch:
        grid = _grid_from_tokens(tokens)
        if grid is None:
            raise CheckpointError(
                f"backbone.pos_embed holds {tokens} patch positions, which is no 4:3 grid; pass "
                "img_size=(H, W) to say which input size the checkpoint was trained for"
            )
        out["img_size"] = (grid[0] * patch, grid[1] * patch)

    depth, n_exp, part, fc2_rows = _expert_layout(sd)
    hidden = sd["backbone.blocks.0.mlp.fc1.weight"].shape[0]
    if int(c * (hidden / c)) != hidden:  # PoseBH builds int(embed_dim * mlp_ratio) channels
        raise CheckpointError(f"mlp hidden size {hidden} is not int(embed_dim * ratio)")
    out.update(depth=depth, mlp_ratio=hidden / c, qkv_bias="backbone.blocks.0.attn.qkv.bias" in sd)
    if n_exp and fc2_rows + part == c:
        out.update(num_experts=n_exp, part_features=part)
    elif fc2_rows == c:  # plain ViT, or an official split with leftover experts
        out.update(num_experts=0, part_features=part)
    elif n_exp:
        raise CheckpointError(
            f"expert tensors present but mlp.fc2 has {fc2_rows} rows: with {part}-channel "
            f"experts it needs {c - part} (or {c} once an expert is merged into it)"
        )
    else:
        raise CheckpointError(
            f"mlp.fc2 has {fc2_rows} rows for embed_dim {c} and there are no expert tensors: "
            "the checkpoint's mlp.experts.* are missing"
        )

    # Heads: keypoint_head, then associate heads 0.. (dropped for an official split).
    prefixes = ["keypoint_head."]
    if not (n_exp and fc2_rows == c):
        assoc = sorted({int(m.group(1)) for k in sd if (m := _ASSOC_RE.match(k))})
        if assoc != list(range(len(assoc))):
            raise CheckpointError(f"associate_keypoint_heads are not numbered 0..N-1: {assoc}")
        prefixes += [f"associate_keypoint_heads.{i}." for i in assoc]
    if not any(k.startswith("keypoint_head.") for k in sd):
        raise CheckpointError("no keypoint_head.* tensors: a backbone-only checkpoint")
    layouts = [_head_layout(sd, p) for p in prefixes]
    shared = {lay[1:] for lay in layouts}
    if len(shared) > 1:
        raise CheckpointError(
            f"heads differ in (filters, deconvs, kernel): {sorted(shared)}; posebh builds "
            "all heads alike"
        )
    filters, n_deconv, kernel = shared.pop()
    out.update(
        num_keypoints=tuple(lay[0] for lay in layouts),
        head_filters=filters,
        num_deconv=n_deconv,
        head_kernel=kernel,
    )

    proto_keys = [k for k in sd if k.startswith("proto_head.")]
    out["proto_head"] = bool(proto_keys)
    out["num_clusters"] = 0
    if proto_keys:
        need = [
            "proto_head.neck.conv1.weight",
            "proto_head.head.0.weight",
            "proto_head.head.3.weight",
        ]
        absent = [k for k in need if k not in sd]
        if absent:
            raise CheckpointError(
                f"prototype head without {_list_keys(absent)}: only neck_type='res' with "
                "head_kernel=3 (the released configuration) is supported"
            )
        if sd["proto_head.head.0.weight"].shape[-1] != 3:
            raise CheckpointError("prototype head with head_kernel=1 is not supported (only 3)")
        pf = sd.get("proto_head.deconv_layers.0.weight")
        if pf is not None and pf.shape[1] != filters:
            raise CheckpointError(
                f"prototype head deconvs have {pf.shape[1]} filters but the heatmap heads "
                f"{filters}; posebh uses one filter count for both"
            )
        out["proto_channels"] = sd["proto_head.neck.conv1.weight"].shape[0]
        out["proto_dim"] = sd["proto_head.head.3.weight"].shape[0]
        protos = sd.get(_OFFICIAL_KPT_PROTO)
        if protos is not None:
            j, m, _ = protos.shape
            out["num_prototypes"] = m
            if sum(out["num_keypoints"]) == j:
                out["proto_keypoints"] = out["num_keypoints"]
            elif sum(_RELEASE_KEYPOINTS) == j:
                out["proto_keypoints"] = _RELEASE_KEYPOINTS
            elif "proto_keypoints" not in arch:
                raise CheckpointError(
                    f"{j} prototype classes but the heads have {sum(out['num_keypoints'])} "
                    "keypoints: pass proto_keypoints=(K_1, ..., K_D) with the class blocks"
                )
        else:
            out["proto_keypoints"] = out["num_keypoints"]
        clusters = sd.get(_OFFICIAL_CLUSTER_PROTO)
        if clusters is not None:
            out["num_clusters"] = clusters.shape[0]

    if "num_heads" not in arch:
        if c not in NUM_HEADS_BY_WIDTH:
            raise CheckpointError(
                f"embed_dim {c} is not a preset width ({sorted(NUM_HEADS_BY_WIDTH)}); the "
                "number of attention heads cannot be read off the tensors: pass num_heads=..."
            )
        out["num_heads"] = NUM_HEADS_BY_WIDTH[c]
    widths = {w["embed_dim"]: w for w in _WIDTHS.values()}
    out["drop_path_rate"] = widths[c]["drop_path_rate"] if c in widths else 0.0
    out.update(arch)
    return out


def infer_config(source: Source, **arch: Any) -> PoseBHConfig:
    """:func:`infer_arch` as a :class:`~posebh.models.PoseBHConfig`."""
    fields = {f.name for f in dataclasses.fields(PoseBHConfig)}
    unknown = set(arch) - fields
    if unknown:
        raise TypeError(f"unknown config fields {sorted(unknown)}; valid: {sorted(fields)}")
    return PoseBHConfig(**infer_arch(source, **arch))


# --------------------------------------------------------------------------------------
# Fitting a state dict to a model
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# The architecture record of posebh-written checkpoints
# --------------------------------------------------------------------------------------


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
    fields += ["head_filters", "num_deconv", "proto_head"]
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


# Fields the tensors of a single-dataset split cannot tell; a record supplies them.
_UNSEEN_FIELDS = ("num_heads", "compat", "drop_path_rate", "img_size")


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


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

    ``source``: a ``.pth`` path (read with :func:`read_checkpoint`), or what such a file
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
        if not name.endswith(".safetensors"):  # read_state_dict says how to read those
            raw = read_checkpoint(name)
    record = recorded_config(raw, name)
    if record is None:
        arch = {**_legacy_arch(raw), **arch}
    if isinstance(raw, Mapping) and isinstance(raw.get("model"), Mapping) and "config" in raw:
        raw = {"state_dict": raw["model"]}  # a trainer checkpoint, with or without its marker
    sd = read_state_dict(raw)
    if is_posebh_naming(sd):  # a PoseBH.state_dict() saved by this package
        sd = to_official(sd)
    if record is not None:
        _check_record(record, sd, name, given=arch)
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


# --------------------------------------------------------------------------------------
# The official tools: model_split.py and remove_proto.py
# --------------------------------------------------------------------------------------


def _dataset_index(dataset: str | int, datasets: str) -> int:
    if isinstance(dataset, int):
        return dataset
    if datasets not in DATASET_ORDERS:
        raise ValueError(f"datasets must be one of {sorted(DATASET_ORDERS)}, got {datasets!r}")
    try:  # the model_split.py spelling of any posebh name or alias
        name = get_protocol(dataset).official_name
    except UnknownDatasetError:
        name = dataset.lower()
    order = DATASET_ORDERS[datasets]
    if name not in order:
        raise ValueError(f"unknown dataset {dataset!r} for datasets={datasets!r}: {order}")
    return order.index(name)


def split_official(
    state_dict: Source,
    dataset: str | int,
    *,
    datasets: str = "human_animal",
    keep_prototype_head: bool = False,
) -> StateDict:
    """One dataset's single-head, plain-ViT checkpoint cut from a multi-dataset one, as the
    official ``tools/model_split.py`` makes it, minus its leftovers.  Official naming in and
    out.

    ``dataset``: an expert/head index, or a name in the ``datasets`` order
    (:data:`DATASET_ORDERS`; ``human_animal``: coco 0, aic 1, mpii 2, ap10k 3, apt36k 4,
    wholebody 5).

    Like the official script: each ``mlp.fc2.{weight,bias}`` gets expert d's rows appended
    (so the plain ViT computes what the MoE backbone computes for images routed to d), and
    ``keypoint_head.*`` becomes head d.  Unlike it: the expert tensors and every
    ``associate_keypoint_heads.*`` are removed (the official script keeps the experts of
    every split, and everything for coco), and the prototype head is kept only with
    ``keep_prototype_head=True`` (the official script keeps it; a single-dataset ViTPose
    model has none).  Key order is the source order; untouched tensors are shared.
    """
    sd = read_state_dict(state_dict)
    d = _dataset_index(dataset, datasets)
    if "backbone.pos_embed" not in sd:
        raise CheckpointError("no backbone.pos_embed: not a checkpoint in official naming")
    c = sd["backbone.pos_embed"].shape[-1]
    _, n_exp, part, fc2_rows = _expert_layout(sd)
    if n_exp == 0 or fc2_rows + part != c:
        raise CheckpointError(
            f"cannot split: the backbone is not a ViTMoE (experts: {n_exp}, fc2 rows "
            f"{fc2_rows}, embed_dim {c}); it is already a single-dataset plain ViT"
        )
    n_assoc = len({int(m.group(1)) for k in sd if (m := _ASSOC_RE.match(k))})
    if not 0 <= d < min(n_exp, 1 + n_assoc):
        raise CheckpointError(
            f"dataset index {d} out of range: {n_exp} experts, {1 + n_assoc} heatmap heads"
        )
    out: StateDict = {}
    for k, v in sd.items():
        if _EXPERT_RE.match(k) or _ASSOC_RE.match(k):
            continue
        if k.startswith("proto_head.") and not keep_prototype_head:
            continue
        if re.match(r"^backbone\.blocks\.\d+\.mlp\.fc2\.(weight|bias)$", k):
            expert_key = k.replace(".fc2.", f".experts.{d}.")
            if expert_key not in sd:
                raise CheckpointError(f"{expert_key} is missing")
            v = torch.cat([v, sd[expert_key]], dim=0)
        elif k.startswith("keypoint_head.") and d > 0:
            src = f"associate_keypoint_heads.{d - 1}." + k[len("keypoint_head.") :]
            if src not in sd:
                raise CheckpointError(f"{src} is missing (needed for {k})")
            v = sd[src]
        out[k] = v
    if d > 0:
        extra = [
            k
            for k in sd
            if k.startswith(f"associate_keypoint_heads.{d - 1}.")
            and "keypoint_head." + k.split(".", 2)[2] not in out
        ]
        if extra:
            raise CheckpointError(f"head {d} has tensors keypoint_head lacks: {_list_keys(extra)}")
    return out


def remove_prototypes(state_dict: Source, *, clusters: bool = False) -> StateDict:
    """The state dict without its keypoint prototype bank, as the official
    ``tools/remove_proto.py`` makes it (the transfer recipes start from such a file: a new
    keypoint set needs a new bank).  Works on official and posebh naming.

    Only ``proto_head.kpt_prototype.prototypes`` (posebh: ``keypoint_prototypes.prototypes``)
    is removed, as officially; ``clusters=True`` also removes the cluster prototypes, whose
    cluster-to-keypoint assignment is equally tied to the old keypoints.  Warns when there
    is nothing to remove.
    """
    sd = read_state_dict(state_dict)
    drop = {_OFFICIAL_KPT_PROTO, _POSEBH_KPT_PROTO}
    if clusters:
        drop |= {_OFFICIAL_CLUSTER_PROTO, _POSEBH_CLUSTER_PROTO}
    out = {k: v for k, v in sd.items() if k not in drop}
    if len(out) == len(sd):
        warnings.warn("remove_prototypes: the state dict has no prototype tensors", stacklevel=2)
    return out


# --------------------------------------------------------------------------------------
# Hugging Face transformers naming
# --------------------------------------------------------------------------------------
# Source: huggingface/transformers, src/transformers/models/vitpose/convert_vitpose_to_hf.py
# (ORIGINAL_TO_CONVERTED_KEY_MAPPING, write_model) at commit a1567e0222ecd330bf749b958000afb5
# ecb06b07, checked against the module names of modeling_vitpose.py (a1567e02...:
# VitPoseClassicDecoder.deconv1/batchnorm1/deconv2/batchnorm2/conv) and
# vitpose_backbone/modeling_vitpose_backbone.py (47624c6dcd449aef2110a2e6264834777d691efa:
# embeddings.patch_embeddings.projection, embeddings.position_embeddings,
# encoder.layer.{i}.attention.attention.{query,key,value}, attention.output.dense,
# layernorm_before/after, mlp.fc1/fc2/experts.{e}, layernorm).
#
# Their converter renames keypoint_head → head and drops associate_keypoint_heads (its
# regexes turn them into "associate_heads.*" and then discards them).  to_hf keeps them
# under exactly that name, "associate_heads.{i}.{deconv1,...,conv}.*", so nothing is lost;
# a VitPoseForPoseEstimation loads such a dict with those keys reported as unexpected.  The
# prototype head has no transformers counterpart and keeps its official "proto_head.*" keys.

_HF_BACKBONE = [  # (official, hf) fragments inside backbone.blocks.{i}. / encoder.layer.{i}.
    ("norm1.", "layernorm_before."),
    ("norm2.", "layernorm_after."),
    ("attn.proj.", "attention.output.dense."),
    ("mlp.", "mlp."),
]
_QKV = ("query", "key", "value")


def _head_to_hf(rest: str) -> str | None:
    """TopdownHeatmapSimpleHead suffix → VitPoseClassicDecoder suffix."""
    if rest.startswith("final_layer."):
        return "conv." + rest[len("final_layer.") :]
    m = re.match(r"^deconv_layers\.(\d+)\.(.+)$", rest)
    if m:
        i, tail = int(m.group(1)), m.group(2)
        if i % 3 == 0:
            return f"deconv{i // 3 + 1}.{tail}"
        if i % 3 == 1:
            return f"batchnorm{i // 3 + 1}.{tail}"
    return None


def _head_from_hf(rest: str) -> str | None:
    if rest.startswith("conv."):
        return "final_layer." + rest[len("conv.") :]
    m = re.match(r"^(deconv|batchnorm)(\d+)\.(.+)$", rest)
    if m:
        n = 3 * (int(m.group(2)) - 1) + (0 if m.group(1) == "deconv" else 1)
        return f"deconv_layers.{n}.{m.group(3)}"
    return None


def to_hf(
    model_or_state_dict: nn.Module | Source,
    *,
    extra_heads: bool = True,
    prototype_head: bool = True,
) -> StateDict:
    """A state dict in ``transformers``' VitPose naming (``usyd-community/vitpose-plus-*``).

    Accepts a :class:`~posebh.models.PoseBH`, or a state dict / path in official or posebh
    naming.  The main head becomes ``head.*``; with ``extra_heads`` the other dataset heads
    are kept as ``associate_heads.{i}.*`` (the transformers converter drops them), and with
    ``prototype_head`` the prototype head stays as ``proto_head.*``.  Pass both as False
    for exactly the keys ``VitPoseForPoseEstimation`` has.  q/k/v are views of ``qkv``.
    """
    if isinstance(model_or_state_dict, nn.Module):
        sd = to_official(model_or_state_dict)
    else:
        sd = read_state_dict(model_or_state_dict)
        if is_posebh_naming(sd):
            sd = to_official(sd)
    out: StateDict = {}
    unknown = []
    for k, v in sd.items():
        m = re.match(r"^backbone\.blocks\.(\d+)\.(.+)$", k)
        if m:
            layer, rest = f"backbone.encoder.layer.{m.group(1)}.", m.group(2)
            qkv = re.match(r"^attn\.qkv\.(weight|bias)$", rest)
            if qkv:
                if v.shape[0] % 3:
                    raise CheckpointError(f"{k} has {v.shape[0]} rows, not 3·embed_dim")
                for name, part in zip(_QKV, v.chunk(3, dim=0), strict=True):
                    out[f"{layer}attention.attention.{name}.{qkv.group(1)}"] = part
                continue
            for old, new in _HF_BACKBONE:
                if rest.startswith(old):
                    out[layer + new + rest[len(old) :]] = v
                    break
            else:
                unknown.append(k)
            continue
        if k.startswith("backbone.patch_embed.proj."):
            out["backbone.embeddings.patch_embeddings.projection." + k.rsplit(".", 1)[1]] = v
        elif k == "backbone.pos_embed":
            out["backbone.embeddings.position_embeddings"] = v
        elif k.startswith("backbone.last_norm."):
            out["backbone.layernorm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("keypoint_head."):
            new = _head_to_hf(k[len("keypoint_head.") :])
            if new is None:
                unknown.append(k)
            else:
                out["head." + new] = v
        elif m := _ASSOC_RE.match(k):
            new = _head_to_hf(m.group(2))
            if new is None:
                unknown.append(k)
            elif extra_heads:
                out[f"associate_heads.{m.group(1)}.{new}"] = v
        elif k.startswith("proto_head."):
            if prototype_head:
                out[k] = v
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"keys with no transformers VitPose name: {_list_keys(unknown)}")
    return out


def from_hf(state_dict: Source) -> StateDict:
    """The official (mmcv) state dict of a ``transformers`` VitPose state dict (or of a
    :func:`to_hf` output): q/k/v are concatenated back into ``qkv``, ``head.*`` becomes
    ``keypoint_head.*``, ``associate_heads.{i}.*`` ``associate_keypoint_heads.{i}.*``.
    Feed the result to :func:`load_model`.  A ``.safetensors`` file must be read by the
    caller (``safetensors.torch.load_file``) and passed as a dict.
    """
    sd = read_state_dict(state_dict)
    out: StateDict = {}
    unknown = []
    pending: dict[tuple[str, str], dict[str, Tensor]] = {}
    for k, v in sd.items():
        m = re.match(r"^backbone\.encoder\.layer\.(\d+)\.(.+)$", k)
        if m:
            block, rest = f"backbone.blocks.{m.group(1)}.", m.group(2)
            qkv = re.match(r"^attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
            if qkv:
                parts = pending.setdefault((block, qkv.group(2)), {})
                parts[qkv.group(1)] = v
                if len(parts) == 3:
                    out[f"{block}attn.qkv.{qkv.group(2)}"] = torch.cat(
                        [parts[n] for n in _QKV], dim=0
                    )
                elif len(parts) == 1:
                    # Reserve the slot so the key order matches the official one.
                    out[f"{block}attn.qkv.{qkv.group(2)}"] = v
                continue
            for old, new in _HF_BACKBONE:
                if rest.startswith(new):
                    out[block + old + rest[len(new) :]] = v
                    break
            else:
                unknown.append(k)
            continue
        if k.startswith("backbone.embeddings.patch_embeddings.projection."):
            out["backbone.patch_embed.proj." + k.rsplit(".", 1)[1]] = v
        elif k == "backbone.embeddings.position_embeddings":
            out["backbone.pos_embed"] = v
        elif k.startswith("backbone.layernorm."):
            out["backbone.last_norm." + k.rsplit(".", 1)[1]] = v
        elif k.startswith("head."):
            new = _head_from_hf(k[len("head.") :])
            if new is None:
                unknown.append(k)
            else:
                out["keypoint_head." + new] = v
        elif m := re.match(r"^associate_heads\.(\d+)\.(.+)$", k):
            new = _head_from_hf(m.group(2))
            if new is None:
                unknown.append(k)
            else:
                out[f"associate_keypoint_heads.{m.group(1)}.{new}"] = v
        elif k.startswith("proto_head."):
            out[k] = v
        else:
            unknown.append(k)
    incomplete = [
        f"{b}attention.attention.*.{kind}" for (b, kind), p in pending.items() if len(p) != 3
    ]
    if incomplete:
        raise CheckpointError(f"query/key/value incomplete for {_list_keys(incomplete)}")
    if unknown:
        raise CheckpointError(
            f"keys outside the transformers VitPose naming: {_list_keys(unknown)}"
        )
    return out
