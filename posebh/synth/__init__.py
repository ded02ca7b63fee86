"""SynthPose: the embedded synthetic multi-dataset world of posebh.

Rendered people (one 3-D body whose nodes are the union of the COCO, AIC, MPII,
COCO-WholeBody and 3DPW/SMPL skeletons, each dataset annotating its own definition of shared
joints), quadrupeds (AP-10K / APT-36K) and hands (InterHand2.6M), written in the real formats
and the official ``data/`` layout, so that every downstream path (readers, pipeline, metrics,
CLI) is the one the real data takes. The full ground truth of every image in every compatible
skeleton is kept apart (:mod:`posebh.synth.crossgt`) to measure cross-type transfer.

API::

    from posebh.synth import generate, cross_type_gt
    manifest = generate("data_synth", preset="mini", seed=0)   # cached per preset/seed/version
    spec = posebh.datasets.default_spec("aic", "val", "data_synth")
    gt = cross_type_gt("data_synth", "aic", "coco", "val")      # COCO GT of the AIC images
"""

from .crossgt import cross_gt_path, cross_type_gt, load_cross_gt
from .generate import GENERATOR_VERSION, MANIFEST, PRESETS, Manifest, generate, layout_splits
from .groups import GROUP_DATASETS, GROUPS
from .human import DEFINITION_OFFSETS
from .labels import COMPATIBLE

__all__ = [
    "COMPATIBLE",
    "DEFINITION_OFFSETS",
    "GENERATOR_VERSION",
    "GROUPS",
    "GROUP_DATASETS",
    "MANIFEST",
    "PRESETS",
    "Manifest",
    "cross_gt_path",
    "cross_type_gt",
    "generate",
    "layout_splits",
    "load_cross_gt",
]
