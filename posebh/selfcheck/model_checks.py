"""The model on the device: golden parity, evaluation of the COCO fixture, training steps and
``torch.compile``.

- **golden**: the official tiny model (``golden/official_tiny_model.pt``) on the device, fp32
  with TF32 off, against the official outputs recorded on the CPU.
- **eval**: ``evaluate`` of the COCO fixture (``mmpose_testdata/coco``, 12 boxes) with that
  model on the device in fp32 and under bf16 autocast, against the same evaluation on the CPU.
  The model's weights are seeded random, so its AP is low and near-flat maps make arg-maxes
  fragile: fp32 must give the CPU's metrics within 1e-3; bf16 is reported with its deltas and
  must stay finite.
- **train**: N optimizer steps of a preset under a precision, with the fused prototype path
  and with the reference path (:func:`posebh.training.throughput.measure_train_steps`):
  images/s, peak memory, finite losses and MFU (model FLOPs per image × images/s over the
  measured bf16 matmul rate).
- **compile_model**: ``torch.compile`` of the model's forward (eval mode) against eager:
  outputs within tolerance, compile time, speed-up.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from posebh.selfcheck.report import FAIL, PASS, Check

__all__ = ["compile_checks", "eval_checks", "golden_checks", "train_checks"]


def _no_tf32(device: str) -> Any:
    """IEEE fp32 on the device: the forward context of ``--precision fp32`` (TF32 off on CUDA)."""
    from posebh.evaluation.predict import inference_autocast

    return inference_autocast(device, "fp32")


def _tiny_golden(shared: Path) -> tuple[dict[str, Any], torch.nn.Module]:
    from posebh.checkpoint import load_model

    golden = torch.load(shared / "data/golden/official_tiny_model.pt", weights_only=True)
    model = load_model(golden["state_dict"], num_heads=golden["config"]["num_heads"]).eval()
    return golden, model


def golden_checks(device: str, shared: Path) -> Iterator[Check]:
    t0 = time.perf_counter()
    golden, model = _tiny_golden(shared)
    dev = torch.device(device)
    with torch.no_grad(), _no_tf32(device):
        out = model.to(dev)(golden["images"].to(dev), golden["dataset_idx"].to(dev))
    errs = {
        f"heatmaps[{d}]": float((out.heatmaps[d].cpu() - ref).abs().max())
        for d, ref in enumerate(golden["heatmaps"])
    }
    errs["embeddings"] = float((out.embeddings.cpu() - golden["embeddings"]).abs().max())
    worst = max(errs.values())
    yield Check(
        "golden", "official tiny model forward, fp32 without TF32", PASS if worst <= 1e-4 else FAIL,
        "max |Δ| ≤ 1e-4 against the official CPU outputs", {"max_abs_err": worst, **errs},
        seconds=time.perf_counter() - t0,
    )  # fmt: skip


def _coco_fixture(shared: Path):
    from posebh.datasets import DatasetSpec

    root = shared / "data/mmpose_testdata/coco"
    return DatasetSpec("coco", str(root / "test_coco.json"), str(root))


def _keypoints(records: list[dict[str, Any]]) -> torch.Tensor:
    return torch.tensor([r["keypoints"] for r in records], dtype=torch.float64).reshape(
        len(records), -1, 3
    )


def eval_checks(device: str, shared: Path) -> Iterator[Check]:
    from posebh.evaluate import evaluate

    _, model = _tiny_golden(shared)
    spec = _coco_fixture(shared)
    kw = dict(num_workers=0, progress=False, log=None)
    t0 = time.perf_counter()
    cpu = evaluate(model.to("cpu"), spec, device="cpu", **kw)
    cpu_s = time.perf_counter() - t0
    cpu_kpts = _keypoints(cpu.predictions)
    for precision in ("fp32", "bf16"):
        t0 = time.perf_counter()
        # predict runs fp32 without TF32 on CUDA itself (posebh.evaluation.predict).
        result = evaluate(model, spec, device=device, precision=precision, **kw)
        got = result.metrics
        deltas = {k: abs(float(got[k]) - float(v)) for k, v in cpu.metrics.items() if _number(v)}
        finite = all(math.isfinite(float(v)) for v in got.values() if _number(v))
        worst = max(deltas.values(), default=0.0)
        moved = (_keypoints(result.predictions)[..., :2] - cpu_kpts[..., :2]).norm(dim=-1)
        within = float((moved <= 0.5).double().mean())
        if precision == "fp32":
            ok = finite and worst <= 1e-3 and within >= 0.99
            rule = "every metric within 1e-3 of the CPU's; ≥ 99 % of keypoints within 0.5 px"
        else:
            ok, rule = finite, "finite metrics (deltas and keypoint shifts reported)"
        yield Check(
            "eval", f"COCO fixture {precision} on {device}", PASS if ok else FAIL, rule,
            {"AP": got.get("AP"), "cpu_AP": cpu.metrics.get("AP"), "max_metric_delta": worst,
             "keypoints_within_0.5px": within, "max_keypoint_shift_px": float(moved.max()),
             "cpu_seconds": cpu_s},
            seconds=time.perf_counter() - t0,
        )  # fmt: skip


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def train_checks(
    device: str, preset: str, batch: int, steps: int, precision: str, bf16_tflops: float | None
) -> Iterator[Check]:
    from posebh.training.throughput import measure_train_steps

    runs = {}
    for backend in ("auto", "torch"):
        t0 = time.perf_counter()
        r = measure_train_steps(
            preset=preset, batch=batch, steps=steps, device=device, precision=precision,
            prototype_backend=backend, seed=0,
        )  # fmt: skip
        runs[backend] = r
        finite = all(math.isfinite(x) for x in r["losses"])
        keys = ("images_per_s", "peak_memory_bytes", "flops_per_image", "similarity_backend")
        figures = {k: r[k] for k in keys}
        if bf16_tflops:
            # Model FLOPs (forward + backward, counted) over the bf16 matmul rate measured here.
            figures["MFU"] = r["flops_per_image"] * r["images_per_s"] / (bf16_tflops * 1e12)
        figures["loss_first_last"] = (r["losses"][0], r["losses"][-1])
        fused = backend == "auto"
        # On a GPU the fused path must really run a fused kernel, not fall back.
        ran = not fused or device == "cpu" or r["similarity_backend"] in ("triton", "cuda")
        label = "fused prototype path" if fused else "reference prototype path"
        yield Check("train", f"{preset} batch {batch} {precision}, {label}",
                    PASS if finite and ran else FAIL,
                    "finite losses; the fused path runs triton/cuda on a GPU", figures,
                    seconds=time.perf_counter() - t0)  # fmt: skip
    fused, ref = runs["auto"], runs["torch"]
    speed = fused["images_per_s"] / ref["images_per_s"]
    mem_f, mem_r = fused["peak_memory_bytes"], ref["peak_memory_bytes"]
    lower = mem_f is None or mem_r is None or mem_f < mem_r
    gpu = torch.device(device).type == "cuda"
    yield Check(
        "train", "fused vs reference prototype path",
        PASS if (speed >= 1.0 and lower) or not gpu else FAIL,
        "on a GPU: fused at least as fast, with lower peak memory",
        {"speed_ratio": speed, "peak_memory_fused": mem_f, "peak_memory_reference": mem_r},
        "" if gpu else "reported only: the target is a GPU one (toy sizes on the CPU here)",
    )  # fmt: skip


def compile_checks(device: str, preset: str, batch: int, **arch: Any) -> Iterator[Check]:
    """``arch``: :class:`~posebh.models.PoseBHConfig` overrides (toy sizes in smoke runs)."""
    from posebh.models import build_model

    t0 = time.perf_counter()
    torch.manual_seed(0)
    dev = torch.device(device)
    model = build_model(preset, **arch).eval().to(dev)
    h, w = model.config.img_size
    x = torch.randn(batch, 3, h, w, device=dev)
    route = torch.arange(batch, device=dev) % max(model.backbone.num_experts, 1)

    def heatmaps(fn) -> torch.Tensor:
        with torch.no_grad():
            out = fn(x, route)
        return torch.cat([m.flatten(1) for m in out.heatmaps], dim=1)

    def timed(fn) -> float:
        heatmaps(fn)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            heatmaps(fn)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / 5 * 1e3

    with _no_tf32(device):
        eager = heatmaps(model)
        compiled = torch.compile(model)
        c0 = time.perf_counter()
        got = heatmaps(compiled)
        compile_s = time.perf_counter() - c0
        eager_ms, compiled_ms = timed(model), timed(compiled)
    err = float((got - eager).abs().max())
    scale = float(eager.abs().max())
    ok = err <= 1e-4 * max(scale, 1.0)
    yield Check(
        "compile_model", f"torch.compile {preset} forward, batch {batch}", PASS if ok else FAIL,
        "max |compiled − eager| ≤ 1e-4·max(|eager|, 1)",
        {"max_abs_err": err, "compile_s": compile_s, "eager_ms": eager_ms,
         "compiled_ms": compiled_ms, "speedup": eager_ms / compiled_ms},
        seconds=time.perf_counter() - t0,
    )  # fmt: skip
