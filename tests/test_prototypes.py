"""Keypoint prototypes: golden vectors of the release, plain-loop references, deviations.

Shape vocabulary as in ``posebh.prototypes``: N pixels, J classes, M prototypes per class,
F dimensions, K_d keypoints of dataset d.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from posebh.losses import PixelPrototypeLoss, prototype_losses
from posebh.ops.similarity_reference import prototype_similarity_heatmaps
from posebh.prototypes import (
    KeypointPrototypes,
    _sinkhorn_knopp_log,
    sinkhorn_assign,
    sinkhorn_knopp,
    update_class_prototypes,
)

# A small skeleton set for the reference tests: J = 9, starts 0, 3, 5.
SMALL_K = (3, 2, 4)
SMALL_M = 2
SMALL_F = 5


@pytest.fixture(scope="module")
def golden(golden_dir: Path, shared_file) -> dict:
    return torch.load(shared_file(golden_dir / "suite" / "losses.pt"), weights_only=True)


def _small_module(compat: str = "paper", seed: int = 0) -> KeypointPrototypes:
    gen = torch.Generator().manual_seed(seed)
    return KeypointPrototypes(SMALL_K, SMALL_M, SMALL_F, gamma=0.9, compat=compat, generator=gen)


# --------------------------------------------------------------------------------------------
# Plain-loop float64 references
# --------------------------------------------------------------------------------------------


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / max(n, 1e-12) for x in v]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def ref_similarity(emb: torch.Tensor, protos: torch.Tensor) -> list[list[list[float]]]:
    """s[i][j][m] = |cos(emb_i, protos_jm)| with python loops in float64."""
    e = [_unit(row) for row in emb.double().tolist()]
    p = [[_unit(v) for v in cls] for cls in protos.double().tolist()]
    return [[[abs(_dot(ei, pjm)) for pjm in pj] for pj in p] for ei in e]


def ref_sinkhorn(scores: list[list[float]], iterations=3, eps=0.05) -> list[list[float]]:
    n, m = len(scores), len(scores[0])
    q = [[math.exp(s / eps) for s in row] for row in scores]
    tot = sum(map(sum, q))
    q = [[x / tot for x in row] for row in q]
    for _ in range(iterations):
        col = [sum(q[i][c] for i in range(n)) for c in range(m)]
        q = [[q[i][c] / col[c] / m for c in range(m)] for i in range(n)]
        row = [sum(q[i]) for i in range(n)]
        q = [[q[i][c] / row[i] / n for c in range(m)] for i in range(n)]
    return [[x * n for x in row] for row in q]


def ref_update(protos_k, emb_unit, weights, assign, momentum, square=False):
    """One class's momentum update with loops: returns (new [M][F], moved [M])."""
    m_count, f_dim = len(protos_k), len(protos_k[0])
    new, moved = [list(p) for p in protos_k], []
    for m in range(m_count):
        mass = sum(assign[i][m] * weights[i] for i in range(len(emb_unit)))
        if mass == 0:
            moved.append(False)
            continue
        f = [0.0] * f_dim
        for i, e in enumerate(emb_unit):
            c = assign[i][m] * weights[i] * (weights[i] if square else 1.0)
            for t in range(f_dim):
                f[t] += c * e[t]
        f = _unit(f)
        step = [momentum * protos_k[m][t] + (1 - momentum) * f[t] for t in range(f_dim)]
        new[m] = _unit(step)
        moved.append(True)
    return new, moved


# --------------------------------------------------------------------------------------------
# Golden vectors of the release (compat="official")
# --------------------------------------------------------------------------------------------


def test_golden_sinkhorn(golden: dict) -> None:
    s = golden["sinkhorn"]
    L = sinkhorn_knopp(s["input"])
    assert (L - s["pre_gumbel_L"]).abs().max() <= 1e-6  # reached: 0.0
    torch.testing.assert_close(L.sum(1), torch.ones(12), atol=1e-6, rtol=0)

    torch.manual_seed(s["seed"])
    q, index = sinkhorn_assign(s["input"], compat="official")
    assert torch.equal(q, s["q_hard"])
    assert torch.equal(index, s["indexs"])

    torch.manual_seed(s["seed"] + 1)
    q1, index1 = sinkhorn_assign(s["input"], compat="official")
    assert torch.equal(q1, s["q_hard_seed_plus_1"])
    assert not torch.equal(q1, q)
    assert torch.equal(index1, index)  # the arg-max target is seed-independent


def test_golden_kpt_prototype_train(golden: dict) -> None:
    g = golden["kpt_prototype_train"]
    module = KeypointPrototypes(num_prototypes=3, dim=16, gamma=0.999, compat="official")
    module.prototypes.copy_(g[0]["prototypes_before"])
    crit = PixelPrototypeLoss(num_prototypes=3)
    for call in (0, 1):  # call 1 runs on the prototypes updated by call 0, as recorded
        gc = g[call]
        before = module.prototypes.clone()
        assert (before - gc["prototypes_before"]).abs().max() <= 1e-6
        flat = module.similarity(gc["feats"]).reshape(60, -1)  # before the update
        conf = gc["conf_in"].clone()
        torch.manual_seed(gc["seed"])
        out = module.learn(gc["feats"], gc["gt"], conf, call)

        assert (out.logits - gc["logits"]).abs().max() <= 1e-6  # reached 0 / 1.2e-7
        cols = gc["logit_columns_used_in_flat_KxM"]
        torch.testing.assert_close(out.logits, flat[:, cols], atol=0, rtol=0)
        assert torch.equal(out.target, gc["target"])
        assert (out.class_scores - gc["kpt_class"]).abs().max() <= 1e-6  # reached 0 / 1.2e-7
        assert torch.equal(conf, gc["conf_after_call"])  # zeroed in place
        assert out.weights is conf
        # reached 6.0e-8 on both calls
        assert (module.prototypes - gc["prototypes_after"]).abs().max() <= 1e-6
        changed = ((module.prototypes - before).abs().amax(-1) > 1e-5).nonzero()
        assert torch.equal(changed, gc["changed_proto_rows_kpt_m"])

        loss, parts = crit(out.logits, out.target, module.num_keypoints[call])
        torch.testing.assert_close(loss, gc["ppce_loss_on_logits"], rtol=1e-5, atol=0)
        torch.testing.assert_close(parts["ppc"], gc["ppc"], rtol=1e-5, atol=0)
        torch.testing.assert_close(parts["ppd"], gc["ppd"], rtol=1e-5, atol=0)


def test_official_sinkhorn_reads_global_class_k(golden: dict) -> None:
    """Deviation 4: the release balances similarities to global class k, not start_d + k."""
    gc = golden["kpt_prototype_train"][1]
    module = KeypointPrototypes(num_prototypes=3, dim=16, compat="official")
    module.prototypes.copy_(gc["prototypes_before"])
    sim = module.similarity(gc["feats"])
    global_k, local_k = torch.full((60,), -1), torch.full((60,), -1)
    for k in range(14):
        idx = (gc["gt"] == k).nonzero().squeeze(1)
        if idx.numel():
            global_k[idx] = sinkhorn_knopp(sim[idx, k]).argmax(1) + 3 * k
            local_k[idx] = sinkhorn_knopp(sim[idx, 17 + k]).argmax(1) + 3 * k
    assert torch.equal(global_k, gc["target"])
    assert not torch.equal(local_k, gc["target"])


# --------------------------------------------------------------------------------------------
# Default mode against plain loops
# --------------------------------------------------------------------------------------------


def test_similarity_and_heatmaps_match_loops() -> None:
    module = _small_module()
    gen = torch.Generator().manual_seed(1)
    emb_map = torch.randn(2, SMALL_F, 3, 4, generator=gen)
    flat = emb_map.permute(0, 2, 3, 1).reshape(-1, SMALL_F)
    ref = ref_similarity(flat, module.prototypes)
    torch.testing.assert_close(
        module.similarity(flat), torch.tensor(ref, dtype=torch.float32), atol=1e-6, rtol=0
    )
    hm = module.heatmaps(emb_map)
    for b in range(2):
        for y in range(3):
            for x in range(4):
                i = (b * 3 + y) * 4 + x
                for j in range(sum(SMALL_K)):
                    want = min(max(max(ref[i][j]), 1e-4), 1 - 1e-4)
                    assert abs(hm[b, j, y, x].item() - want) <= 1e-6
    for d in range(len(SMALL_K)):
        sl = module.class_slice(d)
        torch.testing.assert_close(
            module.class_scores(flat, d),
            hm.permute(0, 2, 3, 1).reshape(-1, sum(SMALL_K))[:, sl],
            atol=0,
            rtol=0,
        )


def test_sinkhorn_matches_loops() -> None:
    gen = torch.Generator().manual_seed(2)
    scores = torch.rand(7, 3, generator=gen)
    ref = torch.tensor(ref_sinkhorn(scores.double().tolist()), dtype=torch.float64)
    torch.testing.assert_close(sinkhorn_knopp(scores.double()), ref, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(sinkhorn_knopp(scores), ref.float(), atol=1e-6, rtol=1e-5)
    # The log-domain path (taken for large |scores|/epsilon) is the same map ...
    torch.testing.assert_close(_sinkhorn_knopp_log(scores.double(), 3, 0.05), ref)
    # ... and neither overflows nor yields 0/0 where a direct exp would.
    big = sinkhorn_knopp(scores * 100)
    assert torch.isfinite(big).all()
    torch.testing.assert_close(big.sum(1), torch.ones(7), atol=1e-5, rtol=0)


def test_paper_assignment_is_gumbel_max_on_log_sinkhorn() -> None:
    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(9, 3, generator=gen)
    q, index = sinkhorn_assign(scores, generator=torch.Generator().manual_seed(5))
    noise = -torch.empty(9, 3).exponential_(generator=torch.Generator().manual_seed(5)).log()
    ref = (
        torch.tensor(ref_sinkhorn(scores.double().tolist()), dtype=torch.float64).log()
        + noise.double()
    )
    assert torch.equal(index, ref.argmax(1))
    assert torch.equal(q, F.one_hot(index, 3).float())  # the same sample in q and index


def test_update_function_matches_loops() -> None:
    gen = torch.Generator().manual_seed(4)
    protos = F.normalize(torch.randn(3, SMALL_F, generator=gen), dim=-1)
    emb = F.normalize(torch.randn(6, SMALL_F, generator=gen), dim=-1)
    weights = torch.tensor([0.9, 0.0, 0.5, 0.7, 0.0, 0.3])
    # Prototype 2 gets only zero-weight pixels: it must not move.
    assign = F.one_hot(torch.tensor([0, 2, 1, 0, 2, 1]), 3).float()
    for square in (False, True):
        new, moved = update_class_prototypes(
            protos, emb, weights, assign, 0.8, square_weights=square
        )
        ref_new, ref_moved = ref_update(
            protos.double().tolist(),
            emb.double().tolist(),
            weights.double().tolist(),
            assign.tolist(),
            0.8,
            square,
        )
        assert moved.tolist() == ref_moved == [True, True, False]
        torch.testing.assert_close(new, torch.tensor(ref_new).float(), atol=1e-6, rtol=0)
        assert torch.equal(new[2], protos[2])


def _ref_learn_paper(module, emb, labels, conf, d, seed):
    """Paper-mode learn with loops in float64; Gumbel noise drawn as the module draws it."""
    m_count = module.num_prototypes
    start, num_k = module.starts[d], module.num_keypoints[d]
    sim = ref_similarity(emb, module.prototypes)
    emb_unit = [_unit(v) for v in emb.double().tolist()]
    n = len(emb_unit)
    logits = [
        [sim[i][start + k][m] for k in range(num_k) for m in range(m_count)] for i in range(n)
    ]
    weights = []
    for i in range(n):
        scores = [max(sim[i][start + k]) for k in range(num_k)]
        pred = max(range(num_k), key=lambda k, s=scores: (s[k], -k))  # first arg-max
        weights.append(float(conf[i]) if pred == int(labels[i]) else 0.0)
    protos = module.prototypes.double().tolist()
    target = [-1] * n
    gen = torch.Generator().manual_seed(seed)
    for k in range(num_k):
        idx = [i for i in range(n) if int(labels[i]) == k]
        if not idx:
            continue
        q_soft = ref_sinkhorn([sim[i][start + k] for i in idx])
        noise = torch.empty(len(idx), m_count).exponential_(generator=gen)
        noise = (-noise.double().log()).tolist()
        assign = []
        for r, i in enumerate(idx):
            vals = [math.log(q_soft[r][m]) + noise[r][m] for m in range(m_count)]
            best = max(range(m_count), key=lambda m, v=vals: v[m])
            target[i] = k * m_count + best
            assign.append([1.0 if m == best else 0.0 for m in range(m_count)])
        new, _ = ref_update(
            protos[start + k],
            [emb_unit[i] for i in idx],
            [weights[i] for i in idx],
            assign,
            module.gamma,
        )
        protos[start + k] = new
    return logits, target, weights, protos


def test_learn_paper_mode_matches_loops() -> None:
    module = _small_module()
    gen = torch.Generator().manual_seed(6)
    d = 2  # start 5, K_d = 4: a non-zero offset exercises the indexing
    start, num_k = module.starts[d], module.num_keypoints[d]
    labels = torch.randint(0, num_k, (40,), generator=gen)
    # Pixels near their class's first prototype, so that most pass the correctness mask.
    emb = 3 * module.prototypes[start + labels, 0] + 0.8 * torch.randn(40, SMALL_F, generator=gen)
    conf = torch.rand(40, generator=gen) * 0.7 + 0.3
    conf_before = conf.clone()
    before = module.prototypes.clone()
    ref_logits, ref_target, ref_weights, ref_protos = _ref_learn_paper(
        module, emb, labels, conf, d, seed=11
    )
    out = module.learn(emb, labels, conf, d, generator=torch.Generator().manual_seed(11))

    torch.testing.assert_close(out.logits, torch.tensor(ref_logits).float(), atol=1e-6, rtol=0)
    assert out.target.tolist() == ref_target
    assert out.weights.tolist() == pytest.approx(ref_weights, abs=0)
    assert 0 < sum(w == 0 for w in ref_weights) < 40  # the mask is exercised both ways
    assert torch.equal(conf, conf_before)  # the caller's tensor is not touched
    torch.testing.assert_close(
        module.prototypes, torch.tensor(ref_protos).float(), atol=1e-6, rtol=0
    )
    # Classes of other datasets are bit for bit untouched.
    assert torch.equal(module.prototypes[:start], before[:start])


def test_correctness_mask_uses_dataset_block() -> None:
    module = _small_module()
    d, start = 1, module.starts[1]
    # Pixel 0 sits on dataset 1's class 0 and is labelled 0 (kept); pixel 1 sits on class 1
    # but is labelled 0 (masked).
    emb = torch.stack([module.prototypes[start, 0], module.prototypes[start + 1, 1]])
    out = module.learn(emb, torch.tensor([0, 0]), torch.tensor([0.8, 0.6]), d, update=False)
    assert out.weights.tolist() == pytest.approx([0.8, 0.0])


# --------------------------------------------------------------------------------------------
# Deviations of the release
# --------------------------------------------------------------------------------------------


def test_deviation1_logit_columns() -> None:
    paper = KeypointPrototypes(compat="paper", dim=16, generator=torch.Generator().manual_seed(7))
    official = KeypointPrototypes(compat="official", dim=16)
    official.load_state_dict(paper.state_dict())
    gen = torch.Generator().manual_seed(8)
    emb = torch.randn(20, 16, generator=gen)
    labels = torch.randint(0, 14, (20,), generator=gen)
    flat = paper.similarity(emb).reshape(20, -1)
    out_p = paper.learn(emb, labels, torch.ones(20), 1, update=False)
    torch.manual_seed(0)
    out_o = official.learn(emb, labels, torch.ones(20), 1, update=False)
    assert torch.equal(out_p.logits, flat[:, 51:93])  # 17·3 .. 17·3 + 14·3
    assert torch.equal(out_o.logits, flat[:, 17:59])  # 17 .. 17 + 14·3
    assert not torch.allclose(out_p.logits, out_o.logits)
    # COCO (start 0) is the same in both.
    labels0 = labels.clamp(max=16)
    torch.manual_seed(0)
    out_o0 = official.learn(emb, labels0, torch.ones(20), 0, update=False)
    assert torch.equal(
        paper.learn(emb, labels0, torch.ones(20), 0, update=False).logits, out_o0.logits
    )


def test_deviation2_global_argmax_mask() -> None:
    paper = KeypointPrototypes(compat="paper", dim=16, generator=torch.Generator().manual_seed(9))
    official = KeypointPrototypes(compat="official", dim=16)
    official.load_state_dict(paper.state_dict())
    protos = paper.prototypes
    gen = torch.Generator().manual_seed(10)
    labels = torch.randint(0, 14, (30,), generator=gen)
    # Half the pixels sit on AIC prototype k (row 17 + k), half on COCO prototype k (row k).
    rows = torch.where(torch.arange(30) % 2 == 0, 17 + labels, labels)
    emb = protos[rows, 0] + 0.05 * torch.randn(30, 16, generator=gen)
    conf = torch.rand(30, generator=gen) * 0.5 + 0.5
    global_pred = paper.similarity(emb).amax(2).argmax(1)
    local_pred = paper.similarity(emb)[:, 17:31].amax(2).argmax(1)

    out_p = paper.learn(emb, labels, conf.clone(), 1, update=False)
    conf_o = conf.clone()
    torch.manual_seed(0)
    out_o = official.learn(emb, labels, conf_o, 1, update=False)
    assert out_o.weights is conf_o
    assert torch.equal(out_p.weights, torch.where(local_pred == labels, conf, 0.0))
    assert torch.equal(conf_o, torch.where(global_pred == labels, conf, 0.0))  # in place
    # Pixels on AIC prototypes are kept by us, dropped by the release; vice versa for COCO.
    on_aic = torch.arange(30) % 2 == 0
    assert (out_p.weights[on_aic] > 0).all() and (conf_o[on_aic] == 0).all()
    assert (conf_o[~on_aic] > 0).all() and (out_p.weights[~on_aic] == 0).sum() > 10


def test_deviation3_confidence_squared() -> None:
    gen = torch.Generator().manual_seed(12)
    protos = F.normalize(torch.randn(2, 6, generator=gen), dim=-1)
    emb = F.normalize(torch.randn(5, 6, generator=gen), dim=-1)
    w = torch.tensor([1.0, 0.2, 0.9, 0.4, 0.3])
    q = F.one_hot(torch.tensor([0, 0, 0, 1, 1]), 2).float()
    ours, _ = update_class_prototypes(protos, emb, w, q, 0.5)
    release, _ = update_class_prototypes(protos, emb, w, q, 0.5, square_weights=True)
    f_w = F.normalize(q.t() @ (w[:, None] * emb), dim=-1)
    f_w2 = F.normalize(q.t() @ (w[:, None] ** 2 * emb), dim=-1)
    torch.testing.assert_close(ours, F.normalize(0.5 * protos + 0.5 * f_w, dim=-1))
    torch.testing.assert_close(release, F.normalize(0.5 * protos + 0.5 * f_w2, dim=-1))
    assert (ours - release).abs().max() > 1e-2


# --------------------------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------------------------


def _pixels(module: KeypointPrototypes, d: int, n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    start, num_k = module.starts[d], module.num_keypoints[d]
    labels = torch.randint(0, num_k, (n,), generator=gen)
    emb = 2 * module.prototypes[start + labels, 0] + 0.5 * torch.randn(n, module.dim, generator=gen)
    return emb, labels, torch.rand(n, generator=gen) * 0.5 + 0.5


@pytest.mark.parametrize("compat", ["paper", "official"])
def test_freeze_stops_updates(compat: str) -> None:
    module = _small_module(compat)
    emb, labels, conf = _pixels(module, 0, 30, 13)
    before = module.prototypes.clone()
    module.freeze()
    assert module.frozen
    out = module.learn(emb, labels, conf.clone(), 0)
    assert torch.equal(module.prototypes, before)
    assert (out.target >= 0).all()
    module.learn(emb, labels, conf.clone(), 0, update=False)
    assert torch.equal(module.prototypes, before)
    module.thaw()
    assert not module.frozen
    module.learn(emb, labels, conf.clone(), 0)
    assert not torch.equal(module.prototypes, before)


@pytest.mark.parametrize("compat", ["paper", "official"])
def test_prototypes_stay_normalised(compat: str) -> None:
    module = _small_module(compat)
    torch.testing.assert_close(module.prototypes.norm(dim=-1), torch.ones(9, 2), atol=1e-6, rtol=0)
    for step in range(6):
        d = step % 3
        emb, labels, conf = _pixels(module, d, 25, 20 + step)
        torch.manual_seed(step)
        module.learn(emb, labels, conf, d, update_weight=0.5 if step % 2 else 1.0)
        torch.testing.assert_close(
            module.prototypes.norm(dim=-1), torch.ones(9, 2), atol=1e-6, rtol=0
        )


def test_update_weight_scales_the_step() -> None:
    a, b = _small_module(), _small_module()
    emb, labels, conf = _pixels(a, 0, 30, 14)
    before = a.prototypes.clone()
    a.learn(emb, labels, conf, 0, generator=torch.Generator().manual_seed(1))
    b.learn(emb, labels, conf, 0, update_weight=0.1, generator=torch.Generator().manual_seed(1))
    moved_a = (a.prototypes - before).norm(dim=-1)
    moved_b = (b.prototypes - before).norm(dim=-1)
    assert (moved_b <= moved_a + 1e-7).all() and moved_b.sum() < 0.2 * moved_a.sum()


def test_dataset_heatmaps_are_bitwise_slices() -> None:
    module = KeypointPrototypes(generator=torch.Generator().manual_seed(15))
    emb = torch.randn(2, 64, 8, 6, generator=torch.Generator().manual_seed(16))
    full = module.heatmaps(emb, -1)
    assert full.shape == (2, 214, 8, 6)
    for d in range(6):
        sl = module.class_slice(d)
        part = module.heatmaps(emb, d)
        assert torch.equal(part, full[:, sl])
        assert torch.equal(part, prototype_similarity_heatmaps(emb, module.prototypes, sl))
    assert [module.class_slice(d).start for d in range(6)] == [0, 17, 31, 47, 64, 81]
    assert module.class_slice(-1) == slice(0, 214)
    assert full.min() >= 1e-4 and full.max() <= 1 - 1e-4


def test_inference_does_not_mutate_buffer() -> None:
    module = KeypointPrototypes(dim=8, generator=torch.Generator().manual_seed(17))
    module.prototypes.mul_(1.5)  # a checkpoint need not be exactly normalised
    before = module.prototypes.clone()
    module.heatmaps(torch.randn(1, 8, 4, 4))
    module.class_scores(torch.randn(5, 8), 2)
    assert torch.equal(module.prototypes, before)


def test_buffer_and_state_dict() -> None:
    module = KeypointPrototypes()
    assert "prototypes" in dict(module.named_buffers())
    assert list(module.state_dict()) == ["prototypes"]
    assert module.prototypes.shape == (214, 3, 64)
    assert not module.prototypes.requires_grad
    a = KeypointPrototypes(generator=torch.Generator().manual_seed(3))
    b = KeypointPrototypes(generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.prototypes, b.prototypes)


@pytest.mark.parametrize("compat", ["paper", "official"])
def test_gradient_flows_to_embeddings(compat: str) -> None:
    module = _small_module(compat)
    emb, labels, conf = _pixels(module, 1, 20, 18)
    emb.requires_grad_(True)
    torch.manual_seed(0)
    out = module.learn(emb, labels, conf, 1)
    loss, _ = PixelPrototypeLoss(num_prototypes=SMALL_M)(out.logits, out.target, 2)
    loss.backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert module.prototypes.grad is None


# --------------------------------------------------------------------------------------------
# Distributed averaging (2-process gloo group)
# --------------------------------------------------------------------------------------------


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        module = _small_module("paper", seed=0)  # identical initial prototypes on every rank
        emb, labels, conf = _pixels(module, 0, 24, 100 + rank)  # different pixels per rank
        local = _small_module("paper", seed=0)
        local.learn(emb, labels, conf, 0, generator=torch.Generator().manual_seed(rank))
        module.learn(
            emb, labels, conf, 0, generator=torch.Generator().manual_seed(rank), synchronize=True
        )
        # Ranks holding different datasets: one collective per step, no deadlock.
        d = rank  # rank 0 sees dataset 0, rank 1 dataset 1
        k = module.num_keypoints[d]
        emb_map = torch.randn(2, SMALL_F, 4, 4, generator=torch.Generator().manual_seed(rank))
        hm = torch.rand(2, k, 4, 4, generator=torch.Generator().manual_seed(50 + rank))
        targets = [torch.zeros(2, kk, 4, 4) for kk in SMALL_K]
        weights = [torch.ones(2, kk, 1) for kk in SMALL_K]
        targets[d] = hm
        after_step1 = module.prototypes.clone()
        torch.manual_seed(rank)
        prototype_losses(emb_map, targets, weights, torch.full((2,), d), module)
        torch.save(
            {"local": local.prototypes, "synced": after_step1, "step2": module.prototypes},
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_average_two_ranks() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "store")
        ctx = mp.spawn(
            _dist_worker, args=(2, init_file, tmp), nprocs=2, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + 120
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                for proc in ctx.processes:
                    proc.kill()
                pytest.fail("distributed workers timed out")
        r0 = torch.load(os.path.join(tmp, "rank0.pt"), weights_only=True)
        r1 = torch.load(os.path.join(tmp, "rank1.pt"), weights_only=True)
    assert not torch.equal(r0["local"], r1["local"])  # the ranks did see different pixels
    assert torch.equal(r0["synced"], r1["synced"])
    expected = F.normalize((r0["local"] + r1["local"]) / 2, dim=-1)
    torch.testing.assert_close(r0["synced"], expected, atol=1e-6, rtol=0)
    assert torch.equal(r0["step2"], r1["step2"])
    assert not torch.equal(r0["step2"], r0["synced"])
