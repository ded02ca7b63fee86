"""ONNX export of one dataset's model (``posebh export``), checked against PyTorch in ONNX Runtime.

The exported graph takes ``images`` [B, 3, H, W] — crops already normalised as the evaluation
pipeline does, ``(pixel / 255 − mean) / std`` per RGB channel with the ImageNet
:data:`IMAGENET_MEAN` / :data:`IMAGENET_STD` — and returns ``heatmaps`` [B, K, h, w]
(h, w = H/4, W/4 for the classic decoder).  With ``with_decode`` it also returns
``keypoints`` [B, K, 2] (x = column, y = row of each heatmap's maximum, heatmap-grid
coordinates, the first maximum on ties) and ``scores`` [B, K] (that maximum): a plain
arg-max, without the harness's sub-pixel refinement and box transform.  The batch axis is
dynamic.

A multi-dataset checkpoint is cut for ``dataset`` (its expert merged, its head, the
prototype head dropped: it does not contribute to the heatmaps).  The exporter is
``torch.onnx.export(dynamo=True)`` where it works (it needs the ``onnxscript`` package), else
the TorchScript exporter (``dynamo=False``); which one is written into the file's
``metadata_props`` (``posebh.exporter``).
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from posebh.checkpoint import CheckpointError, load_model, read_checkpoint
from posebh.models import PoseBH
from posebh.skeletons import get_skeleton
from posebh.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "ExportReport",
    "HeatmapModel",
    "argmax_decode",
    "export_onnx",
    "load_for_export",
]

# The acceptance bound of the self-check: ONNX Runtime vs PyTorch heatmaps, max |Δ|.
FP32_TOLERANCE = 1e-4
# fp16 keeps ~3 significant digits: the bound is 1 % of the heatmaps' peak (at least of 1.0),
# a few fp16 ulps there (ulp at 1.0: 2^-10 ≈ 1e-3) accumulated over the network.
FP16_TOLERANCE = 1e-2
CHECK_BATCH_SIZES = (1, 3)


def argmax_decode(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """keypoints [B, K, 2] (x, y of each heatmap's maximum; first on ties) and scores [B, K]."""
    b, k, _, w = heatmaps.shape
    scores, index = heatmaps.reshape(b, k, -1).max(dim=-1)
    x = index % w
    y = torch.div(index, w, rounding_mode="floor")
    return torch.stack((x, y), dim=-1).to(heatmaps.dtype), scores


class HeatmapModel(nn.Module):
    """The plain-ViT backbone and one heatmap head of a :class:`PoseBH` as an
    ``images → heatmaps`` module, optionally with :func:`argmax_decode`; the prototype head
    is left out."""

    def __init__(self, model: PoseBH, head: int = 0, with_decode: bool = False) -> None:
        super().__init__()
        if model.config.num_experts:
            raise ValueError("export a single-dataset model (load_for_export cuts one)")
        self.backbone = model.backbone
        self.head = model.heads[head]
        self.with_decode = with_decode

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        heatmaps = self.head(self.backbone(images, None))
        if not self.with_decode:
            return heatmaps
        return (heatmaps, *argmax_decode(heatmaps))


def _has_experts(state: Any) -> bool:
    keys = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else {}
    return any(".mlp.experts." in k for k in keys)


def load_for_export(
    checkpoint: str | os.PathLike, dataset: str, num_heads: int | None = None
) -> PoseBH:
    """The single-head model of ``dataset`` in ``checkpoint`` (a multi-dataset file is cut
    for that dataset; a single-dataset file must have one head of the dataset's keypoint
    count).  Errors name the flag that fixes them."""
    try:
        keypoints = get_skeleton(dataset).num_keypoints
    except KeyError as err:
        raise ValueError(f"--dataset {dataset!r}: {err.args[0]}") from None
    arch = {} if num_heads is None else {"num_heads": num_heads}
    try:
        if Path(checkpoint).is_file() and Path(checkpoint).suffix != ".safetensors":
            state = read_checkpoint(checkpoint)
            model = load_model(state, dataset=dataset if _has_experts(state) else None, **arch)
        else:  # whatever else load_model reads (.safetensors, a model folder), as it reads it
            try:
                model = load_model(checkpoint, dataset=dataset, **arch)
            except CheckpointError as err:
                if "cannot split" not in str(err):
                    raise
                model = load_model(checkpoint, **arch)  # already a single-dataset model
    except CheckpointError as err:
        if "num_heads" in str(err) and num_heads is None:
            raise CheckpointError(
                f"{checkpoint}: {err} — for `posebh export`, pass --num-heads N "
                "(the attention heads of this non-preset width)"
            ) from None
        raise
    if len(model.heads) != 1:
        raise ValueError(
            f"{checkpoint}: {len(model.heads)} heatmap heads but no experts to pick one by "
            f"--dataset; split it first (posebh convert {checkpoint} OUT.pth --split DATASET)"
        )
    k = model.config.num_keypoints[0]
    if k != keypoints:
        raise ValueError(
            f"{checkpoint}: its head predicts {k} keypoints, --dataset {dataset!r} has "
            f"{keypoints}; pass the dataset this checkpoint was trained on"
        )
    return model


@dataclass
class ExportReport:
    """What :func:`export_onnx` did: the exporter, the self-check and the costs."""

    path: Path
    exporter: str
    precision: str
    # Per checked batch size: the bound max_abs_diff had to meet.
    tolerance: dict[int, float]
    max_abs_diff: dict[int, float] = field(default_factory=dict)
    file_bytes: int = 0
    export_seconds: float = 0.0
    fallback_reason: str | None = None
    opset: int = 0

    def lines(self) -> list[str]:
        out = [
            f"wrote {self.path} ({self.file_bytes / 2**20:.2f} MiB) in {self.export_seconds:.1f} s"
        ]
        out.append(
            f"exporter: {self.exporter}, opset {self.opset}"
            + (f" ({self.fallback_reason})" if self.fallback_reason else "")
        )
        for b, d in self.max_abs_diff.items():
            out.append(
                f"batch {b}: heatmaps max |Δ| vs PyTorch = {d:.3g} "
                f"(≤ {self.tolerance[b]:.3g}, {self.precision})"
            )
        return out


# torch 2.13's dynamo exporter writes opset 18 and up; asked for less, it converts down with
# onnx's version converter, which fails on this model's nodes whose axes became an input in
# opset 18 ("No initializer or constant input to node found") and keeps 18.
DYNAMO_MIN_OPSET = 18


def _export_dynamo(
    module: nn.Module, example: Tensor, path: Path, names: list[str], opset: int
) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(
        module, (example,), None, input_names=["images"], output_names=names,
        dynamic_shapes=({0: batch},), opset_version=max(opset, DYNAMO_MIN_OPSET), dynamo=True,
        verbose=False,
    )  # fmt: skip
    program.save(str(path))


def _export_torchscript(
    module: nn.Module, example: Tensor, path: Path, names: list[str], opset: int
) -> None:
    axes = {n: {0: "batch"} for n in ["images", *names]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice
        torch.onnx.export(
            module, (example,), str(path), input_names=["images"], output_names=names,
            dynamic_axes=axes, opset_version=opset, dynamo=False,
        )  # fmt: skip


def _add_metadata(path: Path, props: dict[str, str]) -> int:
    """Write ``props`` into the file's metadata_props; its default-domain opset."""
    import onnx

    proto = onnx.load(str(path))
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _self_check(
    module: nn.Module, path: Path, shape: tuple[int, int], dtype: torch.dtype, seed: int
) -> tuple[dict[int, float], dict[int, float]]:
    """Max |Δ| of the heatmaps (ONNX Runtime vs ``module``) and max |heatmap| per batch size."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    diffs: dict[int, float] = {}
    peaks: dict[int, float] = {}
    for b in CHECK_BATCH_SIZES:
        images = torch.randn(b, 3, *shape, generator=gen).to(dtype)
        with torch.no_grad():
            ref = module(images)
        ref = ref[0] if isinstance(ref, tuple) else ref
        got = session.run(["heatmaps"], {"images": images.numpy()})[0]
        if got.shape != tuple(ref.shape):
            raise ValueError(
                f"{path}: ONNX heatmaps {got.shape} at batch {b}, PyTorch {tuple(ref.shape)}"
            )
        want = ref.double().numpy()
        diffs[b] = float(np.abs(got.astype(np.float64) - want).max())
        peaks[b] = float(np.abs(want).max())
    return diffs, peaks


def export_onnx(
    model: PoseBH,
    path: str | os.PathLike,
    *,
    opset: int = 17,
    fp16: bool = False,
    with_decode: bool = False,
    exporter: str = "auto",
    seed: int = 0,
) -> ExportReport:
    """Export ``model``'s single head to ``path`` and check the file in ONNX Runtime (CPU) on
    random inputs of batch 1 and 3 (the export's example has batch 2): raises ``ValueError``
    when the heatmaps differ from PyTorch by more than :data:`FP32_TOLERANCE` (fp32) or, with
    ``fp16``, :data:`FP16_TOLERANCE` × max(1, peak |heatmap|) (PyTorch's own half-precision CPU
    forward as the reference).  ``exporter``: ``auto`` (dynamo, else TorchScript), ``dynamo`` or
    ``torchscript``."""
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if fp16 else torch.float32
    module = HeatmapModel(model, with_decode=with_decode).eval().to(dtype)
    names = ["heatmaps", "keypoints", "scores"] if with_decode else ["heatmaps"]
    h, w = model.config.img_size
    example = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed)).to(dtype)
    start = time.perf_counter()
    used, reason = exporter, None
    if exporter == "auto":
        used = "dynamo"
        if importlib.util.find_spec("onnxscript") is None:
            used, reason = "torchscript", "dynamo=True needs onnxscript, not installed"
    if used == "dynamo":
        try:
            _export_dynamo(module, example, path, names, opset)
        except Exception as err:  # any dynamo failure falls back to TorchScript under auto
            if exporter == "dynamo":
                raise
            used, reason = "torchscript", f"dynamo=True failed: {type(err).__name__}: {err}"[:200]
    if used == "torchscript":
        _export_torchscript(module, example, path, names, opset)
    label = (
        "torch.onnx.export(dynamo=True)"
        if used == "dynamo"
        else "torch.onnx.export(dynamo=False) (TorchScript)"
    )
    written = _add_metadata(path, {
        "posebh.exporter": label,
        "posebh.torch": torch.__version__,
        "posebh.precision": "fp16" if fp16 else "fp32",
        "posebh.input_normalisation":
            f"(pixel/255 - mean)/std, RGB, mean={IMAGENET_MEAN}, std={IMAGENET_STD}",
        "posebh.keypoints": "heatmap-grid (x, y) of each heatmap's arg-max" if with_decode else "",
    })  # fmt: skip
    seconds = time.perf_counter() - start
    diffs, peaks = _self_check(module, path, (h, w), dtype, seed + 1)
    tolerance = {
        b: FP16_TOLERANCE * max(1.0, peak) if fp16 else FP32_TOLERANCE for b, peak in peaks.items()
    }
    precision = "fp16" if fp16 else "fp32"
    size = path.stat().st_size
    if written != opset and reason is None:
        reason = f"--opset {opset} asked; dynamo=True writes ≥ {DYNAMO_MIN_OPSET}"
    report = ExportReport(path, label, precision, tolerance, diffs, size, seconds, reason, written)
    bad = [b for b, d in diffs.items() if not d <= tolerance[b]]
    if bad:
        raise ValueError(
            f"{path}: ONNX Runtime heatmaps differ from PyTorch by "
            + ", ".join(f"{diffs[b]:.3g} (> {tolerance[b]:.3g}) at batch {b}" for b in bad)
            + "; the file is kept for inspection — try another --opset or --exporter"
        )
    return report
