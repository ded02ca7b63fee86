"""posebh.protocol: the per-dataset records and the tables derived from them.

The expected values below are literal copies of the hard-coded tables the records replaced
(``decode.DECODE_DEFAULTS``, ``evaluate._METRIC`` / ``_NO_AREA`` / ``_HEAD_OF``,
``pipeline._TRAIN_SETTINGS`` / ``_EVAL_UDP``, ``harness._expert_of``, the alias maps of
``datasets/specs.py``, ``checkpoint.py`` and ``synth/crossgt.py``, and the six-dataset order
copies), so they check the records independently of how the records are written.
"""

from __future__ import annotations

import pytest

from posebh.protocol import PROTOCOLS, TRAINING_DATASETS, UnknownDatasetError, get_protocol

_UDP = "PROTOCOL.md §6: flip_test, 'default', use_udp=True, shift_heatmap=False, kernel 11"
_PLAIN = "PROTOCOL.md §6: flip_test, 'default', shift_heatmap=True, kernel 11, no UDP"

#: decode.DECODE_DEFAULTS before the records: (use_udp, source).
OLD_DECODE = {
    "coco": (True, f"body/.../coco/ViTPose_{{base,huge}}_coco_256x192.py ({_UDP})"),
    "mpii": (True, f"body/.../mpii/ViTPose_*_mpii_256x192.py ({_UDP})"),
    "aic": (False, f"body/.../aic/ViTPose_*_aic_256x192.py ({_PLAIN})"),
    "ap10k": (False, f"animal/.../ap10k/... ({_PLAIN})"),
    "apt36k": (False, f"animal/.../apt36k/... ({_PLAIN})"),
    "coco_wholebody": (
        False,
        f"wholebody/.../coco-wholebody/ViTPose_*_wholebody_256x192.py ({_PLAIN})",
    ),
    "ochuman": (False, f"body/.../ochuman/ViTPose_*_ochuman_256x192.py ({_PLAIN})"),
    "interhand2d": (False, f"hand/.../interhand2d/vitb_posebh_interhand2d_256x192.py ({_PLAIN})"),
    "pw3d": (False, f"body/.../pw3d/vitb_posebh_pw3d_2d_256x192.py ({_PLAIN})"),
}
#: evaluate._METRIC, evaluate._NO_AREA, evaluate._HEAD_OF.
OLD_METRIC = {
    "coco": "oks",
    "ochuman": "oks",
    "aic": "oks",
    "ap10k": "oks",
    "apt36k": "oks",
    "pw3d": "oks",
    "coco_wholebody": "wholebody",
    "mpii": "pckh",
    "interhand2d": "pck_auc_epe",
}
OLD_NO_AREA = {"aic", "pw3d"}
OLD_HEAD_OF = {"ochuman": 0}
#: pipeline._TRAIN_SETTINGS and pipeline._EVAL_UDP.
OLD_TRAIN = {
    "coco": dict(use_udp=True, encoding="UDP", half_body=True, center_jitter_prob=0.3),
    "mpii": dict(use_udp=True, encoding="UDP", half_body=False, center_jitter_prob=0.0),
    "aic": dict(use_udp=False, encoding="MSRA", half_body=True, center_jitter_prob=0.3),
    "ap10k": dict(use_udp=False, encoding="MSRA", half_body=True, center_jitter_prob=0.3),
    "apt36k": dict(use_udp=False, encoding="MSRA", half_body=True, center_jitter_prob=0.3),
    "coco_wholebody": dict(use_udp=False, encoding="MSRA", half_body=True, center_jitter_prob=0.3),
}
OLD_EVAL_UDP = {
    "coco": True,
    "mpii": True,
    "mdt_val": True,
    "aic": False,
    "ap10k": False,
    "apt36k": False,
    "coco_wholebody": False,
    "ochuman": False,
    "interhand2d": False,
    "pw3d": False,
}
#: The six-dataset order (training/config.MULTI_DATASETS, crosstype.DEFAULT_DATASETS) and its
#: keypoint counts (models MULTI_DATASET_KEYPOINTS, prototypes POSEBH_NUM_KEYPOINTS,
#: checkpoint _RELEASE_KEYPOINTS).
OLD_ORDER = ("coco", "aic", "mpii", "ap10k", "apt36k", "coco_wholebody")
OLD_COUNTS = (17, 14, 16, 17, 17, 133)
#: datasets/specs.py _ALIASES; checkpoint._DATASET_ALIASES (name -> model_split.py name).
OLD_SPEC_ALIASES = {
    "ap36k": "apt36k",
    "wholebody": "coco_wholebody",
    "interhand": "interhand2d",
    "interhand2.6m": "interhand2d",
    "3dpw": "pw3d",
}
OLD_CHECKPOINT_ALIASES = {"coco_wholebody": "wholebody", "ap36k": "apt36k", "3dpw": "pw3d"}
OLD_SPLIT_ORDER = ("coco", "aic", "mpii", "ap10k", "apt36k", "wholebody", "interhand", "pw3d")


def test_records_cover_the_old_tables() -> None:
    assert set(PROTOCOLS) == set(OLD_DECODE) == set(OLD_METRIC)


@pytest.mark.parametrize("name", sorted(OLD_DECODE))
def test_decode_settings_equal_the_old_table(name: str) -> None:
    use_udp, source = OLD_DECODE[name]
    d = get_protocol(name).decode
    assert d.flip_test is True
    assert d.post_process == "default"
    assert d.use_udp is use_udp
    assert d.shift_heatmap is (not use_udp)
    assert d.kernel == 11
    assert d.target_type == "GaussianHeatmap"
    assert d.source == source
    assert d.decode_kwargs() == {
        "post_process": "default",
        "use_udp": use_udp,
        "kernel": 11,
        "target_type": "GaussianHeatmap",
    }


@pytest.mark.parametrize("name", sorted(OLD_METRIC))
def test_metric_area_and_head_equal_the_old_tables(name: str) -> None:
    p = get_protocol(name)
    assert p.metric == OLD_METRIC[name]
    assert p.use_area is (name not in OLD_NO_AREA)
    index = OLD_ORDER.index(name) if name in OLD_ORDER else None
    assert p.dataset_index == index
    assert p.eval_head == OLD_HEAD_OF.get(name, index)
    # harness._expert_of: OCHuman runs the COCO expert, every other dataset its own.
    assert p.eval_expert == ("coco" if name == "ochuman" else name)


@pytest.mark.parametrize("name", sorted(OLD_METRIC))
def test_train_settings_equal_the_old_table(name: str) -> None:
    p = get_protocol(name)
    if name in OLD_TRAIN:
        assert p.train is not None and p.train.pipeline_fields() == OLD_TRAIN[name]
    else:
        assert p.train is None


def test_pipeline_tables_equal_the_old_ones() -> None:
    from posebh.pipeline import per_dataset_pipeline

    for name, fields in OLD_TRAIN.items():
        cfg = per_dataset_pipeline(name, train=True)
        assert {k: getattr(cfg, k) for k in fields} == fields, name
    for name, udp in OLD_EVAL_UDP.items():
        cfg = per_dataset_pipeline(name, train=False)
        assert cfg.use_udp is udp and cfg.encoding == ("UDP" if udp else "MSRA"), name


def test_evaluation_protocol_equals_the_old_tables() -> None:
    from posebh.evaluate import default_protocol

    for name, (use_udp, source) in OLD_DECODE.items():
        p = default_protocol(name)
        assert (p.dataset, p.flip_test, p.shift_heatmap, p.post_process) == (
            name,
            True,
            not use_udp,
            "default",
        )
        assert (p.use_udp, p.kernel, p.source) == (use_udp, 11, source)
        assert (p.metric, p.use_area) == (OLD_METRIC[name], name not in OLD_NO_AREA)


def test_training_order_and_its_copies() -> None:
    from posebh.checkpoint import DATASET_ORDERS
    from posebh.crosstype import DEFAULT_DATASETS
    from posebh.models.posebh import PoseBHConfig
    from posebh.prototypes import KeypointPrototypes
    from posebh.skeletons import NUM_KEYPOINTS
    from posebh.training.config import MULTI_DATASETS

    assert tuple(p.name for p in TRAINING_DATASETS) == OLD_ORDER
    assert tuple(p.dataset_index for p in TRAINING_DATASETS) == tuple(range(6))
    assert MULTI_DATASETS == OLD_ORDER
    assert DEFAULT_DATASETS == OLD_ORDER
    assert NUM_KEYPOINTS == OLD_COUNTS
    assert PoseBHConfig().num_keypoints == OLD_COUNTS
    assert KeypointPrototypes().num_keypoints == OLD_COUNTS
    assert DATASET_ORDERS["8dset"] == OLD_SPLIT_ORDER
    for i, name in enumerate(OLD_ORDER):
        assert get_protocol(i).name == name


def test_resolver_accepts_every_old_alias() -> None:
    for alias, name in OLD_SPEC_ALIASES.items():
        assert get_protocol(alias).name == name
        assert get_protocol(alias.upper()).name == name  # specs.py lower-cased
    for name in PROTOCOLS:
        assert get_protocol(name).name == name
        assert get_protocol(get_protocol(name)) is get_protocol(name)


def test_checkpoint_aliases_map_to_the_model_split_names() -> None:
    from posebh.checkpoint.split import _dataset_index

    for name, official in OLD_CHECKPOINT_ALIASES.items():
        assert get_protocol(name).official_name == official
        assert _dataset_index(name, "8dset") == OLD_SPLIT_ORDER.index(official)
    for i, official in enumerate(OLD_SPLIT_ORDER):
        assert _dataset_index(official, "8dset") == i
        assert _dataset_index(official.upper(), "8dset") == i
    with pytest.raises(ValueError, match="unknown dataset"):
        _dataset_index("ochuman", "8dset")


def test_crossgt_stores_ochuman_as_coco() -> None:
    # synth/crossgt._ALIASES: OCHuman is scored from COCO's stored keypoints.
    for name in PROTOCOLS:
        assert get_protocol(name).eval_expert == {"ochuman": "coco"}.get(name, name)


@pytest.mark.parametrize("bad", ["crowdpose", "", "coco ", 6, -1, True, None, 1.0])
def test_resolver_error_lists_the_known_names(bad: object) -> None:
    with pytest.raises(UnknownDatasetError) as info:
        get_protocol(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    message = str(info.value)
    assert repr(bad) in message
    for name in (*PROTOCOLS, *OLD_SPEC_ALIASES):
        assert name in message
