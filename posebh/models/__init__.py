"""Models: the ViTMoE backbone, heatmap/prototype heads and the PoseBH assembly."""

from posebh.models.heads import HeatmapHead, PrototypeHead, SimpleHeatmapHead
from posebh.models.posebh import (
    NUM_HEADS_BY_WIDTH,
    PRESETS,
    PoseBH,
    PoseBHConfig,
    PoseBHOutput,
    build_model,
)
from posebh.models.vit_moe import ViTMoE

__all__ = [
    "NUM_HEADS_BY_WIDTH",
    "PRESETS",
    "HeatmapHead",
    "PoseBH",
    "PoseBHConfig",
    "PoseBHOutput",
    "PrototypeHead",
    "SimpleHeatmapHead",
    "ViTMoE",
    "build_model",
]
