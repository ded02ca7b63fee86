"""Cross-type self-supervision: pseudo labels on hand-placed peaks and the CSS loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from posebh.css import css_loss, css_pseudo_targets, peak_locations
from posebh.losses import PixelPrototypeLoss, sample_prototype_pixels
from posebh.prototypes import KeypointPrototypes
from posebh.targets import heatmap_peaks

H, W = 32, 24


def blob(x: float, y: float, amp: float, h: int = H, w: int = W, sigma: float = 2.0):
    """amp · exp(−d²/2σ²) on the whole map (a single, unique maximum near (x, y))."""
    py, px = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return amp * torch.exp(-((px - x) ** 2 + (py - y) ** 2) / (2 * sigma**2))


def maps(specs: list[tuple[float, float, float]]) -> torch.Tensor:
    """[1, K, H, W] from (x, y, amp) per keypoint."""
    return torch.stack([blob(*s) for s in specs])[None]


def udp_loop(x: float, y: float, h: int, w: int, sigma: float = 2.0) -> np.ndarray:
    """Official UDP Gaussian of one visible joint, as plain loops (σ with integer 3σ)."""
    tmp = int(3 * sigma)
    out = np.zeros((h, w))
    mx, my = int(x + 0.5), int(y + 0.5)
    if mx - tmp >= w or my - tmp >= h or mx + tmp + 1 < 0 or my + tmp + 1 < 0:
        return out
    for py in range(max(0, my - tmp), min(my + tmp + 1, h)):
        for px in range(max(0, mx - tmp), min(mx + tmp + 1, w)):
            out[py, px] = math.exp(-((px - x) ** 2 + (py - y) ** 2) / (2 * sigma**2))
    return out


# ---------------------------------------------------------------------------- pseudo labels


def test_keep_and_reject_rules() -> None:
    head = maps(
        [
            (8.3, 10.2, 0.9),  # 0 keep: peaks (8,10) vs (9,11), distance √2
            (5.0, 5.0, 0.2),  # 1 reject: head peak 0.2 ≤ 0.25
            (12.0, 20.0, 0.9),  # 2 reject: prototype peak exactly 0.25 (not > 0.25)
            (12.0, 20.0, 0.9),  # 3 keep: prototype peak 0.2501
            (10.0, 10.0, 0.6),  # 4 keep: peaks 2 px apart
            (10.0, 10.0, 0.6),  # 5 reject: peaks √5 ≈ 2.24 px apart
        ]
    )
    proto = maps(
        [
            (9.0, 10.6, 0.8),
            (5.0, 5.0, 0.9),
            (12.0, 20.0, 0.25),
            (12.0, 20.0, 0.2501),
            (12.0, 10.0, 0.7),
            (12.0, 11.0, 0.7),
        ]
    )
    out = css_pseudo_targets(head, proto)
    assert out.keep[0].tolist() == [True, False, False, True, True, False]
    # weight = the smaller peak value where kept, 0 elsewhere; no map where not kept
    conf_h, conf_p = head.amax((2, 3))[0], proto.amax((2, 3))[0]
    expect = torch.where(out.keep[0], torch.minimum(conf_h, conf_p), torch.zeros(6))
    torch.testing.assert_close(out.target_weight[0, :, 0], expect)
    assert out.target_weight[0, 3, 0].item() == pytest.approx(0.2501)
    assert (out.targets[0, ~out.keep[0]] == 0).all()
    assert out.instances.tolist() == [True]
    # stricter settings
    strict = css_pseudo_targets(head, proto, conf_thr=0.7, match_dist=1.0)
    assert strict.keep[0].tolist() == [False] * 6
    assert strict.instances.tolist() == [False]


def test_pseudo_keypoint_is_the_confidence_weighted_mean() -> None:
    head = maps([(8.3, 10.2, 0.9), (15.6, 20.4, 0.5)])
    proto = maps([(9.0, 10.6, 0.6), (15.2, 20.0, 0.9)])
    out = css_pseudo_targets(head, proto)
    assert out.keep.all()
    xy_h, c_h = heatmap_peaks(head, "dark_udp")
    xy_p, c_p = heatmap_peaks(proto, "dark_udp")
    for k in range(2):
        wh = c_h[0, k] / (c_h[0, k] + c_p[0, k])
        wp = c_p[0, k] / (c_h[0, k] + c_p[0, k])
        torch.testing.assert_close(out.keypoints[0, k], wh * xy_h[0, k] + wp * xy_p[0, k])
    # The sub-pixel decode finds the hand-placed centres, so the pseudo keypoint is close to
    # the weighted mean of the true centres (weights from the peak values).
    for k, ((xh, yh), (xp, yp)) in enumerate(
        [((8.3, 10.2), (9.0, 10.6)), ((15.6, 20.4), (15.2, 20.0))]
    ):
        wh = (c_h[0, k] / (c_h[0, k] + c_p[0, k])).item()
        expect = [wh * xh + (1 - wh) * xp, wh * yh + (1 - wh) * yp]
        np.testing.assert_allclose(out.keypoints[0, k].numpy(), expect, atol=0.03)


def test_pseudo_targets_are_udp_gaussians_at_the_pseudo_keypoints() -> None:
    head = maps([(8.3, 10.2, 0.9), (1.4, 30.6, 0.8)])
    proto = maps([(9.0, 10.6, 0.6), (1.0, 31.0, 0.7)])
    out = css_pseudo_targets(head, proto)
    assert out.keep.all()
    for k in range(2):
        x, y = out.keypoints[0, k].double().tolist()
        np.testing.assert_allclose(out.targets[0, k].numpy(), udp_loop(x, y, H, W), atol=2e-7)


def paper_reference(head: torch.Tensor, proto: torch.Tensor, thr=0.25, dist=2.1):
    """The default equations with loops over images and joints (decode shared)."""
    n, k, h, w = head.shape
    xy_h, _ = heatmap_peaks(head, "dark_udp")
    xy_p, _ = heatmap_peaks(proto, "dark_udp")
    keep = torch.zeros(n, k, dtype=torch.bool)
    kp = torch.zeros(n, k, 2)
    tgt = torch.zeros(n, k, h, w)
    tw = torch.zeros(n, k, 1)
    for i in range(n):
        for j in range(k):
            peaks = []
            for m in (head[i, j], proto[i, j]):
                best, loc = -math.inf, None
                for py in range(h):
                    for px in range(w):
                        if m[py, px].item() > best:
                            best, loc = m[py, px].item(), (px, py)
                peaks.append((best, loc))
            (ch, (hx, hy)), (cp, (qx, qy)) = peaks
            kp[i, j] = (ch * xy_h[i, j] + cp * xy_p[i, j]) / (ch + cp)
            if ch > thr and cp > thr and math.hypot(hx - qx, hy - qy) <= dist:
                keep[i, j] = True
                x, y = kp[i, j].double().tolist()
                tgt[i, j] = torch.from_numpy(udp_loop(x, y, h, w))
                tw[i, j] = min(ch, cp)
    return keep, kp, tgt, tw


def test_paper_mode_matches_loop_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    n, k = 3, 6
    centres = torch.rand(n, k, 2, generator=gen) * torch.tensor([W - 1.0, H - 1.0])
    shift = torch.randn(n, k, 2, generator=gen) * 1.5
    amps = torch.rand(n, k, 2, generator=gen) * 0.6 + 0.1
    head = torch.stack(
        [
            torch.stack([blob(*centres[i, j].tolist(), amps[i, j, 0].item()) for j in range(k)])
            for i in range(n)
        ]
    )
    proto = torch.stack(
        [
            torch.stack(
                [
                    blob(*(centres[i, j] + shift[i, j]).tolist(), amps[i, j, 1].item())
                    for j in range(k)
                ]
            )
            for i in range(n)
        ]
    )
    head = head + 0.01 * torch.rand(head.shape, generator=gen)
    proto = proto + 0.01 * torch.rand(proto.shape, generator=gen)
    out = css_pseudo_targets(head, proto)
    keep, kp, tgt, tw = paper_reference(head, proto)
    assert 0 < int(keep.sum()) < n * k  # both outcomes occur
    assert torch.equal(out.keep, keep)
    torch.testing.assert_close(out.keypoints, kp)
    # kp rounds differently in float32 (≤ 1e-6 px), which moves the Gaussian by ≤ 1e-6.
    torch.testing.assert_close(out.targets, tgt, atol=5e-6, rtol=0)
    torch.testing.assert_close(out.target_weight, tw)


def test_deviation_4_location_check() -> None:
    """Official: sqrt((x_h − x_p)² + (x_p − y_p)²) instead of the peaks' distance."""
    head = maps([(10.0, 25.0, 0.9), (12.0, 12.0, 0.9)])
    proto = maps([(10.0, 25.0, 0.9), (12.0, 3.0, 0.9)])
    assert peak_locations(proto)[0].tolist() == [[10, 25], [12, 3]]
    paper = css_pseudo_targets(head, proto, compat="paper")
    official = css_pseudo_targets(head, proto, compat="official")
    # joint 0: same peak (distance 0), but the official term |x_p − y_p| = 15 rejects it;
    # joint 1: 9 px apart (rejected by the paper), official |x_h − x_p| = 0, |x_p − y_p| = 9.
    assert paper.keep[0].tolist() == [True, False]
    assert official.keep[0].tolist() == [False, False]
    head2 = maps([(12.0, 30.0, 0.9)])
    proto2 = maps([(12.0, 13.0, 0.9)])  # x_p − y_p = −1: official distance 1, true distance 17
    assert css_pseudo_targets(head2, proto2, compat="paper").keep.tolist() == [[False]]
    assert css_pseudo_targets(head2, proto2, compat="official").keep.tolist() == [[True]]


def test_deviation_5_pseudo_keypoint() -> None:
    """Official: w_h·(x_h, y_h) + w_p·conf_p — a score where the coordinate belongs."""
    head = maps([(12.0, 12.0, 0.9)])
    proto = maps([(12.3, 12.6, 0.6)])
    paper = css_pseudo_targets(head, proto, compat="paper")
    official = css_pseudo_targets(head, proto, compat="official")
    xy_h, c_h = heatmap_peaks(head, "dark_udp")
    xy_p, c_p = heatmap_peaks(proto, "dark_udp")
    wh, wp = c_h / (c_h + c_p), c_p / (c_h + c_p)
    torch.testing.assert_close(
        official.keypoints, wh[..., None] * xy_h + wp[..., None] * c_p[..., None]
    )
    torch.testing.assert_close(paper.keypoints, wh[..., None] * xy_h + wp[..., None] * xy_p)
    # The official keypoint is pulled towards the origin (≈ 0.6·12 + 0.4·0.6 ≈ 7.4).
    assert official.keypoints[0, 0, 0].item() == pytest.approx(0.6 * 12 + 0.4 * 0.6, abs=0.1)
    assert paper.keypoints[0, 0, 0].item() == pytest.approx(12.1, abs=0.1)
    x, y = official.keypoints[0, 0].double().tolist()
    np.testing.assert_allclose(official.targets[0, 0].numpy(), udp_loop(x, y, H, W), atol=2e-7)


# ---------------------------------------------------------------------------- the loss

KPTS = (2, 2)  # two datasets of two keypoints; classes 0,1 | 2,3
FDIM = 8


def scene(compat: str = "paper"):
    """Image 0 of dataset 1 shows dataset 0's keypoints (head 0 and prototypes agree);
    image 1 of dataset 0 shows nothing of dataset 1 (head 1 below the threshold).

    Prototypes are basis vectors: class j's prototypes all equal e_j; embeddings are
    Σ_j a_j(p)·e_j + 0.3·e_7, so class j's prototype heatmap peaks where a_j does.
    """
    protos = KeypointPrototypes(KPTS, 2, FDIM, compat=compat)
    eye = torch.eye(FDIM)
    protos.prototypes.copy_(torch.stack([eye[j].expand(2, FDIM) for j in range(4)]))
    a = torch.zeros(2, FDIM, H, W)
    a[0, 0] = blob(6.2, 8.4, 1.0)
    a[0, 1] = blob(17.5, 24.3, 1.0)
    a[1, 2] = blob(10.0, 10.0, 0.3)
    a[:, 7] = 0.3
    emb = a.clone().requires_grad_(True)
    head0 = torch.stack(
        [
            torch.stack([blob(6.0, 8.6, 0.9), blob(17.0, 24.0, 0.8)]),
            torch.stack([blob(3.0, 3.0, 0.9), blob(20.0, 28.0, 0.9)]),
        ]
    )
    head1 = 0.2 * torch.rand(2, 2, H, W, generator=torch.Generator().manual_seed(1))
    heads = [head0.requires_grad_(True), head1.requires_grad_(True)]
    return protos, emb, heads, torch.tensor([1, 0])


def test_css_loss_is_zero_without_cross_dataset_images() -> None:
    protos = KeypointPrototypes((2,), 2, FDIM)
    _, emb, heads, _ = scene()
    out = css_loss([heads[0]], emb, torch.tensor([0, 0]), protos)
    assert out["css"].item() == 0.0 and int(out["css_pseudo_labels"]) == 0
    out["css"].backward()  # still part of the graph
    assert heads[0].grad is None or heads[0].grad.abs().sum() == 0


def test_css_loss_only_cross_dataset_samples_contribute() -> None:
    protos, emb, heads, idx = scene()
    out = css_loss(heads, emb, idx, protos)
    assert int(out["css_pseudo_labels"]) == 2  # dataset 0's two joints on image 0
    out["css"].backward()
    # head 0 is supervised on image 0 (dataset 1) only; head 1 gets nothing (no pseudo label)
    assert heads[0].grad[0].abs().sum() > 0 and heads[0].grad[1].abs().sum() == 0
    assert heads[1].grad is None or heads[1].grad.abs().sum() == 0
    assert emb.grad[0].abs().sum() > 0 and emb.grad[1].abs().sum() == 0
    # Changing head 0's prediction on its own dataset's image changes nothing.
    protos2, emb2, heads2, _ = scene()
    with torch.no_grad():
        heads2[0][1] = torch.rand(2, H, W)
    out2 = css_loss(heads2, emb2, idx, protos2)
    torch.testing.assert_close(out2["css"], out["css"])


def test_css_loss_value() -> None:
    protos, emb, heads, idx = scene()
    proto_hm = protos.heatmaps(emb)
    torch.manual_seed(3)
    out = css_loss(heads, emb, idx, protos, proto_heatmaps=proto_hm, update=False)
    # by hand: only (d = 0, image 0) contributes
    head, phm = heads[0][:1], proto_hm[:1, 0:2]
    pseudo = css_pseudo_targets(head.detach(), phm.detach())
    assert pseudo.keep.all()
    w = pseudo.target_weight[..., None]
    mse_h = ((head - pseudo.targets) * w).pow(2).mean()
    mse_p = ((phm - pseudo.targets) * w).pow(2).mean()
    e, lab, conf = sample_prototype_pixels(emb[:1], pseudo.targets * w, 0.0)
    torch.manual_seed(3)
    learned = protos.learn(e, lab, conf, 0, update=False)
    ppc, _ = PixelPrototypeLoss(num_prototypes=2)(learned.logits, learned.target)
    expect = 1e-3 * (mse_h + 3.33e-6 * mse_p + ppc)
    torch.testing.assert_close(out["css"], expect)
    torch.testing.assert_close(out["css_heatmap"], mse_h.detach())
    torch.testing.assert_close(out["css_proto_heatmap"], mse_p.detach())
    torch.testing.assert_close(out["css_proto"], ppc.detach())


@pytest.mark.parametrize("compat", ["paper", "official"])
def test_css_prototype_update_weight(compat: str) -> None:
    """Paper: the CSS update is scaled by css_update_weight 3.13e-9 (no visible move);
    official: the release passes no update weight, so the prototypes move at γ = 0.999."""
    protos, emb, heads, idx = scene(compat)
    before = protos.prototypes.clone()
    torch.manual_seed(0)
    css_loss(heads, emb, idx, protos)
    moved = (protos.prototypes - before).abs().amax().item()
    if compat == "paper":
        assert moved < 1e-6
    else:
        assert moved > 1e-4
        # only dataset 0's classes (0, 1) move
        assert torch.equal(protos.prototypes[2:], before[2:])


def test_css_loss_gradients_through_prototype_heatmaps() -> None:
    protos, emb, heads, idx = scene()
    out = css_loss(heads, emb, idx, protos, phm_weight=1.0, update=False)
    (g,) = torch.autograd.grad(out["css"], emb)
    assert g.abs().sum() > 0 and torch.isfinite(g).all()
    with pytest.raises(ValueError):
        css_loss(heads[:1], emb, idx, protos)


def test_heatmap_peaks_tie_projection() -> None:
    hm = torch.zeros(1, 1, H, W)
    hm[0, 0, 5, 7] = 1.0
    hm[0, 0, 9, 3] = 1.0  # tie: x from the column maxima, y from the row maxima
    assert peak_locations(hm)[0, 0].tolist() == [3, 5]


# ---------------------------------------------------------------------------- border peaks


def border_peak_map(level: float = 0.3, bump: float = 6e-6) -> torch.Tensor:
    """[H, W]: flat at ``level`` with the corner (0, 0) raised by ``bump`` — the arg-max sits
    on the corner and the blurred log-map is flat to one float32 ulp along the border, the
    shape of the prototype heatmap that made a tiny PoseBH run's CSS loss NaN."""
    m = torch.full((H, W), level)
    m[0, 0] = torch.tensor(level) + torch.tensor(bump)
    return m


def test_dark_udp_of_a_border_peak_is_not_finite_in_the_reference() -> None:
    """The precondition of the CSS fix: the release's decode (bit-exact reference) divides by
    a zero Hessian determinant here."""
    from posebh.decode import get_max_preds, post_dark_udp

    hm = border_peak_map()[None, None].numpy()
    coords, maxval = get_max_preds(hm)
    assert coords[0, 0].tolist() == [0.0, 0.0] and maxval[0, 0, 0] > 0.25
    refined = post_dark_udp(coords, hm, kernel=11)
    assert not np.isfinite(refined).all()


@pytest.mark.parametrize("compat", ["paper", "official"])
def test_pseudo_targets_of_a_border_peak_are_finite(compat: str) -> None:
    """Joint 0: the degenerate head map with a prototype peak next to it (kept); joint 1:
    the degenerate map on the prototype side of a rejected joint (too far from the head
    peak).  Both used to come out NaN (keypoints, and the targets through NaN · 0)."""
    head = torch.stack([border_peak_map(), blob(15.0, 20.0, 0.9)])[None]
    proto = torch.stack([blob(0.4, 0.3, 0.8), border_peak_map()])[None]
    out = css_pseudo_targets(head, proto, compat=compat)
    assert torch.isfinite(out.keypoints).all()
    assert torch.isfinite(out.targets).all() and torch.isfinite(out.target_weight).all()
    assert out.keep[0].tolist() == [True, False]
    assert out.targets[0, 1].abs().sum() == 0 and out.target_weight[0, 1, 0] == 0
    # The degenerate step falls back to the integer arg-max (0, 0): the pseudo keypoint is
    # the confidence-weighted mean of (0, 0) and the prototype's own sub-pixel peak.
    xy_p, c_p = heatmap_peaks(proto, "dark_udp")
    c_h = torch.tensor(0.3 + 6e-6)
    w_p = c_p[0, 0] / (c_h + c_p[0, 0])
    second = xy_p[0, 0] if compat == "paper" else c_p[0, 0].expand(2)
    torch.testing.assert_close(out.keypoints[0, 0], w_p * second)
    x, y = out.keypoints[0, 0].double().tolist()
    np.testing.assert_allclose(out.targets[0, 0].numpy(), udp_loop(x, y, H, W), atol=2e-7)


def test_css_loss_with_a_border_peak_is_finite() -> None:
    """The whole CSS loss of a step in which one head map peaks on the border (previously
    NaN, which the trainer had to skip)."""
    protos, emb, heads, idx = scene()
    with torch.no_grad():
        heads[0][0, 1] = border_peak_map()  # dataset 0's joint 1 on dataset 1's image
    out = css_loss(heads, emb, idx, protos, update=False)
    assert torch.isfinite(out["css"]) and out["css"].item() > 0
    out["css"].backward()
    assert torch.isfinite(heads[0].grad).all() and torch.isfinite(emb.grad).all()


def test_finite_peaks_keeps_finite_pairs_and_uses_the_first_arg_max() -> None:
    from posebh.css import finite_peaks

    hm = torch.zeros(1, 3, H, W)
    hm[0, 0, 4, 5] = 1.0
    hm[0, 1, 7, 2] = hm[0, 1, 9, 1] = 0.5  # tie: the first in row-major order, (2, 7)
    hm[0, 2] = -1.0  # no positive maximum: the (−1, −1) sentinel
    xy = torch.tensor([[[5.25, 4.5], [float("nan"), 1.0], [float("inf"), 0.0]]])
    out = finite_peaks(xy, hm)
    assert out.tolist() == [[[5.25, 4.5], [2.0, 7.0], [-1.0, -1.0]]]
    assert finite_peaks(xy[:, :1], hm[:, :1]) is not None
    assert torch.equal(finite_peaks(xy[:, :1], hm[:, :1]), xy[:, :1])
