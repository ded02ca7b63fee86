"""Evaluation on several ranks (``torchrun --nproc_per_node N -m posebh.cli eval ...``).

Every rank reads the same instances; rank ``r`` predicts one contiguous shard of them, and rank
0 gathers the shards in rank order, which alone scores and writes.  The result is a single
process's, bit for bit:

* the shards are whole batches of the single-process batching (``batch_size`` consecutive
  instances), so every batch the network sees — and every value it computes, whose bits may
  depend on the batch — is one a single process computes too;
* contiguous (not strided) shards keep each image's consecutive boxes together, so the
  grouped-by-image loading still decodes an image once (at most one image per shard border is
  decoded twice); strided shards would spread every image's boxes over all the ranks, each
  decoding it again;
* concatenating the shards in rank order restores the instances' order, and each prediction's
  ``index`` (its position in the instance list) is shifted back from the shard's to the list's.

:func:`init_eval_process_group` joins the group torchrun describes in the environment
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``): NCCL for CUDA, each rank
on ``cuda:LOCAL_RANK``; gloo on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from posebh.datasets import Instance
from posebh.evaluation.predict import EvalProtocol, predict

__all__ = [
    "close_eval_process_group",
    "eval_world",
    "init_eval_process_group",
    "predict_on_ranks",
    "shard",
]


def eval_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group; ``(0, 1)`` without
    one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_eval_process_group(device: str) -> str:
    """Join the process group of a ``torchrun`` launch (``WORLD_SIZE`` > 1 in the
    environment) and return the device this rank evaluates on: ``cuda:LOCAL_RANK`` for a
    CUDA ``device`` (NCCL), ``device`` unchanged on the CPU (gloo).  A single process
    (``WORLD_SIZE`` unset or 1) gets ``device`` back and joins nothing."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return device
    kind = torch.device(device).type
    if kind == "cuda":
        local = _env_int("LOCAL_RANK", 0)
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) are "
                "visible. Fix: torchrun --nproc_per_node at most the GPU count."
            )
        torch.cuda.set_device(local)
        device, backend = f"cuda:{local}", "nccl"
    elif kind == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"--device {device}: multi-rank evaluation runs on cuda or cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return device


def close_eval_process_group() -> None:
    """Leave the process group :func:`init_eval_process_group` joined (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, batch_size: int, rank: int, world_size: int) -> range:
    """The instances rank ``rank`` of ``world_size`` predicts: a contiguous run of whole
    ``batch_size`` batches (the last batch, possibly short, stays whole), as even as
    batches allow.  The shards of all ranks, in rank order, are ``range(n)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    batches = -(-n // batch_size)
    first = rank * batches // world_size
    last = (rank + 1) * batches // world_size
    return range(min(first * batch_size, n), min(last * batch_size, n))


def predict_on_ranks(
    model: torch.nn.Module | None,
    instances: Sequence[Instance],
    protocol: EvalProtocol,
    *,
    batch_size: int = 32,
    progress: bool = True,
    **kwargs: Any,
) -> list[dict[str, Any]] | None:
    """:func:`~posebh.evaluation.predict.predict` of ``instances``, shared among the ranks of
    the process group (see the module): the whole list on rank 0, None on the others.
    Without a process group (or a world of 1) it is ``predict`` itself."""
    rank, world = eval_world()
    if world == 1:
        return predict(
            model, instances, protocol, batch_size=batch_size, progress=progress, **kwargs
        )
    part = shard(len(instances), batch_size, rank, world)
    mine = predict(
        model,
        instances[part.start : part.stop],
        protocol,
        batch_size=batch_size,
        progress=progress and rank == 0,
        **kwargs,
    )
    for p in mine:
        p["index"] += part.start
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(mine, gathered, dst=0)
    if gathered is None:
        return None
    return [p for shard_predictions in gathered for p in shard_predictions]
