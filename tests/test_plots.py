"""Report plots (``posebh.plots``) and ``posebh visualize`` (``posebh.visualize``):
the similarity arithmetic against plain loops, the PNGs, the synthetic-world warning, the
skeleton links, and the command end to end on a SynthPose world with a tiny checkpoint."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.text import Text
from PIL import Image

from posebh.checkpoint import TRAIN_CHECKPOINT_FORMAT, load_model, to_official
from posebh.cli import main
from posebh.models import build_model
from posebh.plots import (
    SYNTHETIC_WARNING,
    _figure_expected_vs_measured,
    block_similarity,
    plot_expected_vs_measured,
    plot_keypoint_overlays,
    plot_prototype_similarity,
    prototype_similarity_matrix,
)
from posebh.skeletons import SKELETON_LINKS, SKELETONS, TRAINING_SKELETONS, class_offsets
from posebh.visualize import (
    _first_images,
    prototype_blocks,
    visualize_predictions,
    visualize_prototypes,
)

TINY = dict(
    embed_dim=32, depth=1, num_heads=2, part_features=8, head_filters=16,
    proto_channels=8, proto_dim=8, drop_path_rate=0.0,
)  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> np.ndarray:
    """A readable, non-empty PNG whose pixels are not all one colour; returns them."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        assert "Software" not in im.info  # no version stamp in the metadata
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10, f"{path} is (nearly) uniform"
    return pixels


# ------------------------------------------------------------------------------------------
# Similarity arithmetic
# ------------------------------------------------------------------------------------------


def _loop_similarity(p: np.ndarray, reduce: str, absolute: bool) -> np.ndarray:
    j, m, _ = p.shape
    out = np.zeros((j, j))
    for a in range(j):
        for b in range(j):
            vals = []
            for u in range(m):
                for v in range(m):
                    x, y = p[a, u], p[b, v]
                    c = float(x @ y) / (np.linalg.norm(x) * np.linalg.norm(y))
                    vals.append(abs(c) if absolute else c)
            out[a, b] = max(vals) if reduce == "max" else sum(vals) / len(vals)
    return out


@pytest.mark.parametrize("reduce", ["max", "mean"])
@pytest.mark.parametrize("absolute", [True, False])
def test_similarity_matrix_matches_plain_loops(reduce: str, absolute: bool) -> None:
    g = torch.Generator().manual_seed(3)
    # Unnormalised on purpose: the function must normalise each prototype.
    p = torch.randn(7, 3, 5, generator=g) * torch.rand(7, 3, 1, generator=g).add(0.5)
    s = prototype_similarity_matrix(p, [("a", 0, 3), ("b", 3, 4)], reduce=reduce, absolute=absolute)
    ref = _loop_similarity(p.double().numpy(), reduce, absolute)
    assert s.shape == (7, 7) and s.dtype == torch.float64
    np.testing.assert_allclose(s.numpy(), ref, rtol=0, atol=1e-12)
    assert torch.equal(s, s.t())
    if reduce == "max" and absolute:
        np.testing.assert_allclose(s.diagonal().numpy(), 1.0, atol=1e-12)
    if reduce == "mean":
        # The mean over M×M includes the distinct pairs of the class: below 1 for random ones.
        assert (s.diagonal() < 1.0 - 1e-3).all()
    if absolute:
        assert s.min() >= 0.0
    elif reduce == "mean":
        assert s.min() < 0.0  # random signed cosines: some class pair averages negative


def test_similarity_matrix_uses_absolute_cosine_like_the_model() -> None:
    e = torch.eye(4)
    p = torch.stack([e[0], -e[0], e[1]]).unsqueeze(1)  # [3, 1, 4]
    assert prototype_similarity_matrix(p)[0, 1] == pytest.approx(1.0)
    assert prototype_similarity_matrix(p, absolute=False)[0, 1] == pytest.approx(-1.0)
    assert prototype_similarity_matrix(p)[0, 2] == 0.0


def test_similarity_matrix_checks_its_inputs() -> None:
    with pytest.raises(ValueError, match=r"\[J, M, F\]"):
        prototype_similarity_matrix(torch.zeros(4, 8))
    with pytest.raises(ValueError, match="does not fit 4 classes"):
        prototype_similarity_matrix(torch.randn(4, 2, 3), [("a", 0, 3), ("b", 3, 2)])
    with pytest.raises(ValueError, match="overlap"):
        prototype_similarity_matrix(torch.randn(4, 2, 3), [("a", 0, 3), ("b", 2, 2)])
    with pytest.raises(ValueError, match="reduce"):
        prototype_similarity_matrix(torch.randn(4, 2, 3), reduce="min")  # type: ignore[arg-type]


def test_block_similarity_on_a_constructed_bank() -> None:
    e = torch.eye(8)
    # Class k has prototypes (e_k, −e_k): |cos| makes them one direction.
    cls = lambda k: torch.stack([e[k], -e[k]])  # noqa: E731
    a = [cls(0), cls(1), cls(2)]
    b = [cls(2), cls(0), cls(1)]  # the same classes as a, in another order
    c = [cls(3), cls(4)]
    solo = [cls(5)]
    p = torch.stack(a + b + c + solo)  # [9, 2, 8]
    blocks = [("a", 0, 3), ("b", 3, 3), ("c", 6, 2), ("solo", 8, 1)]
    s = prototype_similarity_matrix(p, blocks)
    bs = block_similarity(s, blocks)
    assert bs.shape == (4, 4)
    assert bs[0, 1] == pytest.approx(1.0) and bs[1, 0] == pytest.approx(1.0)
    assert bs[0, 2] == 0.0 and bs[2, 0] == 0.0 and bs[0, 3] == 0.0
    # Diagonal: the nearest *other* class of the same dataset (orthogonal here), not itself.
    assert bs[0, 0] == 0.0 and bs[2, 2] == 0.0
    assert math.isnan(bs[3, 3])  # one class: no other class to compare with

    # One of the two classes of a has a twin in d: the mean of the best matches is 0.5.
    d = torch.stack([cls(0), cls(6)])
    p2 = torch.stack([*a[:2], d[0], d[1]])
    bs2 = block_similarity(prototype_similarity_matrix(p2), [("a", 0, 2), ("d", 2, 2)])
    assert bs2[0, 1] == pytest.approx(0.5)  # class 0 → 1, class 1 → 0
    assert bs2[1, 0] == pytest.approx(0.5)  # e_0 → 1, e_6 → 0


# ------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------

MODELS = (("ViTPose++-B", 77.0), ("PoseBH-B", 77.3))
DATASETS = ("COCO val", "AIC val", "MPII val", "AP-10K test", "APT-36K test", "WholeBody val")


def evm_cells(panels=DATASETS, kind="real", not_run=True, decimals=1) -> list[dict]:
    """Table 1's shape: per panel 2 metrics × 2 models that ran, with intervals and the
    texts a table would print at ``decimals``; plus 3 cells of models that did not run."""
    rng = np.random.default_rng(len(panels))
    cells = []
    for p in panels:
        for metric in ("PCKh", "PCKh@0.1") if p.startswith("MPII") else ("AP", "AR"):
            for model, expected in MODELS:
                v = float(rng.uniform(2, 30) if kind == "synthetic" else rng.normal(expected, 1))
                lo, hi = v - float(rng.uniform(0.2, 2)), v + float(rng.uniform(0.2, 2))
                f = lambda x: f"{x:.{decimals}f}"  # noqa: E731 - the table's rounding
                cells.append(
                    {"panel": p, "row": metric, "model": model, "expected": expected,
                     "measured": v, "ci95": (lo, hi), "expected_text": f(expected),
                     "measured_text": f"{f(v)} [{f(lo)}, {f(hi)}]", "measured_kind": kind}
                )  # fmt: skip
    if not_run:
        for p, model in (
            (panels[0], "ViTPose++-H"),
            (panels[0], "PoseBH-H"),
            (panels[1], "PoseBH-H"),
        ):
            cells.append({"panel": p, "row": "AP", "model": model, "expected": 79.4,
                          "measured": None, "measured_kind": kind})  # fmt: skip
    return cells


TABLE1 = evm_cells()
TWELVE = evm_cells([f"dataset {i}" for i in range(12)], not_run=False)
TITLE = "table1: Multi-dataset training: COCO, AIC, MPII, AP-10K, APT-36K, COCO-WholeBody"


def drawn_texts(fig) -> tuple[list[Text], object]:
    """Every visible, non-empty text of the drawn figure, and the renderer that drew it."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()], renderer


def whiskers(fig) -> list:
    return [c for ax in fig.axes for c in ax.collections if c.get_gid() == "ci95"]


@pytest.mark.parametrize("cells", [TABLE1, TWELVE], ids=["table1", "twelve_panels"])
def test_expected_vs_measured_fits_1600_px(cells, tmp_path: Path) -> None:
    fig = _figure_expected_vs_measured(cells, title=TITLE, measured_label="measured")
    fig.canvas.draw()
    w, h = fig.canvas.get_width_height()
    assert w <= 1600 and h <= 1600
    assert len(fig.axes) == len({c["panel"] for c in cells})  # every panel shown
    path = plot_expected_vs_measured(cells, tmp_path / "evm.png", title=TITLE, measured_label="m")
    assert Image.open(path).size == (w, h)  # the PNG as drawn: no bbox cropping or growth


def test_expected_vs_measured_caps_what_cannot_fit() -> None:
    many = evm_cells([f"dataset {i}" for i in range(15)], not_run=False)
    fig = _figure_expected_vs_measured(many, title="t", measured_label="m")
    texts, _ = drawn_texts(fig)
    assert max(fig.canvas.get_width_height()) <= 1600
    assert len(fig.axes) == 12
    assert any(t.get_text().endswith("… 3 more panels not shown") for t in texts)
    tall = [dict(c, panel="one", row=f"{c['panel']} {c['row']}") for c in evm_cells(
        [f"dataset {i}" for i in range(60)], not_run=False)]  # fmt: skip
    fig = _figure_expected_vs_measured(tall, title="t", measured_label="m")
    texts, _ = drawn_texts(fig)
    assert max(fig.canvas.get_width_height()) <= 1600
    shown = len(fig.axes[0].get_yticklabels())
    assert 0 < shown < 240
    assert any(t.get_text().endswith(f"… {240 - shown} more rows not shown") for t in texts)


def assert_no_overlap(fig) -> None:
    """No two drawn texts overlap by more than 0.5 px in both directions (strictly inside
    each other's box beyond rounding), and every text lies inside the figure."""
    texts, renderer = drawn_texts(fig)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    w, h = fig.canvas.get_width_height()
    for text, b in boxes:
        assert b.x0 >= 0 and b.y0 >= 0 and b.x1 <= w and b.y1 <= h, (text, b)
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        dx = min(a.x1, b.x1) - max(a.x0, b.x0)
        dy = min(a.y1, b.y1) - max(a.y0, b.y0)
        assert dx <= 0.5 or dy <= 0.5, (ta, tb, a, b)


@pytest.mark.parametrize(
    "cells, title",
    [
        (TABLE1, TITLE),
        (TWELVE, TITLE),
        (evm_cells(kind="synthetic"), TITLE),
        (evm_cells(DATASETS[:1], not_run=False), "one panel"),
        (evm_cells(DATASETS[:3], decimals=3), "a title long enough to wrap " * 12),
        ([dict(c, panel="a much longer panel name than the others, COCO-WholeBody val (face)")
          for c in TABLE1], TITLE),
    ],
    ids=["table1", "twelve", "synthetic", "one_panel", "long_title", "long_panel_name"],
)  # fmt: skip
def test_expected_vs_measured_texts_do_not_overlap(cells, title) -> None:
    fig = _figure_expected_vs_measured(cells, title=title, measured_label="measured (SynthPose)")
    assert_no_overlap(fig)


def decimals_of(text: str) -> int:
    return max([len(d) for d in re.findall(r"\d\.(\d+)", text)], default=0)


@pytest.mark.parametrize("decimals", [0, 1, 2, 3])
def test_expected_vs_measured_writes_the_callers_texts(decimals: int) -> None:
    cells = evm_cells(DATASETS[:4], decimals=decimals)
    # Nearby values: a plain tick locator would write finer numbers than the table does.
    cells = [dict(c, ci95=None) if c["measured"] is None else c for c in cells]
    fig = _figure_expected_vs_measured(cells, title="T", measured_label="m")
    texts, _ = drawn_texts(fig)
    drawn = [t.get_text() for t in texts]
    ran = [c for c in cells if c["measured"] is not None]
    for c in ran:
        assert c["measured_text"] in drawn and c["expected_text"] in drawn
    assert sorted(t for t in drawn if "[" in t) == sorted(c["measured_text"] for c in ran)
    # The row labels are the caller's names ("PCKh@0.1 · PoseBH-B"), drawn as given.
    numbers = [t for t in drawn if " · " not in t]
    assert max(decimals_of(t) for t in numbers) <= decimals, [
        t for t in numbers if decimals_of(t) > decimals
    ]


def test_expected_vs_measured_without_texts_uses_one_decimal() -> None:
    cells = [
        {"panel": "p", "row": "AP", "model": "m", "expected": 77.25, "measured": 3.14159,
         "ci95": (2.0, 4.5), "measured_kind": "real"},
        {"panel": "p", "row": "AR", "model": "m", "expected": None, "measured": 12.0,
         "measured_kind": "real"},
    ]  # fmt: skip
    drawn = [t.get_text() for t in drawn_texts(_figure_expected_vs_measured(cells))[0]]
    assert "3.1 [2.0, 4.5]" in drawn and "77.2" in drawn
    assert "12.0" in drawn and "–" in drawn  # no published value: a dash, no marker
    assert max(decimals_of(t) for t in drawn) == 1


def test_expected_vs_measured_draws_only_rows_that_ran() -> None:
    fig = _figure_expected_vs_measured(TABLE1, title=TITLE, measured_label="m")
    texts, _ = drawn_texts(fig)
    drawn = [t.get_text() for t in texts]
    rows = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
    assert len(rows) == 24 and not any("-H" in r for r in rows)
    assert "not run: ViTPose++-H on COCO val, PoseBH-H on COCO val, PoseBH-H on AIC val" in drawn
    # A model that ran some rows only: those rows are named; a long list is counted.
    partial = [*TABLE1, dict(TABLE1[0], row="AP (M)", measured=None)]
    drawn = [t.get_text() for t in drawn_texts(_figure_expected_vs_measured(partial))[0]]
    assert any(t.endswith("ViTPose++-B on COCO val (AP (M))") for t in drawn)
    many = [*TABLE1, *(dict(TABLE1[-1], model=f"model {i}", measured=None) for i in range(60))]
    fig = _figure_expected_vs_measured(many)
    foot = [t.get_text() for t in drawn_texts(fig)[0] if t.get_text().startswith("not run:")]
    assert len(foot) == 1 and re.search(r", … \d+ more$", foot[0]) and "\n" not in foot[0]
    assert_no_overlap(fig)
    nothing = [dict(c, measured=None) for c in TABLE1]
    fig = _figure_expected_vs_measured(nothing)
    assert fig.axes == []
    assert any(t.get_text().startswith("nothing measured") for t in drawn_texts(fig)[0])


def test_expected_vs_measured_whiskers_span_the_interval() -> None:
    cells = [dict(c, ci95=None) if i % 3 == 0 else c for i, c in enumerate(TABLE1)]
    fig = _figure_expected_vs_measured(cells, title="T", measured_label="m")
    by_line = {
        (c["panel"], f"{c['row']} · {c['model']}"): c["ci95"]
        for c in cells
        if c["measured"] is not None
    }
    found = {}
    for ax in fig.axes:
        labels = {t.get_position()[1]: t.get_text() for t in ax.get_yticklabels()}
        panel = ax.get_label()  # the panel's name (not drawn: the title is a figure text)
        for coll in (c for c in ax.collections if c.get_gid() == "ci95"):
            for seg in coll.get_segments():
                (x0, y0), (x1, y1) = seg
                assert y0 == y1
                found[(panel, labels[y0])] = (x0, x1)
    expected = {k: tuple(v) for k, v in by_line.items() if v is not None}
    assert found == expected  # exactly lo..hi, in data coordinates, one per interval
    assert len(whiskers(fig)) == len(fig.axes)  # one collection per panel


def test_expected_vs_measured_says_synthetic_in_big_letters(tmp_path: Path) -> None:
    cells = evm_cells(kind="synthetic")
    fig = _figure_expected_vs_measured(cells, title="Table 1", measured_label="measured")
    headline = fig._suptitle
    assert headline is not None and headline.get_fontsize() >= 13
    assert headline.get_text().replace("\n", " ") == SYNTHETIC_WARNING
    drawn = [t.get_text() for t in drawn_texts(fig)[0]]
    assert headline.get_text() in drawn
    assert "measured — SYNTHETIC world" in drawn  # the legend entry of the measured markers
    # One synthetic cell among real ones is enough, even one that did not run.
    mixed = [*TABLE1[:-1], dict(TABLE1[-1], measured_kind="synthetic")]
    assert _figure_expected_vs_measured(mixed)._suptitle is not None
    fig_real = _figure_expected_vs_measured(TABLE1, title="Table 1", measured_label="measured")
    assert fig_real._suptitle is None
    assert not any("SYNTHETIC" in t for t in (x.get_text() for x in drawn_texts(fig_real)[0]))
    # Synthetic and real measured markers differ in colour and shape.
    markers = {
        (line.get_marker(), line.get_color())
        for f in (fig, fig_real)
        for ax in f.axes
        for line in ax.get_lines()
    }
    assert ("X", "#d62728") in markers and ("o", "#1f77b4") in markers

    path = plot_expected_vs_measured(cells, tmp_path / "evm.png", title="T", measured_label="m")
    assert path == tmp_path / "evm.png"
    assert_png(path)
    again = plot_expected_vs_measured(cells, tmp_path / "evm2.png", title="T", measured_label="m")
    assert path.read_bytes() == again.read_bytes()  # deterministic bytes


def test_expected_vs_measured_refuses_bad_cells(tmp_path: Path) -> None:
    cell = {"panel": "p", "row": "r", "model": "m", "expected": 1.0, "measured": 2.0}
    real = dict(cell, measured_kind="real")

    def refused(c: dict, match: str, path: str = "x.png") -> None:
        with pytest.raises(ValueError, match=match):
            plot_expected_vs_measured([real, c], tmp_path / path, title="t", measured_label="m")

    refused(cell, r"cell 1 lacks \['measured_kind'\]")
    refused(dict(cell, measured_kind="simulated"), "cell 1: measured_kind must be one of")
    refused({k: v for k, v in real.items() if k != "panel"}, r"cell 1 lacks \['panel'\]")
    refused(dict(real, measured=float("nan")), "cell 1: measured = nan; use None")
    for bad in ((2.0, 1.0), (1.0, float("inf")), (1.0,), 1.5, "1, 2"):
        refused(dict(real, ci95=bad), r"cell 1: ci95 = .*lo <= hi, or None")
    refused(dict(real, measured_text=2.0), "cell 1: measured_text = 2.0; give the table's")
    refused(real, "PNG", "x.svg")
    with pytest.raises(ValueError, match="no cells"):
        plot_expected_vs_measured([], tmp_path / "x.png", title="t", measured_label="m")
    assert not (tmp_path / "x.png").exists()
    # A whisker of zero width is a valid interval.
    assert_png(plot_expected_vs_measured([dict(real, ci95=(2.0, 2.0))], tmp_path / "y.png"))


def test_prototype_similarity_plot(tmp_path: Path) -> None:
    blocks = [
        (s.name, o, s.num_keypoints)
        for s, o in zip(TRAINING_SKELETONS, class_offsets(), strict=True)
    ]
    torch.manual_seed(0)
    s = prototype_similarity_matrix(torch.randn(214, 3, 16), blocks)
    path = plot_prototype_similarity(s, blocks, tmp_path / "sim.png", title="random bank")
    assert_png(path)


def test_keypoint_overlays_draw_coloured_points_and_links(tmp_path: Path) -> None:
    grey = np.full((120, 90, 3), 128, dtype=np.uint8)
    k = np.zeros((1, 17, 3))
    rng = np.random.default_rng(0)
    k[0, :, 0] = rng.uniform(10, 80, 17)
    k[0, :, 1] = rng.uniform(10, 110, 17)
    shown = k.copy()
    shown[..., 2] = 0.9
    hidden = k.copy()
    hidden[..., 2] = 0.1  # below score_thr: nothing drawn
    images = [grey, grey[:60]]
    p_shown = assert_png(
        plot_keypoint_overlays(
            images, [shown, np.zeros((0, 17, 3))], "coco", tmp_path / "a.png", titles=["x", "y"]
        )
    )
    p_hidden = plot_keypoint_overlays(
        images, [hidden, np.zeros((0, 17, 3))], "coco", tmp_path / "b.png", titles=["x", "y"]
    )
    p_hidden = np.asarray(Image.open(p_hidden).convert("RGB"))

    def count(pixels: np.ndarray, rgb: tuple[int, int, int]) -> int:
        return int((np.abs(pixels.astype(int) - rgb).sum(axis=2) < 40).sum())

    for colour in ((0, 200, 0), (255, 128, 0), (51, 153, 255)):  # left, right, centre
        # The legend shows every colour in both images; only the drawn keypoints add more.
        assert count(p_shown, colour) > count(p_hidden, colour) + 20, colour


def test_keypoint_overlays_check_shapes(tmp_path: Path) -> None:
    img = np.zeros((10, 10, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\[N, 17, 3\] for coco"):
        plot_keypoint_overlays([img], [np.zeros((1, 14, 3))], "coco", tmp_path / "a.png")
    with pytest.raises(ValueError, match="1 images but 2"):
        plot_keypoint_overlays([img], [np.zeros((1, 17, 3))] * 2, "coco", tmp_path / "a.png")
    with pytest.raises(ValueError, match="uint8"):
        plot_keypoint_overlays(
            [img.astype(float)], [np.zeros((1, 17, 3))], "coco", tmp_path / "a.png"
        )
    with pytest.raises(KeyError, match="unknown skeleton"):
        plot_keypoint_overlays([img], [np.zeros((1, 17, 3))], "cocoa", tmp_path / "a.png")


# ------------------------------------------------------------------------------------------
# Skeleton links
# ------------------------------------------------------------------------------------------


def test_links_are_valid_index_pairs() -> None:
    for name, links in SKELETON_LINKS.items():
        k = SKELETONS[name].num_keypoints
        assert links and len(set(links)) == len(links), name
        assert all(0 <= a < k and 0 <= b < k and a != b for a, b in links), name
    wb = SKELETON_LINKS["coco_wholebody"]
    assert len(wb) == 19 + 6 + 2 * 20  # body, feet, two hands (coco_wholebody.py: 65)
    assert wb[:19] == SKELETON_LINKS["coco"]
    assert SKELETON_LINKS["apt36k"] == SKELETON_LINKS["ap10k"]


@pytest.mark.parametrize(
    "name, file",
    [("coco", "coco/test_coco.json"), ("aic", "aic/test_aic.json"),
     ("ap10k", "ap10k/test_ap10k.json")],
)  # fmt: skip
def test_links_match_the_skeleton_field_of_the_annotation_files(
    fixtures_dir: Path, name: str, file: str
) -> None:
    """The category's ``skeleton`` field (1-based) of the real annotation files is an
    independent source for the links transcribed from the mmpose configs."""
    category = json.loads((fixtures_dir / file).read_text())["categories"][0]
    expected = {frozenset((a - 1, b - 1)) for a, b in category["skeleton"]}
    assert {frozenset(link) for link in SKELETON_LINKS[name]} == expected


# ------------------------------------------------------------------------------------------
# posebh visualize
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from posebh.synth import generate

    root = tmp_path_factory.mktemp("synthpose")
    generate(root, preset="tiny", seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A random tiny PoseBH saved as posebh train writes model.pth (official naming + meta)
    and final.pth (posebh naming + the recipe)."""
    torch.manual_seed(0)
    model = build_model("posebh_vit_small", **TINY)
    root = tmp_path_factory.mktemp("ckpt")
    model_pth, final_pth = root / "model.pth", root / "final.pth"
    meta = {"posebh_train": {"preset": "posebh_tiny", "num_heads": TINY["num_heads"]}}
    torch.save({"state_dict": to_official(model), "meta": meta}, model_pth)
    config = {"model": "posebh_vit_small", "model_overrides": TINY}
    payload = {"format": TRAIN_CHECKPOINT_FORMAT, "config": config, "model": model.state_dict()}
    torch.save(payload, final_pth)
    return model_pth, final_pth, model.state_dict()


def test_load_checkpoint_reads_both_training_outputs(tiny_checkpoints) -> None:
    model_pth, final_pth, state = tiny_checkpoints
    for path in (model_pth, final_pth):
        model = load_model(path)  # num_heads (32 is no preset width) from the file
        assert model.config.num_heads == TINY["num_heads"]
        loaded = model.state_dict()
        assert set(loaded) == set(state)
        assert all(torch.equal(loaded[k], state[k]) for k in state), path


def test_first_images_groups_instances_by_image() -> None:
    class I:  # noqa: E742 - a stand-in with the one field used
        def __init__(self, f: str) -> None:
            self.image_file = f

    insts = [I("a"), I("a"), I("b"), I("a"), I("c"), I("b"), I("d")]
    assert _first_images(insts, 2) == [[0, 1, 3], [2, 5]]
    assert _first_images(insts, 10) == [[0, 1, 3], [2, 5], [4], [6]]


def test_visualize_ground_truth_on_synthpose(synth_root: Path, tmp_path: Path) -> None:
    path = visualize_predictions("ap10k", tmp_path, data_root=synth_root, gt=True, num_images=2)
    assert path == tmp_path / "overlays_ap10k.png"
    assert_png(path)
    with pytest.raises(ValueError, match="--checkpoint"):
        visualize_predictions("ap10k", tmp_path, data_root=synth_root)


def test_visualize_ground_truth_on_real_fixtures(fixtures_dir: Path, tmp_path: Path) -> None:
    from posebh.datasets import DatasetSpec

    spec = DatasetSpec(
        "coco_wholebody",
        str(fixtures_dir / "coco/test_coco_wholebody.json"),
        str(fixtures_dir / "coco"),
    )
    assert_png(visualize_predictions(spec, tmp_path, gt=True, num_images=3))


def test_visualize_prototypes_needs_prototypes(tmp_path: Path) -> None:
    plain = build_model("vitpose_plus_small", **TINY)
    with pytest.raises(ValueError, match="no keypoint prototypes"):
        visualize_prototypes(plain, tmp_path)
    assert prototype_blocks((17, 14, 5)) == [("coco", 0, 17), ("aic", 17, 14), ("dataset2", 31, 5)]


def test_cli_visualize_end_to_end(synth_root: Path, tiny_checkpoints, tmp_path: Path) -> None:
    model_pth, _, state = tiny_checkpoints
    argv = [
        "visualize", "--dataset", "aic", "--data-root", str(synth_root),
        "--checkpoint", str(model_pth), "--num-images", "2", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    assert_png(tmp_path / "overlays_aic.png")
    assert_png(tmp_path / "prototype_similarity.png")
    report = json.loads((tmp_path / "prototype_similarity.json").read_text())
    names = [s.name for s in TRAINING_SKELETONS]
    assert report["block_names"] == names
    summary = np.array(report["block_similarity"], dtype=float)
    assert summary.shape == (6, 6)
    assert ((summary >= 0.0) & (summary <= 1.0)).all()
    # The file's numbers are those of the checkpoint's bank.
    blocks = [(b["name"], b["start"], b["count"]) for b in report["blocks"]]
    expected = block_similarity(
        prototype_similarity_matrix(state["keypoint_prototypes.prototypes"]), blocks
    )
    np.testing.assert_allclose(summary, expected.numpy(), atol=1e-6)
    assert report["shape"] == {"J": 214, "M": 3, "F": TINY["proto_dim"]}
    nearest = report["nearest_other_dataset"]
    assert len(nearest) == 214 and nearest[0]["class"] == "coco/nose"
    assert not nearest[0]["nearest"].startswith("coco/")


def test_cli_visualize_errors(synth_root: Path, tmp_path: Path, capsys) -> None:
    base = [
        "visualize",
        "--dataset",
        "coco",
        "--data-root",
        str(synth_root),
        "--out",
        str(tmp_path),
    ]
    assert main(base) == 2
    assert "--gt" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(tmp_path / "nope.pth")]) == 2
    assert "nope.pth: no such file" in capsys.readouterr().err
    assert main(["visualize", "--dataset", "coco", "--data-root", str(tmp_path), "--gt"]) == 2
    assert "person_keypoints_val2017.json" in capsys.readouterr().err
