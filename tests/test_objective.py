"""The trainer's arithmetic: the composed loss against a plain-loop reference, the stage
gating of CPS / CSS, masked heads, the non-finite paths, gradient clipping, and the resume
check of the configuration.

The reference is written here, apart from :mod:`posebh.training.objective`: the per-head
heatmap MSE and the prototype-heatmap term are plain loops over images and keypoints (the
prototype heatmaps recomputed from their definition, clamp(max_m |cos(e, p_km)|)), and each
head's mask is built per sample.  PPC/PPD, CPS and CSS internals (Sinkhorn, Gumbel draws,
pseudo labels) are golden-tested in test_losses / test_cps / test_css; here they are called
as families on a copy of the model, with the reference's own targets and heatmaps and the
same random draws, and the config weights are applied by the reference.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from test_train import _config, _trainer, data_root  # noqa: F401  (the fixture, re-exported)

from posebh.cps import cps_loss
from posebh.css import css_loss
from posebh.losses import JointsMSELoss, PixelPrototypeLoss, prototype_losses
from posebh.training import StageState, TrainConfigError
from posebh.training.objective import Objective
from posebh.training.state import check_resume_config

#: Loss weights unlike the defaults, so that a weight taken from the wrong field shows.
WEIGHTS = {
    "loss.proto_weight": 2.0e-5,
    "loss.ppc_weight": 0.02,
    "loss.ppd_weight": 0.003,
    "loss.phm_weight": 0.05,
    "loss.cps_weight": 0.3,
    "loss.css_weight": 0.7,
}


@pytest.fixture
def trainer(data_root: Path, tmp_path: Path):  # noqa: F811
    cfg = _config({"events": [], "eval_at_end": False, "heads_on_own_images": False, **WEIGHTS})
    t = _trainer(data_root, tmp_path / "run", cfg)
    # Two datasets (aic, mpii) have no head in the loss: a --datasets subset.
    t.names_of_head = {h: n for h, n in t.names_of_head.items() if n not in ("aic", "mpii")}
    return t


def _batch(trainer) -> dict[str, torch.Tensor]:
    batch = next(iter(trainer._loader(0, 1)))
    assert len(set(batch["dataset_idx"].tolist())) >= 3  # a mixed batch
    return batch


# ------------------------------------------------------------------------------------------
# The plain reference
# ------------------------------------------------------------------------------------------


def _head_mse(pred, batch, d: int) -> torch.Tensor:
    """JointsMSE of head d over the whole batch, images of other datasets weighted 0."""
    b_count, k_count, h, w = pred.shape
    total = torch.zeros((), dtype=torch.float64)
    for b in range(b_count):
        own = int(batch["dataset_idx"][b]) == d
        for k in range(k_count):
            wk = float(batch["target_weight"][b, k, 0]) if own else 0.0
            diff = pred[b, k].double() * wk - batch["target"][b, k].double() * wk
            total = total + (diff**2).sum()
    return total / (b_count * k_count * h * w)


def _prototype_heatmap(emb: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """[K, H, W] for one image: clamp(max_m |cos(e_yx, p_km)|, 1e-4, 1 − 1e-4)."""
    e = emb.double() / emb.double().norm(dim=0, keepdim=True).clamp_min(1e-12)
    out = []
    for k in range(bank.shape[0]):
        best = None
        for m in range(bank.shape[1]):
            p = bank[k, m].double()
            p = p / p.norm().clamp_min(1e-12)
            cos = (e * p[:, None, None]).sum(0).abs()
            best = cos if best is None else torch.maximum(best, cos)
        out.append(best.clamp(1e-4, 1 - 1e-4))
    return torch.stack(out)


def _reference(model, out, batch, lc, names: dict[int, str], *, cps: bool, css: bool):
    """Per-term losses of one step, computed apart from the objective module."""
    heads = model.heads
    di = batch["dataset_idx"]
    terms: dict[str, torch.Tensor] = {}
    for d, head in enumerate(heads):
        if d in names:  # heads of untrained datasets are not in the loss
            terms[f"hm/{names[d]}"] = _head_mse(out.heatmaps[d][:, : head.num_keypoints], batch, d)
    # Per-head targets with other datasets' rows zeroed, built sample by sample.
    targets, weights = [], []
    for d, head in enumerate(heads):
        k = head.num_keypoints
        t = torch.zeros_like(batch["target"][:, :k])
        w = torch.zeros_like(batch["target_weight"][:, :k])
        for b in range(len(di)):
            if int(di[b]) == d:
                t[b] = batch["target"][b, :k]
                w[b] = batch["target_weight"][b, :k]
        targets.append(t)
        weights.append(w)
    protos = model.keypoint_prototypes
    emb = out.embeddings.float()
    bank = protos.prototypes.detach()  # before any update of the step
    full = torch.zeros(len(di), protos.num_classes, *emb.shape[-2:], dtype=torch.float64)
    phm = torch.zeros((), dtype=torch.float64)
    for d in range(len(protos.num_keypoints)):
        rows = [b for b in range(len(di)) if int(di[b]) == d]
        cls = protos.class_slice(d)
        if not rows:
            continue
        err = torch.zeros((), dtype=torch.float64)
        for b in rows:
            full[b] = _prototype_heatmap(emb[b], bank)
            for j, k in enumerate(range(cls.start, cls.stop)):
                wk = float(weights[d][b, j, 0])
                diff = full[b, k] * wk - targets[d][b, j].double() * wk
                err = err + (diff**2).sum()
        phm = phm + err / (len(rows) * protos.num_keypoints[d] * emb.shape[-2] * emb.shape[-1])
    terms["proto_heatmap"] = lc.phm_weight * phm
    criterion = PixelPrototypeLoss(
        weight=lc.proto_weight,
        ppc_weight=lc.ppc_weight,
        ppd_weight=lc.ppd_weight,
        num_prototypes=protos.num_prototypes,
    )
    mse = JointsMSELoss(use_target_weight=True)
    if css:  # the family needs every class of every image
        for b in range(len(di)):
            full[b] = _prototype_heatmap(emb[b], bank)
    full = full.float()
    torch.manual_seed(11)
    fam = prototype_losses(
        emb, targets, weights, di, protos, prototype_heatmaps=full, criterion=criterion,
        heatmap_criterion=mse, threshold=lc.sample_threshold, phm_weight=1.0, synchronize=False,
    )  # fmt: skip
    terms["proto"] = fam["proto"]
    terms["ppc"], terms["ppd"] = fam["ppc"], fam["ppd"]
    if cps:
        c = cps_loss(
            emb, targets, weights, di, model.cluster_prototypes, criterion=criterion,
            heatmap_criterion=mse, threshold=lc.sample_threshold, phm_weight=lc.phm_weight,
            weight=1.0,
        )  # fmt: skip
        terms["cps"] = lc.cps_weight * c["cps"]
    if css:
        c = css_loss(
            [hm.float() for hm in out.heatmaps], emb, di, protos, proto_heatmaps=full,
            conf_thr=lc.css_conf_thr, match_dist=lc.css_match_dist, phm_weight=lc.phm_weight,
            weight=1.0, threshold=lc.sample_threshold, criterion=criterion,
            heatmap_criterion=mse,
        )  # fmt: skip
        parts = c["css_heatmap"] + lc.phm_weight * c["css_proto_heatmap"] + c["css_proto"]
        torch.testing.assert_close(c["css"], parts, rtol=1e-6, atol=0)
        terms["css"] = lc.css_weight * c["css"]
    return terms


@pytest.mark.parametrize(
    ("stage", "cps", "css"),
    [
        (StageState(frozenset({"backbone", "heads"})), False, False),  # stage 1
        (StageState(frozenset({"prototypes", "backbone"}), css=True, cps=True), True, True),
        (StageState(frozenset({"prototypes"}), css=False, cps=True), True, False),
    ],
    ids=["prototypes", "cps+css", "cps-only"],
)
def test_objective_matches_the_plain_reference(trainer, stage, cps: bool, css: bool) -> None:
    trainer._enter_state(stage)  # builds the cluster bank when the stage has CPS
    model, lc = trainer.model, trainer.config.loss
    batch = _batch(trainer)
    model.eval()  # fixed BatchNorm statistics: one forward serves both computations
    with torch.no_grad():
        out = model(batch["img"], batch["dataset_idx"])
    twin = copy.deepcopy(model)  # the prototypes before this step's updates
    torch.manual_seed(11)
    total, logs = trainer.compute_losses(out, batch)
    ref = _reference(twin, out, batch, lc, dict(trainer.names_of_head), cps=cps, css=css)

    hm_keys = {f"hm/{n}" for n in trainer.names_of_head.values()}
    assert {k for k in logs if k.startswith("hm/")} == hm_keys  # untrained heads left out
    assert ("cps" in logs) == cps and ("css" in logs) == css
    for key, value in ref.items():
        torch.testing.assert_close(
            logs[key].double(), value.double(), rtol=2e-5, atol=1e-12, msg=key
        )
    expected = sum(ref[k].double() for k in ref if k not in ("ppc", "ppd"))
    torch.testing.assert_close(total.double(), expected, rtol=2e-5, atol=1e-12)
    torch.testing.assert_close(logs["loss"], total.detach())
    if css:
        assert float(logs["css_skipped"]) == 0.0


def test_heads_of_absent_datasets_weigh_nothing(trainer) -> None:
    """A trained head whose dataset has no image in the batch adds a zero term."""
    batch = _batch(trainer)
    keep = batch["dataset_idx"] != batch["dataset_idx"][0]
    gone = int(batch["dataset_idx"][0])
    batch = {k: batch[k][keep] for k in ("img", "dataset_idx", "target", "target_weight")}
    trainer.names_of_head = {**trainer.names_of_head, gone: "absent"}
    with torch.no_grad():
        out = trainer.model(batch["img"], batch["dataset_idx"])
    _, logs = trainer.compute_losses(out, batch)
    assert float(logs["hm/absent"]) == 0.0


# ------------------------------------------------------------------------------------------
# Non-finite terms
# ------------------------------------------------------------------------------------------


def test_a_non_finite_css_term_is_skipped_and_said_once(trainer, monkeypatch) -> None:
    """Today's behaviour: the step goes on without CSS (the other terms train as if CSS
    were off), the log says so once, and the terms record css 0 and css_skipped 1."""
    import posebh.training.objective as objective

    calls = []

    def nan_css(*args, **kwargs):
        calls.append(1)
        nan = torch.tensor(float("nan"))
        return {"css": nan, "css_heatmap": nan, "css_proto_heatmap": nan, "css_proto": nan,
                "css_pseudo_labels": torch.tensor(4)}  # fmt: skip

    messages: list[str] = []
    trainer._log_fn = messages.append
    batch = _batch(trainer)
    stage = StageState(frozenset({"prototypes"}), css=True, cps=False)
    twin = copy.deepcopy(trainer)
    trainer._enter_state(stage)
    monkeypatch.setattr(objective, "css_loss", nan_css)
    torch.manual_seed(5)
    logs = trainer.train_step(batch)
    torch.manual_seed(5)
    logs2 = trainer.train_step(batch)
    assert len(calls) == 2
    assert float(logs["css"]) == 0.0 and float(logs["css_skipped"]) == 1.0
    assert math.isfinite(float(logs["loss"])) and float(logs2["css_skipped"]) == 1.0
    warned = [m for m in messages if "non-finite CSS loss at step" in m]
    assert len(warned) == 1 and "css_heatmap nan" in warned[0]
    # The same two steps with a finite CSS term of zero end with the same weights: the NaN
    # touched nothing.
    zero = torch.tensor(0.0)
    monkeypatch.setattr(objective, "css_loss", lambda *a, **k: {**nan_css(), "css": zero})
    twin._enter_state(stage)
    for _ in range(2):
        torch.manual_seed(5)
        twin.train_step(batch)
    after, expected = trainer.model.state_dict(), twin.model.state_dict()
    assert after.keys() == expected.keys()
    for name in after:
        assert torch.equal(after[name], expected[name]), name


def test_a_non_finite_total_stops_the_run_before_it_is_saved(
    data_root: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch,
) -> None:
    """Today's behaviour: the step that produced a non-finite loss raises
    FloatingPointError naming the step and the terms, before any log record or checkpoint
    of that step is written."""
    cfg = _config({"events": [], "length": 4, "ckpt_every": 1, "log_every": 1,
                   "eval_at_end": False})  # fmt: skip
    t = _trainer(data_root, tmp_path / "run", cfg)
    real = t.compute_losses

    def poisoned(out, batch, head_rows=None):
        total, logs = real(out, batch, head_rows)
        if t.step == 2:
            total = total * float("inf")
            logs["loss"] = total.detach()
        return total, logs

    monkeypatch.setattr(t, "compute_losses", poisoned)
    with pytest.raises(FloatingPointError, match=r"loss is (inf|nan) at step 2: .*hm/coco"):
        t.train()
    saved = torch.load(tmp_path / "run/latest.pth", weights_only=True)
    assert saved["step"] == 2  # the last checkpoint is the one before the bad step
    log = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "train"] == [1, 2]


# ------------------------------------------------------------------------------------------
# Gradient clipping
# ------------------------------------------------------------------------------------------


def test_gradient_clipping_limits_the_total_norm(data_root: Path, tmp_path: Path) -> None:  # noqa: F811
    clip = 1e-3
    cfg = _config({"events": [], "optim.grad_clip": clip, "eval_at_end": False,
                   "heads_on_own_images": False})  # fmt: skip
    t = _trainer(data_root, tmp_path / "run", cfg)
    t._enter_state(StageState())
    batch = _batch(t)
    twin = copy.deepcopy(t.model)
    seen = {}
    step = t.optimizer.step

    def spy(*args, **kwargs):
        grads = [p.grad.double() for p in t.model.parameters() if p.grad is not None]
        seen["norm"] = math.sqrt(sum(float((g**2).sum()) for g in grads))
        return step(*args, **kwargs)

    t.optimizer.step = spy
    torch.manual_seed(9)
    logs = t.train_step(batch)
    # The pre-clip norm, computed plainly on a copy of the model with the same draws.
    torch.manual_seed(9)
    twin.train()
    di = batch["dataset_idx"]
    out = twin(batch["img"], di)
    twin_total, _ = Objective(twin, t.config.loss)(
        out, batch, heads=t.names_of_head, cps=False, css=False
    )
    twin_total.backward()
    plain = math.sqrt(
        sum(float((p.grad.double() ** 2).sum()) for p in twin.parameters() if p.grad is not None)
    )
    assert plain > 10 * clip  # the clip is active
    assert float(logs["grad_norm"]) == pytest.approx(plain, rel=1e-4)
    assert seen["norm"] == pytest.approx(clip, rel=1e-4)  # what the optimizer stepped with


# ------------------------------------------------------------------------------------------
# Resuming with another configuration
# ------------------------------------------------------------------------------------------


def test_resume_with_another_config_names_the_fields() -> None:
    saved = _config().to_dict()
    check_resume_config(_config(), saved)  # the same recipe resumes
    check_resume_config(_config({"log_every": 5, "data.num_workers": 2}), saved)  # free fields
    with pytest.raises(TrainConfigError) as err:
        check_resume_config(_config({"optim.lr": 0.5, "batch_size": 4}), saved)
    msg = str(err.value)
    assert "batch_size: checkpoint 6 → now 4" in msg
    assert "optim.lr: checkpoint 0.002 → now 0.5" in msg
    assert "same preset and --set options, or use a new --work-dir" in msg


def test_cli_resume_with_another_config_is_refused(data_root: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = _config({"events": [], "length": 2, "eval_at_end": False})
    t = _trainer(data_root, tmp_path / "run", cfg, max_steps=1)
    t.train()
    other = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, css_weight=0.5))
    resumed = _trainer(data_root, tmp_path / "run", other, resume=True)
    with pytest.raises(TrainConfigError, match=r"loss\.css_weight: checkpoint 0\.001 → now 0\.5"):
        resumed.train()
