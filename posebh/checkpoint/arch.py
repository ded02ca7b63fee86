"""The architecture of an official-naming checkpoint, read off its tensor shapes.

:func:`infer_arch` / :func:`infer_config` give the :class:`~posebh.models.PoseBHConfig`
fields (heads, experts, prototype head, input size); :func:`is_official_split` recognises
the output of the official ``tools/model_split.py``; the ``_*_layout`` helpers read one part
(backbone blocks and experts, one heatmap head) and raise
:class:`~posebh.checkpoint.io.CheckpointError` on a layout posebh cannot build.

Shape vocabulary: C backbone channels (``embed_dim``), T = h·w patch tokens, E experts of P
``part_features`` channels, D heatmap heads with K_d keypoints, J prototype classes with M
prototypes of F dimensions each, and C_cl cluster prototypes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from posebh.checkpoint.io import CheckpointError, Source, _list_keys, read_state_dict
from posebh.checkpoint.naming import (
    _ASSOC_RE,
    _BLOCK_RE,
    _EXPERT_RE,
    _OFFICIAL_CLUSTER_PROTO,
    _OFFICIAL_KPT_PROTO,
)
from posebh.models import PoseBHConfig
from posebh.models.posebh import _WIDTHS, NUM_HEADS_BY_WIDTH
from posebh.protocol import TRAINING_DATASETS

__all__ = ["infer_arch", "infer_config", "is_official_split"]


# Keypoint counts of the released 6-dataset training (coco, aic, mpii, ap10k, apt36k,
# coco-wholebody): the class blocks of a 214-class prototype bank.  A split checkpoint keeps
# that bank next to a single heatmap head, so the blocks cannot be read off its heads.
_RELEASE_KEYPOINTS: tuple[int, ...] = tuple(p.skeleton.num_keypoints for p in TRAINING_DATASETS)


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


def _head_layout(sd: Mapping[str, Tensor], prefix: str) -> tuple[int, str, int, int, int]:
    """(num_keypoints, decoder, filters, num_deconv, kernel) of a TopdownHeatmapSimpleHead.

    The decoder is read off the final conv: 1×1 after the deconvs is the classic decoder;
    3×3 with no deconvs is the simple one (``num_deconv_layers=0``, ``upsample=4``,
    ``final_conv_kernel=3``), whose filters are then the backbone channels."""
    w = sd.get(prefix + "final_layer.weight")
    if w is None:
        raise CheckpointError(f"{prefix}final_layer.weight is missing")
    deconvs = sorted(
        int(m.group(1))
        for k in sd
        if (m := re.match(re.escape(prefix) + r"deconv_layers\.(\d+)\.weight$", k))
        and sd[k].ndim == 4
    )
    if w.ndim == 4 and w.shape[-2:] == (3, 3):
        if deconvs or any(k.startswith(prefix + "deconv_layers.") for k in sd):
            raise CheckpointError(
                f"{prefix}final_layer.weight is 3×3 but the head also has deconv_layers: only "
                "the simple decoder (num_deconv_layers=0, final_conv_kernel=3) or the classic "
                "one (deconvs, final_conv_kernel=1) is supported"
            )
        return w.shape[0], "simple", w.shape[1], 0, 4
    if w.ndim != 4 or w.shape[-2:] != (1, 1):
        raise CheckpointError(
            f"{prefix}final_layer.weight has shape {list(w.shape)}; only the 1×1 final conv "
            "(classic decoder, extra=dict(final_conv_kernel=1)) or the 3×3 one without deconvs "
            "(simple decoder) is supported"
        )
    if deconvs != [3 * i for i in range(len(deconvs))]:
        raise CheckpointError(f"{prefix}deconv_layers: unexpected layout {deconvs}")
    kernel = sd[f"{prefix}deconv_layers.0.weight"].shape[-1] if deconvs else 4
    return w.shape[0], "classic", w.shape[1], len(deconvs), kernel


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
    ``num_keypoints`` (one per head), ``decoder`` (``"classic"`` or ``"simple"``, from the
    final conv), ``head_filters``/``num_deconv``/``head_kernel``,
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
            f"heads differ in (decoder, filters, deconvs, kernel): {sorted(shared)}; posebh "
            "builds all heads alike"
        )
    decoder, filters, n_deconv, kernel = shared.pop()
    out.update(num_keypoints=tuple(lay[0] for lay in layouts), decoder=decoder)
    if decoder == "simple":
        if filters != c:
            raise CheckpointError(
                f"keypoint_head.final_layer.weight reads {filters} channels but the backbone "
                f"gives {c}: a simple decoder convolves the backbone features directly"
            )
        # The simple decoder has no deconvs; the classic fields keep their defaults.
        defaults = PoseBHConfig()
        out.update(head_filters=defaults.head_filters, num_deconv=0)
        out.update(head_kernel=defaults.head_kernel)
    else:
        out.update(head_filters=filters, num_deconv=n_deconv, head_kernel=kernel)

    proto_keys = [k for k in sd if k.startswith("proto_head.")]
    if proto_keys and decoder == "simple":
        raise CheckpointError(
            "proto_head.* tensors next to a simple-decoder keypoint_head: posebh builds the "
            "prototype head on the classic decoder's deconvs only"
        )
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
                "number of attention heads cannot be read off the tensors: pass num_heads=... "
                "(--num-heads N on the command line)"
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
