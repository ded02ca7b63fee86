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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

# Imported here (not in the functions) so a missing matplotlib fails at import, where the
# harness catches it; none of these select a backend or touch pyplot's global state.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
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


def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, dpi=100)
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


def _check_cells(cells: Sequence[Mapping[str, Any]]) -> None:
    if not cells:
        raise ValueError("no cells to plot: pass at least one {row, model, expected, measured}")
    for i, c in enumerate(cells):
        missing = {"row", "model", "measured_kind"} - set(c)
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


def _figure_expected_vs_measured(
    cells: Sequence[Mapping[str, Any]],
    *,
    title: str = "expected vs measured",
    measured_label: str = "measured",
) -> Figure:
    """The figure of :func:`plot_expected_vs_measured`, not yet saved (for tests)."""
    _check_cells(cells)
    groups: dict[tuple[str, str], Mapping[str, Any]] = {}
    for c in cells:
        # A repeated (row, model) keeps its last value, as a dict update would.
        groups[(str(c["row"]), str(c["model"]))] = c
    keys = list(groups)
    synthetic = any(c["measured_kind"] == "synthetic" for c in cells)
    values = [
        float(v)
        for c in groups.values()
        for v in (c.get("expected"), c.get("measured"))
        if v is not None
    ]
    top = max([*values, 0.0]) or 1.0
    bottom = min([*values, 0.0])

    n = len(keys)
    fig = _new_figure((10.0, 1.6 + 0.75 * n + (0.8 if synthetic else 0.0)))
    ax = fig.add_subplot(1, 1, 1)
    height = 0.38
    missing_x = 0.0
    missing_drawn = False
    for i, key in enumerate(keys):
        c = groups[key]
        y = n - 1 - i  # the first cell on top
        kind = c["measured_kind"]
        for offset, value, colour, hatch in (
            (height / 2, c.get("expected"), _EXPECTED_COLOUR, None),
            (
                -height / 2,
                c.get("measured"),
                _MEASURED_COLOURS[kind],
                "//" if kind == "synthetic" else None,
            ),
        ):
            if value is None:
                ax.plot(
                    [missing_x],
                    [y + offset],
                    marker="x",
                    color="black",
                    markersize=8,
                    linestyle="none",
                )
                ax.annotate(
                    "missing",
                    (missing_x, y + offset),
                    xytext=(8, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                    color="black",
                )
                missing_drawn = True
                continue
            value = float(value)
            ax.barh(
                y + offset,
                value,
                height=height,
                color=colour,
                hatch=hatch,
                edgecolor="white" if hatch else colour,
            )
            ax.annotate(
                f"{value:g}",
                (value, y + offset),
                xytext=(3 if value >= 0 else -3, 0),
                textcoords="offset points",
                va="center",
                ha="left" if value >= 0 else "right",
                fontsize=8,
            )
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"{row}\n{model}" for row, model in reversed(keys)], fontsize=8)
    ax.set_ylim(-0.7, n - 0.3)
    span = top - bottom
    ax.set_xlim(bottom - (0.05 * span if bottom < 0 else 0.0), top + 0.15 * span)
    ax.axvline(0.0, color="black", linewidth=0.6)
    ax.grid(axis="x", alpha=0.3)

    kinds = sorted({c["measured_kind"] for c in groups.values()})
    handles: list[Any] = [Patch(color=_EXPECTED_COLOUR, label="expected (published)")]
    for kind in kinds:
        label = measured_label + (" — SYNTHETIC world" if kind == "synthetic" else "")
        handles.append(
            Patch(
                facecolor=_MEASURED_COLOURS[kind],
                hatch="//" if kind == "synthetic" else None,
                edgecolor="white",
                label=label,
            )
        )
    if missing_drawn:
        handles.append(
            Line2D([], [], marker="x", color="black", linestyle="none", label="missing value")
        )
    ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
    if synthetic:
        ax.set_title(title, fontsize=11)
        # Two lines so the warning fits the width in big letters.
        fig.suptitle(
            SYNTHETIC_WARNING.replace(" — ", " —\n"),
            fontsize=14,
            fontweight="bold",
            color="#d62728",
        )
    else:
        ax.set_title(title, fontsize=12)
    fig.tight_layout()
    return fig


def plot_expected_vs_measured(
    cells: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str = "expected vs measured",
    measured_label: str = "measured",
) -> Path:
    """Grouped horizontal bars, one group per (row, model): the published (expected) value
    above the measured one.

    ``cells``: ``{"row": "COCO val AP", "model": "PoseBH-B", "expected": 77.3 | None,
    "measured": 3.1 | None, "measured_kind": "synthetic" | "real"}``. A ``None`` value is
    drawn as an × marked "missing" at 0, never as a zero-length bar. When any cell is
    synthetic the figure carries :data:`SYNTHETIC_WARNING` as its headline and the measured
    legend entry says so, and synthetic bars are hatched red. Returns ``path`` (a .png).
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
