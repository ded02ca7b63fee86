"""Training throughput on the CPU (images/s), for the closing-note figures.

* the tiny preset (``posebh_tiny_synth``, 128×96) in its heaviest stage — everything
  trainable, CPS and CSS on — one optimizer step per round on a fixed batch of 32, and the
  same preset through ``Trainer.train`` with the data pipeline (decoding, augmentation,
  targets) in the loop;
* the base preset (``posebh_vit_base``, 256×192) forward + backward + step at batch 2, with
  the forward pass alone as the reference in the same run.

The images/s figure of each case is in ``extra_info``.  Under ``--benchmark-disable`` (the CI
smoke) the tiny cases shrink to a batch of 4 and the base cases are skipped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posebh.training import RunOptions, StageState, Trainer, apply_overrides, get_preset
from posebh.training.optim import set_lr

_COCO_KPTS = 17


def _fake_coco(root: Path, images: int = 8, size: tuple[int, int] = (192, 144)) -> Path:
    """A COCO-format keypoint training set of noise images with one random person each."""
    rng = np.random.default_rng(0)
    w, h = size
    (root / "coco/train2017").mkdir(parents=True, exist_ok=True)
    (root / "coco/annotations").mkdir(parents=True, exist_ok=True)
    imgs, anns = [], []
    for i in range(images):
        name = f"{i:012d}.jpg"
        pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "coco/train2017" / name, quality=90)
        imgs.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        x0, y0, bw, bh = 30.0, 20.0, 80.0, 110.0
        kp = np.stack(
            [x0 + rng.random(_COCO_KPTS) * bw, y0 + rng.random(_COCO_KPTS) * bh,
             np.full(_COCO_KPTS, 2.0)], axis=1,
        )  # fmt: skip
        anns.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "bbox": [x0, y0, bw, bh],
                "area": bw * bh,
                "iscrowd": 0,
                "num_keypoints": _COCO_KPTS,
                "keypoints": kp.reshape(-1).round(2).tolist(),
            }
        )
    cats = [{"id": 1, "name": "person", "supercategory": "person"}]
    data = {"images": imgs, "annotations": anns, "categories": cats}
    path = root / "coco/annotations/person_keypoints_train2017.json"
    path.write_text(json.dumps(data))
    return root


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fake_coco(tmp_path_factory.mktemp("bench_data"))


def _trainer(root: Path, work: Path, preset: str, batch: int, **sets: object) -> Trainer:
    items = {
        "data.datasets": ["coco"],
        "batch_size": batch,
        "data.num_workers": 0,
        "loss.cps_iters": 20,
        "eval_at_end": False,
        "log_every": 10_000,
        "ckpt_every": 10_000,
        **sets,
    }
    config = apply_overrides(get_preset(preset), {k: _tuple(v) for k, v in items.items()})
    options = RunOptions(
        data_root=root, work_dir=work, init="scratch", progress=False, log=lambda m: None
    )
    return Trainer(config, options)


def _tuple(v: object) -> object:
    return tuple(v) if isinstance(v, list) else v


def _batch(trainer: Trainer, batch: int) -> dict[str, torch.Tensor]:
    """A fixed batch of the model's input size: noise images, targets with one peak per
    joint, every dataset present."""
    g = torch.Generator().manual_seed(0)
    h, w = trainer.model.config.img_size
    hh, hw = trainer.model.config.heatmap_size
    k = max(head.num_keypoints for head in trainer.model.heads)
    target = torch.zeros(batch, k, hh, hw)
    ys = torch.randint(2, hh - 2, (batch, k), generator=g)
    xs = torch.randint(2, hw - 2, (batch, k), generator=g)
    yy, xx = torch.meshgrid(torch.arange(hh), torch.arange(hw), indexing="ij")
    target = torch.exp(-((yy - ys[..., None, None]) ** 2 + (xx - xs[..., None, None]) ** 2) / 8.0)
    idx = torch.arange(batch) % trainer.model.num_datasets
    weight = torch.zeros(batch, k, 1)
    for b, d in enumerate(idx.tolist()):
        weight[b, : trainer.model.heads[d].num_keypoints] = 1.0
    target = target * weight[..., None]
    return {
        "img": torch.randn(batch, 3, h, w, generator=g),
        "target": target,
        "target_weight": weight,
        "dataset_idx": idx,
    }


def _heaviest_stage(trainer: Trainer) -> None:
    """Stage 3 of the PoseBH schedule: everything but the bank trains, CPS and CSS on,
    with the heatmap loss of all six heads (the fake data root holds COCO only)."""
    trainer.names_of_head = {h: f"dataset{h}" for h in range(trainer.model.num_datasets)}
    trainer._enter_state(StageState(frozenset({"prototypes"}), css=True, cps=True))
    set_lr(trainer.optimizer, 1e-4, 1.0)


@pytest.mark.benchmark(group="train-tiny")
def test_bench_train_step_tiny(benchmark, fake_root: Path, tmp_path: Path) -> None:
    batch = 4 if benchmark.disabled else 32
    trainer = _trainer(fake_root, tmp_path, "posebh_tiny_synth", batch)
    _heaviest_stage(trainer)
    data = _batch(trainer, batch)
    trainer.train_step(data)  # warm-up (allocations, Adam state)
    logs = benchmark(trainer.train_step, data)
    assert torch.isfinite(logs["loss"]) and "css" in logs and "cps" in logs
    if not benchmark.disabled:
        benchmark.extra_info["images_per_s"] = batch / benchmark.stats["median"]


@pytest.mark.benchmark(group="train-tiny")
def test_bench_train_loop_tiny_with_data(benchmark, fake_root: Path, tmp_path: Path) -> None:
    """``Trainer.train`` for a few steps: the data pipeline (one process) is in the loop."""
    batch, steps = (4, 1) if benchmark.disabled else (32, 6)
    runs = iter(range(1_000))

    def run() -> float:
        work = tmp_path / f"run{next(runs)}"
        trainer = _trainer(
            fake_root, work, "vitpose_plus_tiny_synth", batch, length=steps, events=[]
        )
        t0 = time.perf_counter()
        result = trainer.train()
        assert result.completed
        return batch * steps / (time.perf_counter() - t0)

    ips = benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, iterations=1)
    assert ips > 0
    if not benchmark.disabled:
        benchmark.extra_info["images_per_s"] = batch * steps / benchmark.stats["median"]


@pytest.fixture(scope="module")
def base_trainer(fake_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    trainer = _trainer(fake_root, tmp_path_factory.mktemp("bench_base"), "posebh_vit_base", 2)
    _heaviest_stage(trainer)
    return trainer


@pytest.mark.benchmark(group="train-base-b2")
def test_bench_forward_base_b2(benchmark, request) -> None:
    if benchmark.disabled:
        pytest.skip("heavy: runs only when benchmarking")
    trainer = request.getfixturevalue("base_trainer")
    data = _batch(trainer, 2)
    trainer.model.train()

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return trainer.model(data["img"], data["dataset_idx"]).embeddings

    out = benchmark.pedantic(forward, rounds=3, iterations=1, warmup_rounds=1)
    assert out.shape == (2, 64, 64, 48)
    benchmark.extra_info["images_per_s"] = 2 / benchmark.stats["median"]


@pytest.mark.benchmark(group="train-base-b2")
def test_bench_train_step_base_b2(benchmark, request) -> None:
    if benchmark.disabled:
        pytest.skip("heavy: runs only when benchmarking")
    trainer = request.getfixturevalue("base_trainer")
    data = _batch(trainer, 2)
    logs = benchmark.pedantic(
        trainer.train_step, args=(data,), rounds=3, iterations=1, warmup_rounds=1
    )
    assert torch.isfinite(logs["loss"])
    benchmark.extra_info["images_per_s"] = 2 / benchmark.stats["median"]
