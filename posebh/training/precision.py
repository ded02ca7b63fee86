"""Mixed precision of a training step: which autocast dtype runs on which device, and the
loss scaler.

``TrainConfig.precision``:

* ``"fp32"``: no autocast;
* ``"bf16"``: the model's forward under ``torch.autocast(device.type, torch.bfloat16)`` on
  CUDA and on CPU; bf16 has float32's exponent range, so no loss scaling;
* ``"fp16"`` (the release's): autocast float16 with a :class:`torch.amp.GradScaler`, on CUDA
  only.  A CPU run refuses it rather than silently training in another precision: CPU float16
  matrix products are slow on most processors and would need loss scaling too; bf16 is the
  CPU's mixed precision.

The losses and the prototype updates run in float32 in every case (the trainer turns autocast
off around them, :meth:`~posebh.prototypes.KeypointPrototypes.learn` as well).
"""

from __future__ import annotations

import torch

from posebh.training.config import TrainConfigError

__all__ = ["AUTOCAST_DTYPES", "autocast_dtype", "grad_scaler"]

#: The autocast dtype of each ``precision`` (None: no autocast).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: run in float32).

    Raises :class:`TrainConfigError` for fp16 on a device other than CUDA.
    """
    if precision not in AUTOCAST_DTYPES:
        raise TrainConfigError(f"precision must be fp32, fp16 or bf16, got {precision!r}")
    dtype = AUTOCAST_DTYPES[precision]
    if dtype == torch.float16 and device.type != "cuda":
        raise TrainConfigError(
            f"precision 'fp16' (autocast float16 with loss scaling, as the release) needs a "
            f"CUDA device; this run is on {device.type}: use --set precision=bf16 (autocast "
            "bfloat16, which the CPU supports) or --set precision=fp32"
        )
    return dtype


def grad_scaler(dtype: torch.dtype | None, init_scale: float) -> torch.amp.GradScaler:
    """The loss scaler: active for float16 autocast only (a pass-through otherwise; its state
    is saved in checkpoints either way)."""
    return torch.amp.GradScaler("cuda", init_scale=init_scale, enabled=dtype == torch.float16)
