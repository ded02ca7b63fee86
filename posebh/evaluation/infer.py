"""Keypoints on one's own images (``posebh infer``): images + boxes → :func:`predict` → COCO
keypoint results, optionally drawn.

The boxes come from a COCO detection-results file (the format of the official person
detections: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``) or, without
one, the whole image is one box.  Each box becomes an :class:`~posebh.datasets.Instance`
exactly as the evaluation's detection reader builds it (raw box → centre/scale by
:func:`~posebh.datasets.box_to_center_scale` with the input aspect ratio and the dataset's
padding; ``category_id == 1`` only; ``score >= det_bbox_thr``), and :func:`predict` runs the
dataset's official evaluation protocol (flip test, decode) on them, so a box gives the
keypoints ``posebh eval --det-file`` gives it.  The instance score is rescored as the
evaluation does (box score × mean keypoint score above ``vis_thr``); the protocol's OKS-NMS
is applied only on request (``nms=True``): by default every box keeps its keypoints.

Matching a detection's ``image_id`` to an input image (in this order):

1. ``images_json`` (a COCO file with an ``images`` list, e.g. the annotation or image-info
   file the detections were made on): ``id`` → ``file_name``, matched to an input image by
   its path relative to the input folder, else by its file name;
2. else the file stem: an image whose stem is the id (``000000000785.jpg`` is id 785, as
   COCO names its files; a string id must equal the stem).

A detection whose image id cannot be matched is an error (file, record, id and the fix); with
``images_json``, the boxes of images it lists that are not among the inputs are skipped (one
image with the whole val2017 detection file). An input image without a box gets no keypoints.
"""

from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posebh.datasets import Instance, box_to_center_scale
from posebh.datasets.base import DEFAULT_ASPECT_RATIO, DatasetError, load_json
from posebh.evaluation.nms import rescore_and_nms
from posebh.evaluation.predict import default_protocol, predict
from posebh.image_io import load_image
from posebh.skeletons import get_skeleton

__all__ = [
    "IMAGE_SUFFIXES",
    "InferResult",
    "box_padding",
    "find_images",
    "infer",
    "infer_instances",
]

#: Files a folder input contributes (case-insensitive suffixes).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def box_padding(dataset: str) -> float:
    """The box padding of ``dataset``'s evaluation reader: 1.5 for InterHand2.6M
    (:func:`~posebh.datasets.read_interhand2d`), 1.25 for every COCO-format reader (and for
    MPII, which has no boxes, the COCO value)."""
    return 1.5 if get_skeleton(dataset).name == "interhand2d" else 1.25


def find_images(spec: str | os.PathLike[str]) -> tuple[list[Path], Path | None]:
    """The images of ``spec`` (a file, a folder: its image files, not recursive, or a glob:
    ``**`` recursive), sorted; and the folder they are relative to (None for one file)."""
    path = Path(spec)
    if path.is_file():
        return [path], None
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FileNotFoundError(
                f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder. "
                "Fix: pass an image, a folder of images or a glob such as 'photos/*.png'."
            )
        return found, path
    matched = sorted(Path(p) for p in glob.glob(str(spec), recursive=True))
    files = [p for p in matched if p.is_file()]
    if not files:
        raise FileNotFoundError(
            f"{spec}: no such image file or folder, and no file matches it as a glob. "
            "Fix: pass an existing image, a folder of images or a glob such as 'photos/*.png'."
        )
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    return files, root


def _image_id_of(path: Path) -> int | str:
    """COCO's naming: the stem as an int when it is digits (``000000000785`` → 785)."""
    return int(path.stem) if path.stem.isdigit() else path.stem


def _id_to_image(
    images: Sequence[Path], root: Path | None, images_json: str | os.PathLike[str] | None
) -> tuple[dict[Any, Path | None], str]:
    """image id → input image (None: an image ``images_json`` lists that is not an input),
    and the rule that made the mapping (for error messages)."""
    if images_json is None:
        return {_image_id_of(p): p for p in images}, "image_id = the file stem (COCO naming)"
    data = load_json(images_json, "COCO image list")
    records = data.get("images") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise DatasetError(
            f"{images_json}: no 'images' list. Fix: pass a COCO annotation or image-info file "
            "({'images': [{'id', 'file_name'}, ...]}) as --images-json."
        )
    by_relative = {p.relative_to(root).as_posix() if root else p.name: p for p in images}
    by_name: dict[str, Path] = {}
    for p in images:
        by_name.setdefault(p.name, p)
    mapping: dict[Any, Path | None] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "id" not in rec or "file_name" not in rec:
            raise DatasetError(
                f"{images_json}: images[{i}] lacks 'id' or 'file_name'. Fix: use a COCO images "
                "list."
            )
        name = str(rec["file_name"])
        mapping[rec["id"]] = by_relative.get(name) or by_name.get(Path(name).name)
    return mapping, f"image_id → file_name through {images_json}"


def _instance(
    dataset: str, image: Path, image_id: Any, bbox: tuple[float, float, float, float],
    score: float, padding: float, det_index: int | None,
) -> Instance:  # fmt: skip
    # The evaluation's detection reader (read_coco_detections) builds the same record.
    center, scale = box_to_center_scale(bbox, DEFAULT_ASPECT_RATIO, padding)
    k = get_skeleton(dataset).num_keypoints
    return Instance(
        dataset=dataset,
        image_file=str(image),
        image_id=image_id,
        ann_id=None,
        category_id=1,
        bbox=bbox,
        center=center,
        scale=scale,
        keypoints=np.zeros((k, 3), dtype=np.float32),
        bbox_score=score,
        area=bbox[2] * bbox[3],
        extras={} if det_index is None else {"det_index": det_index},
    )


def infer_instances(
    images: Sequence[Path],
    dataset: str,
    *,
    root: Path | None = None,
    boxes: str | os.PathLike[str] | None = None,
    images_json: str | os.PathLike[str] | None = None,
    det_bbox_thr: float = 0.0,
) -> list[Instance]:
    """The instances to predict: one per kept detection of ``boxes``, in file order (the
    evaluation's order, so the batches are its batches), or one whole-image box per image."""
    dataset = get_skeleton(dataset).name
    padding = box_padding(dataset)
    if boxes is None:
        out = []
        for path in images:
            h, w = load_image(path).shape[:2]  # after EXIF rotation, as the crop sees it
            box = (0.0, 0.0, float(w), float(h))
            out.append(_instance(dataset, path, _image_id_of(path), box, 1.0, padding, None))
        return out
    mapping, rule = _id_to_image(images, root, images_json)
    dets = load_json(boxes, "detection results")
    if not isinstance(dets, list):
        raise DatasetError(
            f"{boxes}: expected a JSON list of detections ({{image_id, category_id, bbox, "
            "score}}). Fix: use a COCO detection-results file."
        )
    out = []
    for i, det in enumerate(dets):
        where = f"{boxes}: detection [{i}]"
        try:
            image_id, category, score = det["image_id"], det["category_id"], float(det["score"])
            x, y, w, h = (float(v) for v in det["bbox"][:4])
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(
                f"{where} is not {{image_id, category_id, bbox: [x, y, w, h], score}} ({err}). "
                "Fix: use a COCO detection-results file."
            ) from err
        if category != 1 or score < det_bbox_thr:
            continue  # the official reader: person boxes at or above the threshold
        if w < 0 or h < 0 or not (w > 0 or h > 0):
            raise DatasetError(
                f"{where} field 'bbox' = {[x, y, w, h]} has a negative size or is 0×0. "
                "Fix: drop such boxes (or raise --det-bbox-thr above their score)."
            )
        if image_id not in mapping:
            raise DatasetError(
                f"{where} field 'image_id' = {image_id!r} matches none of the "
                f"{len(images)} input images (rule: {rule}). Fix: pass the images the "
                "detections were made on, pass --images-json with the COCO file that maps "
                "their ids to file names (boxes of listed images that are not inputs are "
                "then skipped), or drop that image's boxes from the file."
            )
        image = mapping[image_id]
        if image is None:
            continue  # an image of --images-json the user did not pass
        out.append(_instance(dataset, image, image_id, (x, y, w, h), score, padding, i))
    return out


@dataclass
class InferResult:
    """What :func:`infer` wrote: the COCO records and the files."""

    records: list[dict[str, Any]]
    files: list[Path]
    images: int
    instances: int


def infer(
    model: torch.nn.Module,
    images: str | os.PathLike[str],
    dataset: str,
    out_dir: str | os.PathLike[str],
    *,
    boxes: str | os.PathLike[str] | None = None,
    images_json: str | os.PathLike[str] | None = None,
    det_bbox_thr: float = 0.0,
    nms: bool = False,
    draw: bool = False,
    score_thr: float = 0.3,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    num_workers: int | None = None,
    progress: bool = True,
) -> InferResult:
    """Predict keypoints of every box on ``images`` (file, folder or glob) and write
    ``out_dir/keypoints.json``: COCO keypoint results ``{"image_id", "file_name",
    "category_id", "keypoints": [x, y, s] * K, "score", "bbox"}``, one per box (after the
    protocol's OKS-NMS with ``nms=True``); with ``draw``, ``out_dir/overlays/<stem>.png`` per
    image (keypoints scoring ≤ ``score_thr`` not drawn).  See the module docstring for the
    boxes and their matching."""
    from posebh.plots import plot_keypoint_overlays

    name = get_skeleton(dataset).name
    paths, root = find_images(images)
    instances = infer_instances(
        paths, name, root=root, boxes=boxes, images_json=images_json, det_bbox_thr=det_bbox_thr
    )
    protocol = default_protocol(name)
    preds = predict(
        model, instances, protocol, batch_size=batch_size, device=device,
        num_workers=num_workers, progress=progress,
    ) if instances else []  # fmt: skip
    for p, inst in zip(preds, instances, strict=True):
        p["instance"] = inst  # rescore_and_nms copies the dicts: the box travels along
    per_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for p in preds:
        per_image[p["instance"].image_file].append(p)
    kept = rescore_and_nms(
        per_image,
        get_skeleton(name).sigmas_array(),
        vis_thr=protocol.vis_thr,
        oks_thr=protocol.oks_thr,
        soft=protocol.soft_nms,
        use_nms=nms,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for image_preds in kept.values():
        for p in image_preds:
            inst = p["instance"]
            records.append(
                {
                    "image_id": inst.image_id,
                    "file_name": _shown_name(Path(inst.image_file), root),
                    "category_id": int(inst.category_id),
                    "keypoints": np.asarray(p["keypoints"], dtype=np.float64).reshape(-1).tolist(),
                    "score": float(p["score"]),
                    "bbox": [float(v) for v in inst.bbox],
                }
            )
    result = out / "keypoints.json"
    result.write_text(json.dumps(records) + "\n")
    files = [result]
    if draw:
        k = get_skeleton(name).num_keypoints
        by_file: dict[str, list[np.ndarray]] = defaultdict(list)
        for r in records:
            by_file[r["file_name"]].append(np.asarray(r["keypoints"]).reshape(k, 3))
        for path in paths:
            shown = _shown_name(path, root)
            kpts = by_file.get(shown, [])
            array = np.stack(kpts) if kpts else np.zeros((0, k, 3))
            target = out / "overlays" / f"{Path(shown).with_suffix('').as_posix()}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            title = f"{name}: predictions (score > {score_thr:g})"
            drawn = plot_keypoint_overlays(
                [load_image(path)], [array], name, target, ncols=1, score_thr=score_thr,
                titles=[f"{shown} ({len(kpts)} inst.)"], title=title,
            )  # fmt: skip
            files.append(drawn)
    return InferResult(records, files, len(paths), len(instances))


def _shown_name(path: Path, root: Path | None) -> str:
    return path.relative_to(root).as_posix() if root is not None else path.name
