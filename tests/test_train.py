"""Trainer: recipes, layer-wise lr decay, lr schedule, step-indexed sampler, staged schedule,
loss composition on real fixtures, checkpoints, bit-exact resume after a kill, errors.

Runs train a very small model (32 channels, 1 block, 64×48 input) for a handful of steps on
the mmpose fixtures laid out as the official ``data/`` tree.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from posebh.cli import main as cli_main
from posebh.datasets import default_spec
from posebh.evaluate import evaluate
from posebh.models import build_model
from posebh.train import main as train_main
from posebh.training import (
    PRESETS,
    Event,
    RunOptions,
    StageState,
    StepSampler,
    TrainConfigError,
    Trainer,
    apply_overrides,
    get_preset,
    load_init,
    plan_table,
    stage_at,
    stages,
)
from posebh.training.optim import lr_factor, param_groups
from posebh.training.schedule import apply_state

REPO = Path(__file__).resolve().parents[1]

#: A model small enough for a few CPU steps per second.
MICRO = {
    "model.img_size": [64, 48],
    "model.embed_dim": 32,
    "model.depth": 1,
    "model.num_heads": 2,
    "model.part_features": 8,
    "model.head_filters": 16,
    "model.proto_channels": 8,
    "model.proto_dim": 8,
}
#: The PoseBH schedule compressed into 8 steps: stage 1 = 0–3, stage 2 = 4–5, stage 3 = 6–7.
EVENTS = [
    "0:freeze:backbone",
    "0:freeze:heads",
    "4:freeze:prototypes",
    "4:thaw:heads",
    "4:freeze:backbone",
    "4:cps_init",
    "4:css_on",
    "6:thaw:backbone",
]


def _sets(extra: dict[str, object] | None = None) -> list[str]:
    items = {
        **MICRO,
        "length": 8,
        "batch_size": 6,
        "optim.milestones": [4, 6],
        "optim.warmup_iters": 2,
        "log_every": 2,
        "ckpt_every": 3,
        "data.num_workers": 0,
        "loss.cps_iters": 10,
        "events": EVENTS,
        **(extra or {}),
    }
    out = []
    for k, v in items.items():
        out += ["--set", f"{k}={json.dumps(v)}"]
    return out


def _link(root: Path, src: Path, dst: str) -> None:
    path = root / dst
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.symlink(src, path)


@pytest.fixture(scope="session")
def data_root(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The mmpose fixtures as an official ``data/`` tree (train and val are the same files;
    APT-36K reuses the AP-10K fixture, which has the same format and skeleton)."""
    root = tmp_path_factory.mktemp("data")
    f = fixtures_dir
    for split in ("train2017", "val2017"):
        _link(root, f / "coco", f"coco/{split}")
    for name in ("person_keypoints_train2017.json", "person_keypoints_val2017.json"):
        _link(root, f / "coco/test_coco.json", f"coco/annotations/{name}")
    for name in ("coco_wholebody_train_v1.0.json", "coco_wholebody_val_v1.0.json"):
        _link(root, f / "coco/test_coco_wholebody.json", f"coco/annotations/{name}")
    _link(root, f / "aic/test_aic.json", "aic/annotations/person_keypoints_train2017.json")
    _link(root, f / "aic/test_aic.json", "aic/annotations/aic_val.json")
    _link(
        root, f / "aic", "aic/ai_challenger_keypoint_train_20170902/keypoint_train_images_20170902"
    )
    _link(
        root,
        f / "aic",
        "aic/ai_challenger_keypoint_validation_20170911/keypoint_validation_images_20170911",
    )
    _link(root, f / "mpii/test_mpii.json", "mpii/annotations/mpii_train.json")
    _link(root, f / "mpii", "mpii/images")
    _link(root, f / "ap10k/test_ap10k.json", "ap10k/annotations/ap10k-train-split1.json")
    _link(root, f / "ap10k/test_ap10k.json", "ap10k/annotations/ap10k-val-split1.json")
    _link(root, f / "ap10k", "ap10k/data")
    _link(root, f / "ap10k/test_ap10k.json", "ap36k/annotations/train_annotations_1.json")
    _link(root, f / "ap10k", "ap36k/images")
    return root


def _config(extra: dict[str, object] | None = None, preset: str = "posebh_tiny_synth"):
    sets = _sets(extra)
    pairs = [sets[i + 1] for i in range(0, len(sets), 2)]
    return apply_overrides(get_preset(preset), pairs)


def _trainer(data_root: Path, work: Path, config=None, **opts) -> Trainer:
    options = RunOptions(
        data_root=data_root,
        work_dir=work,
        init=opts.pop("init", "scratch"),
        progress=False,
        log=lambda msg: None,
        **opts,
    )
    return Trainer(config or _config({"eval_at_end": False}), options)


# ------------------------------------------------------------------------------------------
# Recipes
# ------------------------------------------------------------------------------------------


def test_presets_encode_the_official_recipes() -> None:
    base = get_preset("posebh_vit_base")
    assert base.optim.name == "adamw" and base.optim.lr == 1e-3
    assert base.optim.weight_decay == 0.1 and base.optim.betas == (0.9, 0.999)
    assert base.optim.layer_decay == 0.75 and base.optim.grad_clip == 1.0
    assert (base.optim.warmup_iters, base.optim.warmup_ratio) == (500, 0.001)
    assert base.optim.milestones == (50, 90) and base.length == 100 and base.unit == "epoch"
    assert base.batch_size == 128 and base.precision == "fp16"
    assert get_preset("posebh_vit_huge").optim.layer_decay == 0.8
    # vitb_posebh.py hooks: ProtoFreezeHook 50; MultiheadFreezeHook freeze,0 thaw,50;
    # BackboneFreezeHook freeze,0 freeze,50 thaw,90; CPSInitHook 50; CSSEnableHook 50.
    spe = 10
    assert stage_at(base.events, 0, "epoch", spe) == StageState(frozenset({"backbone", "heads"}))
    assert stage_at(base.events, 499, "epoch", spe).frozen == {"backbone", "heads"}
    mid = stage_at(base.events, 500, "epoch", spe)
    assert mid.frozen == {"backbone", "prototypes"} and mid.cps and mid.css
    assert stage_at(base.events, 900, "epoch", spe).frozen == {"prototypes"}
    assert [(a, b) for a, b, _ in stages(base.events, 1000, "epoch", spe)] == [
        (0, 500),
        (500, 900),
        (900, 1000),
    ]
    ih = get_preset("posebh_interhand2d")
    assert ih.optim.name == "adam" and ih.optim.lr == 5e-4 and ih.optim.grad_clip is None
    assert ih.loss.sample_threshold == 0.2 and ih.loss.css_weight == 0.0
    assert stage_at(ih.events, 0, "epoch", 1).frozen == {"proto_head", "backbone"}
    assert stage_at(ih.events, 30, "epoch", 1).frozen == {"proto_head", "prototypes"}
    pw = get_preset("posebh_pw3d")
    assert stage_at(pw.events, 15, "epoch", 1).frozen == {"proto_head", "prototypes"}
    assert "backbone" in stage_at(pw.events, 16, "epoch", 1).frozen
    assert not get_preset("vitpose_plus_vit_base").events
    for name in ("posebh_tiny_synth", "vitpose_plus_tiny_synth"):
        assert PRESETS[name].unit == "step"


def test_plan_table_shows_the_stages() -> None:
    text = plan_table(get_preset("posebh_vit_base"), None, None)
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 3  # header, rule, three stages
    assert "0–49" in text and "50–89" in text and "90–99" in text
    assert "epoch 50: cps_init" in text


def test_overrides_and_validation() -> None:
    cfg = apply_overrides(
        get_preset("posebh_tiny_synth"),
        ["optim.lr=5e-4", "model.depth=2", "data.ratios=[1,1,1,1,1,2]", "length=10",
         'events=["0:freeze:heads", "5:thaw:heads"]'],
    )  # fmt: skip
    assert cfg.optim.lr == 5e-4 and cfg.model_overrides["depth"] == 2
    assert cfg.data.ratios == (1, 1, 1, 1, 1, 2)
    assert cfg.events == (Event(0, "freeze", "heads"), Event(5, "thaw", "heads"))
    with pytest.raises(TrainConfigError, match="unknown field"):
        apply_overrides(cfg, ["optim.learning_rate=1"])
    with pytest.raises(TrainConfigError, match="after the end"):
        apply_overrides(cfg, ["length=4"])
    with pytest.raises(TrainConfigError, match="target"):
        Event(0, "freeze", "everything")
    with pytest.raises(TrainConfigError, match="unknown preset"):
        get_preset("posebh_vit_tiny")


# ------------------------------------------------------------------------------------------
# Optimizer and lr
# ------------------------------------------------------------------------------------------


def test_layer_decay_groups_match_the_official_constructor() -> None:
    with torch.device("meta"):
        model = build_model("posebh_vit_base")
    cfg = get_preset("posebh_vit_base").optim
    groups = {g["group_name"]: g for g in param_groups(model, cfg, depth=12)}
    where = {n: g for g in groups.values() for n in g["param_names"]}
    assert len(where) == len(list(model.parameters()))
    # num_layers = 14: pos_embed / patch_embed id 0, block i id i + 1, the rest id 13.
    assert where["backbone.pos_embed"]["lr_scale"] == pytest.approx(0.75**13)
    assert where["backbone.pos_embed"]["weight_decay"] == 0.0
    assert where["backbone.patch_embed.proj.weight"]["weight_decay"] == 0.1
    qkv = where["backbone.blocks.0.attn.qkv.weight"]
    assert qkv["lr_scale"] == pytest.approx(0.75**12) and qkv["weight_decay"] == 0.1
    assert where["backbone.blocks.11.mlp.experts.3.weight"]["lr_scale"] == pytest.approx(0.75)
    assert where["backbone.blocks.5.norm1.weight"]["weight_decay"] == 0.0
    for name in ("heads.3.final_layer.weight", "proto_head.head.3.weight"):
        assert where[name]["lr_scale"] == 1.0 and where[name]["weight_decay"] == 0.1
    assert where["heads.0.final_layer.bias"]["weight_decay"] == 0.0
    assert where["backbone.last_norm.weight"]["lr_scale"] == 1.0
    assert len(groups) == 2 * 14


def test_lr_schedule_is_mmcv_step_with_linear_warmup() -> None:
    cfg = get_preset("posebh_vit_base").optim
    assert lr_factor(0, cfg, 1000) == pytest.approx(0.001)
    assert lr_factor(250, cfg, 1000) == pytest.approx(1 - 0.5 * 0.999)
    assert lr_factor(500, cfg, 1000) == 1.0
    assert lr_factor(49_999, cfg, 1000) == 1.0
    assert lr_factor(50_000, cfg, 1000) == pytest.approx(0.1)
    assert lr_factor(90_000, cfg, 1000) == pytest.approx(0.01)
    # With a tiny epoch the milestones fall inside the warm-up: both factors apply.
    assert lr_factor(100, cfg, 2) == pytest.approx(0.1 * (1 - 0.8 * 0.999))


# ------------------------------------------------------------------------------------------
# Sampler
# ------------------------------------------------------------------------------------------


def test_step_sampler_is_a_pure_function_of_seed_step_rank() -> None:
    sizes, ratios = [7, 3, 11], [1.0, 1.0, 2.0]
    ranks = [StepSampler(sizes, ratios, 4, world_size=2, rank=r, seed=5) for r in (0, 1)]
    single = StepSampler(sizes, ratios, 8, seed=5)
    for step in (0, 1, 17, 1000):
        a, b = ranks[0].keys(step), ranks[1].keys(step)
        assert len(a) == len(b) == 4
        # The ranks split the same global batch that one rank of batch 8 would see.
        assert a + b == single.keys(step)
        assert StepSampler(sizes, ratios, 4, 2, 0, seed=5).keys(step) == a
    assert StepSampler(sizes, ratios, 4, 2, 0, seed=6).keys(3) != ranks[0].keys(3)
    counts = [0, 0, 0]
    per_dataset: list[list[tuple[int, int]]] = [[], [], []]
    for step in range(400):
        n = single.counts(step)
        assert sum(n) == 8
        for d, epoch, idx in single.keys(step):
            counts[d] += 1
            per_dataset[d].append((epoch, idx))
    assert counts == [800, 800, 1600]  # exact long-run shares 1:1:2
    # Each dataset is walked epoch by epoch, every epoch a permutation of its instances.
    for d, n in enumerate(sizes):
        seen = sorted(per_dataset[d])
        for e in range(counts[d] // n):
            assert sorted(i for ep, i in seen if ep == e) == list(range(n))
    assert single.steps_per_epoch == 3  # ⌈21 / 8⌉
    assert StepSampler(sizes, None, 8).shares == [
        Fraction(7, 21),
        Fraction(3, 21),
        Fraction(11, 21),
    ]


# ------------------------------------------------------------------------------------------
# Training on the fixtures
# ------------------------------------------------------------------------------------------


def test_staged_training_freezes_what_the_schedule_says(data_root: Path, tmp_path: Path) -> None:
    trainer = _trainer(data_root, tmp_path / "run", max_steps=4)
    model = trainer.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = trainer.train()
    assert result.step == 4 and not result.completed
    after = model.state_dict()
    # Stage 1 (steps 0–3): backbone and heads frozen, prototype head and bank learn.
    for name, v in after.items():
        if name.startswith(("backbone.", "heads.")) and "running" not in name:
            if "num_batches" in name:
                continue
            assert torch.equal(v, before[name]), name
    assert not torch.equal(after["proto_head.head.3.weight"], before["proto_head.head.3.weight"])
    assert not torch.equal(
        after["keypoint_prototypes.prototypes"], before["keypoint_prototypes.prototypes"]
    )
    assert model.cluster_prototypes is None
    log = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    train = [r for r in log if r["type"] == "train"]
    assert [r["step"] for r in train] == [2, 4]
    assert {"hm/coco", "hm/coco_wholebody", "proto", "proto_heatmap", "ppc", "ppd"} <= set(
        train[0]["losses"]
    )
    assert train[0]["stage"] == "proto_head+prototypes" and train[0]["images_per_s"] > 0
    assert log[-1]["type"] == "end" and not log[-1]["completed"]

    # Continue to the end: CPS bank built at step 4, CSS on, prototypes frozen.
    protos_at_4 = model.keypoint_prototypes.prototypes.clone()
    trainer2 = _trainer(data_root, tmp_path / "run", resume=True)
    result = trainer2.train()
    assert result.completed and result.step == 8
    m2 = trainer2.model
    assert m2.cluster_prototypes is not None and m2.cluster_prototypes.num_clusters in (64, 96, 128)
    assert torch.equal(m2.keypoint_prototypes.prototypes, protos_at_4)
    assert m2.keypoint_prototypes.frozen
    log = [json.loads(x) for x in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    late = [r for r in log if r["type"] == "train" and r["step"] >= 6]
    assert all({"cps", "css"} <= set(r["losses"]) for r in late)
    stage_events = [r for r in log if r["type"] == "stage"]
    assert any("cps_init" in r["events"] for r in stage_events)
    ckpt = torch.load(tmp_path / "run/final.pth", weights_only=True)
    assert ckpt["step"] == 8 and ckpt["schedule"]["frozen"] == ["prototypes"]
    assert ckpt["clusters"]["closest_keypoint"].shape == (ckpt["clusters"]["num_clusters"],)
    assert {"model", "optimizer", "scaler", "scheduler", "rng", "config"} <= set(ckpt)
    # model.pth is an official-naming checkpoint that `posebh eval` can load.
    from posebh.checkpoint import load_model

    loaded = load_model(tmp_path / "run/model.pth", num_heads=2)
    assert loaded.cluster_prototypes is not None
    # ... and so is the trainer's own checkpoint (weights under 'model'), to the same weights.
    from_trainer = load_model(tmp_path / "run/final.pth", num_heads=2).state_dict()
    assert from_trainer.keys() == loaded.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in from_trainer.items())


def test_heads_on_own_images_is_the_official_loss_up_to_batchnorm(
    data_root: Path, tmp_path: Path
) -> None:
    cfg = _config({"events": [], "batch_size": 12}, preset="vitpose_plus_tiny_synth")
    trainer = _trainer(data_root, tmp_path / "own", cfg, init=None)
    batch = next(iter(trainer._loader(0, 1)))
    model, di = trainer.model, batch["dataset_idx"]
    assert len(set(di.tolist())) >= 3  # a mixed batch
    rows = [torch.nonzero(di == h).squeeze(1) for h in range(len(model.heads))]

    def terms(head_rows):
        model.zero_grad(set_to_none=True)
        out = model(batch["img"], di, head_rows=head_rows)
        total, logs = trainer.compute_losses(out, batch, head_rows=head_rows)
        total.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return total.detach(), logs, grads

    # With the BatchNorm statistics fixed (eval mode) both ways are the same computation.
    model.eval()
    full, full_logs, full_grads = terms(None)
    own, own_logs, own_grads = terms(rows)
    torch.testing.assert_close(own, full, rtol=1e-5, atol=0)
    for name in trainer.names_of_head.values():
        torch.testing.assert_close(
            own_logs[f"hm/{name}"], full_logs[f"hm/{name}"], rtol=1e-5, atol=0
        )
    assert own_grads.keys() == full_grads.keys()
    for n, g in full_grads.items():
        torch.testing.assert_close(own_grads[n], g, rtol=1e-4, atol=1e-9, msg=n)
    # A head with no image in the batch still takes part (zero loss, zero gradient).
    empty = [torch.zeros(0, dtype=torch.long)] * len(model.heads)
    _, logs, grads = terms(empty)
    assert all(float(v) == 0.0 for k, v in logs.items() if k.startswith("hm/"))
    assert all(torch.count_nonzero(grads[n]) == 0 for n in grads if n.startswith("heads."))

    # In training the flag routes every step's heads, and they learn.
    flagged = dataclasses.replace(cfg, heads_on_own_images=True, length=3)
    t = _trainer(data_root, tmp_path / "own_run", flagged, init=None)
    seen, forward = [], t.model.forward

    def spy(*args, **kwargs):
        if t.model.training:  # not the final evaluation
            seen.append(kwargs.get("head_rows"))
        return forward(*args, **kwargs)

    t.model.forward = spy
    before = t.model.heads[0].final_layer.weight.detach().clone()
    assert t.train().completed
    assert len(seen) == 3 and all(r is not None and len(r) == len(t.model.heads) for r in seen)
    assert not torch.equal(t.model.heads[0].final_layer.weight, before)


def test_killed_run_resumes_bit_identically(data_root: Path, tmp_path: Path) -> None:
    """A run killed after step 5 (last checkpoint at step 3, before the CPS initialisation
    at step 4) and resumed ends with exactly the weights and prototypes of an uninterrupted
    run."""
    args = [
        sys.executable, "-m", "posebh.train", "--preset", "posebh_tiny_synth",
        "--data-root", str(data_root), "--init", "scratch", "--no-eval", "--no-progress",
        *_sets(),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    def run(work: Path, *extra: str, exit_after: int | None = None) -> int:
        e = dict(env)
        if exit_after is not None:
            e["POSEBH_DEBUG_EXIT_AFTER_STEP"] = str(exit_after)
        proc = subprocess.run(
            [*args, "--work-dir", str(work), *extra],
            env=e,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode in (0, 137), proc.stderr[-2000:]
        return proc.returncode

    assert run(tmp_path / "a") == 0
    assert run(tmp_path / "b", exit_after=5) == 137
    assert torch.load(tmp_path / "b/latest.pth", weights_only=True)["step"] == 3
    assert not (tmp_path / "b/final.pth").exists()
    assert run(tmp_path / "b", "--resume") == 0
    a = torch.load(tmp_path / "a/final.pth", weights_only=True)
    b = torch.load(tmp_path / "b/final.pth", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["clusters"]["centroids"], b["clusters"]["centroids"])
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])


def test_workers_do_not_change_the_batches(data_root: Path, tmp_path: Path) -> None:
    """The samples are a pure function of (seed, step, rank): a DataLoader worker process
    produces the same training run as the main process."""
    digests = []
    for workers in (0, 1):
        cfg = _config({"length": 3, "events": [], "data.num_workers": workers,
                       "eval_at_end": False})  # fmt: skip
        trainer = _trainer(data_root, tmp_path / f"w{workers}", cfg)
        trainer.train()
        digests.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
    for k in digests[0]:
        assert torch.equal(digests[0][k], digests[1][k]), k


def test_baseline_trains_and_evaluates(data_root: Path, tmp_path: Path) -> None:
    cfg = _config(
        {
            "length": 4,
            "events": [],
            "data.val_datasets": ["coco", "ap10k"],
            "data.eval_batch_size": 8,
        },
        preset="vitpose_plus_tiny_synth",
    )
    trainer = _trainer(data_root, tmp_path / "vp", cfg, init=None)
    assert trainer.model.keypoint_prototypes is None
    result = trainer.train()
    assert result.completed
    assert set(result.metrics) == {"coco", "ap10k"}
    assert 0.0 <= result.metrics["coco"]["AP"] <= 1.0
    summary = json.loads((tmp_path / "vp/metrics.json").read_text())
    assert summary["coco"]["headline"][0] == "AP"
    assert (tmp_path / "vp/eval/final/coco/metrics.json").is_file()
    # The final report carries the no-model floor: train mean pose in the same val boxes.
    floor = evaluate(
        None,
        default_spec("coco", "val", data_root, use_gt_bbox=True),
        mean_pose_from="train",
        data_root=data_root,
        log=None,
        progress=False,
    )
    assert summary["coco"]["mean_pose_floor"] == ["AP", floor.metrics["AP"]]
    assert summary["ap10k"]["mean_pose_floor"][0] == "AP"
    records = [json.loads(line) for line in (tmp_path / "vp/log.jsonl").read_text().splitlines()]
    finals = {r["dataset"]: r for r in records if r["type"] == "eval" and r["tag"] == "final"}
    assert finals["coco"]["mean_pose_floor"] == summary["coco"]["mean_pose_floor"]

    # PoseBH starts from it: the backbone and heads load, the prototype head stays new.
    posebh = build_model("posebh_vit_base", **_config().model_overrides)
    notes = load_init(posebh, tmp_path / "vp/final.pth", _config())
    text = "\n".join(notes)
    assert "missing (kept initial values): keypoint_prototypes.prototypes; proto_head.*" in text
    assert torch.equal(
        posebh.heads[5].final_layer.weight, trainer.model.heads[5].final_layer.weight
    )


def test_transfer_init_splits_the_expert_and_drops_the_prototypes(tmp_path: Path) -> None:
    cfg = _config()
    multi = build_model("posebh_vit_base", **cfg.model_overrides)
    torch.save({"state_dict": multi.state_dict()}, tmp_path / "multi.pth")
    transfer = dataclasses.replace(
        get_preset("posebh_interhand2d"),
        model_overrides={**cfg.model_overrides, "num_experts": 0, "num_keypoints": (21,)},
    )
    target = build_model(transfer.model, **transfer.model_overrides)
    notes = "\n".join(load_init(target, tmp_path / "multi.pth", transfer))
    assert "split for 'coco'" in notes and "prototype banks removed" in notes
    assert "shape mismatch (kept initial values): heads.0.final_layer.bias" in notes
    # The COCO expert is merged into fc2: fc2's first C−P rows are the shared ones.
    fc2 = target.backbone.blocks[0].mlp.fc2.weight
    shared = multi.backbone.blocks[0].mlp.fc2.weight
    expert0 = multi.backbone.blocks[0].mlp.experts[0].weight
    assert torch.equal(fc2, torch.cat([shared, expert0]))
    assert torch.equal(
        target.heads[0].deconv_layers[0].weight, multi.heads[0].deconv_layers[0].weight
    )


def test_apply_state_sets_requires_grad_and_the_bank_flag() -> None:
    model = build_model("posebh_vit_base", **_config().model_overrides)
    apply_state(model, StageState(frozenset({"backbone", "prototypes"})))
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    assert model.keypoint_prototypes.frozen
    apply_state(model, StageState())
    assert all(p.requires_grad for p in model.parameters())
    assert not model.keypoint_prototypes.frozen


# ------------------------------------------------------------------------------------------
# Errors and the command line
# ------------------------------------------------------------------------------------------


def _cli(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli_main(["train", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cli_errors_are_clear(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = _cli(["--preset", "nope", "--work-dir", str(tmp_path)], capsys)
    assert code == 2 and "unknown preset 'nope'" in text and "posebh_tiny_synth" in text
    missing = tmp_path / "no_data"
    code, text = _cli(
        ["--preset", "vitpose_plus_tiny_synth", "--data-root", str(missing),
         "--work-dir", str(tmp_path / "w")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "does not exist" in text
    assert f"posebh synth --out {missing} --preset mini" in text
    code, text = _cli(
        ["--preset", "vitpose_plus_tiny_synth", "--data-root", str(data_root),
         "--work-dir", str(tmp_path / "w"), "--set", 'data.datasets=["interhand2d"]'],
        capsys,
    )  # fmt: skip
    assert code == 2 and "dataset 'interhand2d' is not one of the heads" in text
    code, text = _cli(
        ["--preset", "posebh_tiny_synth", "--data-root", str(data_root),
         "--work-dir", str(tmp_path / "w"), "--datasets", "coco"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "--init CHECKPOINT" in text and "--init scratch" in text
    code, text = _cli(["--list"], capsys)
    assert code == 0 and "posebh_interhand2d" in text
    code, text = _cli(["--preset", "posebh_vit_huge", "--plan"], capsys)
    assert code == 0 and "90–99" in text


def test_cli_subset_run_and_existing_work_dir(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--preset", "posebh_tiny_synth", "--data-root", str(data_root), "--work-dir",
            str(tmp_path / "w"), "--init", "scratch", "--datasets", "coco,mpii",
            "--no-progress", "--no-eval", "--max-steps", "2",
            *_sets({"data.ratios": None})]  # fmt: skip
    assert train_main(args) == 0
    text = capsys.readouterr().out
    assert re.search(r"\|\s+stage\s+\|", text) and "stopped at step 2/8" in text
    assert "coco 12 inst. (70.6%), mpii 5 inst. (29.4%)" in text
    code = train_main(args)
    assert code == 2 and "already holds a run" in capsys.readouterr().err
