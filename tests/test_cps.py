"""Clustered prototype supervision: clustering, the cluster bank and the CPS loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from posebh.cps import (
    ClusterPrototypes,
    choose_num_clusters,
    cluster_prototypes,
    cluster_target_maps,
    cps_loss,
)
from posebh.losses import JointsMSELoss, PixelPrototypeLoss, sample_prototype_pixels

KPTS = (17, 14, 16, 17, 17, 133)


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict:
    return torch.load(golden_dir / "suite" / "losses.pt", weights_only=True)["cps"]


# ---------------------------------------------------------------------------- golden


def test_official_clustering_matches_golden(golden: dict) -> None:
    r = cluster_prototypes(
        golden["proto_in"], golden["n_cluster"], golden["iters"], golden["beta"], "official"
    )
    assert (r.assign - golden["assign"]).abs().max().item() <= 5e-5
    assert torch.equal(r.closest_keypoint, golden["closest_kpt_idxs"])
    torch.testing.assert_close(r.centroids, golden["proto_cst"], atol=1e-7, rtol=0)
    assert r.error == pytest.approx(golden["err"].item(), abs=1e-9)
    kpt, cst = cluster_target_maps(KPTS, r.closest_keypoint)
    assert len(kpt) == len(cst) == 6
    for a, b in zip(kpt, golden["kpt_conv_idxs"], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(cst, golden["cst_conv_idxs"], strict=True):
        assert torch.equal(a, b)


def test_official_closest_keypoints_only_reach_the_first_classes(golden: dict) -> None:
    """Deviation 6 on the golden bank: cluster ranks // M stay below ⌈64/3⌉ = 22."""
    r = cluster_prototypes(golden["proto_in"], 64, 50, 20.0, "official")
    assert int(r.closest_keypoint.max()) <= 21
    paper = cluster_prototypes(golden["proto_in"], 64, 50, 20.0, "paper")
    assert int(paper.closest_keypoint.max()) > 21


# ---------------------------------------------------------------------------- paper mode


def soft_kmeans_loops(protos: list, c: int, iters: int, beta: float, m: int):
    """Float64 plain-loop cosine soft k-means: assignments, centres, distances."""
    x = [[v / math.sqrt(sum(t * t for t in row)) for v in row] for row in protos]
    p, f = len(x), len(x[0])
    centres = [list(x[i * m]) for i in range(c)]

    def assignments():
        a, dist = [], []
        for i in range(p):
            d_row = []
            for k in range(c):
                dot = sum(x[i][t] * centres[k][t] for t in range(f))
                nx = math.sqrt(sum(v * v for v in x[i]))
                nc = math.sqrt(sum(v * v for v in centres[k]))
                d_row.append((1 - dot / (nx * nc)) / 2)
            e = [math.exp(-beta * d) for d in d_row]
            s = sum(e)
            a.append([v / s for v in e])
            dist.append(d_row)
        return a, dist

    for _ in range(iters):
        a, _ = assignments()
        for k in range(c):
            mass = sum(a[i][k] for i in range(p))
            centres[k] = [sum(a[i][k] * x[i][t] for i in range(p)) / mass for t in range(f)]
    a, dist = assignments()
    return x, a, centres, dist


def test_paper_clustering_matches_loop_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    j, m, f, c, iters = 12, 3, 5, 5, 8
    protos = torch.randn(j, m, f, generator=gen)
    x, a, centres, dist = soft_kmeans_loops(protos.reshape(j * m, f).tolist(), c, iters, 20.0, m)
    f64 = torch.float64
    # float32 (the training dtype) within rounding of the float64 loops ...
    r32 = cluster_prototypes(protos, c, iters, 20.0, "paper")
    torch.testing.assert_close(r32.assign.double(), torch.tensor(a, dtype=f64), atol=2e-6, rtol=0)
    # ... and float64 to 1e-12; the rest is checked on the float64 run.
    r = cluster_prototypes(protos.double(), c, iters, 20.0, "paper")
    torch.testing.assert_close(r.assign, torch.tensor(a, dtype=f64), atol=1e-12, rtol=0)
    torch.testing.assert_close(r.centers, torch.tensor(centres, dtype=f64), atol=1e-12, rtol=0)
    # Members: the M prototypes nearest each centre; closest keypoint = first member // M.
    for k in range(c):
        order = sorted(range(j * m), key=lambda i, k=k: dist[i][k])[:m]
        assert r.members[k].tolist() == order
        assert r.closest_keypoint[k].item() == order[0] // m
        torch.testing.assert_close(r.centroids[k], torch.tensor([x[i] for i in order], dtype=f64))
    # Error: the prototypes against their soft reconstruction Σ_c a_ic · centre_c.
    err = sum(
        (x[i][t] - sum(a[i][k] * centres[k][t] for k in range(c))) ** 2
        for i in range(j * m)
        for t in range(f)
    )
    assert r.error == pytest.approx(err, rel=1e-10)


def test_deviation_6_member_choice() -> None:
    """Official rows are the cluster ranks of prototypes 0..M−1, used as prototype indices."""
    gen = torch.Generator().manual_seed(11)
    j, m, f, c = 10, 3, 6, 4
    protos = F.normalize(torch.randn(j, m, f, generator=gen), dim=-1)
    paper = cluster_prototypes(protos, c, 10, 20.0, "paper")
    official = cluster_prototypes(protos, c, 10, 20.0, "official")
    # Same clustering in both modes (up to the float32 order of operations).
    torch.testing.assert_close(paper.assign, official.assign, atol=1e-5, rtol=0)
    x = protos.reshape(j * m, f)
    cos = F.normalize(x, dim=1) @ F.normalize(official.centers, dim=1).t()
    dist = (1 - cos) / 2
    ranks = torch.argsort(dist, dim=1)  # [J·M, C]: cluster ranking of each prototype
    for k in range(c):
        # official: entry i of row k is the k-th nearest cluster of prototype i
        assert official.members[k].tolist() == [int(ranks[i, k]) for i in range(m)]
        torch.testing.assert_close(official.centroids[k], x[ranks[:m, k]])
        # paper: the M prototypes nearest cluster k
        assert paper.members[k].tolist() == torch.argsort(dist[:, k])[:m].tolist()
    assert int(official.closest_keypoint.max()) < math.ceil(c / m)
    assert not torch.equal(paper.members, official.members)


def grouped_bank(groups: int, seed: int = 0, j: int = 214, m: int = 3, f: int = 64):
    gen = torch.Generator().manual_seed(seed)
    base = F.normalize(torch.randn(groups, f, generator=gen), dim=-1)
    cls_group = torch.arange(j) % groups
    noise = 0.05 * torch.randn(j, m, f, generator=gen)
    return F.normalize(base[cls_group][:, None, :] + noise, dim=-1)


def test_choose_num_clusters_paper_finds_the_group_count() -> None:
    bank = grouped_bank(96)
    best = choose_num_clusters(bank, (64, 96, 128), iters=30, compat="paper")
    assert best.num_clusters == 96
    # weighted error = error · (C/J)²
    assert best.weighted_error(214) == pytest.approx(best.error * (96 / 214) ** 2)


def test_official_error_is_noise_when_clusters_span_the_space() -> None:
    """C ≥ F: the centres span R^F, so the least-squares residual is rounding noise."""
    bank = grouped_bank(96)
    for c in (64, 96):
        r = cluster_prototypes(bank, c, 10, 20.0, "official")
        assert r.error < 1e-6
    small = cluster_prototypes(bank, 32, 10, 20.0, "official")  # C < F: real residual
    assert small.error > 1.0


def test_choose_num_clusters_skips_options_not_below_j() -> None:
    bank = grouped_bank(8, j=40, f=16)
    assert choose_num_clusters(bank, (8, 40, 64), iters=5).num_clusters == 8
    with pytest.raises(ValueError):
        choose_num_clusters(bank, (40, 64), iters=5)
    with pytest.raises(ValueError):
        cluster_prototypes(bank, 41)


def test_cluster_target_maps_by_hand() -> None:
    kpt, cst = cluster_target_maps((3, 2, 4), torch.tensor([4, 0, 8, 0, 3, 5]))
    assert [t.tolist() for t in cst] == [[1, 3], [0, 4], [2, 5]]
    assert [t.tolist() for t in kpt] == [[0, 0], [1, 0], [3, 0]]


# ---------------------------------------------------------------------------- bank


def make_bank(compat: str = "paper") -> ClusterPrototypes:
    """4 clusters over datasets of 2 and 3 keypoints, F = 6, M = 2, basis-vector members."""
    bank = ClusterPrototypes(4, 2, 6, (2, 3), compat=compat)
    eye = torch.eye(6)
    members = torch.stack([torch.stack([eye[i], eye[(i + 4) % 6]]) for i in range(4)])
    # cluster 0 ← kpt 1 of d0; 1 ← kpt 0 of d1 (class 2); 2 ← kpt 2 of d1; 3 ← kpt 1 of d0
    bank.set_clusters(members, torch.tensor([1, 2, 4, 1]))
    return bank


def test_bank_state_dict_and_freeze() -> None:
    bank = make_bank()
    assert list(bank.state_dict()) == ["prototypes"]
    assert bank.frozen
    with pytest.raises(RuntimeError):
        bank.thaw()
    before = bank.prototypes.clone()
    emb = torch.randn(20, 6)
    bank.learn(emb, torch.randint(0, 4, (20,)), torch.ones(20), 0, update=True)
    assert torch.equal(bank.prototypes, before)
    assert bank.heatmaps(torch.randn(2, 6, 5, 4)).shape == (2, 4, 5, 4)
    with pytest.raises(RuntimeError):
        ClusterPrototypes(3, 2, 6, (2, 3)).target_maps()


def test_bank_from_result() -> None:
    bank_in = grouped_bank(8, j=20, f=8)
    r = cluster_prototypes(bank_in, 10, 5)
    bank = ClusterPrototypes.from_result(r, (12, 8))
    assert bank.prototypes.shape == (10, 3, 8)
    torch.testing.assert_close(bank.prototypes, r.centroids)
    assert torch.equal(bank.closest_keypoint, r.closest_keypoint)


def test_map_targets_by_hand() -> None:
    bank = make_bank()
    t0 = torch.arange(3 * 2 * 4 * 3, dtype=torch.float32).reshape(3, 2, 4, 3)
    t1 = -torch.arange(3 * 3 * 4 * 3, dtype=torch.float32).reshape(3, 3, 4, 3)
    w0 = torch.tensor([[[0.5], [0.6]]]).expand(3, 2, 1)
    w1 = torch.tensor([[[0.7], [0.8], [0.9]]]).expand(3, 3, 1)
    idx = torch.tensor([1, 0, 1])
    tgt, tw = bank.map_targets([t0, t1], [w0, w1], idx)
    assert torch.equal(tgt[1, 0], t0[1, 1]) and torch.equal(tgt[1, 3], t0[1, 1])
    assert (tgt[1, 1:3] == 0).all() and tw[1, :, 0].tolist() == pytest.approx([0.6, 0, 0, 0.6])
    for b in (0, 2):
        assert torch.equal(tgt[b, 1], t1[b, 0]) and torch.equal(tgt[b, 2], t1[b, 2])
        assert (tgt[b, [0, 3]] == 0).all()
        assert tw[b, :, 0].tolist() == pytest.approx([0, 0.7, 0.9, 0])


# ---------------------------------------------------------------------------- loss


def loss_inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    b, h, w = 4, 5, 4
    emb = torch.randn(b, 6, h, w, generator=gen, requires_grad=True)
    t0 = torch.rand(b, 2, h, w, generator=gen) ** 4
    t1 = torch.rand(b, 3, h, w, generator=gen) ** 4
    w0 = torch.tensor([[[1.0], [0.5]]]).expand(b, 2, 1)
    w1 = torch.tensor([[[1.0], [0.0], [1.0]]]).expand(b, 3, 1)
    return emb, [t0, t1], [w0, w1]


def reference_cps(emb, targets, weights, idx, bank, official: bool, seed: int):
    """Straight transcription of the method with per-image loops."""
    b, _, h, w = emb.shape
    c = bank.num_clusters
    ck = bank.closest_keypoint.tolist()
    starts = (0, 2)
    rows_by_dataset = [[i for i in range(b) if int(idx[i]) == d] for d in range(2)]
    cst_t = torch.zeros(b, c, h, w)
    cst_w = torch.zeros(b, c, 1)
    for i in range(b):
        d = int(idx[i])
        for k in range(c):
            local = ck[k] - starts[d]
            if 0 <= local < targets[d].shape[1]:
                cst_t[i, k] = targets[d][i, local]
                cst_w[i, k] = weights[d][i, local]
    order = [i for rows in rows_by_dataset for i in rows]
    emb_s, lab_s, conf_s = sample_prototype_pixels(emb[order], cst_t[order], 0.0)
    torch.manual_seed(seed)
    out = bank.learn(emb_s, lab_s, conf_s, 0, update=False)
    proto, _ = PixelPrototypeLoss(num_prototypes=bank.num_prototypes)(out.logits, out.target)
    pred = bank.heatmaps(emb)
    tgt_rows = order if official else list(range(b))
    mse = sum(
        ((pred[i, k] - cst_t[tgt_rows[i], k]) * cst_w[tgt_rows[i], k]).pow(2).mean()
        for i in range(b)
        for k in range(c)
    ) / (b * c)
    return (proto + 3.33e-6 * mse) * 1e-2, proto, mse


@pytest.mark.parametrize("compat", ["paper", "official"])
def test_cps_loss_against_reference(compat: str) -> None:
    bank = make_bank(compat)
    emb, targets, weights = loss_inputs()
    idx = torch.tensor([1, 0, 1, 0])  # unsorted on purpose
    torch.manual_seed(7)
    out = cps_loss(emb, targets, weights, idx, bank)
    ref, proto, mse = reference_cps(emb, targets, weights, idx, bank, compat == "official", 7)
    torch.testing.assert_close(out["cps"], ref, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(out["cps_proto"], proto.detach(), rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(out["cps_heatmap"], mse.detach(), rtol=1e-5, atol=1e-9)


def test_cps_official_heatmap_misalignment() -> None:
    """Official MSE pairs heatmaps in batch order with targets in dataset order."""
    emb, targets, weights = loss_inputs(1)
    sorted_idx = torch.tensor([0, 0, 1, 1])
    mixed_idx = torch.tensor([1, 0, 1, 0])
    res = {}
    for compat in ("paper", "official"):
        for name, idx in (("sorted", sorted_idx), ("mixed", mixed_idx)):
            torch.manual_seed(0)
            res[compat, name] = cps_loss(emb, targets, weights, idx, make_bank(compat))
    # A batch sorted by dataset: both modes agree.
    torch.testing.assert_close(
        res["paper", "sorted"]["cps_heatmap"], res["official", "sorted"]["cps_heatmap"]
    )
    # A mixed batch: they differ, by the heatmap term only.
    assert not torch.allclose(
        res["paper", "mixed"]["cps_heatmap"], res["official", "mixed"]["cps_heatmap"]
    )
    torch.testing.assert_close(
        res["paper", "mixed"]["cps_proto"], res["official", "mixed"]["cps_proto"]
    )


def test_cps_gradients_and_frozen_bank() -> None:
    bank = make_bank()
    before = bank.prototypes.clone()
    emb, targets, weights = loss_inputs(2)
    out = cps_loss(emb, targets, weights, torch.tensor([0, 1, 1, 0]), bank)
    out["cps"].backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert torch.equal(bank.prototypes, before)
    assert out["cps"].item() > 0


def test_cps_custom_criteria_and_bad_dataset() -> None:
    bank = make_bank()
    emb, targets, weights = loss_inputs(3)
    idx = torch.tensor([0, 1, 1, 0])
    torch.manual_seed(0)
    a = cps_loss(emb, targets, weights, idx, bank, weight=2.0, phm_weight=0.0)
    torch.manual_seed(0)
    b = cps_loss(
        emb,
        targets,
        weights,
        idx,
        bank,
        criterion=PixelPrototypeLoss(num_prototypes=2),
        heatmap_criterion=JointsMSELoss(),
        weight=1.0,
        phm_weight=0.0,
    )
    torch.testing.assert_close(a["cps"], 2 * b["cps"])
    with pytest.raises(ValueError):
        cps_loss(emb, targets, weights, torch.tensor([0, 1, 2, 0]), bank)
