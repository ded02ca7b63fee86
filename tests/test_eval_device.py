"""The evaluation's device path: heatmaps decoded where the model put them, through the
posebh.ops dispatcher (no copy to the CPU first), the Triton decode through predict() under
the interpreter, and the opt-in autocast of the forward pass (``precision``).

The "before" reference is the path predict() ran until the maps stayed on the device: every
batch through the model, maps copied to the CPU, decoded there by posebh.ops — spelled out
below as a plain loop over the batches.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import posebh.ops as ops
from posebh.codecs import decoding_codec
from posebh.datasets import DatasetSpec, Instance, read_dataset
from posebh.evaluate import default_protocol, evaluate, predict
from posebh.evaluation.predict import inference_autocast
from posebh.models import build_model
from posebh.pipeline import TopDownDataset, multi_dataset_collate, per_dataset_pipeline
from posebh.skeletons import get_skeleton

REPO = Path(__file__).resolve().parents[1]
CHILD = os.environ.get("POSEBH_EVAL_TRITON_CHILD") == "1"
TINY = dict(
    embed_dim=32, depth=1, num_heads=2, part_features=8, head_filters=16,
    proto_channels=8, proto_dim=8, drop_path_rate=0.0,
)  # fmt: skip

interp_only = pytest.mark.skipif(
    not CHILD, reason="runs in the TRITON_INTERPRET=1 child of test_triton_decode_through_predict"
)
parent_only = pytest.mark.skipif(CHILD, reason="parent-process test")


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("posebh_vit_small", **TINY).eval()


@pytest.fixture(scope="module")
def coco_det(fixtures_dir: Path) -> tuple[DatasetSpec, list[Instance]]:
    """The COCO fixture's detection file: 33 boxes (score >= 0.3) over 4 images."""
    folder = fixtures_dir / "coco"
    spec = DatasetSpec(
        "coco", str(folder / "test_coco.json"), str(folder),
        det_file=str(folder / "test_coco_det_AP_H_56.json"), use_gt_bbox=False, det_bbox_thr=0.3,
    )  # fmt: skip
    instances, _ = read_dataset(spec)
    return spec, instances


def _as_json(predictions: list[dict[str, Any]]) -> bytes:
    """Every field, every array value and dtype, as bytes."""

    def field(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return {"dtype": str(v.dtype), "shape": list(v.shape), "values": v.tolist()}
        return v

    return json.dumps([{k: field(v) for k, v in sorted(p.items())} for p in predictions]).encode()


def _maps_copied_to_cpu_then_decoded(model, instances, batch_size: int) -> list[dict[str, Any]]:
    """The pre-device-path evaluation as a plain loop: per box crops, the model (with the flip
    test), both maps copied with .cpu(), decoded on the CPU by posebh.ops."""
    proto = default_protocol("coco")
    skeleton = get_skeleton("coco")
    pipe = per_dataset_pipeline("coco", train=False, max_num_joints=None, use_udp=proto.use_udp)
    data = TopDownDataset(instances, skeleton, pipe, dataset_idx=0)
    collate = partial(multi_dataset_collate, max_num_joints=None)
    codec = decoding_codec(proto.use_udp, proto.post_process, proto.kernel)
    out = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            batch = collate([data[i] for i in range(start, min(start + batch_size, len(data)))])
            img, route = batch["img"], batch["dataset_idx"]
            maps = model(img, route, heads=[0]).heatmaps[0].cpu()
            flipped = model(img.flip(3), route, heads=[0]).heatmaps[0].cpu()
            metas = batch["img_metas"]
            center = np.stack([m["center"] for m in metas]).astype(np.float32)
            scale = np.stack([m["scale"] for m in metas]).astype(np.float32)
            preds, maxvals = codec.decode(
                maps, center, scale, flipped=flipped, flip_indices=skeleton.flip_indices
            )
            preds, maxvals = preds.numpy(), maxvals.float().numpy()
            for i, m in enumerate(metas):
                out.append(
                    {
                        "keypoints": np.concatenate([preds[i], maxvals[i]], axis=1),
                        "center": center[i],
                        "scale": scale[i],
                        "area": float(np.prod(scale[i] * 200.0)),
                        "score": m["bbox_score"],
                        "image_id": m["image_id"],
                        "category_id": m["category_id"],
                        "index": m["index"],
                    }
                )
    return out


class _Spy:
    """Records every posebh.ops.decode_heatmaps call (maps' device, dtype, identity) and every
    Tensor.cpu() call, in order, while predict() runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, model: torch.nn.Module) -> None:
        self.events: list[tuple[str, Any]] = []
        self.outputs: list[int] = []
        real_decode, real_cpu = ops.decode_heatmaps, torch.Tensor.cpu

        def decode(heatmaps, center, scale, **kw):
            flipped = kw.get("flipped")
            self.events.append(("decode", (heatmaps, flipped, kw.get("backend"))))
            return real_decode(heatmaps, center, scale, **kw)

        def cpu(tensor, *args, **kwargs):
            self.events.append(("cpu", tensor))  # held: no id reuse, compared by identity
            return real_cpu(tensor, *args, **kwargs)

        monkeypatch.setattr(ops, "decode_heatmaps", decode)
        monkeypatch.setattr(torch.Tensor, "cpu", cpu)
        # The head's output: the maps exactly as the model returns them.
        head = model.heads[0]
        self.hook = head.register_forward_hook(lambda _m, _i, out: self.outputs.append(out))

    def model_maps(self) -> list[torch.Tensor]:
        return [o if isinstance(o, torch.Tensor) else o.heatmaps for o in self.outputs]


def test_predict_decodes_the_model_maps_in_place(coco_det, tiny_model, monkeypatch) -> None:
    """The dispatcher gets the model's own output tensors (same object, the model's device,
    float32): no .cpu() of a heatmap before its decode, only the keypoints come back."""
    _, instances = coco_det
    spy = _Spy(monkeypatch, tiny_model)
    try:
        got = predict(
            tiny_model, instances[:10], default_protocol("coco"), batch_size=4, num_workers=0,
            progress=False, decode_backend="cpp",
        )  # fmt: skip
    finally:
        spy.hook.remove()
    decodes = [e for e in spy.events if e[0] == "decode"]
    assert len(decodes) == 3 and len(got) == 10  # batches of 4, 4, 2
    maps = spy.model_maps()
    assert len(maps) == 6  # plain and flipped forward per batch
    device = next(tiny_model.parameters()).device
    moved = [e[1] for e in spy.events if e[0] == "cpu"]
    for b, (_, (heatmaps, flipped, backend)) in enumerate(decodes):
        assert backend == "cpp"
        assert heatmaps is maps[2 * b] and flipped is maps[2 * b + 1]
        assert heatmaps.device == flipped.device == device
        assert heatmaps.dtype == flipped.dtype == torch.float32
        assert not any(t is heatmaps or t is flipped for t in moved)
    # Each batch brings its preds and maxvals back: exactly two .cpu() per decode.
    assert sum(e[0] == "cpu" for e in spy.events) == 2 * len(decodes)


def test_fp32_predictions_are_the_copied_to_cpu_bytes(coco_det, tiny_model) -> None:
    """The default (fp32, decode on the model's device) gives the bytes of the old path that
    copied the maps to the CPU first (here the device is the CPU: same tensors, same op)."""
    _, instances = coco_det
    proto = default_protocol("coco")
    instances = instances[:13]
    want = _maps_copied_to_cpu_then_decoded(tiny_model, instances, 5)
    got = predict(tiny_model, instances, proto, batch_size=5, num_workers=0, progress=False)
    assert _as_json(got) == _as_json(want)
    explicit = predict(
        tiny_model, instances, proto, batch_size=5, num_workers=0, progress=False,
        precision="fp32", group_by_image=False,
    )  # fmt: skip
    assert _as_json(explicit) == _as_json(want)


# ------------------------------------------------------------------------------------------
# precision: autocast of the forward pass
# ------------------------------------------------------------------------------------------


def _dtype_hook(model: torch.nn.Module, seen: list[tuple[torch.dtype, bool]]):
    """Records the dtype of the first Linear's output and whether autocast was on."""
    linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    return linear.register_forward_hook(
        lambda _m, _i, out: seen.append((out.dtype, torch.is_autocast_enabled("cpu")))
    )


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_reduced_precision_runs_the_forward_in_that_dtype(
    coco_det, tiny_model, monkeypatch, precision: str, dtype: torch.dtype
) -> None:
    """Under --precision the network computes in bf16/fp16 (CPU autocast, torch >= 2.x has
    both); the decode still gets float32 maps, and the keypoints stay near the fp32 ones."""
    _, instances = coco_det
    seen: list[tuple[torch.dtype, bool]] = []
    handle = _dtype_hook(tiny_model, seen)
    decoded: list[torch.dtype] = []
    real = ops.decode_heatmaps

    def decode(heatmaps, center, scale, **kw):
        decoded.append(heatmaps.dtype)
        assert kw["flipped"].dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
        return real(heatmaps, center, scale, **kw)

    monkeypatch.setattr(ops, "decode_heatmaps", decode)
    proto = default_protocol("coco")
    try:
        low = predict(tiny_model, instances[:8], proto, progress=False, precision=precision)
        assert seen and all(s == (dtype, True) for s in seen)
        seen.clear()
        full = predict(tiny_model, instances[:8], proto, progress=False)
        assert seen and all(s == (torch.float32, False) for s in seen)
    finally:
        handle.remove()
    assert decoded == [torch.float32, torch.float32]
    a = np.stack([p["keypoints"] for p in low])
    b = np.stack([p["keypoints"] for p in full])
    assert np.isfinite(a).all() and a.dtype == np.float32
    assert not np.array_equal(a, b)  # a different arithmetic ran


def test_bf16_evaluation_of_the_coco_fixture(coco_det, tiny_model, tmp_path: Path) -> None:
    """A whole bf16 evaluation scores (finite metrics in range) and says how it ran."""
    spec, _ = coco_det
    result = evaluate(
        tiny_model, spec, batch_size=16, precision="bf16", out_dir=tmp_path, log=None,
        progress=False,
    )  # fmt: skip
    stats = [v for v in result.metrics.values() if isinstance(v, float)]
    assert len(stats) >= 10 and all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in stats)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["meta"]["precision"] == "bf16" and saved["meta"]["world_size"] == 1


def test_precision_errors_name_the_flag(tiny_model, coco_det, monkeypatch) -> None:
    _, instances = coco_det
    with pytest.raises(ValueError, match=r"precision must be one of .*--precision fp32\|bf16"):
        predict(tiny_model, instances[:1], default_protocol("coco"), precision="fp8")
    # A torch that cannot autocast to the dtype (it would warn and run fp32) is refused.
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *a: False)
    with pytest.raises(ValueError, match=r"--precision fp16: .* cannot autocast .* Fix"):
        inference_autocast("cpu", "fp16")


# ------------------------------------------------------------------------------------------
# Triton through predict(), under the interpreter
# ------------------------------------------------------------------------------------------


@parent_only
def test_triton_decode_through_predict() -> None:
    """Runs test_interp_triton_predictions_equal_cpp in a TRITON_INTERPRET=1 child (the
    interpreter must be on before Triton is imported)."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "POSEBH_EVAL_TRITON_CHILD": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-k", "interp", "-q", "-p", "no:cacheprovider"],
        env=env, capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert "1 passed" in run.stdout and " failed" not in run.stdout, run.stdout[-3000:]


@interp_only
def test_interp_triton_predictions_equal_cpp(coco_det, tiny_model) -> None:
    """decode_backend="triton" on the model's (CPU) maps, DARK-UDP with the flip test fused
    (COCO's protocol): the C++ op's and the NumPy reference's bytes."""
    _, instances = coco_det
    proto = default_protocol("coco")
    assert proto.use_udp and proto.flip_test
    run = partial(predict, tiny_model, instances[:6], proto, batch_size=3, progress=False)
    triton = run(decode_backend="triton")
    assert _as_json(triton) == _as_json(run(decode_backend="cpp"))
    assert _as_json(triton) == _as_json(run(decode_backend="torch"))


def test_cli_eval_precision_and_max_instances(fixtures_dir: Path, tmp_path: Path) -> None:
    """``posebh eval --precision bf16 --max-instances 4`` runs and records both."""
    from posebh.cli import main

    coco = fixtures_dir / "coco"
    overrides = [a for k, v in TINY.items() for a in ("--override", f"{k}={v}")]
    argv = [
        "eval", "--dataset", "coco", "--ann-file", str(coco / "test_coco.json"),
        "--preset", "posebh_vit_small", *overrides, "--precision", "bf16",
        "--max-instances", "4", "--workers", "0", "--no-progress", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    meta = json.loads((tmp_path / "metrics.json").read_text())["meta"]
    assert meta["precision"] == "bf16" and meta["instances"] == 4 and meta["world_size"] == 1
    with pytest.raises(SystemExit):
        main([*argv[:-1], str(tmp_path / "x"), "--precision", "fp8"])


def test_fp32_on_cuda_means_ieee_fp32_without_tf32() -> None:
    """cuDNN convolutions default to TF32 (~1e-3 error): the fp32 context turns TF32 off for
    the forward pass and restores the user's setting after, every time it is entered."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        context = inference_autocast("cuda", "fp32")
        for _ in range(2):  # predict enters it once per batch
            with context:
                assert not torch.backends.cudnn.allow_tf32
                assert not torch.backends.cuda.matmul.allow_tf32
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
