"""Top-down inference of the evaluation: instances → crops → model (+ flip test) → decode.

Shape vocabulary: N instances (boxes), K keypoints of the evaluated skeleton, H×W heatmap.

:func:`predict` runs the network on the model's device and decodes there too, through the
:mod:`posebh.ops` dispatcher (the C++ op on CPU, Triton on CUDA); only the keypoints come back
to the CPU.  ``precision="bf16"|"fp16"`` runs the forward pass (not the decode) under
``torch.autocast``; the default ``"fp32"`` is the exact path.  :mod:`posebh.evaluate` re-exports
everything here; :func:`posebh.evaluate.evaluate` is the entry point.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from posebh.codecs import decoding_codec
from posebh.datasets import Instance
from posebh.pipeline import (
    ImageRunDataset,
    TopDownDataset,
    multi_dataset_collate,
    per_dataset_pipeline,
)
from posebh.protocol import DatasetProtocol, get_protocol

__all__ = [
    "MAX_AUTO_WORKERS",
    "PRECISIONS",
    "EvalProtocol",
    "default_num_workers",
    "default_protocol",
    "inference_autocast",
    "predict",
]


@dataclass(frozen=True)
class EvalProtocol:
    """The settings one evaluation runs with (defaults: the official per-dataset configs)."""

    dataset: str
    flip_test: bool = True
    shift_heatmap: bool = False
    post_process: str | None = "default"
    use_udp: bool = True
    kernel: int = 11
    vis_thr: float = 0.2
    oks_thr: float = 0.9
    soft_nms: bool = False
    use_nms: bool = True
    use_area: bool = True
    metric: str = "oks"
    source: str = ""


def default_protocol(dataset: str | int | DatasetProtocol, **overrides: Any) -> EvalProtocol:
    """The official evaluation protocol of ``dataset`` (its :mod:`posebh.protocol` record:
    PROTOCOL.md §6), fields overridable."""
    record = get_protocol(dataset)
    d = record.decode
    proto = EvalProtocol(
        dataset=record.name,
        flip_test=d.flip_test,
        shift_heatmap=d.shift_heatmap,
        post_process=d.post_process,
        use_udp=d.use_udp,
        kernel=d.kernel,
        use_area=record.use_area,
        metric=record.metric,
        source=d.source,
    )
    return dataclasses.replace(proto, **overrides) if overrides else proto


# ------------------------------------------------------------------------------------------
# Inference
# ------------------------------------------------------------------------------------------


def _choose_head(model: torch.nn.Module, record: DatasetProtocol, head: int | None) -> int:
    heads = model.heads
    if head is None:
        if len(heads) == 1:
            head = 0
        else:
            head = record.eval_head
            if head is None:
                raise ValueError(
                    f"{record.name} is not one of this {len(heads)}-head model's training "
                    "datasets; pass head=... (and expert=...)"
                )
    if not 0 <= head < len(heads):
        raise ValueError(f"head {head} out of range for a model with {len(heads)} heads")
    k = record.skeleton.num_keypoints
    if heads[head].num_keypoints != k:
        raise ValueError(
            f"head {head} predicts {heads[head].num_keypoints} keypoints; {record.name} has {k}"
        )
    return head


#: The most DataLoader workers the automatic choice starts (decode + crop per box is about a
#: millisecond, so a few cores keep a GPU fed; more mostly add start-up time and memory).
MAX_AUTO_WORKERS = 8


def default_num_workers() -> int:
    """DataLoader workers for evaluation: one per core this process may run on, at most
    :data:`MAX_AUTO_WORKERS`; 0 (in-process) on a single core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return 0 if cores <= 1 else min(cores, MAX_AUTO_WORKERS)


def _single_threaded_worker(worker_id: int) -> None:
    # Workers run one crop at a time; intra-op threads in every worker would oversubscribe
    # the cores (PyTorch sets this too; said here so it holds whatever the loader version).
    torch.set_num_threads(1)


def _as_is(item: Any) -> Any:
    return item


def _batches(
    data: TopDownDataset,
    batch_size: int,
    num_workers: int,
    group_by_image: bool,
    pin_memory: bool,
) -> Iterator[dict[str, Any]]:
    """Collated batches of ``batch_size`` consecutive instances of ``data`` (the last one
    shorter): the batches of ``DataLoader(data, batch_size)``, whatever ``group_by_image``.

    ``group_by_image`` loads one run of same-image instances per item (the image decoded
    once, :class:`ImageRunDataset`) and cuts the sample stream into those same batches, so
    the network sees the same batches, and the predictions are the same bits, as per box.
    """
    collate = functools.partial(multi_dataset_collate, max_num_joints=None)
    common: dict[str, Any] = {
        "shuffle": False,
        "num_workers": num_workers,
        "worker_init_fn": _single_threaded_worker if num_workers else None,
    }
    if not group_by_image:
        loader = DataLoader(
            data, batch_size=batch_size, collate_fn=collate, pin_memory=pin_memory, **common
        )
        yield from loader
        return
    runs = ImageRunDataset(data)
    if num_workers:
        common["num_workers"] = min(num_workers, len(runs))
    # batch_size=None: each item (one image's samples) comes through as is; the batches are
    # cut here, and pinned after collation (pinning per-sample tensors would be lost there).
    loader = DataLoader(runs, batch_size=None, collate_fn=_as_is, **common)
    pending: list[dict[str, Any]] = []
    for samples in loader:
        pending.extend(samples)
        while len(pending) >= batch_size:
            chunk, pending = pending[:batch_size], pending[batch_size:]
            yield _collate_pinned(collate, chunk, pin_memory)
    if pending:
        yield _collate_pinned(collate, pending, pin_memory)


def _collate_pinned(
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]],
    samples: list[dict[str, Any]],
    pin_memory: bool,
) -> dict[str, Any]:
    batch = collate(samples)
    if pin_memory:
        batch["img"] = batch["img"].pin_memory()
    return batch


#: ``--precision`` → the autocast dtype of the forward pass (None: no autocast, exact fp32).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


class _IeeeFp32:
    """fp32 convolutions and matmuls without TF32 on CUDA (cuDNN's convolutions use TF32 by
    default, ~1e-3 relative error): ``--precision fp32`` means IEEE fp32, the CPU's values up
    to summation order. Re-enterable, like the autocast context it stands in for."""

    def __enter__(self) -> None:
        self._saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc: object) -> None:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self._saved


def inference_autocast(
    device: str | torch.device, precision: str = "fp32"
) -> contextlib.AbstractContextManager[Any]:
    """The context the model's forward pass runs in: for ``"fp32"`` nothing on the CPU and
    TF32 off on CUDA (:class:`_IeeeFp32`), else
    ``torch.autocast(device type, bf16 | fp16)``.  Raises ValueError (naming the flag) for an
    unknown precision or one this torch cannot autocast on that device (torch falls back to
    fp32 with a warning there; an evaluation that says "bf16" must not silently run fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {sorted(PRECISIONS)}, got {precision!r} "
            "(posebh eval --precision fp32|bf16|fp16)"
        )
    dtype = PRECISIONS[precision]
    kind = torch.device(device).type
    if dtype is None:
        return _IeeeFp32() if kind == "cuda" else contextlib.nullcontext()
    if not torch.amp.is_autocast_available(kind):
        raise ValueError(f"--precision {precision}: torch has no autocast for {kind} tensors")
    context = torch.autocast(kind, dtype=dtype)
    with context:
        enabled = torch.is_autocast_enabled(kind)
    if not enabled:
        raise ValueError(
            f"--precision {precision}: torch {torch.__version__} cannot autocast to {dtype} on "
            f"{kind}. Fix: use --precision fp32 (or bf16), or evaluate on a GPU."
        )
    return torch.autocast(kind, dtype=dtype)


@torch.inference_mode()
def predict(
    model: torch.nn.Module | None,
    instances: Sequence[Instance],
    protocol: EvalProtocol,
    *,
    head: int | None = None,
    expert: int | None = None,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    progress: bool = True,
    decode_backend: str = "auto",
    heatmap_oracle: bool = False,
    group_by_image: bool = True,
    precision: str = "fp32",
) -> list[dict[str, Any]]:
    """Keypoints of every instance: ``[{"keypoints": [K, 3] (x, y, score), "center",
    "scale", "area", "score" (box score), "image_id", "category_id", "index"}]``.

    ``heatmap_oracle=True`` (``model=None``) replaces the network's heatmaps by the target
    heatmaps the evaluation crop's ground truth encodes to (the dataset's val encoding, at
    the default 256×192 input), and decodes them exactly as model output, without the flip
    test (a flipped oracle map would need the flipped crop's targets).  It checks the whole
    crop → encode → decode → image-coordinates → metric chain without a trained model: a
    correct chain scores close to the maximum, a broken decode does not.

    Loading: ``group_by_image`` (default) decodes each image once for all its consecutive
    boxes; ``False`` decodes per box (the reference path; same predictions, bit for bit).
    ``num_workers``: DataLoader worker processes, ``None`` = :func:`default_num_workers`,
    0 = in-process; evaluation draws nothing at random, so the count changes no value.
    Batches are pinned when the model is on CUDA.

    Device: the heatmaps stay on the model's device and are decoded there
    (``decode_backend="auto"``: the C++ op on CPU, Triton, else the CUDA op, on CUDA); only
    ``preds``/``maxvals`` come back.  ``precision`` (:data:`PRECISIONS`): ``"bf16"``/``"fp16"``
    run the forward passes under ``torch.autocast``; their half-precision maps are widened to
    float32 before the decode (each map exactly; the flip merge then adds no rounding of its
    own), so the decode itself is the fp32 one.
    """
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 (or None for automatic), got {num_workers}")
    workers = default_num_workers() if num_workers is None else int(num_workers)
    record = get_protocol(protocol.dataset)
    skeleton = record.skeleton
    size: dict[str, Any] = {}
    if heatmap_oracle:
        if model is not None:
            raise ValueError("heatmap_oracle=True replaces the model: pass model=None")
        protocol = dataclasses.replace(protocol, flip_test=False)
        expert = 0
        device = "cpu"
    else:
        if model is None:
            raise ValueError("predict() needs a model unless heatmap_oracle=True")
        head = _choose_head(model, record, head)
        if expert is None:
            expert = head
        has_experts = getattr(model.backbone, "num_experts", 0) > 0
        device = torch.device(device) if device is not None else next(model.parameters()).device
        model = model.eval().to(device)
        cfg = getattr(model, "config", None)
        if cfg is not None and hasattr(cfg, "img_size"):
            # Crop at the model's input size (the pipeline speaks (w, h), the config (h, w)).
            (h, w), (hh, hw) = cfg.img_size, cfg.heatmap_size
            size = {"image_size": (w, h), "heatmap_size": (hw, hh)}
    autocast = inference_autocast(device, precision)
    pipeline = per_dataset_pipeline(
        record,
        train=False,
        max_num_joints=None,
        use_udp=protocol.use_udp,
        with_target=heatmap_oracle,
        **size,
    )
    codec = decoding_codec(protocol.use_udp, protocol.post_process, protocol.kernel)
    data = TopDownDataset(instances, skeleton, pipeline, dataset_idx=expert)
    pin = not heatmap_oracle and torch.device(device).type == "cuda"
    batches = _batches(data, batch_size, workers, group_by_image, pin)
    out: list[dict[str, Any]] = []
    bar = tqdm(total=len(data), desc=f"eval {protocol.dataset}", unit="box", disable=not progress)
    for batch in batches:
        flipped = None
        if heatmap_oracle:
            heatmaps = batch["target"]
        else:
            images = batch["img"].to(device, non_blocking=pin)
            route = batch["dataset_idx"].to(device) if has_experts else None
            with autocast:
                heatmaps = model(images, route, heads=[head]).heatmaps[head]
                if protocol.flip_test:
                    flipped = model(images.flip(3), route, heads=[head]).heatmaps[head]
            # fp32 maps pass through untouched (.float() of float32 is the tensor itself).
            heatmaps = heatmaps.float()
            flipped = None if flipped is None else flipped.float()
        metas = batch["img_metas"]
        center = np.stack([m["center"] for m in metas]).astype(np.float32)
        scale = np.stack([m["scale"] for m in metas]).astype(np.float32)
        # Decoded where the maps are (the dispatcher picks the backend for their device; the
        # fused op merges the flipped maps: flip_back, shift, average); center/scale go as
        # CPU tensors, which every backend takes. "torch" selects the NumPy reference.
        preds, maxvals = codec.decode(
            heatmaps,
            center,
            scale,
            flipped=flipped,
            flip_indices=skeleton.flip_indices,
            shift=protocol.shift_heatmap,
            backend=decode_backend,
        )
        preds, maxvals = preds.cpu().numpy(), maxvals.cpu().float().numpy()
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
        bar.update(len(metas))
    bar.close()
    return out
