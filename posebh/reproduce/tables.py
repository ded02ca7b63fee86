"""The paper tables as data: which model columns, which dataset rows, the published values.

Each ``posebh/reproduce/tables/<name>.toml`` holds one table: ``models`` (the columns: a
model id, its label, kind — ``vitpose_plus`` or ``posebh`` —, size and the official
checkpoint file name) and ``rows`` (dataset, split, box file, metrics, tolerance and the
expected value of every metric per model id, with the source named at the top of the file).
A missing expected value (the README's "–") is ``None`` here, never a zero.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "DISPLAY_NAMES",
    "METRIC_READERS",
    "TABLE_NAMES",
    "ModelColumn",
    "Table",
    "TableError",
    "TableRow",
    "flat_metric_name",
    "load_table",
    "read_interval",
    "read_metric",
]

#: The paper tables, in order (``ablations`` has no published cells and no TOML).
TABLE_NAMES = ("table1", "table2", "table3", "table4", "table5")

# metric name → (where it sits in posebh.evaluate's metrics dict, factor to the table's unit).
# Tables print AP/AR/PCK/AUC in percent; posebh's OKS and PCK metrics are fractions, its PCKh
# is already in percent, EPE is in pixels.
METRIC_READERS: dict[str, tuple[tuple[str, ...], float]] = {
    "AP": (("AP",), 100.0),
    "AR": (("AR",), 100.0),
    "PCKh": (("PCKh",), 1.0),
    "PCKh@0.1": (("PCKh@0.1",), 1.0),
    "PCK": (("PCK",), 100.0),
    "AUC": (("AUC",), 100.0),
    "EPE": (("EPE",), 1.0),
}


#: How the papers write the dataset names.
DISPLAY_NAMES = {
    "coco": "COCO",
    "aic": "AIC",
    "mpii": "MPII",
    "ap10k": "AP-10K",
    "apt36k": "APT-36K",
    "coco_wholebody": "COCO-WholeBody",
    "ochuman": "OCHuman",
    "interhand2d": "InterHand2.6M",
    "pw3d": "3DPW",
}


class TableError(ValueError):
    """A table file that does not say what the harness needs; the message names the field."""


@dataclass(frozen=True)
class ModelColumn:
    """One column of a table: a released model and its checkpoint file name."""

    id: str
    label: str
    kind: str  # "vitpose_plus" | "posebh"
    size: str  # "base" | "huge"
    checkpoint: str


@dataclass(frozen=True)
class TableRow:
    """One dataset row: what is evaluated, how, and the published values per model id."""

    dataset: str
    split: str
    boxes: str
    use_gt_bbox: bool
    metrics: tuple[str, ...]
    tolerance: float
    expected: Mapping[str, tuple[float | None, ...]] = field(default_factory=dict)
    part: str | None = None  # COCO-WholeBody: the part whose AP/AR the table reports
    submission_only: bool = False  # no public GT: the run writes the server-submission JSON

    @property
    def label(self) -> str:
        return f"{DISPLAY_NAMES.get(self.dataset, self.dataset)} {self.split}"

    def expected_value(self, model_id: str, metric: str) -> float | None:
        values = self.expected.get(model_id, ())
        i = self.metrics.index(metric)
        return values[i] if i < len(values) else None


@dataclass(frozen=True)
class Table:
    """A whole table: its columns, rows and the source of its expected values."""

    name: str
    title: str
    source: str
    models: tuple[ModelColumn, ...]
    rows: tuple[TableRow, ...]
    path: str = ""

    def model(self, model_id: str) -> ModelColumn:
        for m in self.models:
            if m.id == model_id:
                return m
        ids = [m.id for m in self.models]
        raise KeyError(f"{self.name}: no model {model_id!r}; columns: {ids}")


def _need(d: Mapping[str, Any], key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise TableError(f"{where}: missing field {key!r}")
    value = d[key]
    if not isinstance(value, kind):
        raise TableError(f"{where}: field {key!r} must be {kind}, got {type(value).__name__}")
    return value


def _parse(data: Mapping[str, Any], where: str) -> Table:
    models = []
    for i, m in enumerate(_need(data, "models", where, list)):
        w = f"{where} [[models]] #{i + 1}"
        models.append(
            ModelColumn(
                id=_need(m, "id", w, str),
                label=_need(m, "label", w, str),
                kind=_need(m, "kind", w, str),
                size=_need(m, "size", w, str),
                checkpoint=_need(m, "checkpoint", w, str),
            )
        )
        if models[-1].kind not in ("vitpose_plus", "posebh"):
            raise TableError(f"{w}: kind must be 'vitpose_plus' or 'posebh'")
    ids = [m.id for m in models]
    rows = []
    for i, r in enumerate(_need(data, "rows", where, list)):
        w = f"{where} [[rows]] #{i + 1}"
        metrics = tuple(_need(r, "metrics", w, list))
        unknown = [m for m in metrics if m not in METRIC_READERS]
        if unknown:
            raise TableError(f"{w}: unknown metrics {unknown}; known: {sorted(METRIC_READERS)}")
        expected = dict(r.get("expected", {}))
        for model_id, values in expected.items():
            if model_id not in ids:
                raise TableError(f"{w}: expected.{model_id} names no model column ({ids})")
            if len(values) > len(metrics):
                raise TableError(f"{w}: expected.{model_id} has more values than metrics")
        rows.append(
            TableRow(
                dataset=_need(r, "dataset", w, str),
                split=_need(r, "split", w, str),
                boxes=_need(r, "boxes", w, str),
                use_gt_bbox=_need(r, "use_gt_bbox", w, bool),
                metrics=metrics,
                tolerance=float(_need(r, "tolerance", w, (int, float))),
                expected={k: tuple(float(x) for x in v) for k, v in expected.items()},
                part=r.get("part"),
                submission_only=bool(r.get("submission_only", False)),
            )
        )
    return Table(
        name=_need(data, "name", where, str),
        title=_need(data, "title", where, str),
        source=_need(data, "source", where, str),
        models=tuple(models),
        rows=tuple(rows),
        path=where,
    )


def load_table(name_or_path: str | Path) -> Table:
    """A table by name (``table1`` … ``table5``, shipped with posebh) or from a TOML path."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise FileNotFoundError(f"table file {path} does not exist")
        text, where = path.read_text(encoding="utf-8"), str(path)
    else:
        if str(name_or_path) not in TABLE_NAMES:
            raise TableError(f"unknown table {name_or_path!r}; tables: {', '.join(TABLE_NAMES)}")
        res = resources.files("posebh.reproduce") / "tables" / f"{name_or_path}.toml"
        text = res.read_text(encoding="utf-8")
        where = f"posebh/reproduce/tables/{name_or_path}.toml"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TableError(_toml_error(where, text, err)) from None
    return _parse(data, where)


def _toml_error(where: str, text: str, err: Exception) -> str:
    """Where the TOML breaks (file, line and its text), and how to mend it."""
    found = re.search(r"line (\d+)", str(err))
    line = int(found.group(1)) if found else None
    lines = text.splitlines()
    shown = f": {lines[line - 1].strip()!r}" if line and line <= len(lines) else ""
    return (
        f"{where}: not valid TOML ({err}){shown}; fix that line (key = value, strings in "
        "double quotes, [[models]] / [[rows]] headers; posebh/reproduce/tables/table1.toml "
        "is a complete example)"
    )


def flat_metric_name(metric: str, part: str | None = None) -> str:
    """The flat name of a table metric in ``posebh.evaluate``'s metrics (``"wholebody/AP"``),
    as ``ci95`` and the bootstrap name them."""
    path, _ = METRIC_READERS[metric]
    return "/".join([*([part] if part else []), *path])


def read_interval(
    metrics: Mapping[str, Any], name: str, part: str | None = None
) -> tuple[float, float] | None:
    """The 95 % interval of ``name`` (``metrics["ci95"]``, ``posebh eval --bootstrap``) in the
    table's unit; None when not bootstrapped or undefined."""
    ci = metrics.get("ci95", {}).get(flat_metric_name(name, part))
    factor = METRIC_READERS[name][1]
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return (float(ci[0]) * factor, float(ci[1]) * factor)


def read_metric(metrics: Mapping[str, Any], name: str, part: str | None = None) -> float | None:
    """``name`` from a :func:`posebh.evaluate.evaluate` metrics dict, in the table's unit."""
    path, factor = METRIC_READERS[name]
    node: Any = metrics.get(part, {}) if part else metrics
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return float(node) * factor if isinstance(node, (int, float)) else None
