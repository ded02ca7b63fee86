"""Paired comparison of two result sets on one ground truth (``posebh compare A B``).

Both result sets are scored by the code ``posebh eval`` scores with
(:func:`posebh.evaluate.score_records`), then resampled over the evaluation images with the
*same* multisets for both (:func:`posebh.evaluation.bootstrap.paired_bootstrap`): per metric
``a``, ``b``, ``delta = b − a``, the percentile 95 % interval of the delta and a two-sided
bootstrap p-value. Values are written in the units the tables print (OKS AP/AR, PCK and AUC
in percent; PCKh already is; EPE in pixels): :func:`table_unit`.

Inputs: a COCO keypoint results JSON (the records ``posebh eval`` writes as
``predictions.json`` for OKS datasets are exactly that), or for the other metrics posebh's
``predictions.json`` (one ``{"index", "keypoints"}`` per instance of the annotation file, in
file order); an evaluation folder stands for its ``predictions.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from posebh.datasets import DatasetSpec, read_dataset
from posebh.evaluate import EvalProtocol, default_protocol, score_records
from posebh.evaluation import library_versions
from posebh.evaluation.bootstrap import DEFAULT_RESAMPLES, Resampler, paired_bootstrap
from posebh.evaluation.coco import CROWD_STAT_NAMES, STAT_NAMES
from posebh.protocol import get_protocol

__all__ = [
    "CompareInputs",
    "compare",
    "compare_markdown",
    "compare_rows",
    "resampler_of",
    "table_unit",
]

_PERCENT_FRACTIONS = frozenset({*STAT_NAMES, *CROWD_STAT_NAMES, "PCK", "AUC"})


def table_unit(name: str) -> float:
    """Factor from posebh's metrics dict to the tables' unit for a flat metric name
    (``"AP"``, ``"body/AP"``, ``"PCKh"``): OKS stats, PCK and AUC are fractions (×100);
    PCKh and its joint groups are percent already, EPE and the error metrics are pixels."""
    return 100.0 if name.rsplit("/", 1)[-1] in _PERCENT_FRACTIONS else 1.0


@dataclass(frozen=True)
class CompareInputs:
    """The ground truth both result sets are scored against."""

    dataset: str
    ann_file: Path
    gt_file: Path | None = None  # MPII's mpii_gt_val.mat (default: next to ann_file)

    def spec(self) -> DatasetSpec:
        name = get_protocol(self.dataset).name
        gt_file = self.gt_file
        if gt_file is None and name == "mpii":
            gt_file = self.ann_file.with_name("mpii_gt_val.mat")
        return DatasetSpec(
            name=name, ann_file=str(self.ann_file), img_prefix=str(self.ann_file.parent),
            gt_file=None if gt_file is None else str(gt_file), source="posebh compare",
            check_images=False,
        )  # fmt: skip


def _results_file(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        inner = path / "predictions.json"
        if not inner.is_file():
            raise FileNotFoundError(
                f"{path} is a folder without predictions.json. Fix: pass the results file or "
                "a `posebh eval --out` folder."
            )
        return inner
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such results file")
    return path


def _instance_records(path: Path, num_instances: int, num_keypoints: int) -> list[dict]:
    """posebh's per-instance ``predictions.json``, checked and put in instance order."""
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the results file is empty (0 bytes). Fix: re-run the eval.")
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(records, list) or not records:
        raise ValueError(
            f"{path}: expected a non-empty JSON list of {{'index', 'keypoints'}} records "
            "(posebh eval's predictions.json)"
        )
    by_index: dict[int, dict] = {}
    for i, rec in enumerate(records):
        where = f"{path}: record {i}"
        if not isinstance(rec, Mapping) or "index" not in rec or "keypoints" not in rec:
            raise ValueError(f"{where}: needs the fields 'index' and 'keypoints'")
        index = rec["index"]
        if not isinstance(index, int) or not 0 <= index < num_instances or index in by_index:
            raise ValueError(
                f"{where}: field 'index' = {index!r} is not a new instance index in "
                f"0..{num_instances - 1}. Fix: compare predictions made on this annotation "
                "file (one record per instance, as posebh eval writes them)."
            )
        kpts = np.asarray(rec["keypoints"], dtype=np.float64)
        if kpts.ndim != 2 or kpts.shape[0] != num_keypoints or kpts.shape[1] < 2:
            raise ValueError(
                f"{where}: field 'keypoints' has shape {kpts.shape}; the dataset has "
                f"{num_keypoints} keypoints. Fix: compare results of this dataset."
            )
        by_index[index] = rec
    if len(by_index) != num_instances:
        missing = sorted(set(range(num_instances)) - set(by_index))[:5]
        raise ValueError(
            f"{path}: {len(by_index)} records for {num_instances} instances of the annotation "
            f"file (missing indices {missing} …). Fix: predict every instance."
        )
    return [by_index[i] for i in range(num_instances)]


def resampler_of(
    results: str | os.PathLike[str], inputs: CompareInputs, protocol: EvalProtocol | None = None
) -> tuple[dict[str, Any], Resampler]:
    """The metrics of one results file (or eval folder) and its Resampler."""
    path = _results_file(Path(results))
    spec = inputs.spec()
    protocol = protocol or default_protocol(spec.name)
    if protocol.metric in ("oks", "wholebody"):
        # The COCO scorer reads the file itself, so its errors name the file and record.
        metrics, r = score_records(str(path), [], spec, protocol, resample=True)
    else:
        instances, _ = read_dataset(spec)
        num_keypoints = get_protocol(spec.name).skeleton.num_keypoints
        records = _instance_records(path, len(instances), num_keypoints)
        metrics, r = score_records(records, instances, spec, protocol, resample=True)
    assert r is not None
    return metrics, r


def compare(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    inputs: CompareInputs,
    *,
    num_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """``compare.json``'s content: per metric (table units) ``a``, ``b``, ``delta`` (b − a),
    ``ci95`` of the delta, ``p``, plus each side's own interval."""
    _, ra = resampler_of(a, inputs)
    _, rb = resampler_of(b, inputs)
    paired = paired_bootstrap(ra, rb, num_resamples, seed, progress=progress)
    metrics = {}
    for name, r in paired.items():
        f = table_unit(name)

        def scaled(v: Any, f: float = f) -> Any:
            if isinstance(v, list):
                return [None if x is None else x * f for x in v]
            return v * f

        metrics[name] = {
            "a": scaled(r["a"]),
            "b": scaled(r["b"]),
            "delta": scaled(r["delta"]),
            "ci95": scaled(r["ci95"]),
            "p": r["p"],
            "ci95_a": scaled(r["ci95_a"]),
            "ci95_b": scaled(r["ci95_b"]),
            "undefined": r["undefined"],
        }
    return {
        "a": str(_results_file(Path(a))),
        "b": str(_results_file(Path(b))),
        "dataset": get_protocol(inputs.dataset).name,
        "ann_file": str(inputs.ann_file),
        "bootstrap": {
            "resamples": num_resamples,
            "seed": seed,
            "unit": "image, drawn with replacement; the same resamples for a and b",
            "images": ra.num_units,
            "interval": "percentile, 95 % (2.5th and 97.5th) of b − a",
            "p": "two-sided: twice the smaller share of resampled deltas on one side of 0",
        },
        "units": "the tables': OKS AP/AR, PCK, AUC and PCKh in percent; EPE in pixels",
        "metrics": metrics,
        "versions": library_versions("numpy", "pycocotools"),
    }


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def compare_rows(result: Mapping[str, Any], names: Sequence[str] | None = None) -> list[list[str]]:
    """Table rows: metric, a, b, Δ, its interval, p, and ``*`` where the interval excludes 0."""
    rows = []
    for name, m in result["metrics"].items():
        if names is not None and name not in names:
            continue
        lo, hi = m["ci95"]
        excludes = lo is not None and hi is not None and (lo > 0 or hi < 0)
        rows.append([
            name, _fmt(m["a"]), _fmt(m["b"]), f"{m['delta']:+.2f}",
            f"[{_fmt(lo)}, {_fmt(hi)}]", f"{m['p']:.3f}", "*" if excludes else "",
        ])  # fmt: skip
    return rows


def compare_markdown(result: Mapping[str, Any], tablefmt: str = "github") -> str:
    """One screen: which files, how resampled, and the table."""
    from tabulate import tabulate

    boot = result["bootstrap"]
    head = [
        f"a: {result['a']}",
        f"b: {result['b']}",
        f"ground truth: {result['dataset']} {result['ann_file']} ({boot['images']} images); "
        f"{boot['resamples']} paired image resamples, seed {boot['seed']}",
    ]
    table = tabulate(
        compare_rows(result),
        headers=["metric", "a", "b", "Δ b − a", "95 % CI of Δ", "p", "CI excludes 0"],
        tablefmt=tablefmt,
        disable_numparse=True,
    )
    return "\n".join([*head, "", table])
