"""posebh.codecs: round trips, and the codecs are the encode/decode functions they bind.

Round trips: a keypoint (x, y) in input-crop pixels (192×256, 48×64 heatmaps: stride 4) is
encoded, the target decoded with the box that maps the heatmap back onto the crop, and the
result compared with (x, y) — within what each encoding's quantisation allows, stated per
test. Bitwise checks: each codec's encode is the posebh.targets function and its decode the
posebh.decode reference (after flip_test_merge for the flip test) with the codec's settings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posebh.codecs import (
    MegviiHeatmap,
    MSRAHeatmap,
    UDPCombinedTarget,
    UDPHeatmap,
    decoding_codec,
    get_codec,
)
from posebh.decode import flip_test_merge, keypoints_from_heatmaps
from posebh.targets import (
    heatmap_peaks,
    megvii_heatmaps,
    msra_gaussian_heatmaps,
    udp_combined_target,
    udp_gaussian_heatmaps,
)

W_IN, H_IN = 192, 256
STRIDE = 4.0  # 192 / 48 = 256 / 64 (plain); UDP: 191 / 47 ≈ 255 / 63 ≈ 4.06


def _points(n: int = 40, seed: int = 0) -> np.ndarray:
    """Keypoints well inside the crop (so no window or blur reaches the border)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(30, 160, n), rng.uniform(30, 220, n)], 1).astype(np.float32)


def _box(use_udp: bool) -> tuple[np.ndarray, np.ndarray]:
    """center/scale whose transform maps heatmap pixels onto input-crop pixels."""
    size = np.float32([W_IN - 1, H_IN - 1] if use_udp else [W_IN, H_IN])
    return (size / 2)[None], (size / 200)[None]


def _round_trip(codec, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    target, weight = codec.encode(p[None], np.ones(1, np.float32))
    assert weight[0, 0] == 1.0
    center, scale = _box(codec.use_udp)
    preds, maxvals = codec.decode(target[None], center, scale)
    return np.asarray(preds)[0, 0], np.asarray(maxvals)[0, 0]


def test_udp_round_trip_is_sub_pixel() -> None:
    # The UDP Gaussian sits at the exact position and DARK-UDP takes one Newton step on the log
    # of its blur, a quadratic up to the 3σ truncation and float32 rounding: 1e-3 px (the
    # measured error is below 2e-4 px).
    for p in _points():
        got, score = _round_trip(UDPHeatmap(), p)
        np.testing.assert_allclose(got, p, rtol=0, atol=1e-3)
        assert score > 0.8


def test_msra_round_trip_is_the_rounded_pixel() -> None:
    # MSRA draws the Gaussian on the rounded heatmap pixel m = int(x / 4 + 0.5); its neighbours
    # are symmetric, so the quarter-pixel step does not move it: the decode is m · 4 exactly,
    # within half a heatmap pixel (2 input px) of x.
    for p in _points():
        got, score = _round_trip(MSRAHeatmap(), p)
        np.testing.assert_array_equal(got, (np.trunc(p / STRIDE + 0.5) * STRIDE).astype(np.float32))
        assert np.abs(got - p).max() <= 0.5 * STRIDE
        assert score == 1.0


def test_msra_unbiased_round_trip_is_sub_pixel() -> None:
    # DARK: the exact-position Gaussian decoded by the Taylor step on the log-blurred map;
    # measured below 1.5e-3 px, bound 5e-3 px.
    codec = MSRAHeatmap(unbiased=True, post_process="unbiased")
    for p in _points():
        got, _ = _round_trip(codec, p)
        np.testing.assert_allclose(got, p, rtol=0, atol=5e-3)


def test_megvii_round_trip_is_the_pixel_centre() -> None:
    # Megvii blurs an impulse at the truncated pixel t = int(x · 48 / 192); the decode blurs
    # again (symmetric, no quarter step) and adds 0.5: (t + 0.5) · 4, within 2 input px of x.
    for p in _points():
        got, _ = _round_trip(MegviiHeatmap(), p)
        t = np.trunc(p * 48 / W_IN)
        np.testing.assert_array_equal(got, ((t + 0.5) * STRIDE).astype(np.float32))
        assert np.abs(got - p).max() <= 0.5 * STRIDE


def test_combined_target_round_trip_within_half_a_heatmap_pixel() -> None:
    # The response arg-max is an integer pixel; the blurred offset maps correct only part of the
    # fraction (the blur mixes in the zeros outside the radius-3.5 disc). Bound: half a heatmap
    # pixel, 2 input px (measured 1.22 px).
    for p in _points():
        got, _ = _round_trip(UDPCombinedTarget(), p)
        assert np.abs(got - p).max() <= 0.5 * STRIDE


# ---------------------------------------------------------------------------------------------
# The codecs are the functions they bind (bitwise)
# ---------------------------------------------------------------------------------------------


def _joints(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    joints = np.zeros((17, 3), np.float32)
    joints[:, 0] = rng.uniform(-20, 210, 17)
    joints[:, 1] = rng.uniform(-20, 275, 17)
    visible = np.zeros((17, 3), np.float32)
    visible[:, :2] = rng.integers(0, 2, 17)[:, None]
    return joints, visible


@pytest.mark.parametrize("seed", range(3))
def test_encode_is_the_target_function(seed: int) -> None:
    j, v = _joints(seed)
    for got, want in [
        (MSRAHeatmap(sigma=3.0).encode(j, v), msra_gaussian_heatmaps(j, v, sigma=3.0)),
        (
            MSRAHeatmap(unbiased=True).encode(j, v),
            msra_gaussian_heatmaps(j, v, unbiased=True),
        ),
        (MegviiHeatmap(target_kernel=(7, 7)).encode(j, v), megvii_heatmaps(j, v, kernel=(7, 7))),
        (UDPCombinedTarget().encode(j, v), udp_combined_target(j, v)),
    ]:
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    # UDP: joints / ((image − 1) / (heatmap − 1)) in float64, then the torch renderer.
    stride = (np.float64([W_IN, H_IN]) - 1) / (np.float64([48, 64]) - 1)
    kp = torch.from_numpy(j[:, :2].astype(np.float64) / stride)[None]
    want_hm, want_w = udp_gaussian_heatmaps(kp, torch.from_numpy(v[:, 0].copy())[None])
    got_hm, got_w = UDPHeatmap().encode(j, v)
    np.testing.assert_array_equal(got_hm, want_hm[0].numpy())
    np.testing.assert_array_equal(got_w, want_w[0].numpy())


def _maps(seed: int, k: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((3, k, 64, 48), dtype=np.float32) ** 8


@pytest.mark.parametrize(
    "codec",
    [MSRAHeatmap(), MSRAHeatmap(post_process="unbiased"), MSRAHeatmap(post_process=None),
     UDPHeatmap(), UDPHeatmap(kernel=3), MegviiHeatmap()],
    ids=lambda c: f"{type(c).__name__}-{c.post_process}-k{c.kernel}",
)  # fmt: skip
def test_decode_is_the_reference(codec) -> None:
    hm, flipped = _maps(0), _maps(1)
    rng = np.random.default_rng(2)
    center = rng.uniform(50, 400, (3, 2)).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, (3, 2)).astype(np.float32)
    perm = [1, 0, 2, 4, 3]
    kw = codec.decode_kwargs()
    want = keypoints_from_heatmaps(hm, center, scale, **kw)
    for backend in ("torch", "auto"):
        got = codec.decode(torch.from_numpy(hm), center, scale, backend=backend)
        np.testing.assert_array_equal(got[0].numpy(), want[0])
        np.testing.assert_array_equal(got[1].numpy(), want[1])
    for shift in (False, True):
        merged = flip_test_merge(hm, flipped, perm, shift)
        want = keypoints_from_heatmaps(merged, center, scale, **kw)
        got = codec.decode(
            hm, center, scale, flipped=flipped, flip_indices=perm, shift=shift, backend="torch"
        )
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_combined_decode_is_the_reference() -> None:
    hm, flipped = _maps(3, 6), _maps(4, 6)
    center, scale = np.float32([[100, 120]] * 3), np.float32([[1.0, 1.3]] * 3)
    codec = UDPCombinedTarget()
    want = keypoints_from_heatmaps(hm, center, scale, use_udp=True, target_type="CombinedTarget")
    got = codec.decode(hm, center, scale)
    np.testing.assert_array_equal(got[0], want[0])
    merged = flip_test_merge(hm, flipped, [1, 0], True, target_type="CombinedTarget")
    want = keypoints_from_heatmaps(
        merged, center, scale, use_udp=True, target_type="CombinedTarget"
    )
    got = codec.decode(hm, center, scale, flipped=flipped, flip_indices=[1, 0], shift=True)
    np.testing.assert_array_equal(got[0], want[0])
    with pytest.raises(ValueError, match="reference only"):
        codec.decode(hm, center, scale, backend="cpp")


def test_udp_peaks_and_render_are_the_css_functions() -> None:
    maps = torch.from_numpy(_maps(5))
    codec = UDPHeatmap(heatmap_size=(48, 64))
    for refine in ("dark_udp", "quarter", "none"):
        got, want = codec.peaks(maps, refine), heatmap_peaks(maps, refine, 11)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    kp = torch.rand(2, 4, 2, dtype=torch.float64) * 40
    weights = torch.tensor([[1.0, 0.0, 1.0, 0.3], [1.0, 1.0, 0.0, 1.0]])
    got = codec.render(kp, weights)
    want = udp_gaussian_heatmaps(kp, weights, (48, 64), 2.0)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_codec_choice_by_name() -> None:
    assert type(get_codec("MSRA")) is MSRAHeatmap
    assert type(get_codec("UDP")) is UDPHeatmap
    assert type(get_codec("Megvii")) is MegviiHeatmap
    assert type(get_codec("UDP", "CombinedTarget")) is UDPCombinedTarget
    assert get_codec("MSRA", sigma=3.0).sigma == 3.0
    with pytest.raises(ValueError, match="encoding"):
        get_codec("DARK")
    with pytest.raises(ValueError, match="target_type"):
        get_codec("UDP", "Offsets")
    # The evaluation's decode settings pick the codec whose decode they are.
    assert decoding_codec(True).decode_kwargs()["use_udp"] is True
    assert type(decoding_codec(False, "megvii", 7)) is MegviiHeatmap
    assert decoding_codec(False, None, 5).decode_kwargs() == {
        "post_process": None,
        "use_udp": False,
        "kernel": 5,
        "target_type": "GaussianHeatmap",
    }
