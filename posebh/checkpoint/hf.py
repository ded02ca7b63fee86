"""The Hugging Face ``transformers`` VitPose naming: :func:`to_hf` and :func:`from_hf`.

- **hf** (``transformers``' ``VitPoseForPoseEstimation``): ``backbone.embeddings.*``,
  ``backbone.encoder.layer.{i}.*`` with q/k/v split, ``head.{deconv1,batchnorm1,...,conv}``.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from posebh.checkpoint.io import CheckpointError, Source, StateDict, _list_keys, read_state_dict
from posebh.checkpoint.naming import _ASSOC_RE, is_posebh_naming, to_official

__all__ = ["from_hf", "to_hf"]


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
    """TopdownHeatmapSimpleHead suffix → VitPoseClassicDecoder suffix (the simple decoder's
    only tensors, ``final_layer.*``, are VitPoseSimpleDecoder's ``conv.*`` alike)."""
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
