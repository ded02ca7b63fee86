"""The official checkpoint tools: ``tools/model_split.py`` (:func:`split_official`: one
dataset's single-head plain-ViT checkpoint cut from a multi-dataset one) and
``tools/remove_proto.py`` (:func:`remove_prototypes`), and the dataset orders of the split
script (:data:`DATASET_ORDERS`).
"""

from __future__ import annotations

import re
import warnings

import torch

from posebh.checkpoint.arch import _expert_layout
from posebh.checkpoint.io import CheckpointError, Source, StateDict, _list_keys, read_state_dict
from posebh.checkpoint.naming import (
    _ASSOC_RE,
    _EXPERT_RE,
    _OFFICIAL_CLUSTER_PROTO,
    _OFFICIAL_KPT_PROTO,
    _POSEBH_CLUSTER_PROTO,
    _POSEBH_KPT_PROTO,
)
from posebh.protocol import UnknownDatasetError, get_protocol

__all__ = ["DATASET_ORDERS", "remove_prototypes", "split_official"]


# Dataset order of each ``--datasets`` choice of the official tools/model_split.py: the
# expert and head index of each dataset (expert 0 and keypoint_head are COCO's).
DATASET_ORDERS: dict[str, tuple[str, ...]] = {
    "human_animal": ("coco", "aic", "mpii", "ap10k", "apt36k", "wholebody"),
    "human_wholebody": ("coco", "aic", "mpii", "wholebody"),
    "8dset": ("coco", "aic", "mpii", "ap10k", "apt36k", "wholebody", "interhand", "pw3d"),
}


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
