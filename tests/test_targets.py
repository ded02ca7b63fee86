"""UDP Gaussian targets and the small peak decoders of posebh.targets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from posebh.targets import heatmap_peaks, udp_gaussian_heatmaps

W, H = 48, 64


def g(dx: float, dy: float, sigma: float = 2.0) -> float:
    return math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))


def udp_loop_reference(x: float, y: float, v: float, w: int, h: int, sigma: float):
    """The official per-joint algorithm, written out with Python ints and loops."""
    tmp = 3 * sigma
    size = int(2 * tmp + 1)
    out = np.zeros((h, w), np.float64)
    mx, my = int(x + 0.5), int(y + 0.5)
    ul = (int(mx - tmp), int(my - tmp))
    br = (int(mx + tmp + 1), int(my + tmp + 1))
    if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
        return out, 0.0
    x0 = size // 2 + (x - mx)
    y0 = size // 2 + (y - my)
    if v > 0.5:
        for py in range(max(0, ul[1]), min(br[1], h)):
            for px in range(max(0, ul[0]), min(br[0], w)):
                i, j = px - ul[0], py - ul[1]
                if i < size and j < size:
                    out[py, px] = math.exp(-((i - x0) ** 2 + (j - y0) ** 2) / (2 * sigma**2))
    return out, v


def render(points, weights=None, sigma=2.0):
    kp = torch.tensor(points, dtype=torch.float32)[None]
    wt = None if weights is None else torch.tensor(weights, dtype=torch.float32)[None]
    hm, tw = udp_gaussian_heatmaps(kp, wt, heatmap_size=(W, H), sigma=sigma)
    return hm[0], tw[0, :, 0]


def test_udp_values_at_hand_computed_points() -> None:
    hm, tw = render([[10.3, 20.6]])
    assert tw.tolist() == [1.0]
    m = hm[0]
    # Centre m = (int(10.8), int(21.1)) = (10, 21); values are the exact sub-pixel Gaussian.
    assert m[21, 10].item() == pytest.approx(g(0.3, 0.4), abs=1e-7)
    assert m[20, 10].item() == pytest.approx(g(0.3, 0.6), abs=1e-7)
    assert m[21, 11].item() == pytest.approx(g(0.7, 0.4), abs=1e-7)
    # Window edges: columns 4..16 and rows 15..27 (m ± 3σ) are inside, the next ones not.
    assert m[21, 16].item() == pytest.approx(g(5.7, 0.4), abs=1e-8)
    assert m[21, 4].item() == pytest.approx(g(6.3, 0.4), abs=1e-8)
    assert m[27, 10].item() == pytest.approx(g(0.3, 6.4), abs=1e-8)
    assert m[21, 17].item() == 0.0 and m[21, 3].item() == 0.0
    assert m[28, 10].item() == 0.0 and m[14, 10].item() == 0.0
    assert int((m > 0).sum()) == 13 * 13


def test_udp_peak_exactly_on_pixel() -> None:
    hm, _ = render([[20.0, 30.0]])
    assert hm[0, 30, 20].item() == 1.0
    assert hm[0].max().item() == 1.0
    assert hm[0, 30, 22].item() == pytest.approx(g(2, 0), abs=1e-7)


def test_udp_window_clipped_at_the_border() -> None:
    hm, tw = render([[1.2, 2.0]])
    assert tw.item() == 1.0
    m = hm[0]
    assert m[2, 0].item() == pytest.approx(g(1.2, 0), abs=1e-7)
    # m = (1, 2): columns 0..7, rows 0..8.
    assert int((m > 0).sum()) == 8 * 9


@pytest.mark.parametrize(
    ("x", "y", "weight", "empty"),
    [
        (-8.0, 10.0, 1.0, True),  # m = int(-7.5) = -7: br = 0, not < 0 -> weight kept, no map
        (-9.0, 10.0, 0.0, True),  # m = -8: br = -1 < 0 -> out
        (53.4, 10.0, 1.0, False),  # m = 53: ul = 47 < 48 -> column 47 drawn
        (54.0, 10.0, 0.0, True),  # m = 54: ul = 48 >= W -> out
        (10.0, 70.0, 0.0, True),  # ul = 64 >= H -> out
        (10.0, -0.7, 1.0, False),  # m = int(-0.2) = 0 (truncation towards zero)
    ],
)
def test_udp_out_of_map(x: float, y: float, weight: float, empty: bool) -> None:
    hm, tw = render([[x, y]])
    assert tw.item() == weight
    assert bool((hm[0] == 0).all()) == empty
    ref, ref_w = udp_loop_reference(x, y, 1.0, W, H, 2.0)
    assert ref_w == weight
    np.testing.assert_allclose(hm[0].numpy(), ref, atol=1e-7)


def test_udp_weight_is_a_visibility_flag() -> None:
    hm, tw = render([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]], weights=[0.4, 0.7, 0.0])
    # Drawn only where the weight exceeds 0.5; the weight itself is passed through.
    assert tw.tolist() == pytest.approx([0.4, 0.7, 0.0])
    assert (hm[0] == 0).all() and hm[1].max() == 1.0 and (hm[2] == 0).all()


@pytest.mark.parametrize("sigma", [2.0, 1.5, 3.0])
def test_udp_matches_loop_reference(sigma: float) -> None:
    gen = torch.Generator().manual_seed(5)
    kp = torch.rand(3, 7, 2, generator=gen) * torch.tensor([W + 16.0, H + 16.0]) - 8.0
    vis = (torch.rand(3, 7, generator=gen) > 0.2).float()
    hm, tw = udp_gaussian_heatmaps(kp, vis, heatmap_size=(W, H), sigma=sigma)
    for n in range(3):
        for k in range(7):
            x, y = kp[n, k].double().tolist()
            ref, ref_w = udp_loop_reference(x, y, vis[n, k].item(), W, H, sigma)
            assert tw[n, k, 0].item() == ref_w
            np.testing.assert_allclose(hm[n, k].numpy(), ref, atol=2e-7)


def test_udp_golden_transforms(golden_dir: Path) -> None:
    """The official TopDownGenerateTarget (UDP, σ 2) on input-image joints."""
    t = np.load(golden_dir / "suite" / "transforms.npz")
    stride = (np.array([192.0, 256.0]) - 1.0) / (np.array([W, H]) - 1.0)
    kp = torch.from_numpy(t["target_joints_3d"][:, :2] / stride)[None]
    vis = torch.from_numpy(t["target_joints_3d_visible"][:, 0].astype(np.float32))[None]
    hm, tw = udp_gaussian_heatmaps(kp, vis, heatmap_size=(W, H), sigma=2.0)
    np.testing.assert_allclose(hm[0].numpy(), t["target_udp_gauss"], atol=1e-6)
    np.testing.assert_array_equal(tw[0].numpy(), t["target_weight_udp_gauss"])


# ---------------------------------------------------------------------------- peaks


def test_quarter_refinement_by_hand() -> None:
    hm = torch.zeros(1, 3, 10, 10)
    hm[0, 0, 4, 5] = 1.0
    hm[0, 0, 4, 6] = 0.5  # right neighbour higher -> +0.25 in x
    hm[0, 0, 3, 5] = 0.3  # upper neighbour higher -> -0.25 in y
    hm[0, 1, 1, 5] = 1.0  # y = 1: not 1 < y -> no shift
    hm[0, 1, 1, 6] = 0.5
    hm[0, 2] = -1.0  # non-positive map -> (-1, -1)
    xy, val = heatmap_peaks(hm, "quarter")
    assert xy[0, 0].tolist() == [5.25, 3.75]
    assert xy[0, 1].tolist() == [5.0, 1.0]
    assert xy[0, 2].tolist() == [-1.0, -1.0]
    assert val[0].tolist() == [1.0, 1.0, -1.0]


def test_dark_udp_recovers_a_subpixel_gaussian() -> None:
    kp = torch.tensor([[[20.3, 30.7], [5.6, 40.2]]])
    hm, _ = udp_gaussian_heatmaps(kp, heatmap_size=(W, H))
    xy, val = heatmap_peaks(hm, "dark_udp")
    np.testing.assert_allclose(xy[0].numpy(), kp[0].numpy(), atol=0.02)
    assert xy.dtype == torch.float32 and val.shape == (1, 2)


def test_peaks_golden_decode(golden_dir: Path) -> None:
    """The three peak readings against the official heatmap-space decodes."""
    d = np.load(golden_dir / "suite" / "decode.npz")
    hm = torch.from_numpy(d["heatmaps"])
    q, _ = heatmap_peaks(hm, "quarter")
    np.testing.assert_array_equal(q.numpy(), d["a_default_preds_hm"])
    b, _ = heatmap_peaks(hm, "dark_udp")
    np.testing.assert_allclose(b.numpy(), d["b_dark_udp_preds_hm"], atol=1e-5)
    n, _ = heatmap_peaks(hm, "none")
    np.testing.assert_array_equal(n.numpy(), d["d_none_preds_hm"])
