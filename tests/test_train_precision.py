"""Mixed precision and device paths of training on the CPU: the precision rules, bf16
autocast training of the tiny preset against float32, the prototype-backend switch
(fused vs reference training) and :func:`posebh.training.throughput.measure_train_steps`.

The float32 run of the same preset, seed and batch is the reference of the bf16 run; the
``prototype_backend="torch"`` run (the reference similarity) that of the fused one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

from posebh import ops
from posebh.training import TrainConfigError, apply_overrides, get_preset
from posebh.training import throughput as tp
from posebh.training.precision import autocast_dtype, grad_scaler

PRESET = "posebh_tiny_synth"
BATCH = 4
#: bf16's unit roundoff: 8 significant bits.
BF16_U = 2.0**-8


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tp.write_fake_coco(tmp_path_factory.mktemp("precision_data"), images=2)


def test_precision_rules() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("fp32", cuda) is None
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    assert autocast_dtype("bf16", cuda) == torch.bfloat16
    assert autocast_dtype("fp16", cuda) == torch.float16
    with pytest.raises(TrainConfigError, match=r"needs a CUDA device.*precision=bf16"):
        autocast_dtype("fp16", cpu)
    if torch.cuda.is_available():  # a GradScaler disables itself (with a warning) without CUDA
        assert grad_scaler(torch.float16, 1024.0).is_enabled()
    assert not grad_scaler(torch.bfloat16, 1024.0).is_enabled()
    assert not grad_scaler(None, 1024.0).is_enabled()


def test_config_prototype_backend_field() -> None:
    config = apply_overrides(get_preset(PRESET), ["prototype_backend=torch"])
    assert config.prototype_backend == "torch"
    assert get_preset(PRESET).prototype_backend == "auto"
    with pytest.raises(TrainConfigError, match="prototype_backend must be one of"):
        apply_overrides(get_preset(PRESET), ["prototype_backend=mkl"])


def test_trainer_refuses_fp16_on_cpu(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match=r"precision 'fp16'.*--set precision=bf16"):
        tp.build_trainer(PRESET, BATCH, data_root, tmp_path, device="cpu", precision="fp16")


def _run(data_root: Path, work: Path, steps: int, **sets):
    """``steps`` optimizer steps of the tiny preset (heaviest stage) on one fixed batch:
    (trainer, the logs of each step, what the model returned at each step)."""
    trainer = tp.build_trainer(PRESET, BATCH, data_root, work, device="cpu", **sets)
    tp.enter_stage(trainer, "heaviest")
    data = tp.synthetic_batch(trainer, BATCH)
    outputs = []
    hook = trainer.model.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    try:
        logs = [trainer.train_step(data) for _ in range(steps)]
    finally:
        hook.remove()
    return trainer, logs, outputs


def test_bf16_autocast_training_on_cpu(data_root: Path, tmp_path: Path) -> None:
    """Three bf16 steps of the tiny preset: autocast engaged (the heads' heatmaps and the
    embeddings come out in bf16), finite decreasing losses, moving parameters, and within
    bf16's rounding of the float32 run.

    Bounds: the first forward (same weights, same batch) of the bf16 run is the float32
    one with every matrix product's inputs rounded to bf16 (relative error ≤ u = 2^-8 each);
    the errors of a few such layers add up to a few u: ≤ 8u = 3.1 % relative (measured
    0.7 % on the heatmaps, 1.2 % on the embeddings). The losses are dominated by the
    targets (the predictions are ~100× smaller at initialisation), so they move far less:
    within 1e-3 relative (measured 2e-6 at the first step, 7e-6 at the third). Adam
    normalises the gradients, so parameter updates are compared by direction (cosine ≥ 0.95,
    measured 0.99).
    """
    runs = {}
    for precision in ("fp32", "bf16"):
        trainer, logs, outputs = _run(data_root, tmp_path / precision, 3, precision=precision)
        params = [p.detach().clone() for p in trainer.model.parameters()]
        runs[precision] = (trainer, logs, outputs, params)
    (_, logs32, out32, p32), (t16, logs16, out16, p16) = runs["fp32"], runs["bf16"]
    assert t16.use_amp and t16.amp_dtype == torch.bfloat16 and not t16.scaler.is_enabled()
    assert {h.dtype for h in out16[0].heatmaps} == {torch.bfloat16}
    assert out16[0].embeddings.dtype == torch.bfloat16
    assert {h.dtype for h in out32[0].heatmaps} == {torch.float32}

    for a, b in zip(out32[0].heatmaps, out16[0].heatmaps, strict=True):
        assert ((b.float() - a).norm() / a.norm()).item() <= 8 * BF16_U
    e32, e16 = out32[0].embeddings, out16[0].embeddings.float()
    assert ((e16 - e32).norm() / e32.norm()).item() <= 8 * BF16_U

    loss16 = [float(step["loss"]) for step in logs16]
    loss32 = [float(step["loss"]) for step in logs32]
    assert all(torch.isfinite(torch.tensor(loss16)))
    assert loss16[0] > loss16[1] > loss16[2]  # one fixed batch: the loss goes down
    for a, b in zip(loss32, loss16, strict=True):
        assert abs(a - b) <= 1e-3 * a

    fresh = tp.build_trainer(PRESET, BATCH, data_root, tmp_path / "init", device="cpu")
    p0 = [p.detach() for p in fresh.model.parameters()]
    d32 = torch.cat([(a - b).flatten() for a, b in zip(p32, p0, strict=True)])
    d16 = torch.cat([(a - b).flatten() for a, b in zip(p16, p0, strict=True)])
    assert d16.norm() > 0
    assert torch.nn.functional.cosine_similarity(d16, d32, dim=0) >= 0.95


def test_fused_and_reference_prototype_training_agree(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The training switch: prototype_backend "auto" (the C++ kernels on CPU) and "torch"
    (the reference) on the same seed and batch. The first forward is bit for bit the same
    (the fused forward reproduces the reference for F = 32); the fused backward rounds
    differently, so later steps agree to rounding."""
    calls = {"prototype_logits": 0, "prototype_similarity": 0}
    for name in calls:
        cpp = ops.get_op(name).backends["cpp"]

        def counted(*args, _name=name, _fn=cpp.fn, **kw):
            calls[_name] += 1
            return _fn(*args, **kw)

        monkeypatch.setitem(ops.get_op(name).backends, "cpp", dataclasses.replace(cpp, fn=counted))
    fused, logs_f, _ = _run(data_root, tmp_path / "fused", 2, prototype_backend="auto")
    assert calls["prototype_logits"] > 0 and calls["prototype_similarity"] > 0
    seen = dict(calls)
    ref, logs_r, _ = _run(data_root, tmp_path / "ref", 2, prototype_backend="torch")
    assert calls == seen  # the reference run never reaches the kernels
    protos = [fused.model.keypoint_prototypes, fused.model.cluster_prototypes]
    assert all(p.logits_backend == "auto" and p.heatmap_backend == "auto" for p in protos)
    banks = [ref.model.keypoint_prototypes, ref.model.cluster_prototypes]
    assert all(p.logits_backend == "torch" and p.heatmap_backend == "torch" for p in banks)
    for key in ("loss", "proto", "proto_heatmap", "ppc", "ppd", "cps"):
        assert torch.equal(logs_f[0][key], logs_r[0][key]), key
    torch.testing.assert_close(logs_f[1]["loss"], logs_r[1]["loss"], rtol=1e-5, atol=0)
    for a, b in zip(fused.model.parameters(), ref.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_measure_train_steps_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two steps of the tiny preset: the record's fields, and that counting the FLOPs
    (one extra forward + backward) leaves the run as it was (same losses bit for bit)."""
    monkeypatch.setattr(tp, "_FLOPS_CACHE", {})
    plain = tp.measure_train_steps(PRESET, 2, 2, "cpu", flops=False)
    counted = tp.measure_train_steps(PRESET, 2, 2, "cpu")
    assert plain["losses"] == counted["losses"] and len(plain["losses"]) == 3  # warm-up + 2
    assert counted["finite"] and counted["images_per_s"] > 0 and len(counted["step_ms"]) == 2
    assert counted["similarity_backend"] == "cpp" and counted["peak_memory_bytes"] is None
    assert counted["peak_rss_bytes"] > 0
    assert counted["flops_per_image"] > 0
    assert counted["flops_per_s"] == pytest.approx(
        counted["flops_per_image"] * counted["images_per_s"]
    )
    assert plain["flops_per_image"] is None


def test_flops_per_image_counts_forward_and_backward(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count covers the backward: every linear layer of a trainable model costs its
    forward 2·rows·in·out again for the input gradient and again for the weight gradient,
    so the total is at least 3× the linear layers' forward (convolutions, attention products
    and the losses come on top). Counted once per preset and stage."""
    monkeypatch.setattr(tp, "_FLOPS_CACHE", {})
    trainer = tp.build_trainer(PRESET, BATCH, data_root, tmp_path, device="cpu")
    tp.enter_stage(trainer, "heaviest")
    data = tp.synthetic_batch(trainer, BATCH)
    linear: list[int] = []

    def record(module: nn.Linear, inputs: tuple[torch.Tensor, ...], _out: object) -> None:
        rows = inputs[0].numel() // module.in_features
        linear.append(2 * rows * module.in_features * module.out_features)

    layers = [m for m in trainer.model.modules() if isinstance(m, nn.Linear)]
    hooks = [m.register_forward_hook(record) for m in layers]
    flops = tp.count_flops_per_image(trainer, data, "heaviest")
    assert linear  # (at batch 1 only the image's own expert and head run)
    assert 3 * sum(linear) <= flops
    count = len(linear)
    assert tp.count_flops_per_image(trainer, data, "heaviest") == flops
    assert len(linear) == count  # cached: no second pass
    for h in hooks:
        h.remove()
