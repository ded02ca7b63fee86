"""Training configurations: frozen dataclasses, the official recipes as presets, the plan table.

Every knob of a run lives in one :class:`TrainConfig` (defaults = PoseBH-B, the official
``mdt/vitb_posebh.py`` with ``scripts/train_vitb_posebh.sh``).  A preset is a named
``TrainConfig``; ``--set key=value`` on the command line replaces single fields of it
(:func:`apply_overrides`).

Units: ``unit="epoch"`` (the official recipes) places schedule events, learning-rate
milestones and ``length`` on epochs of the mixed training set (``steps_per_epoch`` =
⌈Σ instances / global batch⌉); ``unit="step"`` (the tiny presets) on optimizer steps.  The
warm-up always counts steps, as mmcv's ``warmup_iters``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from posebh.keyvalue import KeyValueError, parse_pairs
from posebh.protocol import TRAINING_DATASETS

__all__ = [
    "ACTIONS",
    "PRESETS",
    "PROTOTYPE_BACKENDS",
    "TARGETS",
    "DataConfig",
    "Event",
    "LossConfig",
    "OptimConfig",
    "TrainConfig",
    "TrainConfigError",
    "apply_overrides",
    "get_preset",
]

#: What an event may do, and to which part of the model.
ACTIONS = ("freeze", "thaw", "cps_init", "css_on", "css_off")
TARGETS = ("backbone", "heads", "proto_head", "prototypes")

#: The six multi-dataset training sets, in head / expert / prototype-block order.
MULTI_DATASETS: tuple[str, ...] = tuple(p.name for p in TRAINING_DATASETS)


#: Values of ``TrainConfig.prototype_backend`` ("auto" or a posebh.ops backend name).
PROTOTYPE_BACKENDS = ("auto", "torch", "cpp", "triton", "cuda")


class TrainConfigError(ValueError):
    """A configuration that cannot run; the message says what to change."""


@dataclass(frozen=True)
class Event:
    """One schedule event: at ``at`` (epoch or step, the config's ``unit``), before that
    epoch/step runs, ``action`` the ``target`` (freeze/thaw) or switch CPS/CSS.

    Mirrors the official hooks (``ProtoFreezeHook``, ``MultiheadFreezeHook``,
    ``BackboneFreezeHook``, ``EmbFreezeThawHook``, ``ProtoFreezeThawHook``, ``CPSInitHook``,
    ``CSSEnableHook``), which all act in ``before_train_epoch``.
    """

    at: int
    action: str
    target: str = ""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise TrainConfigError(f"event action {self.action!r} not in {ACTIONS}")
        if self.action in ("freeze", "thaw") and self.target not in TARGETS:
            raise TrainConfigError(
                f"{self.action} needs a target in {TARGETS}, got {self.target!r}"
            )
        if self.at < 0:
            raise TrainConfigError(f"event at {self.at} < 0")

    def describe(self) -> str:
        return f"{self.action} {self.target}".strip()


@dataclass(frozen=True)
class DataConfig:
    """Which datasets are mixed, how, and what is evaluated.

    ``datasets`` are skeleton names; each trains the model head ``heads[i]`` (default: the
    skeleton's multi-dataset index when the model has six heads, else the list position).
    ``ratios`` are sampling weights (``None``: proportional to the dataset sizes, i.e. the
    official concatenated-and-shuffled training set).  ``pipeline`` overrides
    :class:`posebh.pipeline.TopDownPipeline` fields per dataset (e.g. InterHand's rotation).
    """

    datasets: tuple[str, ...] = MULTI_DATASETS
    ratios: tuple[float, ...] | None = None
    heads: tuple[int, ...] | None = None
    split: str = "train"
    val_datasets: tuple[str, ...] | None = None  # None: the training datasets
    val_split: str = "val"
    # COCO / WholeBody val default to the official detection boxes; True = GT boxes.
    eval_gt_bbox: bool = False
    eval_batch_size: int = 64
    pipeline: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    num_workers: int = 2


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule (mmcv ``step`` policy with linear warm-up).

    ``layer_decay``: the official ``LayerDecayOptimizerConstructor`` (lr × decay^(L+1−id) per
    ViT block, no weight decay on 1-D tensors, biases and the position embedding); ``None``
    builds one group.  ``milestones`` are in the config's unit.
    """

    name: str = "adamw"  # "adamw" | "adam"
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    layer_decay: float | None = 0.75
    grad_clip: float | None = 1.0
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    milestones: tuple[int, ...] = (50, 90)
    gamma: float = 0.1


@dataclass(frozen=True)
class LossConfig:
    """Loss weights of the official ``KptProtoHead`` config (``extra=...``).

    ``sample_threshold`` is the official ``cluster_conf_thr`` (τ_c): pixels whose GT heatmap
    maximum does not exceed it are not used for prototypes (0 in the multi-dataset recipe,
    0.2 in the transfer recipes).
    """

    proto_weight: float = 1.25e-5
    ppc_weight: float = 0.01
    ppd_weight: float = 0.001
    phm_weight: float = 3.33e-6
    sample_threshold: float = 0.0
    cps_weight: float = 1.0e-2
    css_weight: float = 1.0e-3
    css_conf_thr: float = 0.25
    css_match_dist: float = 2.1
    cps_options: tuple[int, ...] = (64, 96, 128)
    cps_iters: int = 500
    cps_beta: float = 20.0


@dataclass(frozen=True)
class TrainConfig:
    """One training run (defaults: PoseBH-B, ``mdt/vitb_posebh.py``)."""

    preset: str = "posebh_vit_base"
    description: str = "PoseBH-B multi-dataset training (mdt/vitb_posebh.py)"
    model: str = "posebh_vit_base"  # a posebh.models preset
    model_overrides: Mapping[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    events: tuple[Event, ...] = (
        Event(0, "freeze", "backbone"),
        Event(0, "freeze", "heads"),
        Event(50, "freeze", "prototypes"),
        Event(50, "thaw", "heads"),
        Event(50, "freeze", "backbone"),
        Event(50, "cps_init"),
        Event(50, "css_on"),
        Event(90, "thaw", "backbone"),
    )
    unit: str = "epoch"  # "epoch" | "step"
    length: int = 100  # epochs or steps
    batch_size: int = 128  # per rank (official samples_per_gpu)
    # "fp32" | "fp16" | "bf16": the model's forward under autocast in that dtype (the losses
    # and the prototypes stay float32).  fp16 (the release's) is CUDA only, with a GradScaler
    # (init_loss_scale); a CPU run refuses it (use bf16 or fp32).  bf16 autocasts on CUDA and
    # on CPU (torch.autocast("cpu")), without loss scaling.
    precision: str = "fp16"
    # Backend of the prototype similarities (the logits of KeypointPrototypes.learn and the
    # prototype heatmaps) of every prototype bank: "auto" (the fused posebh.ops kernels: C++
    # on CPU, Triton/CUDA on GPUs) or "torch" (the reference, e.g. to compare the fused path
    # with it: --set prototype_backend=torch); "cpp", "triton", "cuda" force one backend.
    prototype_backend: str = "auto"
    # Official: every heatmap head runs on every image (its loss zeroes the other datasets'
    # images).  True: each head runs on its own dataset's images only, while CSS is off (CSS
    # reads every head on every image).  The loss values are the same except through the
    # heads' BatchNorm statistics, which then come from the head's own images; ~D× less head
    # work.  For the tiny CPU recipes, where the heads are most of a step.
    heads_on_own_images: bool = False
    init_loss_scale: float = 16384.0
    # "PoseBH starts from a ViTPose++ multi-head checkpoint": --init is required unless
    # this is False or --init scratch is given.
    requires_init: bool = True
    init_split: str | None = None  # multi-expert checkpoint → plain ViT: keep this expert
    init_remove_prototypes: bool = False  # tools/remove_proto.py before loading
    seed: int = 0
    log_every: int = 50  # steps
    ckpt_every: int = 0  # steps between latest.pth; 0 = once per epoch
    keep_every: int = 0  # steps between kept step_N.pth; 0 = every 10 epochs
    eval_every: int = 0  # steps; 0 = every 10 epochs (official interval=10); <0 = never
    eval_at_end: bool = True

    def __post_init__(self) -> None:
        if self.unit not in ("epoch", "step"):
            raise TrainConfigError(f"unit must be 'epoch' or 'step', got {self.unit!r}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise TrainConfigError(f"precision must be fp32, fp16 or bf16, got {self.precision!r}")
        if self.prototype_backend not in PROTOTYPE_BACKENDS:
            raise TrainConfigError(
                f"prototype_backend must be one of {PROTOTYPE_BACKENDS}, got "
                f"{self.prototype_backend!r}; e.g. --set prototype_backend=torch"
            )
        if self.length < 1:
            raise TrainConfigError(f"length must be ≥ 1 {self.unit}, got {self.length}")
        if self.batch_size < 1:
            raise TrainConfigError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.optim.name not in ("adamw", "adam"):
            raise TrainConfigError(f"optim.name must be 'adamw' or 'adam', got {self.optim.name!r}")
        d = self.data
        if not d.datasets:
            raise TrainConfigError("data.datasets is empty")
        if d.ratios is not None:
            if len(d.ratios) != len(d.datasets):
                raise TrainConfigError(
                    f"data.ratios has {len(d.ratios)} entries for {len(d.datasets)} datasets"
                )
            if min(d.ratios) < 0 or sum(d.ratios) <= 0:
                raise TrainConfigError(f"data.ratios must be ≥ 0 with a positive sum: {d.ratios}")
        if d.heads is not None and len(d.heads) != len(d.datasets):
            raise TrainConfigError(
                f"data.heads has {len(d.heads)} entries for {len(d.datasets)} datasets"
            )
        for e in self.events:
            if e.at > self.length:
                raise TrainConfigError(
                    f"event '{e.describe()}' at {self.unit} {e.at} lies after the end "
                    f"({self.length} {self.unit}s)"
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (checkpoints, logs)."""
        return _jsonable(dataclasses.asdict(self))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------------
# Presets
# ------------------------------------------------------------------------------------------

_BASE = TrainConfig()

# The huge recipe differs in depth/width (model preset), layer decay 0.8 over 32 blocks and a
# BackboneFreezeHook without the redundant 'freeze,50'.
_HUGE = dataclasses.replace(
    _BASE,
    preset="posebh_vit_huge",
    description="PoseBH-H multi-dataset training (mdt/vith_posebh.py)",
    model="posebh_vit_huge",
    optim=dataclasses.replace(_BASE.optim, layer_decay=0.8),
    events=(
        Event(0, "freeze", "backbone"),
        Event(0, "freeze", "heads"),
        Event(50, "freeze", "prototypes"),
        Event(50, "thaw", "heads"),
        Event(50, "cps_init"),
        Event(50, "css_on"),
        Event(90, "thaw", "backbone"),
    ),
)

# ViTPose++-B: vitPose+_base_coco+aic+mpii+ap10k+apt36k+wholebody_256x192_udp.py (ViTPose
# repository): same optimizer, 210 epochs with steps at 170 and 200, no fp16, no hooks.
_VITPOSE_PLUS = dataclasses.replace(
    _BASE,
    preset="vitpose_plus_vit_base",
    description="ViTPose++-B multi-dataset baseline (vitPose+_base_..._256x192_udp.py)",
    model="vitpose_plus_base",
    optim=dataclasses.replace(_BASE.optim, milestones=(170, 200)),
    events=(),
    length=210,
    precision="fp32",
    requires_init=False,
)

# Transfer recipes (TopDownProto): a plain ViT (the COCO expert merged), one new head, a new
# prototype bank for the new keypoints; Adam without weight decay or clipping; the
# embedding network frozen from the start (EmbFreezeThawHook 'freeze,0').
_TRANSFER_LOSS = dataclasses.replace(
    LossConfig(), phm_weight=1.25e-5, sample_threshold=0.2, css_weight=0.0
)
_INTERHAND = dataclasses.replace(
    _BASE,
    preset="posebh_interhand2d",
    description="PoseBH-B → InterHand2.6M fine-tuning (interhand2d/vitb_posebh_interhand2d)",
    model="posebh_vit_base",
    model_overrides={"num_experts": 0, "num_keypoints": (21,)},
    data=DataConfig(
        datasets=("interhand2d",),
        heads=(0,),
        # train_pipeline: plain affine, MSRA target, no half-body, rot 90, scale 0.3; the
        # InterHand loader does not jitter centres.
        pipeline={
            "interhand2d": dict(
                use_udp=False,
                encoding="MSRA",
                half_body=False,
                rot_factor=90.0,
                scale_factor=0.3,
                center_jitter_prob=0.0,
            )
        },
        num_workers=4,
    ),
    optim=OptimConfig(
        name="adam",
        lr=5e-4,
        weight_decay=0.0,
        layer_decay=None,
        grad_clip=None,
        milestones=(35, 55),
    ),
    loss=_TRANSFER_LOSS,
    events=(
        Event(0, "freeze", "proto_head"),
        Event(0, "thaw", "prototypes"),
        Event(0, "freeze", "backbone"),
        Event(30, "freeze", "prototypes"),
        Event(30, "thaw", "backbone"),
    ),
    length=60,
    batch_size=96,
    precision="fp32",
    init_split="coco",
    init_remove_prototypes=True,
    ckpt_every=0,
    eval_every=0,
)
_PW3D = dataclasses.replace(
    _INTERHAND,
    preset="posebh_pw3d",
    description="PoseBH-B → 3DPW 2D fine-tuning (pw3d/vitb_posebh_pw3d_2d_256x192)",
    model_overrides={"num_experts": 0, "num_keypoints": (24,)},
    data=DataConfig(
        datasets=("pw3d",),
        heads=(0,),
        # train_pipeline: the COCO-style one without UDP (plain affine, MSRA target).
        pipeline={"pw3d": dict(use_udp=False, encoding="MSRA", half_body=True)},
        num_workers=2,
    ),
    optim=dataclasses.replace(_INTERHAND.optim, lr=1e-4, milestones=(10, 15)),
    events=(
        Event(0, "freeze", "proto_head"),
        Event(0, "thaw", "prototypes"),
        Event(0, "freeze", "backbone"),
        Event(15, "freeze", "prototypes"),
        Event(15, "thaw", "backbone"),
        Event(16, "freeze", "backbone"),
    ),
    length=30,
    batch_size=64,
)

# Tiny presets for 2 CPU cores and the SynthPose 'mini' world: the same recipes with a small
# ViT at 128×96 (heatmaps 32×24) and the schedule compressed into steps.  The PoseBH stage
# boundaries keep the official proportions (50 % / 40 % / 10 %), the baseline's lr steps
# those of ViTPose++ (170/210, 200/210).  Deliberate departures, all for a from-scratch tiny
# ViT trained for minutes on a CPU (measurements: issue 5, SynthPose mini):
#
# * 16 deconv filters per head: six heads run on every image and dominate the step (~4× the
#   ViT's FLOPs at 32 filters); 16 makes a step ~1.3× faster, spent on more baseline steps
#   (AP-10K 0.107 → 0.132 at equal time; humans unchanged);
# * milder augmentation (rotation ±10° instead of ±40°, scale ±25 % instead of ±50 %, no
#   half-body), which roughly doubles the AP reached in that budget;
# * sub-pixel (DARK, ``unbiased_encoding``) MSRA targets for AIC and WholeBody.  At 32×24
#   the official integer-centred targets cap what even perfect heatmaps can score through the
#   official decode: AIC AP 0.28, WholeBody 0.43 (0.79 / 0.74 with sub-pixel targets; 0.77 /
#   0.76 at 64×48); the evaluation decode is unchanged.  Not for AP-10K / APT-36K, whose
#   ceiling is 1.00 either way and whose trained AP50 dropped by 0.06 / 0.16 with them; COCO
#   and MPII use UDP targets, which are sub-pixel already;
# * each heatmap head runs on its own dataset's images only (``heads_on_own_images``) while
#   CSS is off: ~1.4× less compute per baseline step (183 → 129 ms at batch 32), 111 → 125
#   img/s with data loading; the official loss values up to the heads' BatchNorm statistics;
# * 1500 baseline steps and a 320-step PoseBH stage: the baseline is where the backbone
#   learns (AP doubles from 500 to 1000 steps), the first half of the PoseBH stage trains
#   only the prototypes.  Synth mini + both runs with their evaluations take ≈ 11–13
#   minutes on 2 idle cores (12.1 min through ``nox -s reproduce_table1``).
TINY_MODEL: dict[str, Any] = dict(
    img_size=(128, 96),
    embed_dim=128,
    depth=4,
    num_heads=4,
    part_features=32,
    drop_path_rate=0.1,
    head_filters=16,
    proto_channels=32,
    proto_dim=32,
)
_TINY_AUG: dict[str, Any] = dict(rot_factor=10.0, scale_factor=0.25, half_body=False)
_SUBPIXEL_TARGETS = ("aic", "coco_wholebody")
_TINY_DATA = DataConfig(
    val_datasets=None,
    eval_gt_bbox=True,  # the synthetic world's detections are not the point here
    eval_batch_size=64,
    pipeline={
        name: dict(_TINY_AUG, unbiased_encoding=name in _SUBPIXEL_TARGETS)
        for name in MULTI_DATASETS
    },
    num_workers=1,
)
_VITPOSE_TINY = dataclasses.replace(
    _VITPOSE_PLUS,
    preset="vitpose_plus_tiny_synth",
    description="tiny ViTPose++ baseline on SynthPose (CPU, minutes)",
    model="vitpose_plus_base",
    model_overrides=TINY_MODEL,
    data=_TINY_DATA,
    optim=dataclasses.replace(
        _VITPOSE_PLUS.optim, lr=2e-3, warmup_iters=40, milestones=(1214, 1429)
    ),
    unit="step",
    length=1500,
    batch_size=32,
    heads_on_own_images=True,
    log_every=20,
    ckpt_every=100,
    keep_every=500,
    eval_every=-1,
)
_POSEBH_TINY = dataclasses.replace(
    _BASE,
    preset="posebh_tiny_synth",
    description="tiny PoseBH on SynthPose from the tiny ViTPose++ baseline (CPU, minutes)",
    model="posebh_vit_base",
    model_overrides=TINY_MODEL,
    data=_TINY_DATA,
    optim=dataclasses.replace(_BASE.optim, lr=2e-3, warmup_iters=20, milestones=(160, 288)),
    events=(
        Event(0, "freeze", "backbone"),
        Event(0, "freeze", "heads"),
        Event(160, "freeze", "prototypes"),
        Event(160, "thaw", "heads"),
        Event(160, "freeze", "backbone"),
        Event(160, "cps_init"),
        Event(160, "css_on"),
        Event(288, "thaw", "backbone"),
    ),
    unit="step",
    length=320,
    batch_size=32,
    heads_on_own_images=True,
    precision="fp32",
    log_every=20,
    ckpt_every=80,
    keep_every=160,
    eval_every=-1,
)


# Tiny transfer presets (SynthPose InterHand / 3DPW splits) for the reproduction harness's
# tables 4 and 5: the official transfer recipes (plain ViT with the COCO expert merged, a new
# head, prototypes removed, embedding network frozen, the backbone thawed half-way) on the
# tiny model, in steps.  The ViTPose++ variants run the same schedule without a prototype
# head (the published ViTPose++-B transfer cells come from the ViTPose repository).
def _tiny_transfer(official: TrainConfig, preset: str, num_keypoints: int) -> TrainConfig:
    name = official.data.datasets[0]
    return dataclasses.replace(
        official,
        preset=preset,
        description=f"tiny PoseBH → {name} transfer on SynthPose (CPU, minutes)",
        model_overrides={**TINY_MODEL, "num_experts": 0, "num_keypoints": (num_keypoints,)},
        data=dataclasses.replace(
            official.data,
            pipeline={name: {**official.data.pipeline[name], **_TINY_AUG}},
            num_workers=1,
            eval_gt_bbox=True,
        ),
        optim=dataclasses.replace(official.optim, lr=1e-3, warmup_iters=20, milestones=(140, 220)),
        events=(
            Event(0, "freeze", "proto_head"),
            Event(0, "thaw", "prototypes"),
            Event(0, "freeze", "backbone"),
            Event(120, "freeze", "prototypes"),
            Event(120, "thaw", "backbone"),
        ),
        unit="step",
        length=240,
        batch_size=32,
        log_every=20,
        ckpt_every=100,
        keep_every=0,
        eval_every=-1,
    )


def _tiny_vitpose_transfer(posebh_tiny: TrainConfig, preset: str) -> TrainConfig:
    return dataclasses.replace(
        posebh_tiny,
        preset=preset,
        description=posebh_tiny.description.replace("PoseBH", "ViTPose++"),
        model="vitpose_plus_base",
        events=(Event(0, "freeze", "backbone"), Event(120, "thaw", "backbone")),
    )


_INTERHAND_TINY = _tiny_transfer(_INTERHAND, "posebh_interhand2d_tiny_synth", 21)
_PW3D_TINY = _tiny_transfer(_PW3D, "posebh_pw3d_tiny_synth", 24)
_VITPOSE_INTERHAND_TINY = _tiny_vitpose_transfer(
    _INTERHAND_TINY, "vitpose_plus_interhand2d_tiny_synth"
)
_VITPOSE_PW3D_TINY = _tiny_vitpose_transfer(_PW3D_TINY, "vitpose_plus_pw3d_tiny_synth")

PRESETS: dict[str, TrainConfig] = {
    c.preset: c
    for c in (
        _BASE,
        _HUGE,
        _VITPOSE_PLUS,
        _INTERHAND,
        _PW3D,
        _VITPOSE_TINY,
        _POSEBH_TINY,
        _INTERHAND_TINY,
        _PW3D_TINY,
        _VITPOSE_INTERHAND_TINY,
        _VITPOSE_PW3D_TINY,
    )
}


def get_preset(name: str) -> TrainConfig:
    """The preset ``name``; :class:`TrainConfigError` listing the choices otherwise."""
    if name not in PRESETS:
        raise TrainConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


# ------------------------------------------------------------------------------------------
# Overrides (--set key=value)
# ------------------------------------------------------------------------------------------


def apply_overrides(config: TrainConfig, items: Sequence[str] | Mapping[str, Any]) -> TrainConfig:
    """Replace fields: ``"batch_size=8"``, ``"optim.lr=1e-4"``, ``"data.ratios=[1,2]"``,
    ``"model.depth=2"`` (a model override), ``"events=[]"``.  Values are JSON where they parse
    (lists become tuples), else strings."""
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        try:
            pairs = parse_pairs(items, flag="--set", example="optim.lr=5e-4")
        except KeyValueError as err:
            raise TrainConfigError(str(err)) from None
    # Collect everything first and replace once: the validation in __post_init__ must see
    # the final combination (e.g. a shorter length together with earlier events).
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    model = dict(config.model_overrides)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in pairs:
        head, _, rest = key.partition(".")
        if head == "model" and rest:
            model[rest] = value
        elif head in _SECTIONS and rest:
            known = {f.name for f in dataclasses.fields(_SECTIONS[head])}
            if rest not in known:
                raise TrainConfigError(f"unknown field {key!r}; {head}.* fields: {sorted(known)}")
            _check_type(key, value, _SECTIONS[head], rest, getattr(config, head))
            sections.setdefault(head, {})[rest] = value
        elif key in names and key not in _SECTIONS:
            if key == "events":
                top[key] = tuple(_event(v) for v in value)
            else:
                _check_type(key, value, TrainConfig, key, config)
                top[key] = value
        else:
            raise TrainConfigError(
                f"unknown field {key!r}; fields: {sorted(names - set(_SECTIONS))}, "
                "data.*, optim.*, loss.*, model.* (model overrides)"
            )
    for head, changes in sections.items():
        top[head] = dataclasses.replace(getattr(config, head), **changes)
    if model != dict(config.model_overrides):
        top["model_overrides"] = model
    try:
        return dataclasses.replace(config, **top)
    except TypeError as err:  # e.g. a value of the wrong type reaching a dataclass
        raise TrainConfigError(f"bad override: {err}") from None


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "loss": LossConfig}


def _check_type(key: str, value: Any, cls: type, name: str, current: Any) -> None:
    """Refuse a value of the wrong type before it reaches a run (``--set optim.lr=abc``
    would otherwise fail deep inside the optimizer, or not at all)."""
    expected = typing.get_type_hints(cls)[name]
    if _matches(value, expected):
        return
    example = json.dumps(_jsonable(getattr(current, name)))
    shown = value if isinstance(value, str) else json.dumps(_jsonable(value))
    raise TrainConfigError(
        f"--set {key}={shown}: {key} expects {_type_name(expected)}, "
        f"got {_describe(value)}; e.g. --set {key}={example} (the recipe's value)"
    )


def _matches(value: Any, expected: Any) -> bool:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if expected is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:  # an integer is a fine float (lr=1); a bool is not
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(
            _matches(v, a) for v, a in zip(value, args, strict=True)
        )
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return isinstance(value, Mapping)
    return True  # a type this check does not model: leave it to the dataclass


def _type_name(expected: Any, plural: bool = False) -> str:
    origin, args = typing.get_origin(expected), typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a, plural) for a in args)
    if expected is type(None):
        return "null"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0], plural=True)}"
        return f"a list of {len(args)} {_type_name(args[0], plural=True)}"
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return "a JSON object"
    one = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    many = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}
    return (many if plural else one).get(expected, getattr(expected, "__name__", str(expected)))


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"the text {value!r}"
    return json.dumps(_jsonable(value))


def _event(v: Any) -> Event:
    if isinstance(v, Event):
        return v
    if isinstance(v, str):  # "50:freeze:heads" or the official "freeze,50"
        parts = v.replace(",", ":").split(":")
        if parts[0].isdigit():
            return Event(int(parts[0]), parts[1], parts[2] if len(parts) > 2 else "")
    if isinstance(v, (list, tuple)) and len(v) in (2, 3):
        return Event(int(v[0]), str(v[1]), str(v[2]) if len(v) > 2 else "")
    if isinstance(v, Mapping):
        return Event(**v)
    raise TrainConfigError(f"cannot read an event from {v!r}; use 'AT:action[:target]'")
