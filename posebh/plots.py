"""Plots of posebh's reports (the reproduction harness, ``posebh visualize``): expected vs
measured values, the cross-dataset keypoint-prototype similarity matrix, keypoint overlays.

Shape vocabulary: N instances in an image, K keypoints of a skeleton, J keypoint classes over
all training datasets (214 for the six PoseBH datasets), M prototypes per class, F embedding
dimensions, D datasets (blocks of classes).

Every figure is drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas: no
pyplot, so no global figure registry to leak into and no dependence on the interactive backend
of whoever imports this. PNGs are written without the ``Software`` metadata entry (matplotlib
writes no timestamp into PNGs), so the same inputs give the same bytes on one installation.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

# Imported here (not in the functions) so a missing matplotlib fails at import, where the
# harness catches it; none of these select a backend or touch pyplot's global state.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from torch import Tensor

__all__ = [
    "SYNTHETIC_WARNING",
    "Block",
    "block_similarity",
    "plot_expected_vs_measured",
    "plot_keypoint_overlays",
    "plot_prototype_similarity",
    "prototype_similarity_matrix",
]

#: A block of keypoint classes: (dataset name, first class index, number of classes).
Block = tuple[str, int, int]

#: Shown on every expected-vs-measured plot that holds a synthetic measurement.
SYNTHETIC_WARNING = (
    "MEASURED ON THE SYNTHPOSE SYNTHETIC WORLD — NOT COMPARABLE TO THE PUBLISHED VALUES"
)

# mmpose's drawing convention: left limbs green, right limbs orange, centre blue.
_SIDE_COLOURS = {"left": "#00c800", "right": "#ff8000", "centre": "#3399ff"}
_EXPECTED_COLOUR = "#7f7f7f"
_MEASURED_COLOURS = {"real": "#1f77b4", "synthetic": "#d62728"}
_MEASURED_KINDS = ("real", "synthetic")
_DPI = 100


def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: plots are written as PNG; give a path ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Software=None drops the "matplotlib version x" entry, the only varying metadata.
    fig.savefig(path, format="png", metadata={"Software": None})
    # A bare Figure is not registered anywhere; clearing releases its artists at once.
    fig.clear()
    return path


# ------------------------------------------------------------------------------------------
# Expected vs measured
# ------------------------------------------------------------------------------------------

_MAX_INCHES = 16.0  # 1600 px at _DPI, on either side
_MAX_PANELS = 12
_FONT_SIZES = (8.0, 7.5, 7.0, 6.5, 6.0)  # tried in turn until the figure fits
_MARGIN = 0.15  # inches, around the figure and between bands
_COL_GAP = 0.3  # inches between two panels side by side
_ROW_GAP = 0.15  # inches between two rows of panels
_NUMBER = re.compile(r"\d+\.(\d+)")


@dataclass
class _Line:
    """One (row, model) of a panel: what is drawn and the text written beside it."""

    label: str
    expected: float | None
    measured: float
    ci95: tuple[float, float] | None
    expected_text: str
    measured_text: str
    kind: str


def _check_cells(cells: Sequence[Mapping[str, Any]]) -> None:
    if not cells:
        raise ValueError(
            "no cells to plot: pass at least one {panel, row, model, expected, measured}"
        )
    for i, c in enumerate(cells):
        missing = {"panel", "row", "model", "measured_kind"} - set(c)
        if missing:
            raise ValueError(f"cell {i} lacks {sorted(missing)}: {dict(c)}")
        # No default for the kind: silently treating a synthetic number as real is the one
        # mistake this plot exists to prevent.
        if c["measured_kind"] not in _MEASURED_KINDS:
            raise ValueError(
                f"cell {i}: measured_kind must be one of {_MEASURED_KINDS}, got "
                f"{c['measured_kind']!r}"
            )
        for key in ("expected", "measured"):
            v = c.get(key)
            if v is not None and not math.isfinite(float(v)):
                raise ValueError(f"cell {i}: {key} = {v!r}; use None for a missing value")
        ci = c.get("ci95")
        if ci is not None:
            ok = isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2
            if not ok or not all(math.isfinite(float(v)) for v in ci) or ci[0] > ci[1]:
                raise ValueError(
                    f"cell {i}: ci95 = {ci!r}; give a pair (lo, hi) of finite numbers with "
                    "lo <= hi, or None"
                )
        for key in ("expected_text", "measured_text"):
            if key in c and not isinstance(c[key], str):
                raise ValueError(f"cell {i}: {key} = {c[key]!r}; give the table's cell text")


def _measured_text(c: Mapping[str, Any]) -> str:
    if "measured_text" in c:
        return c["measured_text"]
    text = f"{float(c['measured']):.1f}"
    if c.get("ci95") is not None:
        lo, hi = c["ci95"]
        text += f" [{float(lo):.1f}, {float(hi):.1f}]"
    return text


def _expected_text(c: Mapping[str, Any]) -> str:
    if "expected_text" in c:
        return c["expected_text"]
    return "–" if c.get("expected") is None else f"{float(c['expected']):.1f}"


def _group(cells: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[_Line]], list[str]]:
    """Drawn lines per panel (first-appearance order) and the not-run entries of the
    footnote ("PoseBH-B on COCO test-dev", with the rows when only some did not run)."""
    last: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for c in cells:
        # A repeated (panel, row, model) keeps its last value, as a dict update would.
        last[(str(c["panel"]), str(c["row"]), str(c["model"]))] = c
    panels: dict[str, list[_Line]] = {}
    not_run: dict[tuple[str, str], list[str]] = {}
    ran: set[tuple[str, str]] = set()
    for (panel, row, model), c in last.items():
        if c.get("measured") is None:
            not_run.setdefault((model, panel), []).append(row)
            continue
        ran.add((model, panel))
        ci = c.get("ci95")
        line = _Line(
            label=f"{row} · {model}",
            expected=None if c.get("expected") is None else float(c["expected"]),
            measured=float(c["measured"]),
            ci95=None if ci is None else (float(ci[0]), float(ci[1])),
            expected_text=_expected_text(c),
            measured_text=_measured_text(c),
            kind=c["measured_kind"],
        )
        panels.setdefault(panel, []).append(line)
    notes = [
        f"{model} on {panel}" + (f" ({', '.join(rows)})" if (model, panel) in ran else "")
        for (model, panel), rows in not_run.items()
    ]
    return panels, notes


def _ticks(
    lo: float, hi: float, decimals: int, most: int
) -> tuple[tuple[float, float], list[tuple[float, str]]]:
    """x limits and at most ``most`` (>= 2) round ticks, labelled with no more decimals than
    the caller's own texts carry (a tick reading 77.25 beside "77.3" would be a finer number
    than the table claims)."""
    unit = 10.0**-decimals
    if hi - lo < 2 * unit:
        centre = (lo + hi) / 2
        lo, hi = centre - unit, centre + unit
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    for k in itertools.count(-decimals):
        for m in (1, 2, 5):
            step = m * 10.0**k
            first, last = math.ceil(lo / step), math.floor(hi / step)
            if last - first + 1 <= most:
                ticks = [(i * step, f"{i * step:.{max(0, -k)}f}") for i in range(first, last + 1)]
                return (lo, hi), ticks
    raise AssertionError("unreachable")


class _Measure:
    """Text sizes in inches at the figure's dpi, before anything is placed."""

    def __init__(self, fig: Figure) -> None:
        self.fig = fig
        self.renderer = fig.canvas.get_renderer()
        self._widths: dict[tuple[str, float, str], float] = {}

    def width(self, text: str, size: float, weight: str = "normal") -> float:
        key = (text, size, weight)
        if key not in self._widths:  # the fitting loop asks for the same texts again
            prop = FontProperties(size=size, weight=weight)
            w, _, _ = self.renderer.get_text_width_height_descent(text, prop, ismath=False)
            self._widths[key] = w / self.fig.dpi
        return self._widths[key]

    def extent(self, artist: Any) -> tuple[float, float]:
        box = artist.get_window_extent(self.renderer)
        return box.width / self.fig.dpi, box.height / self.fig.dpi


@dataclass
class _Grid:
    """Sizes (inches) of one layout of the panels at one font size."""

    size: float
    ncols: int
    label_w: float
    plot_w: float
    expected_w: float
    measured_w: float
    line_h: float
    title_h: float
    tick_h: float
    row_heights: list[float]

    @property
    def panel_w(self) -> float:
        return self.label_w + self.plot_w + self.expected_w + self.measured_w

    @property
    def width(self) -> float:
        return self.ncols * self.panel_w + (self.ncols - 1) * _COL_GAP

    @property
    def height(self) -> float:
        return sum(self.row_heights) + (len(self.row_heights) - 1) * _ROW_GAP


def _grid(panels: dict[str, list[_Line]], size: float, measure: _Measure) -> _Grid:
    lines = [line for group in panels.values() for line in group]
    ncols = 1 if len(panels) == 1 else 2 if len(panels) <= 6 else 3
    gap = size * 1.2 / 72  # a space between columns, at least one em wide
    label_w = max(measure.width(x.label, size) for x in lines) + gap
    expected_w = max(measure.width(x.expected_text, size) for x in lines) + 2 * gap
    measured_w = max(measure.width(x.measured_text, size) for x in lines) + gap
    title_w = max(measure.width(p, size + 1, "bold") for p in panels)
    fixed = label_w + expected_w + measured_w
    room = (_MAX_INCHES - 2 * _MARGIN - (ncols - 1) * _COL_GAP) / ncols - fixed
    plot_w = max(1.4, min(2.6, room), title_w - fixed)
    line_h = size * 2.0 / 72
    counts = [len(g) for g in panels.values()]
    tick_h = (7.0 + size * 1.4) / 72  # tick length + pad + one line of tick labels
    title_h = (size + 1) * 1.8 / 72
    rows = [max(counts[i : i + ncols]) for i in range(0, len(counts), ncols)]
    heights = [title_h + n * line_h + tick_h for n in rows]
    return _Grid(size, ncols, label_w, plot_w, expected_w, measured_w, line_h, title_h,
                 tick_h, heights)  # fmt: skip


def _fit_text(measure: _Measure, text: str, size: float, width: float) -> str:
    """``text`` wrapped onto as few lines as keep it within ``width`` inches."""
    wrapped = text
    for chars in range(len(text), 10, -1):
        wrapped = "\n".join(textwrap.wrap(text, chars)) or text
        if all(measure.width(s, size) <= width for s in wrapped.split("\n")):
            break
    return wrapped


def _footnote(measure: _Measure, notes: list[str], hidden: list[str], width: float) -> str:
    """One line: the cells that did not run (truncated with a count), then what did not fit."""
    text = ""
    for shown in range(len(notes), -1, -1) if notes else ():
        more = len(notes) - shown
        listed = ", ".join([*notes[:shown], *([f"… {more} more"] if more else [])])
        text = "not run: " + listed
        if measure.width(text, 7.0) <= width:
            break
    return "   ".join([t for t in (text, *hidden) if t])


@dataclass
class _Layout:
    """One candidate figure: its size (inches), panel grid and figure-level texts."""

    fig_w: float
    fig_h: float
    grid: _Grid | None
    bands: list[tuple[Any, float]]  # (warning | title | legend, height), top to bottom
    footer: Any

    @property
    def fits(self) -> bool:
        return self.fig_w <= _MAX_INCHES and self.fig_h <= _MAX_INCHES

    def remove(self) -> None:
        """Takes this candidate's texts off the figure (not the warning: made once)."""
        for artist, _ in self.bands[-2:]:
            artist.remove()
        self.footer.remove()


def _layout(
    fig: Figure,
    measure: _Measure,
    panels: dict[str, list[_Line]],
    size: float,
    *,
    title: str,
    measured_label: str,
    warning: Any,
    footnote: tuple[list[str], list[str]],
) -> _Layout:
    grid = _grid(panels, size, measure) if panels else None
    bands: list[tuple[Any, float]] = []
    if warning is not None:
        bands.append((warning, measure.extent(warning)[1]))
    fig_w = 2 * _MARGIN + max(
        grid.width if grid else 4.0, measure.extent(bands[0][0])[0] if bands else 0.0
    )
    inner = min(fig_w, _MAX_INCHES) - 2 * _MARGIN
    head = fig.text(0.5, 1.0, _fit_text(measure, title, 12.0, inner), fontsize=12.0,
                    ha="center", va="top", parse_math=False)  # fmt: skip
    bands.append((head, measure.extent(head)[1]))
    handles = [Line2D([], [], marker="D", color=_EXPECTED_COLOUR, linestyle="none",
                      label="published (expected)")]  # fmt: skip
    lines = [x for group in panels.values() for x in group]
    for kind in sorted({x.kind for x in lines}):
        label = measured_label + (" — SYNTHETIC world" if kind == "synthetic" else "")
        handles.append(Line2D([], [], **_measured_style(kind), linestyle="none", label=label))
    if any(x.ci95 for x in lines):
        handles.append(Line2D([], [], color="black", marker="|", label="95 % interval"))
    for ncol in range(len(handles), 0, -1):  # as many entries side by side as fit
        legend = fig.legend(handles=handles, loc="upper center", ncol=ncol, fontsize=size,
                            frameon=False, borderaxespad=0.0)  # fmt: skip
        if measure.extent(legend)[0] <= inner or ncol == 1:
            break
        legend.remove()
    bands.append((legend, measure.extent(legend)[1]))
    text = _footnote(measure, *footnote, inner)
    if not panels:
        text = "nothing measured: no cell has a measured value   " + text
    footer = fig.text(0.0, 0.0, text, fontsize=7.0, color="#404040", va="bottom",
                      parse_math=False)  # fmt: skip
    foot_h = measure.extent(footer)[1] + _MARGIN
    top_h = _MARGIN + sum(h + _MARGIN for _, h in bands)
    fig_h = top_h + (grid.height if grid else 0.3) + foot_h + _MARGIN
    return _Layout(fig_w, fig_h, grid, bands, footer)


def _figure_expected_vs_measured(
    cells: Sequence[Mapping[str, Any]],
    *,
    title: str = "expected vs measured",
    measured_label: str = "measured",
) -> Figure:
    """The figure of :func:`plot_expected_vs_measured`, not yet saved (for tests)."""
    _check_cells(cells)
    synthetic = any(c["measured_kind"] == "synthetic" for c in cells)
    panels, notes = _group(cells)
    texts = [x.expected_text + " " + x.measured_text for g in panels.values() for x in g]
    decimals = max([len(d) for t in texts for d in _NUMBER.findall(t)], default=0)
    fig = _new_figure((8.0, 6.0))
    measure = _Measure(fig)
    warning = None
    if synthetic:
        warning = fig.suptitle(
            SYNTHETIC_WARNING.replace(" — ", " —\n"),  # two lines: big letters, modest width
            fontsize=14,
            fontweight="bold",
            color=_MEASURED_COLOURS["synthetic"],
            va="top",
        )

    # Fit within 1600 px: smaller fonts first, then fewer panels, then (one panel left)
    # fewer rows; what is left out is counted in the footnote.
    shown = dict(itertools.islice(panels.items(), _MAX_PANELS))
    hidden_rows = 0
    while True:
        hidden = [f"… {n} more {what} not shown" for n, what in
                  ((len(panels) - len(shown), "panels"), (hidden_rows, "rows")) if n]  # fmt: skip
        for size in _FONT_SIZES:
            layout = _layout(fig, measure, shown, size, title=title, warning=warning,
                             measured_label=measured_label, footnote=(notes, hidden))  # fmt: skip
            if layout.fits:
                break
            layout.remove()
        if layout.fits:
            break
        name, lines = next(iter(shown.items()))
        if len(shown) > 1:
            shown.popitem()
        elif len(lines) > 1 and layout.fig_w <= _MAX_INCHES and layout.grid is not None:
            # Too tall at the smallest font: as many rows fewer as the excess holds.
            excess = math.ceil((layout.fig_h - _MAX_INCHES) / layout.grid.line_h)
            keep = max(1, len(lines) - max(1, excess))
            shown = {name: lines[:keep]}
            hidden_rows += len(lines) - keep
        else:  # one row too wide even alone (labels inches long): drawn clipped
            layout = _layout(fig, measure, shown, _FONT_SIZES[-1], title=title, warning=warning,
                             measured_label=measured_label, footnote=(notes, hidden))  # fmt: skip
            layout.fig_w = min(layout.fig_w, _MAX_INCHES)
            layout.fig_h = min(layout.fig_h, _MAX_INCHES)
            break

    fig_w, fig_h = layout.fig_w, layout.fig_h
    fig.set_size_inches(fig_w, fig_h)
    y = fig_h - _MARGIN  # inches from the bottom, walking down
    for artist, height in layout.bands:
        if artist is layout.bands[-1][0]:  # the legend
            artist.set_bbox_to_anchor((0.5, y / fig_h), transform=fig.transFigure)
        else:
            artist.set_position((0.5, y / fig_h))
        y -= height + _MARGIN
    layout.footer.set_position((_MARGIN / fig_w, _MARGIN / fig_h))
    grid = layout.grid
    if grid is not None:
        left = _MARGIN + (fig_w - 2 * _MARGIN - grid.width) / 2
        for i, (name, lines) in enumerate(shown.items()):
            r, c = divmod(i, grid.ncols)
            x0 = left + c * (grid.panel_w + _COL_GAP)
            y0 = y - sum(grid.row_heights[:r]) - r * _ROW_GAP
            _draw_panel(fig, name, lines, grid, x0, y0, decimals)
    return fig


def _measured_style(kind: str) -> dict[str, Any]:
    # Synthetic: red and another marker shape, so a greyscale print still tells them apart.
    if kind == "synthetic":
        return {"marker": "X", "color": _MEASURED_COLOURS[kind], "markersize": 7}
    return {"marker": "o", "color": _MEASURED_COLOURS[kind], "markersize": 6}


def _draw_panel(
    fig: Figure, name: str, lines: list[_Line], grid: _Grid, x0: float, top: float, decimals: int
) -> None:
    """One panel with its top-left corner at (x0, top) inches: the title, then the axes
    (row labels on its left, the published and measured texts in two columns on its right),
    then the x tick labels."""
    fig_w, fig_h = fig.get_size_inches()
    size = grid.size
    fig.text(x0 / fig_w, top / fig_h, name, fontsize=size + 1, fontweight="bold",
             ha="left", va="top", parse_math=False)  # fmt: skip
    n = len(lines)
    height = n * grid.line_h
    bottom = top - grid.title_h - height
    ax = fig.add_axes(
        ((x0 + grid.label_w) / fig_w, bottom / fig_h, grid.plot_w / fig_w, height / fig_h),
        label=name,
    )
    ys = [n - 1 - i for i in range(n)]  # the first line on top
    values = [v for x in lines for v in (x.expected, x.measured, *(x.ci95 or ())) if v is not None]
    xlim, ticks = _ticks(min(values), max(values), decimals, max(2, int(grid.plot_w / 0.55)))
    segments = []
    for y, x in zip(ys, lines, strict=True):
        if x.expected is not None:
            ax.plot([x.expected], [y], marker="D", color=_EXPECTED_COLOUR, markersize=5,
                    linestyle="none", zorder=3)  # fmt: skip
        ax.plot([x.measured], [y], **_measured_style(x.kind), linestyle="none", zorder=4)
        if x.ci95 is not None:
            segments.append(((x.ci95[0], y), (x.ci95[1], y)))
            ax.plot(x.ci95, [y, y], marker="|", markersize=7, linestyle="none",
                    color=_MEASURED_COLOURS[x.kind], zorder=2)  # fmt: skip
        for offset, text, colour in (
            (grid.expected_w - size * 1.2 / 72, x.expected_text, "#595959"),
            (grid.expected_w, x.measured_text, _MEASURED_COLOURS[x.kind]),
        ):
            # Right-aligned published column, left-aligned measured column, outside the
            # axes: no marker or whisker can run into them.
            ax.annotate(
                text, (1.0, y), xycoords=("axes fraction", "data"), xytext=(offset * 72, 0),
                textcoords="offset points", ha="right" if text is x.expected_text else "left",
                va="center", fontsize=size, color=colour, annotation_clip=False,
                parse_math=False,
            )  # fmt: skip
    if segments:
        # The whiskers as one collection per panel; gid lets a reader (the tests) find them.
        whiskers = LineCollection(
            segments,
            colors=[_MEASURED_COLOURS[x.kind] for x in lines if x.ci95],
            linewidths=1.2,
            zorder=2,
        )
        whiskers.set_gid("ci95")
        ax.add_collection(whiskers)
    ax.set_xlim(*xlim)
    ax.set_ylim(-0.5, n - 0.5)
    ax.set_xticks([t for t, _ in ticks], [s for _, s in ticks], fontsize=size)
    ax.set_yticks(ys, [x.label for x in lines], fontsize=size)
    ax.tick_params(axis="y", length=0, pad=size * 0.6)
    ax.tick_params(axis="x", length=3.5, pad=2.0)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)


def plot_expected_vs_measured(
    cells: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str = "expected vs measured",
    measured_label: str = "measured",
) -> Path:
    """Small multiples, one panel per ``panel`` of the cells (a dataset or metric family):
    one line per (row, model) with the published value (grey diamond) and the measured one
    (blue dot, or red cross when synthetic) with its 95 % interval as a whisker, and the
    caller's own cell texts in two columns on the right.

    ``cells``: ``{"panel": "COCO val", "row": "AP", "model": "PoseBH-B", "expected": 77.3 |
    None, "measured": 3.1 | None, "ci95": (2.0, 4.1) | None, "expected_text": "77.3",
    "measured_text": "3.1 [2.0, 4.1]", "measured_kind": "synthetic" | "real"}``. The texts
    are written as given (the report's table text); without them one decimal is used. Cells
    that did not run (``measured`` None) are not drawn, only named in a footnote. When any
    cell is synthetic, :data:`SYNTHETIC_WARNING` is the headline. The figure stays within
    1600 × 1600 px (smaller fonts, then at most 12 panels, the rest counted in the
    footnote). Returns ``path`` (a .png).
    """
    fig = _figure_expected_vs_measured(cells, title=title, measured_label=measured_label)
    return _save(fig, path)


# ------------------------------------------------------------------------------------------
# Prototype similarity
# ------------------------------------------------------------------------------------------


def _check_blocks(blocks: Sequence[Block], num_classes: int) -> list[Block]:
    out = [(str(name), int(start), int(count)) for name, start, count in blocks]
    if not out:
        raise ValueError("blocks is empty: pass (name, start, count) per dataset")
    for name, start, count in out:
        if count < 1 or start < 0 or start + count > num_classes:
            raise ValueError(
                f"block {name!r} [{start}, {start + count}) does not fit {num_classes} classes"
            )
    ordered = sorted(out, key=lambda b: b[1])
    for (a, sa, ca), (b, sb, _) in itertools.pairwise(ordered):
        if sa + ca > sb:
            raise ValueError(f"blocks {a!r} and {b!r} overlap")
    return out


def prototype_similarity_matrix(
    prototypes: Tensor,
    blocks: Sequence[Block] | None = None,
    *,
    reduce: Literal["max", "mean"] = "max",
    absolute: bool = True,
) -> Tensor:
    """Class-to-class similarity of keypoint prototypes.

    ``S[i, j] = reduce over (m, n) of |cos(P[i, m], P[j, n])|``.

    Why ``max`` (the default): the model scores a pixel for class ``j`` by the *maximum* over
    ``j``'s M prototypes (:func:`posebh.ops.similarity_reference.prototype_class_scores`), so
    an embedding sitting on any prototype of class ``i`` scores class ``j`` at up to
    ``S[i, j]``: the max says whether the two classes can be confused, which is what a
    cross-dataset similarity matrix is read for (e.g. COCO ``left_shoulder`` vs AIC
    ``left_shoulder``). It also makes the diagonal exactly 1, so the matrix reads like a
    correlation matrix. ``mean`` averages the M×M pairs instead (the diagonal is then the
    within-class spread, below 1).

    Why ``absolute`` (default True): the model matches with |cos| (an embedding and its
    negation are the same match), so signed values would show −0.9 for a pair the model
    treats as near-identical. ``absolute=False`` gives the signed cosine, in [−1, 1].

    Args:
        prototypes: [J, M, F], any norm (normalised here). An all-zero prototype (removed
            bank) has similarity 0 to everything.
        blocks: optional (name, start, count) per dataset, checked against J only.
        reduce: "max" or "mean" over the M×M prototype pairs.
        absolute: use |cos| (as the model does).

    Returns:
        [J, J] float64, symmetric.
    """
    if prototypes.ndim != 3:
        raise ValueError(f"prototypes must be [J, M, F], got shape {tuple(prototypes.shape)}")
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    j, m, f = prototypes.shape
    if blocks is not None:
        _check_blocks(blocks, j)
    # float64: the diagonal and the symmetry are then exact to ~1e-15, so plots and JSON do
    # not carry float32 noise (0.99999994) that looks like a finding.
    p = F.normalize(prototypes.detach().to("cpu", torch.float64), p=2, dim=-1).reshape(j * m, f)
    cos = (p @ p.t()).reshape(j, m, j, m)
    if absolute:
        cos = cos.abs()
    s = cos.amax(dim=(1, 3)) if reduce == "max" else cos.mean(dim=(1, 3))
    # p @ p.T is symmetric up to rounding of the blocked matmul; make it exactly so.
    return (s + s.t()) / 2


def block_similarity(matrix: Tensor, blocks: Sequence[Block]) -> Tensor:
    """Per-dataset summary of a class similarity matrix: ``B[a, b]`` = mean over the classes
    ``i`` of block ``a`` of ``max_{j in b, j != i} S[i, j]``, i.e. how close, on average, a
    keypoint of dataset ``a`` comes to its best counterpart in dataset ``b``.

    Not symmetric in general (a 133-keypoint block finds a close match for each of a
    17-keypoint block's classes more easily than the reverse). On the diagonal the class
    itself is excluded (it would give a trivial 1): ``B[a, a]`` is how close a keypoint comes
    to its nearest *other* keypoint of the same dataset; NaN for a single-class block.

    Args:
        matrix: [J, J] from :func:`prototype_similarity_matrix`.
        blocks: D blocks (name, start, count).

    Returns:
        [D, D] float64.
    """
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be [J, J], got shape {tuple(matrix.shape)}")
    blocks = _check_blocks(blocks, matrix.shape[0])
    s = matrix.detach().to("cpu", torch.float64).clone()
    s.fill_diagonal_(-math.inf)
    d = len(blocks)
    out = torch.empty(d, d, dtype=torch.float64)
    for a, (_, sa, ca) in enumerate(blocks):
        for b, (_, sb, cb) in enumerate(blocks):
            best = s[sa : sa + ca, sb : sb + cb].amax(dim=1)
            out[a, b] = best.mean() if torch.isfinite(best).all() else math.nan
    return out


def plot_prototype_similarity(
    matrix: Tensor,
    blocks: Sequence[Block],
    path: str | os.PathLike[str],
    *,
    title: str = "keypoint prototype similarity",
    vmin: float | None = None,
) -> Path:
    """Heat map of a [J, J] class similarity matrix with the dataset blocks outlined and
    named. The colour range is [0, 1], or [−1, 1] when the matrix holds negative values
    (signed cosines) unless ``vmin`` is given. Returns ``path`` (a .png)."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be [J, J], got shape {tuple(matrix.shape)}")
    j = matrix.shape[0]
    blocks = _check_blocks(blocks, j)
    values = matrix.detach().to("cpu", torch.float64).numpy()
    if vmin is None:
        vmin = -1.0 if float(np.nanmin(values)) < 0 else 0.0

    fig = _new_figure((9.0, 8.0))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(values, cmap="viridis", vmin=vmin, vmax=1.0, interpolation="nearest")
    for _, start, count in blocks:
        for edge in (start - 0.5, start + count - 0.5):
            ax.axhline(edge, color="white", linewidth=0.8)
            ax.axvline(edge, color="white", linewidth=0.8)
    centres = [start + (count - 1) / 2 for _, start, count in blocks]
    labels = [f"{name}\n({count})" for name, _, count in blocks]
    ax.set_xticks(centres)
    ax.set_xticklabels(labels, fontsize=8, rotation=45, ha="right")
    ax.set_yticks(centres)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(-0.5, j - 0.5)
    ax.set_ylim(j - 0.5, -0.5)
    ax.set_title(title, fontsize=12)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="class similarity")
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------------------------------
# Keypoint overlays
# ------------------------------------------------------------------------------------------


def _sides(skeleton_name: str) -> list[str]:
    """'left' / 'right' / 'centre' per keypoint: from the name when it says so, else from
    the flip pairs (the lower index of a mirrored pair counts as left; this only matters for
    unnamed mirrored points such as the 68 face points), else centre."""
    from posebh.skeletons import get_skeleton

    sk = get_skeleton(skeleton_name)
    sides = ["centre"] * sk.num_keypoints
    for i, j in sk.flip_pairs:
        sides[i], sides[j] = "left", "right"
    for i, name in enumerate(sk.keypoint_names):
        low = name.lower()
        if low.startswith(("left", "l_")):
            sides[i] = "left"
        elif low.startswith(("right", "r_")):
            sides[i] = "right"
    return sides


def _as_rgb(image: np.ndarray, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(
            f"image {index}: expected an H×W×3 uint8 array, got shape {image.shape} "
            f"dtype {image.dtype}"
        )
    return image[:, :, :3]


def plot_keypoint_overlays(
    images: Sequence[np.ndarray],
    keypoints: Sequence[np.ndarray],
    skeleton_name: str,
    path: str | os.PathLike[str],
    *,
    titles: Sequence[str] | None = None,
    score_thr: float = 0.3,
    ncols: int = 3,
    title: str | None = None,
) -> Path:
    """A grid of images with their keypoints and links drawn on top.

    Args:
        images: one H×W×3 uint8 RGB array per panel (H×W grey is expanded).
        keypoints: one [N, K, 3] array (x, y, score) per image, N ≥ 0 instances, K the
            skeleton's keypoint count. Keypoints with score ≤ ``score_thr`` are not drawn,
            nor links touching them (ground truth: use the visibility flag as the score).
        skeleton_name: a :data:`posebh.skeletons.SKELETONS` name; gives K, the left/right
            colouring (left green, right orange, centre blue, as mmpose) and the links
            (:data:`posebh.skeletons.SKELETON_LINKS`; points only where none are defined).
        titles: one per image.
        ncols: panels per row.
        title: the figure's headline (default: skeleton name and threshold).

    Returns:
        ``path`` (a .png).
    """
    from posebh.skeletons import SKELETON_LINKS, get_skeleton

    sk = get_skeleton(skeleton_name)
    if not images:
        raise ValueError("no images to draw")
    if len(keypoints) != len(images):
        raise ValueError(f"{len(images)} images but {len(keypoints)} keypoint arrays")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    if ncols < 1:
        raise ValueError(f"ncols must be ≥ 1, got {ncols}")
    rgb = [_as_rgb(im, i) for i, im in enumerate(images)]
    kpts = []
    for i, k in enumerate(keypoints):
        k = np.asarray(k, dtype=np.float64)
        if k.ndim == 2 and k.size == 0:
            k = k.reshape(0, sk.num_keypoints, 3)
        if k.ndim != 3 or k.shape[1:] != (sk.num_keypoints, 3):
            raise ValueError(
                f"keypoints {i}: expected [N, {sk.num_keypoints}, 3] for {sk.name}, got "
                f"shape {k.shape}"
            )
        kpts.append(k)
    sides = _sides(sk.name)
    links = SKELETON_LINKS.get(sk.name, ())

    ncols = min(ncols, len(rgb))
    nrows = math.ceil(len(rgb) / ncols)
    aspect = max(im.shape[0] / im.shape[1] for im in rgb)
    panel = 4.0
    # 0.4 in per row for the panel titles, 0.8 in for the headline and the legend.
    fig = _new_figure((panel * ncols, (panel * aspect + 0.4) * nrows + 0.8))
    # Marker sizes in points scale with the figure, not the image: keep them small enough
    # for the 68 face points of COCO-WholeBody.
    marker = 3.0 if sk.num_keypoints > 30 else 4.5
    for idx, (im, k) in enumerate(zip(rgb, kpts, strict=True)):
        ax = fig.add_subplot(nrows, ncols, idx + 1)
        ax.imshow(im, interpolation="nearest")
        h, w = im.shape[:2]
        for inst in k:
            shown = inst[:, 2] > score_thr
            for a, b in links:
                if shown[a] and shown[b]:
                    side = sides[a] if sides[a] == sides[b] else "centre"
                    ax.plot(
                        inst[[a, b], 0],
                        inst[[a, b], 1],
                        color=_SIDE_COLOURS[side],
                        linewidth=1.5,
                        solid_capstyle="round",
                    )
            for side, colour in _SIDE_COLOURS.items():
                sel = shown & np.array([s == side for s in sides])
                if sel.any():
                    ax.plot(
                        inst[sel, 0],
                        inst[sel, 1],
                        linestyle="none",
                        marker="o",
                        markersize=marker,
                        markerfacecolor=colour,
                        markeredgecolor="black",
                        markeredgewidth=0.4,
                    )
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_axis_off()
        if titles is not None:
            ax.set_title(str(titles[idx]), fontsize=8)

    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="none",
            markerfacecolor=c,
            markeredgecolor="black",
            label=s,
        )
        for s, c in _SIDE_COLOURS.items()
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(title or f"{sk.name} keypoints (score > {score_thr:g})", fontsize=11)
    fig.tight_layout(rect=(0.0, 0.04, 1.0, 0.96))
    return _save(fig, path)
