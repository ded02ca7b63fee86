"""The full ground truth of every SynthPose image, in every compatible skeleton, kept apart
from the training annotations — what the cross-type question needs ("how well does dataset
d's head predict d's keypoints on dataset e's images?").

File format: ``OUT/synthpose/cross_gt/<group>_<split>.json`` per written split of each image
source (*group*: coco — shared by coco_wholebody —, aic, mpii, ochuman, pw3d, ap10k, apt36k,
interhand2d)::

    {
      "info": {"group", "split", "kind": "human"|"quadruped"|"hand", "targets": [...],
               "preset", "seed", "version", "visibility": ..., "definition_offsets": ...},
      "images": [{"id", "file_name", "width", "height"}],   # ids as in the source file
                                                             # (MPII: the image name)
      "figures": [{
          "id": int,                  # = the source annotation id when annotated
          "image_id", "source_ann_id": int | null, "annotated": bool,
          "kind", "category_id", "hand" (hands only),
          "visible_bbox": [x, y, w, h] | null, "visible_area": int (pixels),
          "segment_area": int (an annotator's outline of the visible pixels: COCO's area),
          "amodal_bbox": [x, y, w, h] (all shapes, clipped to the image),
          "px_per_m", "scale", "height_px",
          "head_box": [x0, y0, x1, y1] (humans: the MPII head box, 0-based pixels),
          "keypoints": {skeleton: [x1, y1, v1, ...]},   # every compatible skeleton
          "wholebody_valid": {part: bool}, "wholebody_boxes": {part: [x, y, w, h]}  # humans
      }]
    }

Keypoints use each skeleton's own definition (:data:`posebh.synth.human.DEFINITION_OFFSETS`,
:mod:`posebh.synth.animal`) and the COCO visibility convention (2 visible, 1 labelled but
occluded, 0 not labelled with x = y = 0) for every skeleton — also MPII and 3DPW, whose own
files encode visibility differently; where a dataset annotates a figure its file holds exactly
these coordinates. Humans carry coco, aic, mpii, coco_wholebody and pw3d (ochuman = coco);
quadrupeds ap10k and apt36k; hands interhand2d.

:func:`cross_type_gt` turns a file into a COCO keypoint GT dict for one target skeleton,
ready for ``posebh.evaluation.oks_eval`` / ``wholebody_eval``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from posebh.datasets import default_spec
from posebh.protocol import get_protocol
from posebh.skeletons import get_skeleton

__all__ = [
    "CROSS_GT_DIR",
    "cross_gt_info",
    "cross_gt_path",
    "cross_type_gt",
    "load_cross_gt",
    "source_group",
]

CROSS_GT_DIR = "synthpose/cross_gt"

_TARGETS = {
    "human": ("coco", "aic", "mpii", "coco_wholebody", "pw3d"),
    "quadruped": ("ap10k", "apt36k"),
    "hand": ("interhand2d",),
}
_WB_FIELDS = {
    "body": "keypoints",
    "foot": "foot_kpts",
    "face": "face_kpts",
    "lefthand": "lefthand_kpts",
    "righthand": "righthand_kpts",
}
# How each target dataset draws a box (see posebh.synth.groups.annotation_box).
_VISIBLE_BOX = ("coco", "coco_wholebody")


def cross_gt_info(
    group: str, split: str, kind: str, preset: str, seed: int, version: str
) -> dict[str, Any]:
    """The ``info`` block of a cross-GT file."""
    from .animal import _NECK_FRACTIONS, _VARIANTS
    from .human import DEFINITION_OFFSETS

    return {
        "description": "SynthPose cross-type ground truth (posebh.synth.crossgt)",
        "group": group,
        "split": split,
        "kind": kind,
        "targets": list(_TARGETS[kind]),
        "preset": preset,
        "seed": seed,
        "version": version,
        "visibility": (
            "COCO convention for every skeleton: 2 visible, 1 labelled but occluded, "
            "0 not labelled (x = y = 0)"
        ),
        "definition_offsets": {
            "human": {
                f"{kp}@{ds}": {"node": b, "attach": a, "offset_m": list(d)}
                for (kp, ds), (b, a, d) in DEFINITION_OFFSETS.items()
            },
            "quadruped": {
                **{
                    k: {"node": b, "attach": a, "offset_girth": list(d)}
                    for k, (b, a, d) in _VARIANTS.items()
                },
                **{
                    k: {"node": "neck_base", "neck_fraction": f} for k, f in _NECK_FRACTIONS.items()
                },
            },
        },
    }


def source_group(dataset: str) -> str:
    """The image source a dataset's images come from (coco_wholebody → coco)."""
    name = get_skeleton(dataset).name
    return "coco" if name == "coco_wholebody" else name


def cross_gt_path(out_dir: str | os.PathLike[str], source_dataset: str, split: str) -> Path:
    """The cross-GT file of ``source_dataset``/``split``; a split that the official layout
    maps onto another split's file (COCO/AIC/MPII test = val, 3DPW val = test) resolves to
    that file. ``FileNotFoundError`` if it was not generated."""
    root = Path(out_dir)
    group = source_group(source_dataset)
    direct = root / CROSS_GT_DIR / f"{group}_{split}.json"
    if direct.is_file():
        return direct
    name = get_skeleton(source_dataset).name
    try:
        wanted = default_spec(name, split, root).ann_file
    except ValueError:
        wanted = None
    for other in ("train", "val", "test"):
        candidate = root / CROSS_GT_DIR / f"{group}_{other}.json"
        if other == split or not candidate.is_file() or wanted is None:
            continue
        if default_spec(name, other, root).ann_file == wanted:
            return candidate
    raise FileNotFoundError(
        f"no cross GT for {source_dataset} {split} under {root / CROSS_GT_DIR} "
        "(generate it with `posebh synth`)"
    )


def load_cross_gt(
    out_dir: str | os.PathLike[str], source_dataset: str, split: str
) -> dict[str, Any]:
    """The parsed cross-GT file of ``source_dataset``/``split`` (format in the module doc)."""
    return json.loads(cross_gt_path(out_dir, source_dataset, split).read_text())


def _bbox_area(fig: dict[str, Any], target: str, kpts: list[float]) -> tuple[list[float], float]:
    if target in _VISIBLE_BOX and fig["visible_bbox"] is not None:
        return list(fig["visible_bbox"]), float(fig["segment_area"])
    if target == "interhand2d":
        xs = [kpts[i] for i in range(0, len(kpts), 3) if kpts[i + 2] > 0]
        ys = [kpts[i + 1] for i in range(0, len(kpts), 3) if kpts[i + 2] > 0]
        if xs:
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            return box, box[2] * box[3]
    box = list(fig["amodal_bbox"])
    return box, round(box[2] * box[3], 2)


def cross_type_gt(
    out_dir: str | os.PathLike[str],
    source_dataset: str,
    target_skeleton: str,
    split: str,
    *,
    annotated_only: bool = True,
) -> dict[str, Any]:
    """COCO-format GT of the ``target_skeleton`` keypoints of the figures on
    ``source_dataset``'s ``split`` images.

    Image ids are the source file's, so predictions made on the source instances (their
    ``image_id``) can be scored directly: ``oks_eval(cross_type_gt(out, "aic", "coco",
    "val"), results, sigmas="coco")``. ``annotated_only`` keeps the figures the source dataset
    annotates (the instances a top-down model is run on); False adds every other drawn
    figure. Boxes and areas follow the *target* dataset's convention (COCO / WholeBody: the
    visible pixels' box and segment area; others: the full box, area w·h). A WholeBody
    target carries the five part fields, the ``<part>_valid`` flags and part boxes, as
    ``coco_wholebody_*_v1.0.json``.

    Raises ``ValueError`` when the target cannot describe the source's figures (a human
    skeleton on animals, say).
    """
    target = get_skeleton(target_skeleton).name
    # A skeleton evaluated with another's expert (OCHuman: COCO's) is scored from that
    # dataset's stored keypoints (the same definition).
    stored = get_protocol(target).eval_expert
    data = load_cross_gt(out_dir, source_dataset, split)
    kind = data["info"]["kind"]
    if stored not in _TARGETS[kind]:
        raise ValueError(
            f"{source_dataset} shows {kind} figures; {target} is not a {kind} skeleton "
            f"(use one of {_TARGETS[kind]})"
        )
    sk = get_skeleton(target)
    anns = []
    cat_ids = set()
    for fig in data["figures"]:
        if annotated_only and not fig["annotated"]:
            continue
        kp = fig["keypoints"][stored]
        bbox, area = _bbox_area(fig, target, kp)
        ann: dict[str, Any] = {
            "id": fig["id"],
            "image_id": fig["image_id"],
            "category_id": fig["category_id"],
            "bbox": bbox,
            "area": area,
            "iscrowd": 0,
        }
        if target == "coco_wholebody":
            for part, (lo, hi) in sk.parts.items():
                ann[_WB_FIELDS[part]] = kp[3 * lo : 3 * hi]
                if part != "body":
                    ann[f"{part}_valid"] = bool(fig["wholebody_valid"][part])
                if part in ("face", "lefthand", "righthand"):
                    ann[f"{part}_box"] = fig["wholebody_boxes"][part]
            ann["num_keypoints"] = sum(1 for v in kp[2 : 3 * 17 : 3] if v > 0)
        else:
            ann["keypoints"] = kp
            ann["num_keypoints"] = sum(1 for v in kp[2::3] if v > 0)
        anns.append(ann)
        cat_ids.add(fig["category_id"])
    names = list(sk.keypoint_names[:17]) if target == "coco_wholebody" else list(sk.keypoint_names)
    if kind == "quadruped":
        from .animal import SPECIES

        cats = [
            {
                "id": s.category_id,
                "name": s.name,
                "supercategory": s.supercategory,
                "keypoints": names,
            }
            for s in SPECIES
        ]
    else:
        cats = [
            {
                "id": c,
                "name": "hand" if kind == "hand" else "person",
                "supercategory": "person",
                "keypoints": names,
            }
            for c in sorted(cat_ids or {1})
        ]
    return {
        "info": {
            **data["info"],
            "target": target,
            "source": get_skeleton(source_dataset).name,
            "annotated_only": annotated_only,
        },
        "images": data["images"],
        "annotations": anns,
        "categories": cats,
    }
