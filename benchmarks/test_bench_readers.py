"""Annotation readers at COCO size: ``read_coco_keypoints`` / ``read_coco_detections`` against
pycocotools.

Cases (files from :mod:`posebh.synth.coco_scale`, generated once per session in a tmp dir):

- ``keypoints_train``: a COCO-train-size person-keypoints file (118,000 images, 150,000
  persons, 86 MB). ``reference`` is pycocotools ``COCO(file)`` (json.load + index);
  ``columns`` is ``read_coco_keypoints(..., check_images=False)`` (its column path);
  ``per_record`` is the same call with ``posebh.datasets.coco.COLUMN_PATH = False`` (the
  per-record reader, as posebh read every file before: its time and memory for the record).
- ``detections_val``: 104,125 person boxes over the 5,000 images of a COCO-val-size file.
  ``reference`` is ``COCO(gt).loadRes(dets)``; ``columns`` is ``read_coco_detections``.

Targets (issue 15): the keypoint reader at most 1.0× the reference's time and 1.2× its peak
memory. ``extra_info`` holds ``min_ms``, ``reference_min_ms``, ``speedup_vs_reference``
(reference / this), ``time_ratio_vs_reference`` (this / reference, target ≤ 1.0),
``peak_mb``, ``reference_peak_mb`` and ``memory_ratio_vs_reference`` (target ≤ 1.2).

Peak memory: each reader runs once in a fresh Python process; peak = the resident-set high-water
mark (``VmHWM``, Linux) after the read minus the mark after the imports (both sides import numpy,
orjson, pycocotools and posebh.datasets first). (``ru_maxrss`` would not do: a process started
from this big pytest process inherits its peak.) The resident-set peak counts what either side
allocates outside Python's allocator (orjson's parse buffers, NumPy arrays, the file bytes),
which tracemalloc would not see in full; the same measure is applied to both.

With ``--benchmark-disable`` (CI smoke) the files are 2,000 images / 2,500 persons and 2,000
boxes, nothing is timed and no subprocess runs: every reader runs once and is checked.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import posebh.datasets.coco as coco_module
from posebh.datasets import read_coco_detections, read_coco_keypoints
from posebh.synth.coco_scale import (
    COCO_TRAIN_IMAGES,
    COCO_TRAIN_PERSONS,
    COCO_VAL_DETECTIONS,
    COCO_VAL_IMAGES,
    write_coco_detections_file,
    write_coco_keypoints_file,
)

pytestmark = pytest.mark.scale  # part of the COCO-size suite (posebh bench -k scale)

pycocotools_coco = pytest.importorskip("pycocotools.coco", reason="pycocotools is the reference")

CASES = {
    "keypoints_train": ["reference", "columns", "per_record"],
    "detections_val": ["reference", "columns"],
}
_FILES: dict[tuple[str, bool], dict[str, Path]] = {}
_REFERENCE: dict[str, dict[str, float]] = {}

_MEASURE = """
import contextlib, io, json, sys, time
import numpy, orjson
from pycocotools.coco import COCO
import posebh.datasets.coco as C
def high_water_kb():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])
case, backend, a, b = sys.argv[1:5]
base = high_water_kb()
t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    if case == "keypoints_train":
        if backend == "reference":
            out = COCO(a)
        else:
            C.COLUMN_PATH = backend == "columns"
            out = C.read_coco_keypoints(a, "/", "coco", check_images=False)
    elif backend == "reference":
        out = COCO(b).loadRes(a)
    else:
        out = C.read_coco_detections(a, b, "/", check_images=False)
seconds = time.perf_counter() - t
peak = high_water_kb() - base
print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024}))
"""


def _files(tmp_path_factory: pytest.TempPathFactory, small: bool) -> dict[str, Path]:
    key = ("files", small)
    if key not in _FILES:
        d = tmp_path_factory.mktemp("coco_scale_small" if small else "coco_scale")
        n_img, n_person = (2_000, 2_500) if small else (COCO_TRAIN_IMAGES, COCO_TRAIN_PERSONS)
        train = write_coco_keypoints_file(d / "train.json", n_img, n_person, seed=0)
        n_val, n_det = (200, 2_000) if small else (COCO_VAL_IMAGES, COCO_VAL_DETECTIONS)
        val = write_coco_keypoints_file(d / "val.json", n_val, int(n_val * 1.27), seed=1)
        images = json.loads(val.read_bytes())["images"]
        dets = write_coco_detections_file(
            d / "dets.json",
            [im["id"] for im in images],
            [(im["width"], im["height"]) for im in images],
            n_det,
            seed=2,
        )
        _FILES[key] = {"train": train, "val": val, "dets": dets}
    return _FILES[key]


def _run(case: str, backend: str, files: dict[str, Path]) -> Any:
    if case == "keypoints_train":
        if backend == "reference":
            with contextlib.redirect_stdout(io.StringIO()):
                return pycocotools_coco.COCO(str(files["train"]))
        coco_module.COLUMN_PATH = backend == "columns"
        try:
            return read_coco_keypoints(files["train"], "/", "coco", check_images=False)
        finally:
            coco_module.COLUMN_PATH = True
    if backend == "reference":
        with contextlib.redirect_stdout(io.StringIO()):
            return pycocotools_coco.COCO(str(files["val"])).loadRes(str(files["dets"]))
    return read_coco_detections(files["dets"], files["val"], "/", check_images=False)


def _check(case: str, backend: str, out: Any, files: dict[str, Path]) -> None:
    """The posebh readers keep what pycocotools' index says they must."""
    if backend == "reference":
        return
    with contextlib.redirect_stdout(io.StringIO()):
        gt = pycocotools_coco.COCO(str(files["train" if case == "keypoints_train" else "val"]))
    instances, summary = out
    if case == "keypoints_train":
        # Generated boxes are inside their images: kept = not crowd and something labelled.
        want = [
            a["id"]
            for img in gt.dataset["images"]
            for a in gt.imgToAnns.get(img["id"], [])
            if not a["iscrowd"] and a["num_keypoints"] > 0
        ]
        assert [inst.ann_id for inst in instances] == want
        assert summary.read == len(gt.dataset["annotations"])
    else:
        dets = json.loads(files["dets"].read_bytes())
        assert [inst.bbox for inst in instances] == [tuple(d["bbox"]) for d in dets]


def _measure(case: str, backend: str, files: dict[str, Path]) -> dict[str, float]:
    """Seconds and peak RSS growth (MB) of one read in a fresh process."""
    a, b = (files["train"], "") if case == "keypoints_train" else (files["dets"], files["val"])
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, case, backend, str(a), str(b)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("case", "backend"), [(c, b) for c, backends in CASES.items() for b in backends]
)
def test_bench_readers(
    benchmark: Any, tmp_path_factory: pytest.TempPathFactory, case: str, backend: str
) -> None:
    files = _files(tmp_path_factory, small=benchmark.disabled)
    rounds = 1 if benchmark.disabled else 2
    out = benchmark.pedantic(
        _run, args=(case, backend, files), rounds=rounds, iterations=1, warmup_rounds=0
    )
    _check(case, backend, out, files)
    del out
    if benchmark.disabled or not benchmark.stats:
        return
    if not Path("/proc/self/status").is_file():
        pytest.skip("the peak-memory measure reads VmHWM from Linux /proc")
    mine_ms = benchmark.stats.stats.min * 1e3
    memory = _measure(case, backend, files)
    if case not in _REFERENCE:
        if backend == "reference":
            _REFERENCE[case] = {"ms": mine_ms, "peak_mb": memory["peak_mb"]}
        else:
            best = min(_timed(case, files) for _ in range(2))
            _REFERENCE[case] = {
                "ms": best,
                "peak_mb": _measure(case, "reference", files)["peak_mb"],
            }
    ref = _REFERENCE[case]
    benchmark.extra_info.update(
        {
            "case": case,
            "backend": backend,
            "file_mb": round(
                files["train" if case == "keypoints_train" else "dets"].stat().st_size / 2**20, 1
            ),
            "min_ms": round(mine_ms, 1),
            "reference_min_ms": round(ref["ms"], 1),
            "speedup_vs_reference": round(ref["ms"] / mine_ms, 3),
            "time_ratio_vs_reference": round(mine_ms / ref["ms"], 3),
            "peak_mb": round(memory["peak_mb"], 1),
            "reference_peak_mb": round(ref["peak_mb"], 1),
            "memory_ratio_vs_reference": round(memory["peak_mb"] / ref["peak_mb"], 3),
            "subprocess_seconds": round(memory["seconds"], 2),
        }
    )


def _timed(case: str, files: dict[str, Path]) -> float:
    t = time.perf_counter()
    _run(case, "reference", files)
    return (time.perf_counter() - t) * 1e3
