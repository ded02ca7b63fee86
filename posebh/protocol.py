"""One record per dataset: everything posebh knows about a dataset besides its keypoints.

The mmpose 1.x ``metainfo`` idea: a :class:`DatasetProtocol` holds a dataset's names, its
skeleton (keypoint definition, from :mod:`posebh.skeletons`), its position in the multi-dataset
model, its official training pipeline settings, its evaluation decode, its metric and the
head/expert it is evaluated with. Every per-dataset table elsewhere (pipeline settings, decode
defaults, metric choice, alias maps, the six-dataset training order) is read off these records,
so adding a dataset means adding its skeleton (if new) and one record here.

``get_protocol(name_or_alias_or_index)`` is the one resolver; entry points call it once and
pass the record down.

Sources: ``PROTOCOL.md`` §1 (metrics, OKS area rule), §6 (the single-dataset evaluation configs
that ``scripts/eval_vit{b,h}_mdt.sh`` runs after ``tools/model_split.py``) and the PoseBH
multi-dataset config ``mdt/vitb_posebh.py`` (training pipelines).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from posebh.skeletons import SKELETONS, TRAINING_SKELETONS, Skeleton

__all__ = [
    "PROTOCOLS",
    "TRAINING_DATASETS",
    "DatasetProtocol",
    "DecodeSettings",
    "TrainSettings",
    "UnknownDatasetError",
    "get_protocol",
]

Metric = Literal["oks", "wholebody", "pckh", "pck_auc_epe"]
Encoding = Literal["UDP", "MSRA", "Megvii"]


class UnknownDatasetError(KeyError, ValueError):
    """A dataset name, alias or index that no record has. A KeyError (what
    ``get_skeleton`` raised) and a ValueError (what the pipeline and decode tables raised)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class TrainSettings:
    """The official training pipeline of a dataset (fields of ``TopDownPipeline``): the
    affine (``use_udp``), the target encoding, half-body augmentation, centre jitter."""

    use_udp: bool
    encoding: Encoding
    half_body: bool
    center_jitter_prob: float

    def pipeline_fields(self) -> dict[str, Any]:
        """These settings as ``TopDownPipeline`` keyword arguments."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DecodeSettings:
    """Test-time settings of a dataset's evaluation config (flip test and heatmap decode).

    The evaluation crop uses the same ``use_udp`` as the decode (the configs set both from
    one flag). ``source`` names the config the values come from.
    """

    use_udp: bool
    source: str
    flip_test: bool = True
    post_process: str | None = "default"
    kernel: int = 11
    target_type: str = "GaussianHeatmap"

    @property
    def shift_heatmap(self) -> bool:
        """UDP configs evaluate with ``shift_heatmap=False``, the plain ones with True
        (PROTOCOL.md §6)."""
        return not self.use_udp

    def decode_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`posebh.decode.keypoints_from_heatmaps`."""
        return {
            "post_process": self.post_process,
            "use_udp": self.use_udp,
            "kernel": self.kernel,
            "target_type": self.target_type,
        }


@dataclass(frozen=True)
class DatasetProtocol:
    """Everything about one dataset that is not its keypoint definition.

    Attributes:
        name: the canonical name (the skeleton's).
        skeleton: keypoint names, flips, sigmas (:mod:`posebh.skeletons`).
        aliases: other accepted spellings (lower case).
        official_name: the name in the official ``tools/model_split.py`` dataset orders.
        metric: ``"oks"``, ``"wholebody"``, ``"pckh"`` or ``"pck_auc_epe"``.
        use_area: OKS scale from the annotated area (False: 0.53·w·h, AIC and 3DPW).
        decode: the evaluation decode (:class:`DecodeSettings`).
        train: the official training pipeline, None for evaluation-only datasets.
        eval_expert: the training dataset whose expert and head evaluate this one (itself,
            or COCO for OCHuman, which shares COCO's keypoints).
    """

    name: str
    skeleton: Skeleton
    metric: Metric
    decode: DecodeSettings
    train: TrainSettings | None = None
    aliases: tuple[str, ...] = ()
    official_name: str = ""
    use_area: bool = True
    eval_expert: str = ""

    def __post_init__(self) -> None:
        if self.skeleton.name != self.name:
            raise ValueError(f"record {self.name!r} holds skeleton {self.skeleton.name!r}")
        if not self.official_name:
            object.__setattr__(self, "official_name", self.name)
        if not self.eval_expert:
            object.__setattr__(self, "eval_expert", self.name)

    @property
    def dataset_index(self) -> int | None:
        """Position in the multi-dataset model (expert, head, prototype block), or None."""
        return self.skeleton.dataset_index

    @property
    def eval_head(self) -> int | None:
        """The multi-dataset model's head / expert index that evaluates this dataset."""
        return get_protocol(self.eval_expert).dataset_index


def _decode(use_udp: bool, config: str) -> DecodeSettings:
    if use_udp:
        how = "flip_test, 'default', use_udp=True, shift_heatmap=False, kernel 11"
    else:
        how = "flip_test, 'default', shift_heatmap=True, kernel 11, no UDP"
    return DecodeSettings(use_udp=use_udp, source=f"{config} (PROTOCOL.md §6: {how})")


# mdt/vitb_posebh.py train pipelines: UDP affine + UDP target for COCO and MPII, the plain
# affine + MSRA target for the others. TopDownCocoDataset._xywh2cs jitters the centre; the
# MPII loader reads centre and scale from its JSON (no jitter) and its pipeline has no
# TopDownHalfBodyTransform.
_UDP_TRAIN = TrainSettings(use_udp=True, encoding="UDP", half_body=True, center_jitter_prob=0.3)
_MSRA_TRAIN = TrainSettings(use_udp=False, encoding="MSRA", half_body=True, center_jitter_prob=0.3)
_MPII_TRAIN = TrainSettings(use_udp=True, encoding="UDP", half_body=False, center_jitter_prob=0.0)

_RECORDS: tuple[DatasetProtocol, ...] = (
    DatasetProtocol(
        name="coco",
        skeleton=SKELETONS["coco"],
        metric="oks",
        decode=_decode(True, "body/.../coco/ViTPose_{base,huge}_coco_256x192.py"),
        train=_UDP_TRAIN,
    ),
    DatasetProtocol(
        name="aic",
        skeleton=SKELETONS["aic"],
        metric="oks",
        use_area=False,
        decode=_decode(False, "body/.../aic/ViTPose_*_aic_256x192.py"),
        train=_MSRA_TRAIN,
    ),
    DatasetProtocol(
        name="mpii",
        skeleton=SKELETONS["mpii"],
        metric="pckh",
        decode=_decode(True, "body/.../mpii/ViTPose_*_mpii_256x192.py"),
        train=_MPII_TRAIN,
    ),
    DatasetProtocol(
        name="ap10k",
        skeleton=SKELETONS["ap10k"],
        metric="oks",
        decode=_decode(False, "animal/.../ap10k/..."),
        train=_MSRA_TRAIN,
    ),
    DatasetProtocol(
        name="apt36k",
        skeleton=SKELETONS["apt36k"],
        aliases=("ap36k",),
        metric="oks",
        decode=_decode(False, "animal/.../apt36k/..."),
        train=_MSRA_TRAIN,
    ),
    DatasetProtocol(
        name="coco_wholebody",
        skeleton=SKELETONS["coco_wholebody"],
        aliases=("wholebody",),
        official_name="wholebody",
        metric="wholebody",
        decode=_decode(False, "wholebody/.../coco-wholebody/ViTPose_*_wholebody_256x192.py"),
        train=_MSRA_TRAIN,
    ),
    DatasetProtocol(
        name="ochuman",
        skeleton=SKELETONS["ochuman"],
        metric="oks",
        decode=_decode(False, "body/.../ochuman/ViTPose_*_ochuman_256x192.py"),
        eval_expert="coco",  # the ViTPose_*_ochuman configs evaluate COCO's expert and head
    ),
    DatasetProtocol(
        name="interhand2d",
        skeleton=SKELETONS["interhand2d"],
        aliases=("interhand", "interhand2.6m"),
        official_name="interhand",
        metric="pck_auc_epe",
        decode=_decode(False, "hand/.../interhand2d/vitb_posebh_interhand2d_256x192.py"),
    ),
    DatasetProtocol(
        name="pw3d",
        skeleton=SKELETONS["pw3d"],
        aliases=("3dpw",),
        metric="oks",
        use_area=False,
        decode=_decode(False, "body/.../pw3d/vitb_posebh_pw3d_2d_256x192.py"),
    ),
)
#: Every record by canonical name.
PROTOCOLS: Mapping[str, DatasetProtocol] = {p.name: p for p in _RECORDS}

#: The six training datasets in the official order (coco, aic, mpii, ap10k, apt36k,
#: coco_wholebody): the order of the experts, heads and prototype class blocks.
TRAINING_DATASETS: tuple[DatasetProtocol, ...] = tuple(
    PROTOCOLS[s.name] for s in TRAINING_SKELETONS
)

_BY_NAME: dict[str, DatasetProtocol] = {
    key: p for p in _RECORDS for key in (p.name, p.official_name, *p.aliases)
}

# A record set that does not fit the skeletons would misroute heads or keypoint classes.
assert set(PROTOCOLS) == set(SKELETONS), sorted(set(PROTOCOLS) ^ set(SKELETONS))
assert len(_BY_NAME) == sum(len({p.name, p.official_name, *p.aliases}) for p in _RECORDS)
assert all((p.train is not None) == (p.dataset_index is not None) for p in _RECORDS)
assert all(PROTOCOLS[p.eval_expert].eval_expert == p.eval_expert for p in _RECORDS)


def get_protocol(dataset: str | int | DatasetProtocol) -> DatasetProtocol:
    """The record of ``dataset``: a name or alias (any case), a training index (0-5), or a
    record (returned as is).

    Raises:
        UnknownDatasetError: (a KeyError and a ValueError) naming the known names, aliases and
            indices.
    """
    if isinstance(dataset, DatasetProtocol):
        return dataset
    # bool is an int subclass; True/False as a dataset index is surely a bug.
    if isinstance(dataset, int) and not isinstance(dataset, bool):
        if 0 <= dataset < len(TRAINING_DATASETS):
            return TRAINING_DATASETS[dataset]
    elif isinstance(dataset, str) and dataset.lower() in _BY_NAME:
        return _BY_NAME[dataset.lower()]
    aliases = sorted(k for k in _BY_NAME if k not in PROTOCOLS)
    raise UnknownDatasetError(
        f"unknown dataset {dataset!r}. Fix: use one of {', '.join(PROTOCOLS)} "
        f"(aliases: {', '.join(aliases)}; training indices 0-{len(TRAINING_DATASETS) - 1})"
    )
