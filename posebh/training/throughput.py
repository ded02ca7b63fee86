"""Training throughput on a fixed synthetic batch: images/s, peak memory, losses and the model
FLOPs per image (for MFU), on any device, precision and prototype backend.

:func:`measure_train_steps` builds a :class:`~posebh.training.Trainer` of a preset on a
throw-away COCO-format training set (noise images: the trainer needs one to start, the steps
never read it), puts it in the heaviest stage of the PoseBH schedule (everything but the
prototype bank trains, CPS and CSS on, the heatmap loss of every head) and times optimizer
steps on one fixed batch of the model's input size, as ``benchmarks/test_bench_train.py``
does. The GPU self-check compares the fused prototype path with the reference through it
(``prototype_backend="auto"`` vs ``"torch"``).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from posebh import ops
from posebh.prototypes import use_similarity_backend
from posebh.training.config import TrainConfigError, apply_overrides, get_preset
from posebh.training.optim import set_lr
from posebh.training.schedule import StageState
from posebh.training.trainer import RunOptions, Trainer

__all__ = [
    "STAGES",
    "build_trainer",
    "count_flops_per_image",
    "enter_stage",
    "measure_train_steps",
    "synthetic_batch",
    "write_fake_coco",
]

#: Stages :func:`enter_stage` knows: "heaviest" (stage 3 of PoseBH: all but the prototype
#: bank trains, CPS and CSS on) and "prototypes" (stage 1: only the prototype head and bank
#: learn).
STAGES: dict[str, StageState] = {
    "heaviest": StageState(frozenset({"prototypes"}), css=True, cps=True),
    "prototypes": StageState(frozenset({"backbone", "heads"})),
}

_COCO_KEYPOINTS = 17
_FLOPS_CACHE: dict[tuple[str, str, str], int] = {}


def write_fake_coco(root: Path, images: int = 8, size: tuple[int, int] = (192, 144)) -> Path:
    """A COCO-format keypoint training set under ``root`` (``coco/train2017`` and
    ``coco/annotations/person_keypoints_train2017.json``): noise images with one random
    person each. Returns ``root``."""
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
            [
                x0 + rng.random(_COCO_KEYPOINTS) * bw,
                y0 + rng.random(_COCO_KEYPOINTS) * bh,
                np.full(_COCO_KEYPOINTS, 2.0),
            ],
            axis=1,
        )
        anns.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "bbox": [x0, y0, bw, bh],
                "area": bw * bh,
                "iscrowd": 0,
                "num_keypoints": _COCO_KEYPOINTS,
                "keypoints": kp.reshape(-1).round(2).tolist(),
            }
        )
    cats = [{"id": 1, "name": "person", "supercategory": "person"}]
    data = {"images": imgs, "annotations": anns, "categories": cats}
    path = root / "coco/annotations/person_keypoints_train2017.json"
    path.write_text(json.dumps(data))
    return root


def build_trainer(
    preset: str,
    batch: int,
    data_root: Path,
    work_dir: Path,
    *,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> Trainer:
    """A trainer of ``preset`` at ``batch`` images per step on the COCO set of
    :func:`write_fake_coco` under ``data_root``, from scratch, without evaluation, logging
    or checkpoints in the way; ``overrides`` are ``--set`` items (``precision="bf16"``,
    ``**{"loss.cps_iters": 20}``)."""
    items = {
        "data.datasets": ("coco",),
        "batch_size": batch,
        "data.num_workers": 0,
        "loss.cps_iters": 20,
        "eval_at_end": False,
        "log_every": 10_000,
        "ckpt_every": 10_000,
        **overrides,
    }
    items = {k: tuple(v) if isinstance(v, list) else v for k, v in items.items()}
    config = apply_overrides(get_preset(preset), items)
    options = RunOptions(
        data_root=data_root,
        work_dir=work_dir,
        init="scratch",
        progress=False,
        device=device,
        log=log or (lambda _msg: None),
    )
    return Trainer(config, options)


def enter_stage(trainer: Trainer, stage: str = "heaviest", lr: float = 1e-4) -> None:
    """Put ``trainer`` in ``stage`` (:data:`STAGES`) with the heatmap loss of every head (the
    fake set holds COCO only) and a constant learning rate."""
    if stage not in STAGES:
        raise TrainConfigError(f"stage must be one of {sorted(STAGES)}, got {stage!r}")
    trainer.names_of_head = {h: f"dataset{h}" for h in range(trainer.model.num_datasets)}
    trainer._enter_state(STAGES[stage])
    set_lr(trainer.optimizer, lr, 1.0)


def synthetic_batch(
    trainer: Trainer, batch: int, seed: int = 0, device: torch.device | str = "cpu"
) -> dict[str, Tensor]:
    """A fixed batch of the model's input size on ``device``: noise images, Gaussian targets
    with one peak per joint, the datasets in turn (every head present once batch ≥ D)."""
    g = torch.Generator().manual_seed(seed)
    model = trainer.model
    h, w = model.config.img_size
    hh, hw = model.config.heatmap_size
    k = max(head.num_keypoints for head in model.heads)
    ys = torch.randint(2, hh - 2, (batch, k), generator=g)
    xs = torch.randint(2, hw - 2, (batch, k), generator=g)
    yy, xx = torch.meshgrid(torch.arange(hh), torch.arange(hw), indexing="ij")
    target = torch.exp(-((yy - ys[..., None, None]) ** 2 + (xx - xs[..., None, None]) ** 2) / 8.0)
    idx = torch.arange(batch) % model.num_datasets
    weight = torch.zeros(batch, k, 1)
    for b, d in enumerate(idx.tolist()):
        weight[b, : model.heads[d].num_keypoints] = 1.0
    out = {
        "img": torch.randn(batch, 3, h, w, generator=g),
        "target": target * weight[..., None],
        "target_weight": weight,
        "dataset_idx": idx,
    }
    return {key: v.to(device) for key, v in out.items()}


def count_flops_per_image(trainer: Trainer, batch: Mapping[str, Tensor], stage: str) -> int:
    """Model FLOPs of one training image: forward + losses + backward at batch 1, counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions; the
    optimizer step is not counted). Counted once per (preset, model overrides, stage).

    The prototype similarities are counted on the reference (the fused kernels are not in
    the counter's table), so the figure does not depend on the backend. The pass leaves the
    trainer as it was: buffers (BatchNorm statistics, prototypes) and random generators are
    restored, gradients cleared, no optimizer step.
    """
    cfg = trainer.config
    key = (cfg.preset, repr(sorted(dict(cfg.model_overrides).items())), stage)
    if key in _FLOPS_CACHE:
        return _FLOPS_CACHE[key]
    model = trainer.model
    one = {k: v[:1] for k, v in batch.items()}
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    devices = [trainer.device] if trainer.device.type == "cuda" else []
    use_similarity_backend(model, "torch")
    try:
        with torch.random.fork_rng(devices=devices), FlopCounterMode(display=False) as counter:
            total, _ = trainer.forward_losses(one)
            if total.requires_grad:
                total.backward()
        flops = int(counter.get_total_flops())
    finally:
        use_similarity_backend(model, cfg.prototype_backend)
        trainer.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])
    _FLOPS_CACHE[key] = flops
    return flops


def _similarity_backend(requested: str, device: torch.device) -> str:
    """The backend that runs the training logits: ``requested``, or what "auto" picks for a
    training-sized call (gradient w.r.t. the embeddings, float32 prototypes)."""
    if requested != "auto":
        return requested
    info = ops.CallInfo(device=device, needs_grad=True, extra={"prototypes_need_grad": False})
    return ops.get_op("prototype_logits").select("auto", info).name


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB else


def measure_train_steps(
    preset: str,
    batch: int,
    steps: int,
    device: str = "cpu",
    precision: str = "fp32",
    prototype_backend: str = "auto",
    seed: int = 0,
    *,
    warmup: int = 1,
    stage: str = "heaviest",
    overrides: Mapping[str, Any] | None = None,
    flops: bool = True,
) -> dict[str, Any]:
    """Time ``steps`` optimizer steps of ``preset`` at ``batch`` images on one fixed
    synthetic batch, after ``warmup`` untimed steps.

    Args:
        preset: a training preset (``posebh_tiny_synth``, ``posebh_vit_base``, ...).
        batch: images per step.
        steps: timed steps (≥ 1).
        device: "cpu", "cuda", "cuda:1", ...
        precision: ``TrainConfig.precision`` (fp32; bf16 on CPU or CUDA; fp16 on CUDA).
        prototype_backend: ``TrainConfig.prototype_backend`` ("auto": fused; "torch").
        seed: the run's seed (initial weights) and the batch's.
        warmup: untimed steps first (allocations, Adam state, kernel compilation).
        stage: a :data:`STAGES` name.
        overrides: further ``--set`` items.
        flops: count :func:`count_flops_per_image` (one extra forward + backward at batch 1).

    Returns:
        A JSON-able dict: the settings, ``similarity_backend`` (what ran the logits),
        ``seconds`` (the timed steps), ``images_per_s``, ``step_ms`` (each timed step),
        ``losses`` (the total loss of every step, warm-up included), ``finite``,
        ``peak_memory_bytes`` (CUDA: ``torch.cuda.max_memory_allocated`` over the timed steps;
        None on CPU), ``peak_rss_bytes`` (the process's peak resident set so far, CPU only),
        ``flops_per_image`` and ``flops_per_s`` (None when ``flops`` is False).
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be ≥ 1 and warmup ≥ 0, got {steps} and {warmup}")
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sets = {
        "precision": precision,
        "prototype_backend": prototype_backend,
        "seed": seed,
        **(overrides or {}),
    }
    with tempfile.TemporaryDirectory(prefix="posebh_throughput_") as tmp:
        root = write_fake_coco(Path(tmp) / "data")
        trainer = build_trainer(preset, batch, root, Path(tmp) / "work", device=device, **sets)
        try:
            enter_stage(trainer, stage)
            data = synthetic_batch(trainer, batch, seed, trainer.device)
            flops_per_image = count_flops_per_image(trainer, data, stage) if flops else None
            losses = [trainer.train_step(data)["loss"] for _ in range(warmup)]
            if cuda:
                torch.cuda.synchronize(trainer.device)
                torch.cuda.reset_peak_memory_stats(trainer.device)
            step_ms = []
            for _ in range(steps):
                t0 = time.perf_counter()
                losses.append(trainer.train_step(data)["loss"])
                if cuda:
                    torch.cuda.synchronize(trainer.device)
                step_ms.append((time.perf_counter() - t0) * 1e3)
            peak = torch.cuda.max_memory_allocated(trainer.device) if cuda else None
            device_name = torch.cuda.get_device_name(trainer.device) if cuda else "cpu"
        finally:
            trainer.close()
    seconds = sum(step_ms) / 1e3
    values = [float(v) for v in losses]
    ips = batch * steps / max(seconds, 1e-12)
    return {
        "preset": preset,
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "stage": stage,
        "device": str(dev),
        "device_name": device_name,
        "precision": precision,
        "prototype_backend": prototype_backend,
        "similarity_backend": _similarity_backend(prototype_backend, trainer.device),
        "seconds": seconds,
        "images_per_s": ips,
        "step_ms": step_ms,
        "losses": values,
        "finite": all(np.isfinite(values)),
        "peak_memory_bytes": peak,
        "peak_rss_bytes": None if cuda else _peak_rss_bytes(),
        "flops_per_image": flops_per_image,
        "flops_per_s": None if flops_per_image is None else flops_per_image * ips,
    }
