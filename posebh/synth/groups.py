"""Writers of every SynthPose dataset split in its real on-disk format, at the paths
``posebh.datasets.default_spec(name, split, out_dir)`` returns.

A *group* is one image source: ``coco`` (whose images carry both the COCO and the
COCO-WholeBody annotations, plus the person detections of val, as the real data),
``aic``, ``mpii``, ``ochuman``, ``pw3d``, ``ap10k``, ``apt36k`` and ``interhand2d``.
Each split of a group is built image by image (:func:`build_split`); every image draws from
its own ``numpy.random.Generator`` seeded by (seed, preset, group, split, index[, attempt]).

Annotation conventions (what each reader path sees):

* COCO / WholeBody: ``bbox`` = box of the visible pixels, ``area`` = the *segment area*,
  the pixels an annotator's outline polygon of the visible pixels encloses (the visible mask
  closed with a disc of 5 % of the box height, holes filled:
  :func:`posebh.synth.scene.segment_area`; ≈ 1.15× the raw pixel count, area / box ≈ 0.42 —
  real COCO's ≈ 0.53 is the factor xtcocotools uses without areas; the bare pixel count of
  these slim figures, ≈ 0.37, made OKS ~1.4× stricter than COCO's sigmas are calibrated
  for), ``iscrowd`` 0; people under 32 px tall (or without any labelled keypoint) are
  annotated with all-zero keypoints and ``num_keypoints`` 0 (the reader skips them, as real
  COCO's); WholeBody adds the v1.0 part fields (:func:`posebh.synth.labels.wholebody_parts`);
  ``segmentation`` is the bbox polygon.
* AIC: no ``area``, no ``iscrowd`` (as the converted AIC files); ``bbox`` = full (amodal) box.
* MPII: HRNet JSON list (1-based ``joints``, ``joints_vis`` = labelled, centre/scale whose
  0.x adjustment lands on the person's box) + ``mpii_gt_val.mat`` with head boxes.
* OCHuman, AP-10K, APT-36K: amodal ``bbox`` with ``area`` = w·h (as in those files).
* 3DPW: every joint's projection with v = 1 when inside the image, 0 otherwise (the
  preprocess_3dpw.py convention), no ``area``; images in per-sequence folders.
* InterHand2.6M: data / camera / joint_3d JSONs of multi-view captures (world mm).

A scene in which two annotated figures would suppress each other in the official OKS-NMS
(OKS > 0.85 with the padded-box areas the evaluation uses) is redrawn, so that feeding the
ground truth back as predictions scores exactly 1.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from posebh.datasets import box_to_center_scale, clean_bbox, default_spec
from posebh.evaluation.mpii import MPII_MAT_JOINTS
from posebh.evaluation.nms import oks_iou
from posebh.skeletons import get_skeleton

from .animal import SPECIES
from .crossgt import CROSS_GT_DIR, cross_gt_info
from .human import HEAD_RADIUS, human_tree
from .interhand import IMAGE_SIZE as IH_SIZE
from .interhand import make_hand_scene, sample_cameras, sample_frame
from .labels import (
    WHOLEBODY_FIELDS,
    labelled_keypoints,
    node_indices,
    skeleton_keypoints,
    wholebody_parts,
)
from .scene import STYLES, Figure, Scene, make_scene

__all__ = ["GROUPS", "GROUP_DATASETS", "NMS_SAFETY_OKS", "SplitResult", "build_split", "seeded"]

#: The splits each group writes (the layout's other splits map onto these files).
GROUPS: dict[str, tuple[str, ...]] = {
    "coco": ("train", "val"),
    "aic": ("train", "val"),
    "mpii": ("train", "val"),
    "ochuman": ("val", "test"),
    "pw3d": ("train", "test"),
    "ap10k": ("train", "val", "test"),
    "apt36k": ("train", "val", "test"),
    "interhand2d": ("train", "val", "test"),
}
#: The datasets whose annotations each group writes.
GROUP_DATASETS: dict[str, tuple[str, ...]] = {g: (g,) for g in GROUPS} | {
    "coco": ("coco", "coco_wholebody")
}
#: Largest OKS (padded-box areas, all K keypoints) allowed between two annotated figures.
NMS_SAFETY_OKS = 0.85
MAX_ATTEMPTS = 40

_INFO_DATE = "2025/06/01"  # fixed: files must not depend on when they were generated

# The ``skeleton`` link lists of the real files' categories (1-based keypoint pairs).
_COCO_LINKS = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
    [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]  # fmt: skip
_AIC_LINKS = [
    [3, 2], [2, 1], [1, 14], [14, 4], [4, 5], [5, 6], [9, 8], [8, 7], [7, 10], [10, 11],
    [11, 12], [13, 14], [1, 7], [4, 10],
]  # fmt: skip
_AP10K_LINKS = [
    [1, 2], [1, 3], [2, 3], [3, 4], [4, 5], [4, 6], [6, 7], [7, 8], [4, 9], [9, 10], [10, 11],
    [5, 12], [12, 13], [13, 14], [5, 15], [15, 16], [16, 17],
]  # fmt: skip
_SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
_AP10K_NAMES = [
    "left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow",
    "left_front_paw", "right_shoulder", "right_elbow", "right_front_paw", "left_hip",
    "left_knee", "left_back_paw", "right_hip", "right_knee", "right_back_paw",
]  # fmt: skip


def seeded(seed: int, *keys: object) -> np.random.Generator:
    """A Generator for (seed, keys...): strings enter through their CRC-32, so the stream is a
    pure function of the key and independent of Python's hash randomisation."""
    ints = [int(seed)] + [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(ints))


@dataclass
class SplitResult:
    """What one split wrote: files (path relative to the output root → (sha256, bytes)),
    per-dataset counts and the cross-GT figures."""

    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


class _Writer:
    """Writes files under ``root`` and records their hashes."""

    def __init__(self, root: Path, result: SplitResult) -> None:
        self.root = root
        self.result = result

    def bytes(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.result.files[rel] = (hashlib.sha256(data).hexdigest(), len(data))

    def json(self, rel: str, obj: Any) -> None:
        self.bytes(rel, json.dumps(obj, separators=(",", ":")).encode())

    def rel(self, path: str) -> str:
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()


def _info(dataset: str, split: str, preset: str, seed: int, version: str) -> dict[str, Any]:
    return {
        "description": f"SynthPose {dataset}-like {split} split "
        f"(posebh.synth {version}, preset {preset}, seed {seed})",
        "version": version,
        "year": 2025,
        "date_created": _INFO_DATE,
    }


def _person_category(skeleton: str) -> list[dict[str, Any]]:
    sk = get_skeleton(skeleton)
    links = {
        "coco": _COCO_LINKS,
        "ochuman": _COCO_LINKS,
        "coco_wholebody": _COCO_LINKS,
        "aic": _AIC_LINKS,
        "pw3d": [[c + 1, p + 1] for c, p in enumerate(_SMPL_PARENTS) if p >= 0],
    }[sk.name]
    names = list(sk.keypoint_names[:17]) if sk.name == "coco_wholebody" else list(sk.keypoint_names)
    return [
        {
            "supercategory": "person",
            "id": 1,
            "name": "person",
            "keypoints": names,
            "skeleton": links,
        }
    ]


def _animal_categories() -> list[dict[str, Any]]:
    return [
        {
            "id": s.category_id,
            "name": s.name,
            "supercategory": s.supercategory,
            "keypoints": _AP10K_NAMES,
            "skeleton": _AP10K_LINKS,
        }
        for s in SPECIES
    ]


def _flat(kp: np.ndarray) -> list[float]:
    """[K, 3] → the flat JSON list; visibility as an int, coordinates as rounded floats."""
    out: list[float] = []
    for x, y, v in kp.tolist():
        out += [round(x, 2), round(y, 2), int(v)]
    return out


def _wh_box(box: tuple[float, float, float, float]) -> list[float]:
    return [round(float(v), 2) for v in box]


def _reader_area(box: tuple[float, float, float, float], width: int, height: int) -> float:
    """prod(scale·200) of the instance the reader makes of ``box`` (the OKS-NMS area)."""
    cleaned = clean_bbox(box, width, height)
    if cleaned is None:
        return 0.0
    _, scale = box_to_center_scale(cleaned)
    return float(np.prod(scale.astype(np.float64) * 200.0))


def _nms_safe(
    items: list[tuple[np.ndarray, tuple[float, float, float, float]]],
    skeleton: str,
    width: int,
    height: int,
) -> bool:
    """True when no two annotated instances have OKS > :data:`NMS_SAFETY_OKS` (the OKS-NMS
    of the evaluation, which uses every keypoint including unlabelled ones at their written
    coordinates)."""
    if len(items) < 2:
        return True
    sig = get_skeleton(skeleton).sigmas_array()
    kp = [np.asarray(k, dtype=np.float64).reshape(-1, 3) for k, _ in items]
    areas = [_reader_area(b, width, height) for _, b in items]
    for i in range(len(items)):
        others = np.stack([kp[j] for j in range(i + 1, len(items))]) if i + 1 < len(items) else None
        if others is None:
            break
        ious = oks_iou(kp[i], others, areas[i], np.asarray(areas[i + 1 :]), sig)
        if np.any(ious > NMS_SAFETY_OKS):
            return False
    return True


def _box_ok(box: tuple[float, float, float, float] | None, width: int, height: int) -> bool:
    return (
        box is not None
        and box[2] >= 2
        and box[3] >= 2
        and clean_bbox(box, width, height) is not None
    )


# ------------------------------------------------------------------------------------------
# Per-figure annotation decisions (shared with the cross GT)
# ------------------------------------------------------------------------------------------


def annotation_box(
    fig: Figure, dataset: str
) -> tuple[tuple[float, float, float, float], float | None]:
    """(bbox, area or None) of ``fig`` as ``dataset``'s annotators draw it (module docstring)."""
    name = get_skeleton(dataset).name
    if name in ("coco", "coco_wholebody") and fig.visible_box is not None:
        return fig.visible_box, float(fig.segment_area)
    box = fig.amodal_box if fig.kind != "hand" else fig.visible_box or fig.amodal_box
    if name in ("aic", "pw3d"):
        return box, None
    return box, round(box[2] * box[3], 2)


def mpii_head_box(fig: Figure) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) 0-based pixels: the square MPII head box of a person (the
    ``headboxes_src`` of ``mpii_gt_val.mat`` minus the 1-based offset), whose diagonal sets
    PCKh's head size."""
    r = HEAD_RADIUS * fig.scale * fig.px_per_m * 1.05
    cx, cy = (float(v) for v in fig.uv[human_tree().index["head_center"]])
    return (cx - r, cy - r, cx + r, cy + r)


def annotated_in(fig: Figure, dataset: str, kp: np.ndarray, width: int, height: int) -> str:
    """How ``dataset`` annotates ``fig``: "full", "empty" (COCO's keypoint-less small
    people) or "no" (not annotated at all)."""
    name = get_skeleton(dataset).name
    box, _ = annotation_box(fig, name)
    if fig.visible_area == 0 or not _box_ok(box, width, height):
        return "no"
    labelled = int(np.count_nonzero(kp[:, 2] > 0))
    if name in ("coco", "coco_wholebody"):
        body = kp[:17] if name == "coco_wholebody" else kp
        return "full" if fig.height_px >= 32 and np.count_nonzero(body[:, 2] > 0) > 0 else "empty"
    if name == "aic":
        return "full" if fig.height_px >= 32 and labelled > 0 else "no"
    if name == "mpii":
        return "full" if fig.height_px >= 48 and labelled >= 4 else "no"
    return "full" if labelled > 0 else "no"


# ------------------------------------------------------------------------------------------
# Split builders
# ------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    root: Path
    preset: str
    seed: int
    version: str
    tick: Callable[[], None]
    redrawn: int = 0
    fallbacks: int = 0


def _scene_for(
    ctx: _Ctx, group: str, split: str, index: int, check: Callable[[Scene], bool]
) -> Scene:
    """The image's scene: redrawn (attempt 1, 2, …) until ``check`` accepts it."""
    style = STYLES[group]
    seq_key = None
    if style.sequence > 1:
        seq_key = (ctx.seed, ctx.preset, group, split, "sequence", index // style.sequence)
    scene = None
    for attempt in range(MAX_ATTEMPTS):
        rng = seeded(ctx.seed, ctx.preset, group, split, index, attempt)
        seq_rng = seeded(*seq_key) if seq_key is not None and attempt == 0 else None
        scene = make_scene(rng, style, seq_rng)
        if check(scene):
            ctx.redrawn += attempt > 0
            return scene
    # Give up on the crowded layout: keep only the first figure (always NMS-safe); the other
    # figures stay in the image unannotated, like the people real annotators skip.
    assert scene is not None
    ctx.fallbacks += 1
    scene.figures = scene.figures[:1]
    return scene


def _cross_entry(
    fig: Figure, image_id: Any, fid: int, source_ann: Any, targets: tuple[str, ...]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": fid,
        "image_id": image_id,
        "source_ann_id": source_ann,
        "kind": fig.kind,
        "category_id": fig.category_id,
        "visible_bbox": _wh_box(fig.visible_box) if fig.visible_box else None,
        "visible_area": fig.visible_area,
        "segment_area": fig.segment_area,
        "amodal_bbox": _wh_box(fig.amodal_box),
        "px_per_m": round(fig.px_per_m, 4),
        "scale": round(fig.scale, 4),
        "height_px": round(fig.height_px, 2),
        "keypoints": {},
    }
    if fig.kind == "hand":
        entry["hand"] = fig.extra["hand"]
    if fig.kind == "human":
        entry["head_box"] = [round(v, 4) for v in mpii_head_box(fig)]
    for t in targets:
        kp = skeleton_keypoints(fig, t)
        entry["keypoints"][t] = _flat(kp)
        if t == "coco_wholebody":
            parts = wholebody_parts(fig, labelled_keypoints(fig, "coco_wholebody"))
            entry["wholebody_valid"] = parts["valid"]
            entry["wholebody_boxes"] = {k: list(v) for k, v in parts["boxes"].items()}
    return entry


_TARGETS = {
    "human": ("coco", "aic", "mpii", "coco_wholebody", "pw3d"),
    "quadruped": ("ap10k", "apt36k"),
    "hand": ("interhand2d",),
}


def _decide(
    scene: Scene, datasets: tuple[str, ...]
) -> dict[int, dict[str, tuple[str, np.ndarray]]]:
    """figure index → dataset → (:func:`annotated_in` verdict, keypoints [K, 3])."""
    out: dict[int, dict[str, tuple[str, np.ndarray]]] = {}
    for fig in scene.figures:
        out[fig.index] = {}
        for d in datasets:
            kp = skeleton_keypoints(fig, d)
            out[fig.index][d] = (annotated_in(fig, d, kp, scene.width, scene.height), kp)
    return out


def _nms_safe_scene(scene: Scene, datasets: tuple[str, ...]) -> bool:
    """No two figures annotated in any of ``datasets`` would suppress each other in OKS-NMS."""
    decided = _decide(scene, datasets)
    for d in datasets:
        items = []
        for fig in scene.figures:
            how, kp = decided[fig.index][d]
            if how == "full":
                if d == "pw3d":
                    kp = _pw3d_keypoints(fig, kp)
                items.append((kp, annotation_box(fig, d)[0]))
        if not _nms_safe(items, d, scene.width, scene.height):
            return False
    return True


def _coco_style_split(ctx: _Ctx, group: str, split: str, n: int, res: SplitResult) -> None:
    """COCO, COCO-WholeBody (+ detections), AIC, OCHuman, 3DPW, AP-10K, APT-36K."""
    datasets = GROUP_DATASETS[group]
    specs = {d: default_spec(d, split, ctx.root) for d in datasets}
    w = _Writer(ctx.root, res)
    primary = datasets[0]
    kind = STYLES[group].kind
    image_base = {"train": 0, "val": 1_000_000, "test": 2_000_000}[split]
    images: list[dict[str, Any]] = []
    anns: dict[str, list[dict[str, Any]]] = {d: [] for d in datasets}
    dets: list[dict[str, Any]] = []
    cross_images: list[dict[str, Any]] = []
    cross_figs: list[dict[str, Any]] = []
    expected = dict.fromkeys(datasets, 0)
    next_ann = 1
    next_free = 10_000_000
    for i in range(n):
        scene = _scene_for(ctx, group, split, i, lambda sc: _nms_safe_scene(sc, datasets))
        decided = _decide(scene, datasets)
        image_id = image_base + i + 1
        file_name = _file_name(group, split, i, image_id, STYLES[group].sequence)
        w.bytes(w.rel(str(Path(specs[primary].img_prefix) / file_name)), scene.jpeg)
        img = {"file_name": file_name, "height": scene.height, "width": scene.width, "id": image_id}
        images.append(img)
        cross_images.append(dict(img))
        for fig in scene.figures:
            source_ann = None
            for d in datasets:
                how, kp = decided[fig.index][d]
                if how == "no":
                    continue
                if how == "empty":
                    kp = np.zeros_like(kp)
                ann = _coco_annotation(fig, d, kp, image_id, next_ann, scene)
                anns[d].append(ann)
                expected[d] += how == "full"
                source_ann = next_ann
            if source_ann is not None:
                fid = source_ann
                next_ann += 1
            else:
                fid = next_free
                next_free += 1
            entry = _cross_entry(fig, image_id, fid, source_ann, _TARGETS[kind])
            entry["annotated"] = decided[fig.index][primary][0] == "full"
            cross_figs.append(entry)
        if group == "coco" and split == "val":
            dets.extend(
                _detections(
                    seeded(ctx.seed, ctx.preset, "coco-detections", split, i), scene, image_id
                )
            )
        ctx.tick()
    for d in datasets:
        cats = _animal_categories() if kind == "quadruped" else _person_category(d)
        data = {
            "info": _info(d, split, ctx.preset, ctx.seed, ctx.version),
            "licenses": [],
            "categories": cats,
            "images": images,
            "annotations": anns[d],
        }
        w.json(w.rel(specs[d].ann_file), data)
        res.counts[d] = {
            "images": len(images),
            "annotations": len(anns[d]),
            "instances": expected[d],
            "figures": len(cross_figs),
        }
    if dets:
        det_spec = default_spec("coco", split, ctx.root, use_gt_bbox=False)
        assert det_spec.det_file is not None
        w.json(w.rel(det_spec.det_file), dets)
        res.counts["coco"]["detections"] = len(dets)
    _write_cross(w, ctx, group, split, kind, cross_images, cross_figs)


def _pw3d_keypoints(fig: Figure, kp: np.ndarray) -> np.ndarray:
    """3DPW keypoints: every joint at its projection, v = 1 inside the image else 0."""
    idx = node_indices(fig, "pw3d")
    out = np.zeros((len(idx), 3))
    out[:, :2] = np.round(fig.uv[idx], 2)
    out[:, 2] = (kp[:, 2] > 0).astype(np.float64)
    return out


def _coco_annotation(
    fig: Figure, dataset: str, kp: np.ndarray, image_id: int, ann_id: int, scene: Scene
) -> dict[str, Any]:
    name = get_skeleton(dataset).name
    box, area = annotation_box(fig, name)
    if name == "pw3d" and kp.any():
        kp = _pw3d_keypoints(fig, kp)
    num = int(np.count_nonzero(kp[:, 2] > 0))
    if name == "aic":
        return {
            "bbox": _wh_box(box),
            "keypoints": _flat(kp),
            "num_keypoints": num,
            "image_id": image_id,
            "category_id": 1,
            "id": ann_id,
        }
    ann: dict[str, Any] = {}
    if name in ("coco", "coco_wholebody"):
        x, y, bw, bh = _wh_box(box)
        ann["segmentation"] = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
    if area is not None:
        ann["area"] = area
    ann.update(
        {
            "iscrowd": 0,
            "image_id": image_id,
            "bbox": _wh_box(box),
            "category_id": fig.category_id,
            "id": ann_id,
            "num_keypoints": num,
        }
    )
    if name == "coco_wholebody":
        parts = (
            wholebody_parts(fig, labelled_keypoints(fig, "coco_wholebody"))
            if kp.any()
            else {"valid": dict.fromkeys(WHOLEBODY_FIELDS, False), "boxes": {}}
        )
        ann["num_keypoints"] = int(np.count_nonzero(kp[:17, 2] > 0))
        for part, (lo, hi) in get_skeleton("coco_wholebody").parts.items():
            ann[WHOLEBODY_FIELDS[part]] = _flat(kp[lo:hi])
            if part != "body":
                ann[f"{part}_valid"] = bool(parts["valid"].get(part, False))
            if part in ("face", "lefthand", "righthand"):
                ann[f"{part}_box"] = list(parts["boxes"].get(part, (0.0, 0.0, 0.0, 0.0)))
    else:
        ann["keypoints"] = _flat(kp)
    return ann


def _detections(rng: np.random.Generator, scene: Scene, image_id: int) -> list[dict[str, Any]]:
    """Person detections in the COCO results format, like a real detector's: most people
    found with jittered boxes and high scores, small ones less reliably, a few duplicates and
    false positives with low scores; sorted by descending score."""
    out = []
    w, h = scene.width, scene.height
    for fig in scene.figures:
        if fig.visible_box is None:
            continue
        small = fig.height_px < 40
        if rng.random() > (0.7 if small else 0.97):
            continue
        for dup in range(1 + int(rng.random() < 0.12)):
            x, y, bw, bh = fig.visible_box
            sx, sy = np.exp(rng.normal(0, 0.06, 2))
            cx = x + bw / 2 + rng.normal(0, 0.04) * bw
            cy = y + bh / 2 + rng.normal(0, 0.04) * bh
            nw, nh = bw * sx, bh * sy
            score = rng.beta(8, 1.5) * (0.6 if small else 1.0) * (0.5 if dup else 1.0)
            out.append(_det(image_id, cx - nw / 2, cy - nh / 2, nw, nh, score, w, h))
    for _ in range(int(rng.poisson(0.7))):
        bw, bh = rng.uniform(10, w / 3), rng.uniform(20, h / 2)
        out.append(
            _det(
                image_id,
                rng.uniform(0, w - bw),
                rng.uniform(0, h - bh),
                bw,
                bh,
                rng.uniform(0.02, 0.5),
                w,
                h,
            )
        )
    out.sort(key=lambda d: -d["score"])
    return out


def _det(
    image_id: int, x: float, y: float, bw: float, bh: float, score: float, w: int, h: int
) -> dict[str, Any]:
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(w - 1.0, x + bw), min(h - 1.0, y + bh)
    return {
        "bbox": [
            round(x0, 3),
            round(y0, 3),
            round(max(1.0, x1 - x0), 3),
            round(max(1.0, y1 - y0), 3),
        ],
        "category_id": 1,
        "image_id": image_id,
        "score": round(float(score), 6),
    }


def _file_name(group: str, split: str, i: int, image_id: int, sequence: int) -> str:
    if group == "aic":
        return hashlib.sha1(f"synthpose/aic/{split}/{i}".encode()).hexdigest() + ".jpg"
    if group == "pw3d":
        seq = ("outdoors" if split == "train" else "downtown") + f"_synth_{i // sequence:02d}"
        return f"{seq}/image_{i % sequence:05d}.jpg"
    if group == "apt36k":
        return f"clip_{split}_{i // sequence:04d}/{i % sequence:04d}.jpg"
    if group == "ochuman":
        return f"{image_id:06d}.jpg"
    return f"{image_id:012d}.jpg"


def _mpii_split(ctx: _Ctx, group: str, split: str, n: int, res: SplitResult) -> None:
    """MPII: the HRNet JSON list, and for val the ``mpii_gt_val.mat`` PCKh reads."""
    spec = default_spec("mpii", split, ctx.root)
    w = _Writer(ctx.root, res)
    records: list[dict[str, Any]] = []
    heads: list[np.ndarray] = []
    cross_images: list[dict[str, Any]] = []
    cross_figs: list[dict[str, Any]] = []
    base = 100_000_000 if split == "train" else 200_000_000
    next_free = 1_000_000
    for i in range(n):
        scene = _scene_for(ctx, group, split, i, lambda s: True)
        name = f"{base + i:09d}.jpg"
        w.bytes(w.rel(str(Path(spec.img_prefix) / name)), scene.jpeg)
        cross_images.append(
            {"file_name": name, "height": scene.height, "width": scene.width, "id": name}
        )
        for fig in scene.figures:
            kp = skeleton_keypoints(fig, "mpii")
            how = annotated_in(fig, "mpii", kp, scene.width, scene.height)
            if how == "full":
                x, y, bw, bh = fig.amodal_box
                s = max(bw, bh) / 200.0
                lab = kp[:, 2] > 0
                joints = np.where(lab[:, None], kp[:, :2] + 1.0, -1.0)
                records.append(
                    {
                        "joints_vis": [int(v) for v in lab],
                        "joints": [[round(float(a), 2), round(float(b), 2)] for a, b in joints],
                        "image": name,
                        "scale": round(s, 6),
                        # 1-based centre, raised by 15·s so that the 0.x loader's +15·s lands
                        # on the box centre.
                        "center": [round(x + bw / 2 + 1.0, 2), round(y + bh / 2 + 1.0 - 15 * s, 2)],
                    }
                )
                heads.append(np.asarray(mpii_head_box(fig)).reshape(2, 2) + 1.0)
                fid = len(records) - 1
            else:
                fid = next_free
                next_free += 1
            entry = _cross_entry(fig, name, fid, fid if how == "full" else None, _TARGETS["human"])
            entry["annotated"] = how == "full"
            cross_figs.append(entry)
        ctx.tick()
    w.json(w.rel(spec.ann_file), records)
    res.counts["mpii"] = {
        "images": n,
        "annotations": len(records),
        "instances": len(records),
        "figures": len(cross_figs),
    }
    if split == "val":
        import io

        from scipy.io import savemat

        joints = np.array([[j for j in r["joints"]] for r in records], dtype=np.float64).reshape(
            -1, 16, 2
        )
        vis = np.array([r["joints_vis"] for r in records], dtype=bool).reshape(-1, 16)
        mat = {
            "dataset_joints": np.array(MPII_MAT_JOINTS, dtype=object).reshape(1, 16),
            "jnt_missing": (~vis).T.astype(np.uint8),
            "pos_gt_src": np.transpose(joints, (1, 2, 0)),
            "headboxes_src": np.transpose(
                np.stack(heads) if heads else np.zeros((0, 2, 2)), (1, 2, 0)
            ),
        }
        buf = io.BytesIO()
        savemat(buf, mat, do_compression=False)
        assert spec.gt_file is not None
        w.bytes(w.rel(spec.gt_file), _strip_mat_header_time(buf.getvalue()))
    _write_cross(w, ctx, group, split, "human", cross_images, cross_figs)


def _strip_mat_header_time(data: bytes) -> bytes:
    """scipy writes the creation time into the 116-byte MAT-file header text; a fixed header
    keeps the file byte-reproducible."""
    header = b"MATLAB 5.0 MAT-file, written by posebh.synth (SynthPose)"
    return header.ljust(116, b" ") + data[116:]


def _interhand_split(ctx: _Ctx, group: str, split: str, n: int, res: SplitResult) -> None:
    """InterHand2.6M: data / camera / joint_3d JSONs; 4 cameras per frame, 10 frames per
    capture."""
    spec = default_spec("interhand2d", split, ctx.root)
    w = _Writer(ctx.root, res)
    n_cams, frames_per_capture = 4, 10
    cap_base = {"train": 0, "val": 100, "test": 200}[split]
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    cameras: dict[str, Any] = {}
    joints: dict[str, Any] = {}
    cross_figs: list[dict[str, Any]] = []
    kept = 0
    frame = None
    for i in range(n):
        f_idx, cam_k = divmod(i, n_cams)
        capture = cap_base + f_idx // frames_per_capture
        cap = str(capture)
        if cap not in cameras:
            cams = sample_cameras(
                seeded(ctx.seed, ctx.preset, group, split, "capture", capture),
                n_cams,
                400000 + 100 * capture,
            )
            cameras[cap] = {
                "campos": {c.name: [round(float(v), 4) for v in c.campos] for c in cams},
                "camrot": {
                    c.name: [[round(float(v), 6) for v in row] for row in c.camrot] for c in cams
                },
                "focal": {c.name: [round(float(v), 4) for v in c.focal] for c in cams},
                "princpt": {c.name: [round(float(v), 4) for v in c.princpt] for c in cams},
            }
            cam_objs = cams
        frame_idx = 1000 * capture + f_idx % frames_per_capture
        if cam_k == 0 or frame is None:
            frame = sample_frame(seeded(ctx.seed, ctx.preset, group, split, "frame", f_idx))
            frame.world = np.round(frame.world, 3)
            joints.setdefault(cap, {})[str(frame_idx)] = {
                "world_coord": [[float(v) for v in row] for row in frame.world],
                "joint_valid": [[bool(frame.present[j // 21])] for j in range(42)],
                "hand_type": frame.hand_type,
                "hand_type_valid": True,
            }
        cam = cam_objs[cam_k]
        # Use the written (rounded) camera so that rendering and reader agree exactly.
        cam.campos = np.array(cameras[cap]["campos"][cam.name])
        cam.camrot = np.array(cameras[cap]["camrot"][cam.name])
        cam.focal = np.array(cameras[cap]["focal"][cam.name])
        cam.princpt = np.array(cameras[cap]["princpt"][cam.name])
        scene, valid = make_hand_scene(seeded(ctx.seed, ctx.preset, group, split, i), frame, cam)
        image_id = i + 1
        seq_name = f"{capture:04d}_synth_{frame.hand_type}"
        file_name = f"Capture{capture}/{seq_name}/cam{cam.name}/image{frame_idx:05d}.jpg"
        w.bytes(w.rel(str(Path(spec.img_prefix) / file_name)), scene.jpeg)
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": IH_SIZE[0],
                "height": IH_SIZE[1],
                "capture": capture,
                "subject": capture % 10,
                "seq_name": seq_name,
                "camera": cam.name,
                "frame_idx": frame_idx,
            }
        )
        boxes = [f.visible_box for f in scene.figures if f.visible_box and f.visible_box[2] > 0]
        if boxes:
            x0 = min(b[0] for b in boxes)
            y0 = min(b[1] for b in boxes)
            x1 = max(b[0] + b[2] for b in boxes)
            y1 = max(b[1] + b[3] for b in boxes)
            bbox = [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
        else:
            bbox = [0.0, 0.0, 0.0, 0.0]
        anns.append(
            {
                "id": image_id,
                "image_id": image_id,
                "bbox": bbox,
                "joint_valid": [[int(v)] for v in valid],
                "hand_type": frame.hand_type,
                "hand_type_valid": 1,
            }
        )
        for fig in scene.figures:
            k = 0 if fig.extra["hand"] == "right" else 1
            hv = valid[21 * k : 21 * (k + 1)]
            ok = bool(hv[-1]) and int(hv.sum()) > 11  # the reader's root gating and > 11 rule
            kept += ok
            entry = _cross_entry(
                fig, image_id, 2 * image_id + k, image_id if ok else None, ("interhand2d",)
            )
            entry["annotated"] = ok
            cross_figs.append(entry)
        ctx.tick()
    w.json(w.rel(spec.ann_file), {"images": images, "annotations": anns})
    assert spec.camera_file is not None and spec.joint_file is not None
    w.json(w.rel(spec.camera_file), cameras)
    w.json(w.rel(spec.joint_file), joints)
    res.counts["interhand2d"] = {
        "images": n,
        "annotations": 2 * n,
        "instances": kept,
        "figures": len(cross_figs),
    }
    cross_images = [
        {"file_name": im["file_name"], "height": im["height"], "width": im["width"], "id": im["id"]}
        for im in images
    ]
    _write_cross(w, ctx, group, split, "hand", cross_images, cross_figs)


def _write_cross(
    w: _Writer,
    ctx: _Ctx,
    group: str,
    split: str,
    kind: str,
    images: list[dict[str, Any]],
    figures: list[dict[str, Any]],
) -> None:
    data = {
        "info": cross_gt_info(group, split, kind, ctx.preset, ctx.seed, ctx.version),
        "images": images,
        "figures": figures,
    }
    w.json(f"{CROSS_GT_DIR}/{group}_{split}.json", data)


def build_split(
    root: Path,
    group: str,
    split: str,
    n: int,
    *,
    preset: str,
    seed: int,
    version: str,
    tick: Callable[[], None],
) -> SplitResult:
    """Generate ``n`` images of ``group``/``split`` under ``root``; ``tick`` is called once per
    image (progress)."""
    ctx = _Ctx(root, preset, seed, version, tick)
    res = SplitResult()
    if group == "mpii":
        _mpii_split(ctx, group, split, n, res)
    elif group == "interhand2d":
        _interhand_split(ctx, group, split, n, res)
    else:
        _coco_style_split(ctx, group, split, n, res)
    for c in res.counts.values():
        c["redrawn"] = ctx.redrawn
        c["fallbacks"] = ctx.fallbacks
    return res
