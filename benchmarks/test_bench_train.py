"""Training throughput on the CPU (images/s), for the closing-note figures.

* the tiny preset (``posebh_tiny_synth``, 128×96) in its heaviest stage — everything
  trainable, CPS and CSS on — one optimizer step per round on a fixed batch of 32, and the
  same preset through ``Trainer.train`` with the data pipeline (decoding, augmentation,
  targets) in the loop;
* the same fixed-batch step with the prototype similarities on the fused kernels ("auto")
  and on the reference ("torch"), the reference timed in the same test
  (``ratio_vs_reference`` = reference time / fused time);
* the base preset (``posebh_vit_base``, 256×192, float32: its recipe's fp16 is CUDA only)
  forward + backward + step at batch 2, with the forward pass alone as the reference in the
  same run.

The fixed batch, the fake training set and the stage come from
:mod:`posebh.training.throughput` (what the GPU self-check measures with). The images/s
figure of each case is in ``extra_info``.  Under ``--benchmark-disable`` (the CI smoke) the
tiny cases shrink to a batch of 4 and the base cases are skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from timing import min_ms

from posebh.training import Trainer
from posebh.training.throughput import build_trainer, enter_stage, synthetic_batch, write_fake_coco


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_coco(tmp_path_factory.mktemp("bench_data"))


def _trainer(root: Path, work: Path, preset: str, batch: int, **sets: object) -> Trainer:
    return build_trainer(preset, batch, root, work, device="cpu", **sets)


def _heaviest(root: Path, work: Path, preset: str, batch: int, **sets: object):
    """A trainer in the heaviest stage and its fixed batch."""
    trainer = _trainer(root, work, preset, batch, **sets)
    enter_stage(trainer, "heaviest")
    return trainer, synthetic_batch(trainer, batch)


@pytest.mark.benchmark(group="train-tiny")
def test_bench_train_step_tiny(benchmark, fake_root: Path, tmp_path: Path) -> None:
    batch = 4 if benchmark.disabled else 32
    trainer, data = _heaviest(fake_root, tmp_path, "posebh_tiny_synth", batch)
    trainer.train_step(data)  # warm-up (allocations, Adam state)
    logs = benchmark(trainer.train_step, data)
    assert torch.isfinite(logs["loss"]) and "css" in logs and "cps" in logs
    if not benchmark.disabled:
        benchmark.extra_info["images_per_s"] = batch / benchmark.stats["median"]


@pytest.mark.benchmark(group="train-tiny-prototypes")
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_bench_train_step_tiny_prototypes(
    benchmark, fake_root: Path, tmp_path: Path, backend: str
) -> None:
    """The fixed-batch step with the fused prototype path ("auto": the C++ kernels) or the
    reference ("torch"); the fused case times the reference in the same test."""
    batch, rounds = (4, 1) if benchmark.disabled else (32, 10)
    trainer, data = _heaviest(
        fake_root, tmp_path / backend, "posebh_tiny_synth", batch, prototype_backend=backend
    )
    trainer.train_step(data)  # warm-up
    logs = benchmark.pedantic(trainer.train_step, args=(data,), rounds=rounds, iterations=1)
    assert torch.isfinite(logs["loss"])
    benchmark.extra_info.update(case="train_step_tiny_prototypes", backend=backend)
    if benchmark.disabled:
        return
    mine_ms = benchmark.stats.stats.min * 1e3
    info = {"min_ms": round(mine_ms, 3), "images_per_s": batch / benchmark.stats.stats.median}
    if backend != "torch":
        ref, ref_data = _heaviest(
            fake_root, tmp_path / "ref", "posebh_tiny_synth", batch, prototype_backend="torch"
        )
        ref.train_step(ref_data)
        ref_ms = min_ms(lambda: ref.train_step(ref_data), rounds)
        info |= {"reference_min_ms": round(ref_ms, 3), "ratio_vs_reference": ref_ms / mine_ms}
    benchmark.extra_info.update(info)


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
    work = tmp_path_factory.mktemp("bench_base")
    trainer, _ = _heaviest(fake_root, work, "posebh_vit_base", 2, precision="fp32")
    return trainer


@pytest.mark.benchmark(group="train-base-b2")
def test_bench_forward_base_b2(benchmark, request) -> None:
    if benchmark.disabled:
        pytest.skip("heavy: runs only when benchmarking")
    trainer = request.getfixturevalue("base_trainer")
    data = synthetic_batch(trainer, 2)
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
    data = synthetic_batch(trainer, 2)
    logs = benchmark.pedantic(
        trainer.train_step, args=(data,), rounds=3, iterations=1, warmup_rounds=1
    )
    assert torch.isfinite(logs["loss"])
    benchmark.extra_info["images_per_s"] = 2 / benchmark.stats["median"]
