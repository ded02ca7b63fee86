"""CI regression of metrics: recompute a small deterministic synthetic configuration and
compare every metric with the committed baselines (``reproduce/baselines/*.json``).

Two sections, each its own baseline file:

* ``protocol`` — the heatmap oracle (:func:`posebh.evaluate.evaluate` with
  ``heatmap_oracle=True``) on every evaluable SynthPose split: ground-truth target heatmaps
  go through the evaluation crop, the decode, the transform back and the metric.  No model,
  no training noise: the tolerance is tight, and any change of pipeline, decode or metric
  semantics shows up here (a test breaks the decode on purpose and watches this fail).
* ``training`` — a tiny ViTPose++ baseline and a tiny PoseBH continued from it, trained a
  few hundred steps on SynthPose (fixed seed, fixed thread count), evaluated on the six
  training datasets.  CPU training is bit-reproducible on one machine; across CPUs the
  float order of the kernels differs and the trajectories drift apart.  Each checked metric
  has its own tolerance, a stated multiple of its spread over runs that differ only in
  float order (thread count, SIMD kernels), with a floor; a metric is checked only when
  its baseline lies well above its tolerance (a trainer that halves it or stops learning
  fails), the others are listed with the reason.  The runs, spreads and rule are in
  ``reproduce/baselines/training.json`` (``tolerance_source``; :func:`derive_tolerances`).

``nox -s regression`` (``posebh regression``) runs both and exits 1 with a readable diff
when a metric leaves its tolerance; ``nox -s regression -- --refresh`` rewrites the
baselines' values (commit them with the change that moved the numbers, and say why in the
commit message); the training tolerances stay as measured.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SECTIONS",
    "RegressionConfig",
    "check",
    "compare",
    "measure",
]

SECTIONS = ("protocol", "training")

#: Splits of the protocol section (every dataset with an evaluation protocol).
PROTOCOL_SPLITS = (
    ("coco", "val"),
    ("aic", "val"),
    ("mpii", "val"),
    ("ap10k", "test"),
    ("apt36k", "test"),
    ("coco_wholebody", "val"),
    ("ochuman", "test"),
    ("interhand2d", "test"),
    ("pw3d", "test"),
)
#: Splits of the training section (the six training datasets, GT boxes).
TRAINING_SPLITS = PROTOCOL_SPLITS[:6]

# The metrics kept per metric family (flattened posebh.evaluate keys), in percent / px.
_KEEP = {
    "oks": ("AP", "AP50", "AR"),
    "wholebody": ("wholebody/AP", "wholebody/AR", "body/AP"),
    "pckh": ("PCKh", "PCKh@0.1"),
    "pck_auc_epe": ("PCK", "AUC", "EPE"),
}
_PERCENT_ALREADY = {"PCKh", "PCKh@0.1", "EPE"}


@dataclass(frozen=True)
class RegressionConfig:
    """The small deterministic configuration (change it together with the baselines)."""

    world: str = "mini"
    seed: int = 0
    threads: int = 2
    baseline_steps: int = 600
    posebh_steps: int = 160
    batch_size: int = 16
    # Absolute tolerance in the table units (percent points; px for EPE).  The training
    # section's tolerances are per metric, measured, in reproduce/baselines/training.json.
    protocol_tolerance: float = 0.05


def default_baseline_dir() -> Path:
    """``reproduce/baselines`` of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[2] / "reproduce" / "baselines"


def _flat(metrics: Mapping[str, Any], kind: str) -> dict[str, float]:
    from posebh.evaluate import _flat_metrics

    flat = _flat_metrics(metrics)
    out = {}
    for key in _KEEP[kind]:
        if key in flat:
            factor = 1.0 if key.split("/")[-1] in _PERCENT_ALREADY else 100.0
            out[key] = round(flat[key] * factor, 4)
    return out


def _evaluate_splits(
    model_or_none,
    world: Path,
    splits: Sequence[tuple[str, str]],
    *,
    oracle: bool,
    progress: bool,
) -> dict[str, float]:
    from posebh.evaluate import default_protocol, evaluate

    values: dict[str, float] = {}
    for dataset, split in splits:
        model = model_or_none(dataset) if callable(model_or_none) else model_or_none
        protocol = default_protocol(dataset)
        result = evaluate(
            model,
            dataset,
            data_root=world,
            split=split,
            use_gt_bbox=True,
            protocol=protocol,
            heatmap_oracle=oracle,
            progress=progress,
            log=None,
        )
        for key, v in _flat(result.metrics, protocol.metric).items():
            values[f"{dataset} {split} {key}"] = v
    return values


def measure(
    section: str,
    config: RegressionConfig,
    cache_dir: Path,
    *,
    progress: bool = False,
    datasets: Sequence[str] | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, float]:
    """Recompute one section's metrics ({"<dataset> <split> <metric>": value}); ``datasets``
    restricts them to some datasets (a quick check)."""
    import torch

    from posebh.reproduce.synthetic import ensure_run, ensure_world, run_config, shortened

    torch.set_num_threads(config.threads)
    world, _ = ensure_world(cache_dir, config.world, config.seed, progress)

    def keep(splits: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        return [s for s in splits if datasets is None or s[0] in datasets]

    if section == "protocol":
        return _evaluate_splits(None, world, keep(PROTOCOL_SPLITS), oracle=True, progress=progress)
    if section != "training":
        raise ValueError(f"unknown section {section!r}; sections: {SECTIONS}")
    from posebh.checkpoint import load_model, read_checkpoint

    base_cfg = shortened(run_config("vitpose_plus", config.seed), config.baseline_steps)
    base_cfg = dataclasses.replace(base_cfg, batch_size=config.batch_size)
    base = ensure_run(
        "regression_vitpose_plus", world, cache_dir, config=base_cfg, progress=progress, log=log
    )
    pose_cfg = shortened(run_config("posebh", config.seed), config.posebh_steps)
    pose_cfg = dataclasses.replace(pose_cfg, batch_size=config.batch_size)
    pose = ensure_run(
        "regression_posebh", world, cache_dir, init=base, config=pose_cfg, progress=progress,
        log=log,
    )  # fmt: skip
    values: dict[str, float] = {}
    for label, path in (("vitpose_plus", base), ("posebh", pose)):
        state = read_checkpoint(path)
        found = _evaluate_splits(
            lambda d, s=state: load_model(s, dataset=d),
            world,
            keep(TRAINING_SPLITS),
            oracle=False,
            progress=progress,
        )
        values.update({f"{label}: {k}": v for k, v in found.items()})
    return values


@dataclass
class Difference:
    key: str
    baseline: float | None
    measured: float | None
    tolerance: float

    @property
    def delta(self) -> float | None:
        if self.baseline is None or self.measured is None:
            return None
        return self.measured - self.baseline


def compare(
    baseline: Mapping[str, float],
    measured: Mapping[str, float],
    tolerance: float | Mapping[str, float],
) -> list[Difference]:
    """Every metric outside its tolerance (one for all, or one per metric) of its baseline,
    plus metrics present on one side only (a metric that disappears is a regression too)."""
    bad: list[Difference] = []
    for key in sorted(set(baseline) | set(measured)):
        b, m = baseline.get(key), measured.get(key)
        tol = float(tolerance[key] if isinstance(tolerance, Mapping) else tolerance)
        if b is None or m is None or abs(m - b) > tol + 1e-9:
            bad.append(Difference(key, b, m, tol))
    return bad


def format_diff(section: str, diffs: Sequence[Difference], total: int) -> str:
    from tabulate import tabulate

    def f(v: float | None) -> str:
        return "missing" if v is None else f"{v:.4f}"

    rows = [
        [d.key, f(d.baseline), f(d.measured), "" if d.delta is None else f"{d.delta:+.4f}",
         d.tolerance]
        for d in diffs
    ]  # fmt: skip
    head = f"{section}: {len(diffs)} of {total} metrics outside their tolerance"
    return head + "\n" + tabulate(
        rows, headers=["metric", "baseline", "measured", "Δ", "tol"], tablefmt="github",
        disable_numparse=True,
    )  # fmt: skip


def derive_tolerances(
    baseline: Mapping[str, float],
    spread: Mapping[str, float],
    *,
    multiple: float,
    floor: float,
    headroom: float,
) -> tuple[dict[str, float], dict[str, str]]:
    """Per-metric tolerances from the measured run-to-run ``spread`` (max − min of a metric
    over runs that differ only in what legitimately differs between machines):
    ``max(multiple × spread, floor)``, rounded up to 0.1.  A metric is kept only when its
    baseline is at least ``headroom`` × its tolerance: then a trainer that halves it (or
    stops learning) fails, and the check can fail at all.  Returns (kept tolerances, the
    reason each other metric is not checked)."""
    kept: dict[str, float] = {}
    dropped: dict[str, str] = {}
    for key in sorted(baseline):
        if key not in spread:
            dropped[key] = "no spread measured"
            continue
        tol = math.ceil(max(multiple * spread[key], floor) * 10 - 1e-9) / 10
        if baseline[key] >= headroom * tol:
            kept[key] = tol
        else:
            dropped[key] = (
                f"baseline {baseline[key]:g} < {headroom:g} x tolerance {tol:g}: "
                "too close to 0 for a broken trainer to move it out of tolerance"
            )
    return kept, dropped


def _payload(
    section: str,
    values: Mapping[str, float],
    config: RegressionConfig,
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The baseline file of ``section``.  The training section keeps the previous file's
    per-metric tolerances, their measured source, the metrics it does not check and the
    no-model floors: a refresh moves the values, not how far they may drift."""
    from posebh.reproduce.harness import provenance

    payload: dict[str, Any] = {
        "section": section,
        "what": "posebh metric regression baseline (see posebh/reproduce/regression.py)",
        "config": dataclasses.asdict(config),
    }
    if section == "protocol":
        payload["tolerance"] = config.protocol_tolerance
        payload["metrics"] = dict(sorted(values.items()))
    else:
        if previous is None or not isinstance(previous.get("tolerance"), Mapping):
            raise ValueError(
                "the training baseline needs per-metric tolerances measured from run-to-run "
                "spread (reproduce/baselines/training.json: tolerance, tolerance_source); "
                "restore the committed file before refreshing"
            )
        tolerance = previous["tolerance"]
        payload["tolerance"] = dict(tolerance)
        payload["tolerance_source"] = previous.get("tolerance_source")
        payload["not_checked"] = previous.get("not_checked", {})
        payload["no_model_floor"] = previous.get("no_model_floor", {})
        payload["metrics"] = {k: values[k] for k in sorted(tolerance) if k in values}
    payload["provenance"] = provenance()
    return payload


def check(
    sections: Sequence[str] = SECTIONS,
    *,
    config: RegressionConfig | None = None,
    baseline_dir: Path | None = None,
    cache_dir: Path | None = None,
    out_dir: Path | None = None,
    refresh: bool = False,
    progress: bool = False,
    datasets: Sequence[str] | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[bool, str]:
    """Recompute ``sections`` and compare (or rewrite, with ``refresh``) the baselines.
    ``datasets`` checks only those datasets' metrics (never with ``refresh``).
    Returns (ok, report text)."""
    if refresh and datasets is not None:
        raise ValueError("refresh rewrites whole baselines: do not restrict the datasets")
    from posebh.reproduce.synthetic import default_cache_dir

    config = config or RegressionConfig()
    baseline_dir = Path(baseline_dir or default_baseline_dir())
    cache_dir = Path(cache_dir or default_cache_dir())
    ok, parts = True, []
    results: dict[str, Any] = {}
    for section in sections:
        start = time.perf_counter()
        values = measure(section, config, cache_dir, progress=progress, datasets=datasets, log=log)
        seconds = time.perf_counter() - start
        path = baseline_dir / f"{section}.json"
        if refresh:
            previous = json.loads(path.read_text()) if path.is_file() else None
            payload = _payload(section, values, config, previous)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(payload, indent=2) + "\n")
            parts.append(
                f"{section}: wrote {len(payload['metrics'])} metrics to {path} ({seconds:.0f} s)"
            )
            continue
        if not path.is_file():
            raise FileNotFoundError(
                f"no baseline {path}; create it deliberately with "
                "`nox -s regression -- --refresh` and commit it"
            )
        saved = json.loads(path.read_text())
        if saved.get("config") != dataclasses.asdict(config):
            raise ValueError(
                f"{path} was made with config {saved.get('config')}, this run uses "
                f"{dataclasses.asdict(config)}; refresh the baselines after changing it"
            )

        def wanted(key: str) -> bool:
            return datasets is None or _key_dataset(key) in datasets

        expected = {k: v for k, v in saved["metrics"].items() if wanted(k)}
        # Metrics the baseline deliberately leaves out (too close to 0 to carry a signal).
        checked = {k: v for k, v in values.items() if k not in saved.get("not_checked", {})}
        diffs = compare(expected, checked, saved["tolerance"])
        results[section] = {
            "measured": values,
            "baseline_file": str(path),
            "failures": [dataclasses.asdict(d) for d in diffs],
            "seconds": round(seconds, 1),
        }
        if diffs:
            ok = False
            parts.append(format_diff(section, diffs, len(checked)))
        else:
            parts.append(
                f"{section}: all {len(checked)} metrics within {_tolerance_text(saved)} of "
                f"{path.name} ({seconds:.0f} s)"
            )
    report = "\n\n".join(parts)
    if out_dir is not None and results:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "regression.json").write_text(json.dumps(results, indent=2))
        (out_dir / "regression.md").write_text("# Metric regression\n\n" + report + "\n")
    return ok, report


def _tolerance_text(saved: Mapping[str, Any]) -> str:
    tol = saved["tolerance"]
    if isinstance(tol, Mapping):
        return f"their tolerances (±{min(tol.values()):g} … ±{max(tol.values()):g})"
    return f"±{tol}"


def _key_dataset(key: str) -> str:
    """The dataset of a metric key ("coco val AP", "posebh: coco val AP")."""
    return key.split(": ", 1)[-1].split(" ", 1)[0]
