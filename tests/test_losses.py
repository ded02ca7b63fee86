"""Losses: golden values of the release and plain-loop float64 references."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from posebh.losses import (
    JointsMSELoss,
    PixelPrototypeLoss,
    prototype_losses,
    sample_prototype_pixels,
)
from posebh.prototypes import KeypointPrototypes


@pytest.fixture(scope="module")
def golden(golden_dir: Path, shared_file) -> dict:
    return torch.load(shared_file(golden_dir / "suite" / "losses.pt"), weights_only=True)


# --------------------------------------------------------------------------------------------
# Golden values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "use_tw", "lw"),
    [("loss_tw", True, 1.0), ("loss_no_tw", False, 1.0), ("loss_tw_lw0.5", True, 0.5)],
)
def test_golden_mse(golden: dict, key: str, use_tw: bool, lw: float) -> None:
    g = golden["mse"]
    loss = JointsMSELoss(use_target_weight=use_tw, loss_weight=lw)(
        g["output"], g["target"], g["target_weight"]
    )
    # reached 3.0e-8, 3.0e-8, 1.5e-8 absolute (float32 rounding of a ~0.3 mean)
    assert abs(loss.item() - g[key].item()) <= 1e-7


def test_golden_ppce(golden: dict) -> None:
    g = golden["ppce"]
    crit = PixelPrototypeLoss(weight=1.25e-5, ppc_weight=0.01, ppd_weight=0.001, num_prototypes=3)
    loss, parts = crit(g["logits"], g["target"], 5)
    torch.testing.assert_close(loss, g["loss_numjoints5"], rtol=1e-6, atol=0)  # reached 0
    torch.testing.assert_close(parts["ppc"], g["ppc_numjoints5"], rtol=1e-6, atol=0)
    torch.testing.assert_close(parts["ppd"], g["ppd_numjoints5"], rtol=1e-6, atol=0)
    loss_default, _ = crit(g["logits"], g["target"])  # K inferred from the logits
    torch.testing.assert_close(loss_default, g["loss_default"], rtol=1e-6, atol=0)
    with pytest.raises(ValueError):
        crit(g["logits"], g["target"], 4)


@pytest.mark.parametrize("call", [0, 1])
def test_golden_ppce_on_recorded_logits(golden: dict, call: int) -> None:
    g = golden["kpt_prototype_train"][call]
    num_k = g["logits"].shape[1] // 3
    loss, parts = PixelPrototypeLoss()(g["logits"], g["target"], num_k)
    torch.testing.assert_close(loss, g["ppce_loss_on_logits"], rtol=1e-6, atol=0)
    torch.testing.assert_close(parts["ppc"], g["ppc"], rtol=1e-6, atol=0)
    torch.testing.assert_close(parts["ppd"], g["ppd"], rtol=1e-6, atol=0)


# --------------------------------------------------------------------------------------------
# Plain-loop references
# --------------------------------------------------------------------------------------------


def test_mse_matches_loops() -> None:
    gen = torch.Generator().manual_seed(0)
    out, tgt = torch.randn(2, 3, 4, 5, generator=gen), torch.rand(2, 3, 4, 5, generator=gen)
    w = torch.tensor([[[1.0], [0.0], [2.0]], [[0.5], [1.0], [0.0]]])
    for use_tw in (True, False):
        total = 0.0
        for k in range(3):
            acc = 0.0
            for b in range(2):
                wk = float(w[b, k, 0]) if use_tw else 1.0
                for y in range(4):
                    for x in range(5):
                        acc += ((float(out[b, k, y, x]) - float(tgt[b, k, y, x])) * wk) ** 2
            total += acc / (2 * 4 * 5)
        ref = 0.7 * total / 3
        got = JointsMSELoss(use_target_weight=use_tw, loss_weight=0.7)(out, tgt, w)
        assert got.item() == pytest.approx(ref, rel=1e-6)


def test_ppc_ppd_match_loops() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.rand(12, 6, generator=gen, dtype=torch.float64)
    target = torch.randint(0, 6, (12,), generator=gen)
    target[[2, 7]] = -1
    ce, dist, n = 0.0, 0.0, 0
    for i in range(12):
        t = int(target[i])
        if t == -1:
            continue
        row = logits[i].tolist()
        ce += math.log(sum(math.exp(v) for v in row)) - row[t]
        dist += (1 - row[t]) ** 2
        n += 1
    ppc, ppd = 0.01 * ce / n, 0.001 * dist / n
    loss, parts = PixelPrototypeLoss(num_prototypes=2)(logits, target, 3)
    assert parts["ppc"].item() == pytest.approx(ppc, rel=1e-12)
    assert parts["ppd"].item() == pytest.approx(ppd, rel=1e-12)
    assert loss.item() == pytest.approx(1.25e-5 * (ppc + ppd), rel=1e-12)


def test_ppce_all_ignored_is_zero_with_graph() -> None:
    logits = torch.rand(4, 6, requires_grad=True)
    loss, parts = PixelPrototypeLoss(num_prototypes=2)(logits, torch.full((4,), -1), 3)
    assert loss.item() == 0.0 and parts["ppc"].item() == 0.0 and parts["ppd"].item() == 0.0
    loss.backward()
    assert logits.grad is not None


def test_sample_prototype_pixels_matches_loops() -> None:
    gen = torch.Generator().manual_seed(2)
    emb = torch.randn(2, 4, 3, 5, generator=gen)
    hm = torch.rand(2, 3, 3, 5, generator=gen)
    hm[0, :, 1, 2] = 0.0  # below the threshold
    hm[1, :, 0, 0] = 0.8  # a tie: the first keypoint wins
    e, lab, conf = sample_prototype_pixels(emb, hm, threshold=0.3)
    ref_e, ref_l, ref_c = [], [], []
    for b in range(2):
        for y in range(3):
            for x in range(5):
                vals = hm[b, :, y, x].tolist()
                best = max(vals)
                if best > 0.3:
                    ref_e.append(emb[b, :, y, x])
                    ref_l.append(vals.index(best))
                    ref_c.append(best)
    assert torch.equal(e, torch.stack(ref_e))
    assert lab.tolist() == ref_l
    assert conf.tolist() == ref_c


# --------------------------------------------------------------------------------------------
# prototype_losses
# --------------------------------------------------------------------------------------------

SMALL_K = (3, 2, 4)


def _batch(seed: int):
    gen = torch.Generator().manual_seed(seed)
    b, f, h, w = 4, 5, 4, 3
    emb = torch.randn(b, f, h, w, generator=gen)
    targets = [torch.rand(b, k, h, w, generator=gen) for k in SMALL_K]
    weights = [(torch.rand(b, k, 1, generator=gen) > 0.3).float() for k in SMALL_K]
    dataset_idx = torch.tensor([0, 2, 0, 2])  # dataset 1 absent
    return emb, targets, weights, dataset_idx


@pytest.mark.parametrize("compat", ["paper", "official"])
def test_prototype_losses_composition(compat: str) -> None:
    emb, targets, weights, dataset_idx = _batch(3)
    a = KeypointPrototypes(SMALL_K, 2, 5, compat=compat, generator=torch.Generator().manual_seed(4))
    b = KeypointPrototypes(SMALL_K, 2, 5, compat=compat)
    b.load_state_dict(a.state_dict())

    emb_a = emb.clone().requires_grad_(True)
    torch.manual_seed(9)
    out = prototype_losses(emb_a, targets, weights, dataset_idx, a, threshold=0.2)

    # The same step by hand: heatmaps before any update, datasets in index order.
    torch.manual_seed(9)
    phm_all = b.heatmaps(emb, -1)
    crit, mse = PixelPrototypeLoss(num_prototypes=2), JointsMSELoss(use_target_weight=True)
    proto, phm = 0.0, 0.0
    for d in (0, 2):
        mask = dataset_idx == d
        phm = phm + mse(phm_all[mask][:, b.class_slice(d)], targets[d][mask], weights[d][mask])
        e, lab, conf = sample_prototype_pixels(emb[mask], targets[d][mask], 0.2)
        res = b.learn(e, lab, conf, d)
        proto = proto + crit(res.logits, res.target, SMALL_K[d])[0]
    torch.testing.assert_close(out["proto"], proto, rtol=1e-6, atol=0)
    torch.testing.assert_close(out["proto_heatmap"], phm * 3.33e-6, rtol=1e-6, atol=0)
    assert torch.equal(a.prototypes, b.prototypes)
    assert out["ppc"] > 0 and out["ppd"] > 0

    (out["proto"] + out["proto_heatmap"]).backward()
    assert emb_a.grad is not None and emb_a.grad.abs().sum() > 0
    assert emb_a.grad[dataset_idx == 0].abs().sum() > 0


def test_prototype_losses_respects_update_flag_and_freeze() -> None:
    emb, targets, weights, dataset_idx = _batch(5)
    module = KeypointPrototypes(SMALL_K, 2, 5, generator=torch.Generator().manual_seed(6))
    before = module.prototypes.clone()
    prototype_losses(emb, targets, weights, dataset_idx, module, update=False)
    assert torch.equal(module.prototypes, before)
    module.freeze()
    out = prototype_losses(emb, targets, weights, dataset_idx, module)
    assert torch.equal(module.prototypes, before)
    assert out["proto"] > 0 and out["proto_heatmap"] > 0
    module.thaw()
    prototype_losses(emb, targets, weights, dataset_idx, module)
    assert not torch.equal(module.prototypes, before)
    # Dataset 1 is absent from the batch: its classes never move.
    assert torch.equal(module.prototypes[module.class_slice(1)], before[module.class_slice(1)])


def test_prototype_losses_no_pixels() -> None:
    emb, targets, weights, dataset_idx = _batch(7)
    module = KeypointPrototypes(SMALL_K, 2, 5, generator=torch.Generator().manual_seed(8))
    out = prototype_losses(emb, targets, weights, dataset_idx, module, threshold=2.0)
    assert out["proto"].item() == 0.0 and out["proto_heatmap"] > 0
