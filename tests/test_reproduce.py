"""The reproduction harness: tables as data, real mode on the shared fixtures with a tiny
model in official checkpoint format, the CLI, and the metric regression (which must fail
when the decode is broken on purpose)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from posebh import ops
from posebh.checkpoint import load_model, split_official, to_official
from posebh.cli import main as cli_main
from posebh.datasets import default_spec
from posebh.evaluate import default_protocol, evaluate
from posebh.models import build_model
from posebh.reproduce import regression, synthetic
from posebh.reproduce.harness import RunContext, evaluate_table
from posebh.reproduce.tables import TABLE_NAMES, TableError, load_table, read_metric

# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------

# A few published cells, restated from the PoseBH README (release 8f03438) independently of
# the TOML files, to catch a transposed or mistyped value.
PUBLISHED = [
    ("table1", "coco", "posebh_b", "AP", 77.3),
    ("table1", "mpii", "vitpose_plus_h", "PCKh@0.1", 41.6),
    ("table1", "apt36k", "posebh_h", "AR", 92.6),
    ("table1", "coco_wholebody", "vitpose_plus_b", "AR", None),  # "–" in the README
    ("table3", "ochuman", "posebh_h", "AP", 87.0),
    ("table3", "coco", "vitpose_plus_b", "AR", 81.5),
    ("table4", "interhand2d", "posebh_b_paper", "EPE", 3.70),
    ("table4", "interhand2d", "posebh_b_rerun", "AUC", 86.6),
    ("table5", "pw3d", "vitpose_plus_b", "AP", 81.7),
]


@pytest.mark.parametrize(("table", "dataset", "model", "metric", "value"), PUBLISHED)
def test_published_values(table, dataset, model, metric, value) -> None:
    t = load_table(table)
    (row,) = [r for r in t.rows if r.dataset == dataset]
    assert row.expected_value(model, metric) == value
    assert "8f03438" in t.source


def test_every_table_loads_with_known_datasets() -> None:
    from posebh.datasets import DATASET_NAMES

    for name in TABLE_NAMES:
        t = load_table(name)
        assert t.models and t.rows
        for row in t.rows:
            assert row.dataset in DATASET_NAMES
            assert row.tolerance > 0
            for values in row.expected.values():
                assert len(values) <= len(row.metrics)


def test_malformed_table_toml_names_the_file_line_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text('name = "x"\ntitle "t"\nsource = "s"\n')
    with pytest.raises(TableError) as err:
        load_table(bad)
    text = str(err.value)
    assert str(bad) in text and "not valid TOML" in text
    assert "line 2" in text and "'title \"t\"'" in text  # the line, and its field
    assert "key = value" in text and "table1.toml" in text  # how to mend it


def test_bad_table_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\ntitle = "t"\nsource = "s"\n[[models]]\nid = "a"\nlabel = "A"\n')
    with pytest.raises(TableError, match=r"\[\[models\]\] #1: missing field 'kind'"):
        load_table(bad)
    with pytest.raises(TableError, match="unknown table"):
        load_table("table9")


def test_read_metric_units() -> None:
    metrics = {"AP": 0.7731, "PCKh": 93.2, "EPE": 3.61, "wholebody": {"AP": 0.579}}
    assert read_metric(metrics, "AP") == pytest.approx(77.31)
    assert read_metric(metrics, "PCKh") == pytest.approx(93.2)
    assert read_metric(metrics, "EPE") == pytest.approx(3.61)
    assert read_metric(metrics, "AP", part="wholebody") == pytest.approx(57.9)
    assert read_metric(metrics, "AR") is None


# ------------------------------------------------------------------------------------------
# Real mode on the shared fixtures
# ------------------------------------------------------------------------------------------


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


@pytest.fixture(scope="module")
def fixture_root(fixtures_dir: Path, tmp_path_factory) -> Path:
    """The mmpose test fixtures arranged in the official ``data/`` layout (no APT-36K, no
    MPII head boxes: those cells must say why they did not run)."""
    root = tmp_path_factory.mktemp("data")
    f = fixtures_dir
    _link(f / "coco" / "test_coco.json", root / "coco/annotations/person_keypoints_val2017.json")
    _link(
        f / "coco" / "test_coco_wholebody.json",
        root / "coco/annotations/coco_wholebody_val_v1.0.json",
    )
    _link(f / "coco", root / "coco/val2017")
    _link(
        f / "coco" / "test_coco_det_AP_H_56.json",
        root / "coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json",
    )
    # test-dev: an image list + detections (the fixture's val images stand in).
    _link(f / "coco" / "test_coco.json", root / "coco/annotations/image_info_test-dev2017.json")
    _link(f / "coco", root / "coco/test2017")
    _link(
        f / "coco" / "test_coco_det_AP_H_56.json",
        root / "coco/person_detection_results/COCO_test-dev2017_detections_AP_H_609_person.json",
    )
    _link(f / "aic" / "test_aic.json", root / "aic/annotations/aic_val.json")
    _link(
        f / "aic",
        root / "aic/ai_challenger_keypoint_validation_20170911/keypoint_validation_images_20170911",
    )
    _link(f / "mpii" / "test_mpii.json", root / "mpii/annotations/mpii_val.json")
    _link(f / "mpii", root / "mpii/images")
    _link(f / "ap10k" / "test_ap10k.json", root / "ap10k/annotations/ap10k-test-split1.json")
    _link(f / "ap10k", root / "ap10k/data")
    _link(
        f / "ochuman" / "test_ochuman.json",
        root / "ochuman/annotations/ochuman_coco_format_test_range_0.00_1.00.json",
    )
    _link(f / "ochuman", root / "ochuman/images")
    return root


def _tiny_official(kind: str) -> dict:
    """A small model at a preset width (384: ViT-S heads), saved as the release files are:
    official key names under ``state_dict``, no posebh metadata."""
    torch.manual_seed(0)
    preset = "posebh_vit_small" if kind == "posebh" else "vitpose_plus_small"
    extra = {"proto_channels": 16} if kind == "posebh" else {}
    model = build_model(preset, depth=1, head_filters=16, **extra)
    return {"state_dict": to_official(model.state_dict()), "meta": {"note": "test"}}


@pytest.fixture(scope="module")
def fixture_weights(tmp_path_factory) -> Path:
    weights = tmp_path_factory.mktemp("weights")
    torch.save(_tiny_official("vitpose_plus"), weights / "vitpose+_base.pth")
    torch.save(_tiny_official("posebh"), weights / "posebh_base.pth")
    return weights


@pytest.mark.slow
def test_real_mode_on_fixtures(fixture_root: Path, fixture_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    status = cli_main(
        ["reproduce", "table1", "--data-root", str(fixture_root), "--weights",
         str(fixture_weights), "--out", str(out), "--no-progress", "--models",
         "vitpose_plus_b,posebh_b,posebh_h"],
    )  # fmt: skip
    report = json.loads((out / "results.json").read_text())
    cells = {(c["dataset"], c["metric"], c["model"]): c for c in report["cells"]}
    assert report["mode"] == "real" and report["comparable_with_published"] is True
    # The random tiny model is far from the published numbers: real cells fail → exit 1.
    assert status == 1
    coco = cells[("coco", "AP", "posebh_b")]
    assert coco["expected"] == 77.3 and coco["measured"] is not None
    assert coco["status"] == "fail"
    assert coco["delta"] == pytest.approx(coco["measured"] - 77.3)
    # Independent of the harness: split the file as model_split.py does, evaluate directly.
    state = torch.load(fixture_weights / "posebh_base.pth", weights_only=True)
    split = load_model({"state_dict": split_official(state, "coco", keep_prototype_head=True)})
    direct = evaluate(
        split,
        default_spec("coco", "val", fixture_root),
        protocol=default_protocol("coco"),
        progress=False,
        log=None,
    )
    assert coco["measured"] == pytest.approx(100 * direct.metrics["AP"], abs=1e-9)
    assert report["rows"][0]["boxes"].startswith("detections")
    # Missing inputs are reported per cell, naming the file — never dropped.
    apt = cells[("apt36k", "AP", "posebh_b")]
    assert apt["status"] == "not run" and "ap36k" in apt["note"]
    mpii = cells[("mpii", "PCKh", "vitpose_plus_b")]
    assert mpii["status"] == "not run" and "mpii_gt_val.mat" in mpii["note"]
    huge = cells[("coco", "AP", "posebh_h")]
    assert huge["status"] == "not run" and "posebh_huge.pth not found" in huge["note"]
    # AP-10K (expert 3) and WholeBody (expert 5, the wholebody part) ran.
    assert cells[("ap10k", "AP", "posebh_b")]["measured"] is not None
    assert cells[("coco_wholebody", "AP", "vitpose_plus_b")]["measured"] is not None
    md = (out / "results.md").read_text()
    assert "77.3 / " in md and "✗" in md
    # The paired Δ PoseBH-B − ViTPose++-B: the full-set difference of the two cells, and the
    # same interval as `posebh compare` on the two written predictions.json files.
    delta = next(d for d in report["deltas"] if d["row"] == "COCO val" and d["metric"] == "AP")
    base = cells[("coco", "AP", "vitpose_plus_b")]
    assert delta["delta"] == pytest.approx(coco["measured"] - base["measured"], abs=1e-9)
    from posebh.compare import CompareInputs, compare

    ann = fixture_root / "coco" / "annotations" / "person_keypoints_val2017.json"
    paired = compare(base["eval_dir"], coco["eval_dir"], CompareInputs("coco", ann),
                     num_resamples=report["bootstrap"]["resamples"], seed=0)  # fmt: skip
    assert delta["ci95"] == pytest.approx(paired["metrics"]["AP"]["ci95"], abs=1e-9)
    assert "Δ PoseBH-B − ViTPose++-B [95 % CI]" in md
    lo, hi = coco["ci95"]
    assert lo <= coco["measured"] <= hi
    assert report["provenance"]["commit"] is None or len(report["provenance"]["commit"]) == 40
    assert report["checkpoints"]["posebh_b"]["multi_dataset"] is True
    # The fixtures have no train splits: every floor says so instead of showing a number.
    floors = {(f["row"].split()[0], f["metric"]): f for f in report["floors"]}
    assert floors[("COCO", "AP")]["value"] is None
    assert "no train annotations" in floors[("COCO", "AP")]["source"]


def test_floor_column_is_the_train_mean_pose_in_the_rows_boxes(
    fixtures_dir: Path, fixture_weights: Path, tmp_path: Path
) -> None:
    """With a train split next to COCO val, the COCO row's floor is the train mean pose in
    the row's detection boxes, in the row's units (×100), and it shows in the wide table."""
    from posebh.reproduce.harness import FLOOR_LABEL, row_floors, wide_table

    root, f = tmp_path / "data", fixtures_dir / "coco"
    _link(f / "test_coco.json", root / "coco/annotations/person_keypoints_val2017.json")
    _link(f / "test_coco.json", root / "coco/annotations/person_keypoints_train2017.json")
    _link(f, root / "coco/val2017")
    _link(
        f / "test_coco_det_AP_H_56.json",
        root / "coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json",
    )
    table = load_table("table1")
    ctx = RunContext(data_root=root, weights=fixture_weights, mode="real", measured_label="x",
                     progress=False)  # fmt: skip
    floors = row_floors(table, ctx)
    coco_row = next(r for r in table.rows if r.dataset == "coco")
    direct = evaluate(
        None,
        default_spec("coco", "val", root),
        mean_pose_from=default_spec("coco", "train", root, use_gt_bbox=True),
        log=None,
        progress=False,
    )
    value, source = floors[(coco_row.label, "AP")]
    assert direct.meta["boxes"] == "detections"
    assert value == pytest.approx(100 * direct.metrics["AP"], abs=1e-9)
    assert "person_keypoints_train2017.json" in source and "12 instances" in source
    aic_row = next(r for r in table.rows if r.dataset == "aic")
    assert floors[(aic_row.label, "AP")][0] is None
    run = evaluate_table(table, ctx, tmp_path / "out", models=["posebh_b"], log=None)
    text = wide_table(run)
    assert FLOOR_LABEL in text and f"{value:.1f}" in text


@pytest.mark.slow
def test_real_mode_test_dev_writes_submission(
    fixture_root: Path, fixture_weights: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    cli_main(
        ["reproduce", "table3", "--data-root", str(fixture_root), "--weights",
         str(fixture_weights), "--out", str(out), "--no-progress", "--no-plots", "--models",
         "posebh_b"],
    )  # fmt: skip
    report = json.loads((out / "results.json").read_text())
    cells = {(c["dataset"], c["metric"]): c for c in report["cells"]}
    sub = cells[("coco", "AP")]
    assert sub["status"] == "submission" and sub["measured"] is None
    predictions = json.loads((Path(sub["eval_dir"]) / "predictions.json").read_text())
    assert predictions and {"image_id", "category_id", "keypoints", "score"} <= set(predictions[0])
    assert len(predictions[0]["keypoints"]) == 17 * 3
    # OCHuman runs with the COCO expert and head, GT boxes.
    assert cells[("ochuman", "AP")]["measured"] is not None


def test_cli_errors_are_explained(capsys) -> None:
    assert cli_main(["reproduce", "table1", "--weights", "w"]) == 2
    assert "needs both --data-root and --weights" in capsys.readouterr().err
    assert cli_main(["reproduce", "table1", "--models", "nope"]) == 2
    assert "not columns of table1" in capsys.readouterr().err


def test_train_mode_dry_run_prints_the_official_recipes(capsys, tmp_path: Path) -> None:
    status = cli_main(
        ["reproduce", "table1", "--data-root", "data", "--train", "--dry-run", "--gpus", "8",
         "--out", str(tmp_path)],
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    lines = [line for line in out.splitlines() if line.startswith("$ torchrun")]
    # The baseline first, then PoseBH from it; the huge PoseBH from the huge ViTPose++.
    assert "--preset vitpose_plus_vit_base" in lines[0]
    posebh_b = next(line for line in lines if "--preset posebh_vit_base" in line)
    assert "vitpose+_base/model.pth" in posebh_b
    assert any("--preset posebh_vit_huge" in line for line in lines)


def test_synthetic_cells_are_never_compared(fixture_root: Path, fixture_weights: Path) -> None:
    table = load_table("table2")
    ctx = RunContext(
        data_root=fixture_root, weights=fixture_weights, mode="synthetic", measured_label="x",
        progress=False,
    )  # fmt: skip
    run = evaluate_table(table, ctx, fixture_root / ".." / "unused", log=None)
    assert all(c.status in ("synthetic", "not run") for c in run.cells)
    assert not run.failed()


def test_cells_at_the_no_model_floor_are_marked() -> None:
    """A measured cell must beat its row's floor by 1 point, and by 2× or 10 points (EPE:
    lower is better) to count as learned; the others are marked in the table, named below it
    and flagged in results.json, so a chance-level number cannot pass for a result."""
    from posebh.reproduce.harness import (
        Cell,
        TableRun,
        floor_summary,
        run_to_dict,
        versus_floor,
        wide_table,
    )

    assert versus_floor(13.6, 1.0, "AP") == "above floor"
    assert versus_floor(0.9, 0.0, "AP") == "not above floor"  # less than one point
    assert versus_floor(1.5, 0.0, "AP") == "above floor"
    assert versus_floor(1.9, 1.0, "AP") == "not above floor"  # less than twice, < 10 points
    assert versus_floor(2.0, 1.0, "AP") == "above floor"
    assert versus_floor(28.0, 19.0, "PCKh") == "not above floor"  # < 2×, < 10 points
    assert versus_floor(29.0, 19.0, "PCKh") == "above floor"  # a high floor: 10 points suffice
    assert versus_floor(0.4, 0.5, "AP") == "not above floor"  # below the floor
    assert versus_floor(9.0, 10.0, "EPE") == "not above floor"
    assert versus_floor(5.5, 10.0, "EPE") == "not above floor"
    assert versus_floor(5.0, 10.0, "EPE") == "above floor"
    assert versus_floor(19.0, 30.0, "EPE") == "above floor"  # 11 px better, not halved
    assert versus_floor(None, 1.0, "AP") is None and versus_floor(3.0, None, "AP") is None

    table = load_table("table1")
    rows = {r.dataset: r for r in table.rows}

    def cell(dataset: str, measured: float) -> Cell:
        row = rows[dataset]
        return Cell(row=row.label, dataset=dataset, split=row.split, metric="AP",
                    model="posebh_b", model_label="PoseBH-B", expected=77.3,
                    measured=measured, tolerance=0.5, status="synthetic")  # fmt: skip

    ctx = RunContext(data_root=Path("data"), weights=Path("weights"), mode="synthetic",
                     measured_label="x", progress=False)  # fmt: skip
    floors = {(rows["coco"].label, "AP"): (0.1, "s"), (rows["aic"].label, "AP"): (0.0, "s")}
    run = TableRun(table, ctx, [cell("coco", 2.0), cell("aic", 0.0)], {}, 0.0, floors=floors)
    lines = {ln.split("|")[1].strip(): ln for ln in wide_table(run).splitlines()[2:]}
    assert "syn 0.0 (at floor)" in lines[rows["aic"].label]
    assert "syn 2.0" in lines[rows["coco"].label] and "floor)" not in lines[rows["coco"].label]
    summary = " ".join(floor_summary(run))
    assert rows["aic"].label in summary and rows["coco"].label not in summary
    assert "chance level" in summary
    cells = {c["dataset"]: c for c in run_to_dict(run)["cells"]}
    assert cells["aic"]["versus_floor"] == "not above floor" and cells["aic"]["floor"] == 0.0
    assert cells["coco"]["versus_floor"] == "above floor" and cells["coco"]["floor"] == 0.1
    # No floors (e.g. --no-floor): no marks, no summary.
    bare = dataclasses.replace(run, floors={})
    assert "(at floor)" not in wide_table(bare) and floor_summary(bare) == []
    # Pixels keep two decimals beside percentages of the same row; lower EPE is better.
    hand = next(r for r in load_table("table4").rows if r.dataset == "interhand2d")
    mixed = [
        dataclasses.replace(
            cell("coco", 9.0),
            row=hand.label,
            dataset="interhand2d",
            metric=metric,
            measured=measured,
        )
        for metric, measured in (("EPE", 9.5), ("AUC", 20.5), ("PCK", 80.0))
    ]
    floors = {(hand.label, m): (v, "s") for m, v in (("EPE", 10.0), ("AUC", 20.0), ("PCK", 20.0))}
    run = TableRun(load_table("table4"), ctx, mixed, {}, 0.0, floors=floors)
    verdicts = [run.versus_floor(c) for c in mixed]
    assert verdicts == ["not above floor", "not above floor", "above floor"]
    summary = floor_summary(run)[0]
    assert "EPE, PoseBH-B: 9.50 (floor 10.00)" in summary
    assert "AUC, PoseBH-B: 20.5 (floor 20.0)" in summary and "PCK," not in summary


# ------------------------------------------------------------------------------------------
# Metric regression
# ------------------------------------------------------------------------------------------


def test_compare_reports_moved_and_missing_metrics() -> None:
    base = {"coco val AP": 98.9, "aic val AP": 76.5, "mpii val PCKh": 100.0}
    measured = {"coco val AP": 98.93, "aic val AP": 70.0, "pw3d test AP": 100.0}
    diffs = {d.key: d for d in regression.compare(base, measured, 0.05)}
    assert set(diffs) == {"aic val AP", "mpii val PCKh", "pw3d test AP"}
    assert diffs["aic val AP"].delta == pytest.approx(-6.5)
    assert diffs["mpii val PCKh"].measured is None
    text = regression.format_diff("protocol", list(diffs.values()), 3)
    assert "3 of 3 metrics outside" in text and "missing" in text


def test_shortened_schedule_keeps_proportions() -> None:
    from posebh.training import get_preset

    cfg = synthetic.shortened(get_preset("posebh_tiny_synth"), 80)
    assert cfg.length == 80
    assert sorted({e.at for e in cfg.events}) == [0, 40, 72]
    assert cfg.optim.milestones == (40, 72)


@pytest.mark.parametrize("section", regression.SECTIONS)
def test_committed_baselines_match_the_config(section: str) -> None:
    """Each committed baseline was made with today's RegressionConfig (else the session
    refuses to compare) and holds the metrics of its section."""
    saved = json.loads((regression.default_baseline_dir() / f"{section}.json").read_text())
    config = dataclasses.asdict(regression.RegressionConfig())
    assert saved["config"] == config
    if section == "protocol":
        assert saved["tolerance"] == config["protocol_tolerance"]
        keys = set(saved["metrics"])
    else:  # one tolerance per checked metric; every other metric named with its reason
        assert set(saved["tolerance"]) == set(saved["metrics"])
        assert not set(saved["metrics"]) & set(saved["not_checked"])
        keys = set(saved["metrics"]) | set(saved["not_checked"])
    splits = regression.PROTOCOL_SPLITS if section == "protocol" else regression.TRAINING_SPLITS
    datasets = {regression._key_dataset(k) for k in keys}
    assert datasets == {d for d, _ in splits}


def _training_baseline() -> dict:
    return json.loads((regression.default_baseline_dir() / "training.json").read_text())


def test_training_tolerances_follow_from_the_measured_spread() -> None:
    """Each checked metric's tolerance is the stated multiple of its spread over the recorded
    runs (what legitimately varies between machines: the thread count), with a floor; every
    other metric is named with the reason it is not checked."""
    saved = _training_baseline()
    source = saved["tolerance_source"]
    runs = source["runs"]
    assert len(runs) >= 3 and saved["metrics"], "measure the spread over several runs"
    reference = runs[source["reference_run"]]
    keys = set(reference)
    assert all(set(r) == keys for r in runs.values())
    spread = {k: max(r[k] for r in runs.values()) - min(r[k] for r in runs.values()) for k in keys}
    assert source["spread"] == pytest.approx(spread, abs=1e-9)
    kept, dropped = regression.derive_tolerances(
        reference,
        spread,
        multiple=source["multiple"],
        floor=source["floor"],
        headroom=source["headroom"],
    )
    assert kept == saved["tolerance"]
    assert set(dropped) == set(saved["not_checked"])
    assert saved["metrics"] == {k: reference[k] for k in kept}
    assert source["multiple"] >= 2 and source["headroom"] >= 2


def test_halving_any_checked_training_metric_fails() -> None:
    """The training section can fail: every checked metric sits well above its tolerance
    (and the tolerance floor, and the no-model floor), and halving any one of them alone
    leaves its tolerance."""
    saved = _training_baseline()
    metrics, tolerance = saved["metrics"], saved["tolerance"]
    assert metrics and any(k.startswith("posebh: ") for k in metrics)
    assert any(k.startswith("vitpose_plus: ") for k in metrics)
    floor = saved["tolerance_source"]["floor"]
    for key, value in metrics.items():
        assert tolerance[key] >= floor > 0
        assert value - tolerance[key] > 0 and value >= 2.5 * tolerance[key], key
        # A model that learned nothing (the train mean pose in every box) is out of tolerance.
        chance = saved["no_model_floor"][key.split(": ", 1)[1]]
        assert value - tolerance[key] > chance, key
        halved = {**metrics, key: value / 2}
        assert [d.key for d in regression.compare(metrics, halved, tolerance)] == [key]
    assert regression.compare(metrics, dict(metrics), tolerance) == []


def test_regression_command_exits_1_when_a_checked_metric_halves(
    monkeypatch, tmp_path: Path, capsys
) -> None:
    """Through the command line: the committed training baseline with one checked metric
    halved (the other metrics, checked or not, as measured) exits 1 naming it."""
    saved = _training_baseline()
    reference = saved["tolerance_source"]["runs"][saved["tolerance_source"]["reference_run"]]
    key = sorted(saved["metrics"])[0]

    def measure(section, config, cache_dir, **kwargs):
        assert section == "training"
        return {**reference, key: reference[key] / 2}

    monkeypatch.setattr(regression, "measure", measure)
    argv = ["regression", "--sections", "training", "--out", str(tmp_path)]
    assert cli_main(argv) == 1
    out = capsys.readouterr()
    assert "1 of " in out.out and key in out.out and "--refresh" in out.err
    monkeypatch.setattr(regression, "measure", lambda *a, **k: dict(reference))
    assert cli_main(argv) == 0


def test_training_baseline_catches_a_trainer_that_stops_learning() -> None:
    """A model that learned nothing scores ≈ 0 everywhere: the committed training baseline
    must have metrics far enough above 0 that such a run fails, for both models."""
    saved = _training_baseline()
    dead = {k: 0.0 for k in saved["metrics"]}
    failing = {d.key for d in regression.compare(saved["metrics"], dead, saved["tolerance"])}
    assert any(k.startswith("vitpose_plus: ") for k in failing), failing
    assert any(k.startswith("posebh: ") for k in failing), failing
    assert "posebh: mpii val PCKh" in failing


@pytest.fixture(scope="module")
def regression_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("regression_cache")


@pytest.mark.slow
@pytest.mark.parametrize("broken", [False, True])
def test_protocol_regression_fails_with_a_broken_decode(
    broken: bool, regression_cache: Path, monkeypatch, tmp_path: Path
) -> None:
    """The committed protocol baseline holds; a decode that mixes up the UDP and the plain
    heatmap → image transforms (the classic sub-pixel bug) moves the metrics out of tolerance
    and the regression says which."""
    if broken:
        real = ops.decode_heatmaps

        def decode_with_swapped_transform(*args, **kwargs):
            kwargs["use_udp"] = not kwargs.get("use_udp", False)
            return real(*args, **kwargs)

        monkeypatch.setattr(ops, "decode_heatmaps", decode_with_swapped_transform)
    ok, report = regression.check(
        ["protocol"],
        cache_dir=regression_cache,
        out_dir=tmp_path,
        datasets=["coco", "aic", "coco_wholebody"],
        log=None,
    )
    if not broken:
        assert ok, report
        return
    assert not ok
    assert "outside their tolerance" in report
    failing = json.loads((tmp_path / "regression.json").read_text())["protocol"]["failures"]
    keys = {f["key"] for f in failing}
    assert "coco val AP" in keys and "aic val AP" in keys
    assert all(f["measured"] < f["baseline"] for f in failing if f["key"].endswith(" AP"))


# ------------------------------------------------------------------------------------------
# Synthetic default and ablations, end to end on the 'tiny' world with a few steps
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_synthetic_default_end_to_end(tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "run"
    args = ["--world", "tiny", "--train-steps", "3", "--cache-dir", str(cache), "--out",
            str(out), "--no-progress"]  # fmt: skip
    assert cli_main(["reproduce", "table5", *args]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["mode"] == "synthetic" and report["comparable_with_published"] is False
    cells = {(c["metric"], c["model"]): c for c in report["cells"]}
    assert cells[("AP", "posebh_b_rerun")]["expected"] == 83.8
    for c in report["cells"]:
        assert c["status"] == "synthetic" and c["measured"] is not None, c
        assert c["delta"] is None, c  # a SynthPose number has no Δ to a published one
    # Transfer runs start from their multi-dataset stand-ins (4 runs in all), cached.
    runs = report["provenance"]["synthetic"]["runs"]
    assert set(runs) == {"vitpose_plus", "posebh", "vitpose_plus_pw3d", "posebh_pw3d"}
    assert runs["posebh_pw3d"]["init"] == runs["posebh"]["model"]
    assert all(r["steps"] == 3 for r in runs.values())
    md = (out / "results.md").read_text()
    assert "SYNTHETIC" in md and "NOT comparable" in md and "/ syn " in md
    assert md.count("- commit ") == 1 and "- hardware " in md
    assert (out / "expected_vs_measured.png").stat().st_size > 0
    assert (out / "plots" / "posebh_b_paper" / "overlays_pw3d.png").is_file()
    # A second run reuses every cached model (no training: the runs' files are unchanged).
    stamps = {n: Path(r["model"]).stat().st_mtime_ns for n, r in runs.items()}
    assert cli_main(["reproduce", "table5", *args[:-3], "--out", str(tmp_path / "again"),
                     "--no-progress", "--no-plots"]) == 0  # fmt: skip
    assert stamps == {n: Path(r["model"]).stat().st_mtime_ns for n, r in runs.items()}


def test_ablation_variants_change_one_thing() -> None:
    from posebh.reproduce.ablations import VARIANTS, variant_config
    from posebh.training import get_preset

    recipe = get_preset("posebh_tiny_synth")
    configs = {v.id: variant_config(v, recipe, 200) for v in VARIANTS if not v.baseline}
    actions = {k: [e.action for e in c.events] for k, c in configs.items()}
    assert "cps_init" not in actions["prototypes"] and "css_on" not in actions["prototypes"]
    assert "cps_init" in actions["cps"] and "css_on" not in actions["cps"]
    assert "css_on" in actions["full"] and actions["full"] == actions["m1"] == actions["official"]
    assert configs["m5"].model_overrides["num_prototypes"] == 5
    assert configs["official"].model_overrides["compat"] == "official"
    assert "compat" not in configs["full"].model_overrides
    assert all(c.length == 200 for c in configs.values())


@pytest.mark.slow
def test_ablation_report_renders_the_cross_type_summary_as_a_table() -> None:
    from posebh.reproduce.ablations import markdown

    metric = {"coco": "AP", "mpii": "PCKh", "aic": "AP"}
    summary = {
        "coco": {"in_domain": 0.040, "cross_mean": 0.024, "gap": 0.016},
        "mpii": {"in_domain": 35.9, "cross_mean": 32.2, "gap": 3.7},
        "aic": {"in_domain": 0.0, "cross_mean": None, "gap": None},
    }
    variant = {
        "label": "baseline", "groups": ["components"], "mean": 1.0,
        "metrics": {"coco val": {"metric": "AP", "value": 4.0}},
        "cross_type": {"metric": metric, "summary": summary},
    }  # fmt: skip
    report = {
        "variants": [variant], "measured_on": "x", "posebh_stage_steps": 1,
        "provenance": {"commit": "c", "versions": {}},
    }  # fmt: skip
    md = markdown(report).split("## Cross-type")[1]
    row = next(line for line in md.splitlines() if line.startswith("| baseline"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # AP fractions in percent, PCKh as it is, a missing cross mean as "–".
    assert cells == ["baseline", "4.0 / 2.4 (+1.6)", "35.9 / 32.2 (+3.7)", "0.0 / –"]
    assert "{" not in md


def test_ablation_report_shows_intervals_and_the_paired_delta_table() -> None:
    from posebh.reproduce.ablations import markdown

    def variant(id_: str, label: str, value: float, ci, delta=None) -> dict:
        return {"id": id_, "label": label, "groups": ["M"], "mean": value,
                "metrics": {"coco val": {"metric": "AP", "value": value, "ci95": ci},
                            "mpii val": {"metric": "PCKh", "value": None, "ci95": None}},
                "delta_vs_baseline": delta, "cross_type": None}  # fmt: skip

    up = {"metric": "AP", "delta": 0.44, "ci95": [0.12, 0.81], "p": 0.01, "excludes_zero": True}
    flat = {"metric": "AP", "delta": -0.2, "ci95": [-0.6, 0.25], "p": 0.4, "excludes_zero": False}
    report = {
        "variants": [
            variant("baseline", "multi-head baseline", 4.0, [3.04, 4.96]),
            variant("m1", "M = 1", 4.44, [3.5, 5.3], {"coco val": up, "mpii val": None}),
            variant("m5", "M = 5", 3.8, None, {"coco val": flat, "mpii val": None}),
        ],
        "measured_on": "x", "posebh_stage_steps": 1, "provenance": {"commit": "c", "versions": {}},
        "bootstrap": {"resamples": 1000, "seed": 0},
    }  # fmt: skip
    values, deltas = markdown(report).split("## Δ vs multi-head baseline [95 % CI]")

    def cells(text: str, label: str) -> list[str]:
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} "))
        return [c.strip() for c in row.strip("|").split("|")]

    assert cells(values, "multi-head baseline")[2:] == ["4.0 [3.0, 5.0]", "–", "4.0"]
    assert cells(values, "M = 5")[2] == "3.8"  # no interval: the bare value
    assert cells(deltas, "M = 1") == ["M = 1", "+0.4 [+0.1, +0.8] *", "–"]
    assert cells(deltas, "M = 5") == ["M = 5", "-0.2 [-0.6, +0.2]", "–"]
    assert not any(line.startswith("| multi-head baseline") for line in deltas.splitlines())
    assert "1000 resamples, seed 0" in deltas


def test_ablation_cross_type_cells_carry_their_intervals() -> None:
    from posebh.reproduce.ablations import _cross_table

    summary = {
        "coco": {"in_domain": 0.040, "cross_mean": 0.024, "gap": 0.016,
                 "in_domain_ci95": [0.031, 0.052], "cross_mean_ci95": [0.02, 0.03],
                 "gap_ci95": [0.004, 0.027]},
        "mpii": {"in_domain": 35.9, "cross_mean": None, "gap": None,
                 "in_domain_ci95": [33.0, 38.5], "cross_mean_ci95": None, "gap_ci95": None},
    }  # fmt: skip
    table = _cross_table([("full", {"metric": {"coco": "AP", "mpii": "PCKh"}, "summary": summary})])
    row = next(line for line in table.splitlines() if line.startswith("| full"))
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "full", "4.0 [3.1, 5.2] / 2.4 [2.0, 3.0] (+1.6 [+0.4, +2.7])", "35.9 [33.0, 38.5] / –"
    ]  # fmt: skip


def test_ablations_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "abl"
    status = cli_main(
        ["reproduce", "ablations", "--world", "tiny", "--steps", "4", "--baseline-steps", "3",
         "--only", "baseline,m1", "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
         "--no-progress", "--no-cross-type"]
    )  # fmt: skip
    assert status == 0
    report = json.loads((out / "results.json").read_text())
    by_id = {v["id"]: v for v in report["variants"]}
    assert set(by_id) == {"baseline", "m1"}
    assert by_id["m1"]["model_overrides"] == {"num_prototypes": 1}
    state = torch.load(by_id["m1"]["model"], weights_only=True)["state_dict"]
    assert state["proto_head.kpt_prototype.prototypes"].shape[1] == 1  # M = 1 really trained
    for v in by_id.values():
        assert set(v["metrics"]) == {"coco val", "aic val", "mpii val", "ap10k test",
                                     "apt36k test", "coco_wholebody val"}  # fmt: skip
    assert "SYNTHETIC" in (out / "results.md").read_text()
    assert (out / "ablations.png").is_file()
    assert (tmp_path / "latest").resolve() == out.resolve()  # as the tables' runs
    # The paired Δ vs the baseline row is the difference of the two full-set values.
    assert by_id["baseline"]["delta_vs_baseline"] is None
    for split, d in by_id["m1"]["delta_vs_baseline"].items():
        base, m1 = by_id["baseline"]["metrics"][split], by_id["m1"]["metrics"][split]
        assert d["delta"] == pytest.approx(m1["value"] - base["value"], abs=1e-9), split
        assert base["ci95"][0] <= base["ci95"][1] and d["ci95"][0] <= d["ci95"][1]
    assert "## Δ vs multi-head baseline (ViTPose++) [95 % CI]" in (out / "results.md").read_text()


def test_verdict_uses_the_interval_widened_by_the_tolerance() -> None:
    """Real cells: "pass" (consistent) iff the published value lies in [lo − tol, hi + tol];
    without an interval, within tol of the measured value."""
    from posebh.reproduce.harness import _status

    assert _status(77.3, 76.0, 0.5, "real", (75.5, 76.9)) == "pass"  # 77.3 ≤ 76.9 + 0.5
    assert _status(77.5, 76.0, 0.5, "real", (75.5, 76.9)) == "fail"  # 77.5 > 77.4
    assert _status(75.0, 76.0, 0.5, "real", (75.5, 76.9)) == "pass"  # 75.0 ≥ 75.5 − 0.5
    assert _status(74.9, 76.0, 0.5, "real", (75.5, 76.9)) == "fail"
    assert _status(77.3, 76.0, 0.5, "real", None) == "fail"  # |Δ| = 1.3 > 0.5
    assert _status(77.3, 77.0, 0.5, "real", None) == "pass"
    assert _status(77.3, 76.0, 0.5, "synthetic", (75.5, 76.9)) == "synthetic"


def test_figure_labels_are_the_table_cell_text(monkeypatch, tmp_path: Path) -> None:
    """The expected-vs-measured figure writes, for every cell that ran, exactly the measured
    text of the table cell (value and interval) and the published value as the table has it;
    cells that did not run are not drawn."""
    from matplotlib.text import Text

    from posebh import plots
    from posebh.reproduce.harness import Cell, TableRun, _plots, wide_table

    table = load_table("table1")
    rows = {r.dataset: r for r in table.rows}
    cells = []
    for dataset, model, label, measured, ci in (
        ("coco", "vitpose_plus_b", "ViTPose++-B", 12.345, (10.04, 14.96)),
        ("coco", "posebh_b", "PoseBH-B", 13.05, (11.5, 14.449)),
        ("mpii", "posebh_b", "PoseBH-B", 30.0, (28.0, 32.0)),
        ("mpii", "vitpose_plus_b", "ViTPose++-B", None, None),
    ):
        row = rows[dataset]
        metric = row.metrics[0]
        cells.append(Cell(row=row.label, dataset=dataset, split=row.split, metric=metric,
                          model=model, model_label=label,
                          expected=row.expected_value(model, metric), measured=measured,
                          tolerance=0.5, status="synthetic" if measured is not None
                          else "not run", ci95=ci))  # fmt: skip
    ctx = RunContext(data_root=Path("data"), weights=Path("weights"), mode="synthetic",
                     measured_label="x", progress=False)  # fmt: skip
    run = TableRun(table, ctx, cells, {}, 0.0)
    seen: dict[str, list] = {}
    draw = plots.plot_expected_vs_measured

    def capture(cells_, path, **kw):
        seen["cells"] = cells_
        return draw(cells_, path, **kw)

    monkeypatch.setattr(plots, "plot_expected_vs_measured", capture)
    monkeypatch.setattr("posebh.reproduce.harness._model_plots", lambda run, out: {})
    _plots(run, tmp_path)
    fig = plots._figure_expected_vs_measured(seen["cells"], title="t", measured_label="x")
    fig.canvas.draw()
    drawn = {t.get_text() for t in fig.findobj(Text) if t.get_visible()}
    table_text = wide_table(run)
    for c in cells:
        if c.measured is None:
            continue
        digits = 2 if c.metric == "EPE" else 1
        measured = f"{c.measured:.{digits}f} [{c.ci95[0]:.{digits}f}, {c.ci95[1]:.{digits}f}]"
        assert f"syn {measured}" in table_text  # the table's cell …
        assert measured in drawn  # … and the figure's label, the same string
        assert f"{c.expected:.{digits}f}" in drawn
    assert not any("30.0 [28.0, 32.0]" in t and "ViTPose" in t for t in drawn)
    assert sum(t.startswith("12.3 [") or t.startswith("13.1 [") for t in drawn) == 2
