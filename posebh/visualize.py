"""``posebh visualize``: keypoint overlays of a model (or the ground truth) on the first images
of a dataset split, and the cross-dataset similarity of a checkpoint's keypoint prototypes.

Shape vocabulary: N instances per image, K keypoints of the drawn skeleton, J keypoint
classes, M prototypes per class, F embedding dimensions, D datasets (class blocks).

Predictions go through :func:`posebh.evaluate.predict` with the dataset's official evaluation
protocol and ground-truth boxes: what is drawn is exactly what ``posebh eval --gt-bbox`` scores.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from posebh.datasets import DatasetSpec, default_spec, read_dataset
from posebh.evaluate import default_protocol, ground_truth_predictions, predict
from posebh.pipeline import load_image
from posebh.plots import (
    Block,
    block_similarity,
    plot_keypoint_overlays,
    plot_prototype_similarity,
    prototype_similarity_matrix,
)
from posebh.skeletons import SKELETONS, TRAINING_SKELETONS, get_skeleton

__all__ = [
    "prototype_blocks",
    "visualize_predictions",
    "visualize_prototypes",
]


def prototype_blocks(num_keypoints: Sequence[int]) -> list[Block]:
    """(name, start, count) per dataset of a prototype bank with these K_d. Datasets are
    named after the training skeleton at their index when its keypoint count matches
    (the official layout: coco, aic, mpii, ap10k, apt36k, coco_wholebody), else ``dataset<d>``.
    """
    blocks: list[Block] = []
    start = 0
    for d, k in enumerate(num_keypoints):
        sk = TRAINING_SKELETONS[d] if d < len(TRAINING_SKELETONS) else None
        name = sk.name if sk is not None and sk.num_keypoints == k else f"dataset{d}"
        blocks.append((name, start, int(k)))
        start += int(k)
    return blocks


def _class_names(blocks: Sequence[Block], num_classes: int) -> list[str]:
    """``<dataset>/<keypoint name>`` per class index (``class<i>`` outside every block)."""
    names = [f"class{i}" for i in range(num_classes)]
    for name, start, count in blocks:
        sk = SKELETONS.get(name)
        labels = sk.keypoint_names if sk is not None and sk.num_keypoints == count else None
        for i in range(count):
            names[start + i] = f"{name}/{labels[i] if labels else i}"
    return names


def _rounded(x: float) -> float | None:
    # JSON has no NaN; a single-class block's diagonal is undefined.
    return None if not np.isfinite(x) else round(float(x), 6)


def visualize_prototypes(
    model_or_prototypes: nn.Module | torch.Tensor,
    out_dir: str | os.PathLike[str],
    *,
    blocks: Sequence[Block] | None = None,
    title: str = "keypoint prototype similarity (max |cos| over prototype pairs)",
    source: str | None = None,
) -> list[Path]:
    """Write ``prototype_similarity.png`` (the [J, J] class similarity matrix) and
    ``prototype_similarity.json`` (the [D, D] :func:`~posebh.plots.block_similarity`
    summary and each class's nearest class in another dataset) into ``out_dir``.

    ``model_or_prototypes``: a model with ``keypoint_prototypes`` (its blocks are read off the
    bank) or a [J, M, F] tensor (then pass ``blocks``, or all J classes form one block).
    Raises ``ValueError`` for a model without prototypes. Returns the written paths.
    """
    if isinstance(model_or_prototypes, torch.Tensor):
        prototypes = model_or_prototypes
        if blocks is None:
            blocks = [("all", 0, int(prototypes.shape[0]))]
    else:
        bank = getattr(model_or_prototypes, "keypoint_prototypes", None)
        if bank is None:
            raise ValueError(
                "this model has no keypoint prototypes (a vitpose_plus_* model, or a "
                "checkpoint converted with --remove-prototypes): nothing to compare"
            )
        prototypes = bank.prototypes
        if blocks is None:
            blocks = prototype_blocks(bank.num_keypoints)
    blocks = [(str(n), int(s), int(c)) for n, s, c in blocks]
    matrix = prototype_similarity_matrix(prototypes, blocks)
    summary = block_similarity(matrix, blocks)
    out = Path(out_dir)
    png = plot_prototype_similarity(matrix, blocks, out / "prototype_similarity.png", title=title)

    names = _class_names(blocks, matrix.shape[0])
    owner = np.empty(matrix.shape[0], dtype=np.int64)
    owner.fill(-1)
    for d, (_, start, count) in enumerate(blocks):
        owner[start : start + count] = d
    values = matrix.numpy()
    nearest = []
    for i in range(matrix.shape[0]):
        if owner[i] < 0:
            continue
        other = np.flatnonzero((owner >= 0) & (owner != owner[i]))
        if other.size == 0:
            continue
        j = int(other[np.argmax(values[i, other])])
        nearest.append(
            {"class": names[i], "nearest": names[j], "similarity": _rounded(values[i, j])}
        )
    report = {
        "what": "cosine similarity of keypoint prototype classes: S[i, j] = max over the M×M "
        "prototype pairs of |cos|; block_similarity[a][b] = mean over the classes i of block a "
        "of max over the classes j != i of block b of S[i, j]",
        "source": source,
        "shape": {"J": int(prototypes.shape[0]), "M": int(prototypes.shape[1]),
                  "F": int(prototypes.shape[2])},
        "reduce": "max",
        "absolute": True,
        "blocks": [{"name": n, "start": s, "count": c} for n, s, c in blocks],
        "block_names": [n for n, _, _ in blocks],
        "block_similarity": [[_rounded(v) for v in row] for row in summary.tolist()],
        "nearest_other_dataset": nearest,
    }  # fmt: skip
    js = out / "prototype_similarity.json"
    js.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [png, js]


def _first_images(instances: Sequence[Any], num_images: int) -> list[list[int]]:
    """Instance indices grouped by image, for the first ``num_images`` images in file order."""
    groups: dict[str, list[int]] = {}
    for i, inst in enumerate(instances):
        if inst.image_file not in groups:
            if len(groups) == num_images:
                continue
            groups[inst.image_file] = []
        groups[inst.image_file].append(i)
    return list(groups.values())


def visualize_predictions(
    dataset: str | Any,
    out_dir: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    data_root: str | os.PathLike[str] = "data",
    split: str = "val",
    num_images: int = 6,
    gt: bool = False,
    head: int | None = None,
    expert: int | None = None,
    device: str | torch.device | None = "cpu",
    batch_size: int = 32,
    score_thr: float = 0.3,
    decode_backend: str = "auto",
    log: Callable[[str], None] | None = None,
) -> Path:
    """Draw the keypoints of the first ``num_images`` images of a split into
    ``out_dir/overlays_<dataset>.png``.

    ``dataset``: a dataset name read from ``data_root``'s official layout (``split``), or a
    :class:`posebh.datasets.DatasetSpec`. Boxes are always the ground-truth ones (every
    instance of the drawn images). ``gt=True`` draws the annotations (keypoint score = the
    visibility flag) and needs no model; otherwise ``model`` predicts through
    :func:`posebh.evaluate.predict` under the dataset's official evaluation protocol (flip
    test, decoding), with ``head`` / ``expert`` defaulting to the dataset's. Keypoints scoring
    ≤ ``score_thr`` are not drawn. Returns the written path.
    """
    if num_images < 1:
        raise ValueError(f"--num-images must be ≥ 1, got {num_images}")
    if not gt and model is None:
        raise ValueError("pass a model (--checkpoint CKPT), or gt=True (--gt) for the annotations")
    if isinstance(dataset, DatasetSpec):
        spec = dataclasses.replace(dataset, use_gt_bbox=True, det_file=None)
    else:
        spec = default_spec(get_skeleton(dataset).name, split, data_root, use_gt_bbox=True)
    name = get_skeleton(spec.name).name
    instances, summary = read_dataset(spec)
    if log:
        log(f"{name} ({spec.split or split}): {summary}")
    if not instances:
        raise ValueError(f"{spec.ann_file}: no instances to draw ({summary})")
    groups = _first_images(instances, num_images)
    chosen = [instances[i] for g in groups for i in g]
    # Images first: a wrong --data-root / --img-prefix then fails here with the file named,
    # before any model time is spent.
    images = []
    for g in groups:
        image_file = instances[g[0]].image_file
        try:
            images.append(load_image(image_file))
        except OSError as err:
            raise FileNotFoundError(
                f"cannot read image {image_file} listed in {spec.ann_file}: {err} (check "
                "--data-root, or --img-prefix with --ann-file)"
            ) from err
    if gt:
        preds = ground_truth_predictions(chosen)
    else:
        assert model is not None
        preds = predict(
            model,
            chosen,
            default_protocol(name),
            head=head,
            expert=expert,
            batch_size=batch_size,
            device=device,
            progress=False,
            decode_backend=decode_backend,
        )
    # predict keeps the input order (no shuffling): prediction r belongs to chosen[r].
    k = get_skeleton(name).num_keypoints
    flat = np.stack([np.asarray(p["keypoints"], dtype=np.float64) for p in preds])
    keypoints, titles = [], []
    r = 0
    for g in groups:
        keypoints.append(flat[r : r + len(g)].reshape(len(g), k, 3))
        titles.append(f"{Path(instances[g[0]].image_file).name} ({len(g)} inst.)")
        r += len(g)
    what = "ground truth" if gt else "predictions"
    return plot_keypoint_overlays(
        images,
        keypoints,
        name,
        Path(out_dir) / f"overlays_{name}.png",
        titles=titles,
        score_thr=score_thr,
        title=f"{name} {spec.split or split}: {what} (GT boxes, score > {score_thr:g})",
    )
