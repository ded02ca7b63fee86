"""Training: recipes (presets), the step-indexed multi-dataset sampler, the staged schedule
and the trainer.  The command line is ``posebh train`` / ``python -m posebh.train``."""

from posebh.training.config import (
    PRESETS,
    DataConfig,
    Event,
    LossConfig,
    OptimConfig,
    TrainConfig,
    TrainConfigError,
    apply_overrides,
    get_preset,
)
from posebh.training.data import MixedDataset, StepSampler
from posebh.training.evaluation import headline_metric
from posebh.training.schedule import StageState, plan_table, stage_at, stages
from posebh.training.trainer import RunOptions, Trainer, TrainResult
from posebh.training.warm_start import load_init

__all__ = [
    "PRESETS",
    "DataConfig",
    "Event",
    "LossConfig",
    "MixedDataset",
    "OptimConfig",
    "RunOptions",
    "StageState",
    "StepSampler",
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "Trainer",
    "apply_overrides",
    "get_preset",
    "headline_metric",
    "load_init",
    "plan_table",
    "stage_at",
    "stages",
]
