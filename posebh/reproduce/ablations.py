"""Ablations (no published cells: run and reported): the components of PoseBH added one by
one, the number of in-class prototypes M, and ``compat="official"`` against the corrected
equations.

Every variant continues from the same multi-head baseline with the PoseBH recipe changed in
one place:

* components — multi-head baseline (ViTPose++) → + prototypes (no CPS, no CSS events) → + CPS
  (no CSS event) → + CSS (the full recipe);
* M ∈ {1, 3, 5} — ``model.num_prototypes`` (M = 3 is the full recipe);
* compat — ``model.compat="official"`` (the released code's equations, deviations included)
  against the default ``"paper"``.

Synthetic default: the tiny recipes on SynthPose, the PoseBH stage compressed to
``--steps`` steps (schedule proportions kept) so the seven runs fit in minutes; each variant
is evaluated on the six training datasets (GT boxes) and, when the world stores cross-type
ground truth, on the cross-type measurement (how well each human head predicts its own
keypoints on the other datasets' images — what CSS is meant to improve).
``--data-root D --train`` prints (``--dry-run``) or launches the official-recipe variants.

With ``bootstrap=N`` (the default, 1,000) every value carries its percentile 95 % interval over
N resamples of the evaluation images, and every variant is compared with the baseline row on
the *same* resamples (:func:`posebh.evaluation.bootstrap.paired_bootstrap`): the Δ table says
which of the 0.1–1 point moves are more than the noise of the evaluation set.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posebh.evaluation.bootstrap import DEFAULT_RESAMPLES, Resampler, paired_bootstrap
from posebh.reproduce.regression import TRAINING_SPLITS
from posebh.reproduce.releases import torchrun_command
from posebh.reproduce.synthetic import shortened

__all__ = ["VARIANTS", "Variant", "run_ablations", "train_plan", "variant_config"]

#: (dataset, split) evaluated per variant: table 1's rows (GT boxes), as the regression.
ABLATION_SPLITS = TRAINING_SPLITS


@dataclass(frozen=True)
class Variant:
    """One ablation run: the PoseBH recipe minus some events / with some model overrides."""

    id: str
    label: str
    group: tuple[str, ...]
    drop_actions: tuple[str, ...] = ()
    model: Mapping[str, Any] = field(default_factory=dict)
    baseline: bool = False  # the multi-head baseline itself (no PoseBH stage)


VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "multi-head baseline (ViTPose++)", ("components",), baseline=True),
    Variant("prototypes", "+ prototypes", ("components",), drop_actions=("cps_init", "css_on")),
    Variant("cps", "+ CPS", ("components",), drop_actions=("css_on",)),
    Variant("full", "+ CSS (full PoseBH, M = 3, paper)", ("components", "M", "compat")),
    Variant("m1", "M = 1", ("M",), model={"num_prototypes": 1}),
    Variant("m5", "M = 5", ("M",), model={"num_prototypes": 5}),
    Variant("official", 'compat = "official"', ("compat",), model={"compat": "official"}),
)


def variant_config(variant: Variant, base_config, steps: int | None = None):
    """The PoseBH recipe ``base_config`` changed as ``variant`` says (``steps``: compressed)."""
    config = base_config
    if steps is not None and steps != config.length:
        config = shortened(config, steps)
    events = tuple(e for e in config.events if e.action not in variant.drop_actions)
    model = {**config.model_overrides, **variant.model}
    return dataclasses.replace(config, events=events, model_overrides=model)


def _headline(dataset: str) -> tuple[str, str | None]:
    """The (table metric, part) a split is reported by."""
    if dataset == "mpii":
        return "PCKh", None
    if dataset == "coco_wholebody":
        return "AP", "wholebody"
    return "AP", None


def _evaluate_model(
    path: Path, world: Path, progress: bool, cross_type: bool, bootstrap: int, seed: int
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Resampler]]:
    """Per split: the headline value and its interval (percent); the cross-type report; and
    per split the Resampler for the paired Δ (empty with ``bootstrap=0``)."""
    from posebh.checkpoint import load_model, read_checkpoint
    from posebh.evaluate import evaluate
    from posebh.reproduce.tables import read_interval, read_metric

    state = read_checkpoint(path)
    values: dict[str, Any] = {}
    resamplers: dict[str, Resampler] = {}
    for dataset, split in ABLATION_SPLITS:
        model = load_model(state, dataset=dataset)
        result = evaluate(
            model, dataset, data_root=world, split=split, use_gt_bbox=True, progress=progress,
            log=None, bootstrap=bootstrap, bootstrap_seed=seed,
        )  # fmt: skip
        metric, part = _headline(dataset)
        ci = read_interval(result.metrics, metric, part)
        values[f"{dataset} {split}"] = {
            "metric": metric,
            "value": read_metric(result.metrics, metric, part),
            "ci95": None if ci is None else list(ci),
        }
        if result.resampler is not None:
            resamplers[f"{dataset} {split}"] = result.resampler
    cross = None
    if cross_type:
        try:
            from posebh.crosstype import cross_type_eval
        except ImportError:
            cross = None
        else:
            result = cross_type_eval(load_model(state), world, progress=progress,
                                     bootstrap=bootstrap, bootstrap_seed=seed)  # fmt: skip
            cross = result.to_dict()
    return values, cross, resamplers


def _deltas_vs_baseline(
    values: Mapping[str, Any],
    baseline: Mapping[str, Resampler],
    variant: Mapping[str, Resampler],
    num_resamples: int,
    seed: int,
) -> dict[str, dict[str, Any] | None]:
    """Per split: the variant − baseline Δ of the headline on the same image resamples, in
    percent (``delta``, ``ci95``, ``p``, ``excludes_zero``); None where a side has no
    Resampler."""
    from posebh.reproduce.deltas import excludes_zero, in_table_units
    from posebh.reproduce.tables import flat_metric_name

    out: dict[str, dict[str, Any] | None] = {}
    for split, v in values.items():
        if split not in baseline or split not in variant:
            out[split] = None
            continue
        dataset = split.split(" ")[0]
        metric, part = _headline(dataset)
        paired = paired_bootstrap(baseline[split], variant[split], num_resamples, seed)
        scaled = in_table_units(paired.get(flat_metric_name(metric, part)), metric)
        if scaled is None:
            out[split] = None
            continue
        delta, ci, p = scaled
        out[split] = {
            "metric": v["metric"],
            "delta": delta,
            "ci95": None if ci is None else list(ci),
            "p": p,
            "excludes_zero": excludes_zero(ci),
        }
    return out


def _mean(values: Mapping[str, Any]) -> float | None:
    xs = [v["value"] for v in values.values() if v["value"] is not None]
    return sum(xs) / len(xs) if xs else None


def run_ablations(
    out_dir: Path,
    *,
    cache_dir: Path | None = None,
    world_preset: str = "mini",
    seed: int = 0,
    steps: int | None = 200,
    baseline_steps: int | None = None,
    only: Sequence[str] | None = None,
    cross_type: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
    bootstrap: int = DEFAULT_RESAMPLES,
    bootstrap_seed: int = 0,
) -> dict[str, Any]:
    """Train (or reuse) every variant on SynthPose, evaluate, and write the report.

    ``steps``: the PoseBH stage of each variant; ``baseline_steps``: the shared multi-head
    baseline (``None``: the full tiny recipe, the same cached model as the tables use);
    ``only``: variant ids (:data:`VARIANTS`); ``bootstrap``: image resamples for the
    intervals and the paired Δ against the baseline row (0: off; needs ``baseline`` run)."""
    from posebh.reproduce.harness import provenance
    from posebh.reproduce.synthetic import (
        default_cache_dir,
        ensure_run,
        ensure_world,
        run_config,
    )

    unknown = [o for o in only or [] if o not in {v.id for v in VARIANTS}]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; {[v.id for v in VARIANTS]}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be ≥ 0 resamples (0: off), got {bootstrap}")
    start = time.perf_counter()
    cache_dir = Path(cache_dir or default_cache_dir())
    world, _ = ensure_world(cache_dir, world_preset, seed, progress)
    base_config = run_config("vitpose_plus", seed)
    if baseline_steps is not None:
        base_config = shortened(base_config, baseline_steps)
    base = ensure_run(
        "vitpose_plus", world, cache_dir, config=base_config, progress=progress, log=log
    )
    posebh_recipe = run_config("posebh", seed)
    rows: list[dict[str, Any]] = []
    baseline_resamplers: dict[str, Resampler] | None = None  # VARIANTS lists it first
    for v in VARIANTS:
        if only and v.id not in only:
            continue
        if v.baseline:
            path, config = base, base_config
        else:
            config = variant_config(v, posebh_recipe, steps)
            path = ensure_run(
                f"ablation_{v.id}", world, cache_dir, init=base, config=config,
                progress=progress, log=log,
            )  # fmt: skip
        if log:
            log(f"[ablations] evaluating {v.label}")
        values, cross, resamplers = _evaluate_model(
            path, world, progress, cross_type, bootstrap, bootstrap_seed
        )
        if v.baseline:
            baseline_resamplers = resamplers
        deltas = None
        if not v.baseline and baseline_resamplers is not None and bootstrap > 0:
            deltas = _deltas_vs_baseline(
                values, baseline_resamplers, resamplers, bootstrap, bootstrap_seed
            )
        rows.append(
            {
                "id": v.id,
                "label": v.label,
                "groups": list(v.group),
                "recipe": config.preset,
                "steps": config.length,
                "events": [f"{e.at}:{e.describe()}" for e in config.events],
                "model_overrides": {k: v2 for k, v2 in v.model.items()},
                "model": str(path),
                "metrics": values,
                "mean": _mean(values),
                "cross_type": cross,
                "delta_vs_baseline": deltas,
            }
        )
    report = {
        "what": "PoseBH ablations on the SynthPose synthetic world (no published cells)",
        "measured_on": f"SynthPose '{world_preset}' (seed {seed}); tiny models; NOT comparable "
        "with any published number",
        "posebh_stage_steps": steps,
        "bootstrap": {
            "resamples": bootstrap,
            "seed": bootstrap_seed,
            "unit": "image",
            "interval": "percentile 95 %",
            "paired_against": "baseline",
        },
        "variants": rows,
        "provenance": provenance({"command": shlex.join(sys.argv), "seed": seed}),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    write_report(report, out_dir)
    return report


def markdown(report: Mapping[str, Any]) -> str:
    from tabulate import tabulate

    variants = report["variants"]
    if not variants:
        return "no variants run"
    splits = list(variants[0]["metrics"])
    head = ["variant", "groups"] + [
        f"{s} {variants[0]['metrics'][s]['metric']}" for s in splits
    ] + ["mean"]  # fmt: skip

    def f(x: float | None) -> str:
        return "–" if x is None else f"{x:.1f}"

    body = [
        [v["label"], ", ".join(v["groups"])] + [_value_text(v["metrics"][s]) for s in splits]
        + [f(v["mean"])]
        for v in variants
    ]  # fmt: skip
    lines = [
        "# PoseBH ablations — SYNTHETIC (SynthPose, tiny models)",
        "",
        f"- measured on: {report['measured_on']}",
        f"- PoseBH stage: {report['posebh_stage_steps']} steps per variant, from the same "
        "multi-head baseline; GT boxes; AP/PCKh in percent",
        f"- commit {report['provenance']['commit']}; versions {report['provenance']['versions']}",
        "",
        tabulate(body, headers=head, tablefmt="github", disable_numparse=True),
        "",
    ]
    delta_table = _delta_table(variants, splits)
    if delta_table:
        base = next((v["label"] for v in variants if v.get("id") == "baseline"), "baseline")
        boot = report.get("bootstrap", {})
        lines += [
            f"## Δ vs {base} [95 % CI]",
            "",
            "Variant − baseline per split, in points, on the same image resamples for both "
            f"({boot.get('resamples')} resamples, seed {boot.get('seed')}); `*`: the "
            "interval excludes 0.",
            "",
            delta_table,
            "",
        ]
    cross = [
        (v["label"], v["cross_type"])
        for v in variants
        if isinstance(v.get("cross_type"), Mapping) and v["cross_type"].get("summary")
    ]
    if cross:
        lines += [
            "## Cross-type generalisation (own keypoints on other datasets' images)",
            "",
            "Each head d on its own images / the mean over the other image sets with d's "
            "ground truth (gap = own − other), in percent; `posebh crosstype`, results.json "
            "holds every cell.",
            "",
            _cross_table(cross),
            "",
        ]
    return "\n".join(lines)


def _value_text(cell: Mapping[str, Any]) -> str:
    """``41.3 [38.0, 44.9]`` (the interval when bootstrapped), ``–`` when missing."""
    if cell["value"] is None:
        return "–"
    ci = cell.get("ci95")
    return f"{cell['value']:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def _delta_table(variants: Sequence[Mapping[str, Any]], splits: Sequence[str]) -> str:
    """Non-baseline variant × split: the paired Δ vs the baseline row (``delta_text``); empty
    when no variant has one."""
    from tabulate import tabulate

    from posebh.reproduce.deltas import PairedDelta, delta_text

    def cell(v: Mapping[str, Any], split: str) -> str:
        d = (v.get("delta_vs_baseline") or {}).get(split)
        if not d:
            return delta_text(None)
        ci = tuple(d["ci95"]) if d.get("ci95") else None
        return delta_text(
            PairedDelta(split, d["metric"], "baseline", v["id"], d["delta"], ci, d["p"])
        )

    rows = [[v["label"]] + [cell(v, s) for s in splits]
            for v in variants if v.get("delta_vs_baseline")]  # fmt: skip
    if not rows:
        return ""
    head = ["variant"] + [f"{s} {variants[0]['metrics'][s]['metric']}" for s in splits]
    return tabulate(rows, headers=head, tablefmt="github", disable_numparse=True)


def _cross_table(cross: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Variant × head: 'own / others (gap)' in percent (AP fractions scaled, PCKh as is),
    each with its 95 % interval when bootstrapped: 'own [ci] / others [ci] (gap [ci])'."""
    from tabulate import tabulate

    heads = list(cross[0][1]["summary"])
    metric = cross[0][1].get("metric", {})

    def pct(d: str, x: float | None) -> float | None:
        return None if x is None else (x if metric.get(d) == "PCKh" else 100.0 * x)

    def ci(d: str, s: Mapping[str, Any], key: str, sign: str = "") -> str:
        c = s.get(f"{key}_ci95")
        if not c or c[0] is None or c[1] is None:
            return ""
        lo, hi = pct(d, c[0]), pct(d, c[1])
        return f" [{lo:{sign}.1f}, {hi:{sign}.1f}]"

    def cell(d: str, s: Mapping[str, Any] | None) -> str:
        if not s or s.get("in_domain") is None:
            return "–"
        own, other, gap = (pct(d, s.get(k)) for k in ("in_domain", "cross_mean", "gap"))
        own_text = f"{own:.1f}{ci(d, s, 'in_domain')}"
        if other is None:
            return f"{own_text} / –"
        return (f"{own_text} / {other:.1f}{ci(d, s, 'cross_mean')} "
                f"({gap:+.1f}{ci(d, s, 'gap', '+')})")  # fmt: skip

    rows = [[label] + [cell(d, c["summary"].get(d)) for d in heads] for label, c in cross]
    headers = ["variant"] + [f"{d} {metric.get(d, '')}".strip() for d in heads]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def write_report(report: Mapping[str, Any], out_dir: Path) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    files["json"].write_text(json.dumps(report, indent=2, default=str))
    files["markdown"].write_text(markdown(report))
    if report["variants"]:
        files["plot"] = _plot(report, out_dir / "ablations.png")
    return {k: str(v) for k, v in files.items()}


def _plot(report: Mapping[str, Any], path: Path) -> Path:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    variants = report["variants"]
    splits = list(variants[0]["metrics"])
    fig = Figure(figsize=(11, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(variants)
    x = np.arange(len(splits))
    for i, v in enumerate(variants):
        cells = [v["metrics"][s] for s in splits]
        ys = [c["value"] or 0.0 for c in cells]
        # Whiskers: the 95 % interval (asymmetric; none where not bootstrapped).
        cis = [c.get("ci95") or (y, y) for y, c in zip(ys, cells, strict=True)]
        lows = [max(0.0, y - lo) for y, (lo, _) in zip(ys, cis, strict=True)]
        highs = [max(0.0, hi - y) for y, (_, hi) in zip(ys, cis, strict=True)]
        ax.bar(x + i * width, ys, width, label=v["label"], yerr=[lows, highs], capsize=2,
               error_kw={"elinewidth": 0.8})  # fmt: skip
    ax.set_xticks(x + 0.4 - width / 2, [s.replace(" ", "\n") for s in splits])
    ax.set_ylabel("AP / PCKh (%), whiskers: 95 % interval")
    ax.set_title("PoseBH ablations — SYNTHETIC world, tiny models (not comparable to the paper)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path


def train_plan(data_root: Path, out: Path, init: Path, gpus: int) -> list[list[str]]:
    """The official-recipe variants for a GPU cluster (``--train``): torchrun commands, each
    continuing ``init`` with ``posebh_vit_base`` changed as its variant says."""
    from posebh.training import get_preset

    base = get_preset("posebh_vit_base")
    plan = []
    for v in VARIANTS:
        if v.baseline:
            continue
        sets = []
        if v.drop_actions:
            kept = [f"{e.at}:{e.action}:{e.target}".rstrip(":") for e in base.events
                    if e.action not in v.drop_actions]  # fmt: skip
            sets.append("events=" + json.dumps(kept))
        sets += [f"model.{k}={json.dumps(val)}" for k, val in v.model.items()]
        plan.append(
            torchrun_command(
                "posebh_vit_base", data_root, out / "work" / v.id, gpus, init=init, sets=sets
            )
        )
    return plan
