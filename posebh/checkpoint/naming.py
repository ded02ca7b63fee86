"""Official <-> posebh key naming, and the key patterns the other checkpoint modules share.

- **official** (what ``mmcv.runner.save_checkpoint`` wrote for ``TopDownMoEProto``):
  ``backbone.*``, ``keypoint_head.*``, ``associate_keypoint_heads.{i}.*``, ``proto_head.*``
  including ``proto_head.kpt_prototype.prototypes`` [J, M, F] and, once clustering has run,
  ``proto_head.cluster_prototype.prototypes`` [C_cl, M, F];
- **posebh** (:class:`posebh.models.PoseBH`): the same except ``heads.{d}.*`` for all heads
  (``keypoint_head`` is ``heads.0``) and the two prototype banks moved out of the head:
  ``keypoint_prototypes.prototypes`` and ``cluster_prototypes.prototypes``.

:func:`official_to_posebh` and :func:`to_official` map one onto the other (strictly: a key
outside the layout raises :class:`~posebh.checkpoint.io.CheckpointError`);
:func:`is_posebh_naming` tells which naming a state dict uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from torch import Tensor, nn

from posebh.checkpoint.io import CheckpointError, StateDict, _list_keys, read_state_dict

__all__ = ["is_posebh_naming", "official_to_posebh", "to_official"]


_BLOCK_RE = re.compile(r"^backbone\.blocks\.(\d+)\.")
_EXPERT_RE = re.compile(r"^backbone\.blocks\.(\d+)\.mlp\.experts\.(\d+)\.(weight|bias)$")
_ASSOC_RE = re.compile(r"^associate_keypoint_heads\.(\d+)\.(.+)$")
_HEADS_RE = re.compile(r"^heads\.(\d+)\.(.+)$")

_OFFICIAL_KPT_PROTO = "proto_head.kpt_prototype.prototypes"
_OFFICIAL_CLUSTER_PROTO = "proto_head.cluster_prototype.prototypes"
_POSEBH_KPT_PROTO = "keypoint_prototypes.prototypes"
_POSEBH_CLUSTER_PROTO = "cluster_prototypes.prototypes"


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
