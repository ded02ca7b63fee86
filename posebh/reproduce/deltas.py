"""The paired Δ columns of a table run: each PoseBH column against the ViTPose++ column of the
same size, per (row, metric), on the same image resamples.

The paper's claims are such differences (PoseBH − ViTPose++ per dataset). A Δ is the
full-set difference of the two cells; its interval is the percentile 95 % interval of the
difference over ``resamples`` image resamples drawn once and used for both models
(:func:`posebh.evaluation.bootstrap.paired_bootstrap`); ``*`` marks an interval that excludes
0. Both models are scored on the same ground truth by construction (one table row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from posebh.evaluation.bootstrap import Resampler, paired_bootstrap
from posebh.reproduce.tables import (
    METRIC_READERS,
    ModelColumn,
    Table,
    TableRow,
    flat_metric_name,
)

__all__ = [
    "PairedDelta",
    "delta_text",
    "deltas_by_key",
    "excludes_zero",
    "in_table_units",
    "model_pairs",
    "paired_deltas",
]


@dataclass(frozen=True)
class PairedDelta:
    """``model − baseline`` on one (row, metric), in the table's unit."""

    row: str
    metric: str
    baseline: str  # model id
    model: str
    delta: float | None
    ci95: tuple[float, float] | None
    p: float | None
    note: str = ""

    @property
    def excludes_zero(self) -> bool:
        return excludes_zero(self.ci95)


def excludes_zero(ci95: Sequence[float] | None) -> bool:
    """The interval lies entirely above or below 0."""
    return ci95 is not None and (ci95[0] > 0 or ci95[1] < 0)


def in_table_units(
    paired: Mapping[str, Any] | None, metric: str
) -> tuple[float, tuple[float, float] | None, float] | None:
    """One :func:`~posebh.evaluation.bootstrap.paired_bootstrap` entry as (Δ, its interval,
    p) in the table's unit of ``metric``; None for a metric that was not scored."""
    if paired is None:
        return None
    f = METRIC_READERS[metric][1]
    lo, hi = paired["ci95"]
    ci = None if lo is None or hi is None else (lo * f, hi * f)
    return paired["delta"] * f, ci, paired["p"]


def model_pairs(table: Table) -> list[tuple[ModelColumn, ModelColumn]]:
    """(ViTPose++ baseline, PoseBH model) column pairs of the same size, in table order."""
    baselines = {m.size: m for m in table.models if m.kind == "vitpose_plus"}
    return [(baselines[m.size], m) for m in table.models
            if m.kind == "posebh" and m.size in baselines]  # fmt: skip


def paired_deltas(
    table: Table,
    resamplers: Mapping[tuple[str, str], Resampler],
    *,
    num_resamples: int,
    seed: int,
) -> list[PairedDelta]:
    """Every pair of :func:`model_pairs` on every row where both cells have a Resampler
    (``resamplers[(row label, model id)]``); otherwise the Δ is missing and says why."""
    out: list[PairedDelta] = []
    for baseline, model in model_pairs(table):
        for row in table.rows:
            out += _row_deltas(row, baseline, model, resamplers, num_resamples, seed)
    return out


def _row_deltas(
    row: TableRow,
    baseline: ModelColumn,
    model: ModelColumn,
    resamplers: Mapping[tuple[str, str], Resampler],
    num_resamples: int,
    seed: int,
) -> list[PairedDelta]:
    ra, rb = resamplers.get((row.label, baseline.id)), resamplers.get((row.label, model.id))
    if ra is None or rb is None or num_resamples < 1:
        why = ("bootstrap off (--bootstrap 0)" if num_resamples < 1
               else "a cell did not run or has no per-image scores")  # fmt: skip
        return [PairedDelta(row.label, m, baseline.id, model.id, None, None, None, why)
                for m in row.metrics]  # fmt: skip
    result = paired_bootstrap(ra, rb, num_resamples, seed)
    deltas = []
    for m in row.metrics:
        scaled = in_table_units(result.get(flat_metric_name(m, row.part)), m)
        if scaled is None:
            deltas.append(PairedDelta(row.label, m, baseline.id, model.id, None, None, None,
                                      "metric not scored"))  # fmt: skip
            continue
        deltas.append(PairedDelta(row.label, m, baseline.id, model.id, *scaled))
    return deltas


def delta_text(d: PairedDelta | None, digits: int = 1) -> str:
    """``+0.4 [-0.2, +1.0]``, with `` *`` when the interval excludes 0; ``–`` when missing."""
    if d is None or d.delta is None:
        return "–"
    text = _signed(d.delta, digits)
    if d.ci95 is not None:
        text += f" [{_signed(d.ci95[0], digits)}, {_signed(d.ci95[1], digits)}]"
    return text + (" *" if d.excludes_zero else "")


def _signed(v: float, digits: int) -> str:
    """``+0.4``; a value that rounds to zero prints ``+0.0`` (no ``-0.0``)."""
    text = f"{v:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0.0 else text


def deltas_by_key(deltas: Sequence[PairedDelta]) -> dict[tuple[str, str, str], PairedDelta]:
    """(row, metric, model id) → its Δ."""
    return {(d.row, d.metric, d.model): d for d in deltas}
