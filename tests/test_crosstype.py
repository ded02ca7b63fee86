"""Cross-type measurement (``posebh.crosstype``) on a ``tiny`` SynthPose world: the cross GT fed
back as predictions scores perfectly on every cell, perturbed predictions score what an
independent computation says, the diagonal is the in-domain evaluation, and the CLI writes
its files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from posebh.checkpoint import to_official
from posebh.cli import main as cli_main
from posebh.crosstype import CrossTypeResult, cross_pairs, cross_type_eval
from posebh.datasets import default_spec, read_dataset
from posebh.evaluate import compute_metrics, default_protocol, ground_truth_predictions
from posebh.models import build_model
from posebh.synth import generate

HUMANS = ["coco", "aic", "mpii", "coco_wholebody"]
ANIMALS = ["ap10k", "apt36k"]
ALL = HUMANS + ANIMALS


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth_ct")
    generate(out, "tiny", seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def oracle(world: Path) -> CrossTypeResult:
    return cross_type_eval(None, world, heads=ALL, datasets=[*ALL, "ochuman"], oracle=True,
                           progress=False)  # fmt: skip


def _shift(dx: float, dy: float, only: tuple[str, str] | None = None):
    def perturb(d: str, e: str, preds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if only is not None and (d, e) != only:
            return preds
        out = []
        for p in preds:
            k = np.array(p["keypoints"], dtype=np.float64)
            k[:, 0] += dx
            k[:, 1] += dy
            out.append({**p, "keypoints": k})
        return out

    return perturb


def test_pairs_are_the_cells_with_ground_truth() -> None:
    pairs = cross_pairs(ALL, ALL)
    assert len(pairs) == 4 * 4 + 2 * 2
    assert ("coco", "ap10k") not in pairs and ("ap10k", "mpii") not in pairs
    assert ("mpii", "coco_wholebody") in pairs and ("apt36k", "ap10k") in pairs


def test_oracle_scores_one_on_every_cell(oracle: CrossTypeResult) -> None:
    assert oracle.heads == ALL and oracle.datasets == [*ALL, "ochuman"]
    assert set(oracle.matrix) == set(ALL)
    for d in ALL:
        assert list(oracle.matrix[d]) == oracle.datasets
        for e in oracle.datasets:
            v = oracle.matrix[d][e]
            if (d in HUMANS) != (e in [*HUMANS, "ochuman"]):
                assert v is None, (d, e)  # no human GT on animals and vice versa
            elif d == "mpii":
                assert v == pytest.approx(100.0, abs=1e-9), (d, e)
            else:
                assert v == pytest.approx(1.0, abs=1e-12), (d, e)
    assert oracle.metric == {
        "coco": "AP",
        "aic": "AP",
        "mpii": "PCKh",
        "coco_wholebody": "AP(wholebody)",
        "ap10k": "AP",
        "apt36k": "AP",
    }
    # WholeBody: every part, not only the whole-body AP.
    wb = oracle.metrics["coco_wholebody"]["aic"]
    assert all(wb[p]["AP"] == pytest.approx(1.0, abs=1e-12) for p in ("body", "foot", "face"))
    assert oracle.diagonal()["ap10k"] == pytest.approx(1.0)
    assert all(n > 0 for n in oracle.instances.values())


def test_perturbed_oracle_scores_lower(world: Path) -> None:
    res = cross_type_eval(None, world, heads=HUMANS, datasets=HUMANS, oracle=True,
                          perturb=_shift(6.0, -8.0), progress=False)  # fmt: skip
    for d in HUMANS:
        for e in HUMANS:
            top = 100.0 if d == "mpii" else 1.0
            assert 0.0 <= res.matrix[d][e] < top, (d, e, res.matrix[d][e])
    far = cross_type_eval(None, world, heads=["coco", "mpii"], datasets=["aic", "coco"],
                          oracle=True, perturb=_shift(500.0, 500.0, only=("coco", "aic")),
                          progress=False)  # fmt: skip
    assert far.matrix["coco"]["aic"] == 0.0
    assert far.matrix["coco"]["coco"] == pytest.approx(1.0)
    assert far.matrix["mpii"]["aic"] == pytest.approx(100.0)


def test_mpii_head_on_coco_images_pckh_matches_an_independent_count(world: Path) -> None:
    """Every prediction moved by (3, 4) px: a joint is correct when 5 px ≤ 0.5 · 0.6 · the
    head box diagonal, counted straight from the cross-GT file over the 14 joints PCKh
    averages (pelvis 6 and thorax 7 excluded)."""
    res = cross_type_eval(None, world, heads=["mpii"], datasets=["coco"], oracle=True,
                          perturb=_shift(3.0, 4.0), progress=False)  # fmt: skip
    instances, _ = read_dataset(default_spec("coco", "val", world, use_gt_bbox=True))
    cross = json.loads((world / "synthpose/cross_gt/coco_val.json").read_text())
    figs = {(f["image_id"], f["id"]): f for f in cross["figures"]}
    hits = total = 0
    for inst in instances:
        f = figs[(inst.image_id, inst.ann_id)]
        vis = np.asarray(f["keypoints"]["mpii"]).reshape(16, 3)[:, 2] > 0
        x0, y0, x1, y1 = f["head_box"]
        ok = 0.5 * 0.6 * np.hypot(x1 - x0, y1 - y0) >= 5.0
        for j in range(16):
            if j in (6, 7) or not vis[j]:
                continue
            total += 1
            hits += ok
    assert total > 0
    assert res.matrix["mpii"]["coco"] == pytest.approx(100.0 * hits / total, abs=1e-9)


@pytest.mark.parametrize("dataset", ["coco", "aic", "coco_wholebody", "mpii", "ap10k"])
def test_diagonal_equals_the_in_domain_evaluation(world: Path, dataset: str) -> None:
    """Same perturbed predictions scored through the dataset's own files (the ``posebh eval``
    path) and through the cross GT: the same number."""
    spec = default_spec(dataset, "val", world, use_gt_bbox=True)
    instances, _ = read_dataset(spec)
    # MPII's head-size threshold is looser than the OKS scales: move further.
    shift = _shift(6.0, -8.0) if dataset == "mpii" else _shift(1.5, -1.0)
    preds = shift(dataset, dataset, ground_truth_predictions(instances))
    ref, _ = compute_metrics(preds, instances, spec, default_protocol(dataset))
    res = cross_type_eval(None, world, heads=[dataset], datasets=[dataset], oracle=True,
                          perturb=shift, progress=False)  # fmt: skip
    key = {"coco_wholebody": None, "mpii": "PCKh"}.get(dataset, "AP")
    expect = ref["wholebody"]["AP"] if key is None else ref[key]
    assert 0 < res.matrix[dataset][dataset] < (100.0 if dataset == "mpii" else 1.0)
    assert res.matrix[dataset][dataset] == pytest.approx(expect, abs=1e-9)


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(
        "vitpose_plus_base",
        img_size=(64, 48),
        embed_dim=32,
        depth=1,
        num_heads=2,
        part_features=8,
        head_filters=8,
    ).eval()


def test_model_path_and_routes(world: Path) -> None:
    model = _tiny_model()
    for route in ("head", "image"):
        res = cross_type_eval(model, world, heads=["coco", "aic"], datasets=["aic", "coco"],
                              route=route, batch_size=8, progress=False)  # fmt: skip
        for d in ("coco", "aic"):
            for e in ("aic", "coco"):
                assert 0.0 <= res.matrix[d][e] <= 1.0
        assert res.meta["route"] == route
    with pytest.raises(ValueError, match="oracle"):
        cross_type_eval(None, world)


def test_markdown_and_dict(oracle: CrossTypeResult) -> None:
    md = oracle.to_markdown().splitlines()
    assert md[0] == "| head \\ images | metric | " + " | ".join(oracle.datasets) + " |"
    assert len(md) == 2 + len(ALL)
    row = md[2 + ALL.index("mpii")].split("|")
    assert row[1].strip() == "mpii" and row[2].strip() == "PCKh"
    assert row[3 + ALL.index("mpii")].strip() == "**100.0**"
    assert row[3 + ALL.index("ap10k")].strip() == "–"
    d = json.loads(json.dumps(oracle.to_dict()))
    assert d["matrix"]["coco"]["aic"] == pytest.approx(1.0) and d["matrix"]["coco"]["ap10k"] is None
    assert d["summary"]["mpii"] == pytest.approx(
        {"in_domain": 100.0, "cross_mean": 100.0, "gap": 0.0}
    )


def test_summary_averages_the_off_diagonal_cells() -> None:
    res = CrossTypeResult(
        heads=["coco", "ap10k"],
        datasets=["coco", "aic", "ap10k"],
        matrix={"coco": {"coco": 0.5, "aic": 0.2, "ap10k": None},
                "ap10k": {"coco": None, "aic": None, "ap10k": 0.3}},
        metric={"coco": "AP", "ap10k": "AP"},
    )  # fmt: skip
    s = res.summary()
    assert s["coco"] == pytest.approx({"in_domain": 0.5, "cross_mean": 0.2, "gap": 0.3})
    assert s["ap10k"] == {"in_domain": 0.3, "cross_mean": None, "gap": None}


def test_cli_crosstype(world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _tiny_model()
    ckpt = tmp_path / "model.pth"
    meta = {"posebh_train": {"num_heads": model.config.num_heads}}
    torch.save({"state_dict": to_official(model), "meta": meta}, ckpt)
    out = tmp_path / "ct"
    rc = cli_main(["crosstype", "--checkpoint", str(ckpt), "--data-root", str(world),
                   "--out", str(out), "--heads", "mpii,ap10k", "--datasets", "coco,ap10k",
                   "--no-progress"])  # fmt: skip
    assert rc == 0
    data = json.loads((out / "crosstype.json").read_text())
    assert data["heads"] == ["mpii", "ap10k"] and data["datasets"] == ["coco", "ap10k"]
    assert data["matrix"]["mpii"]["ap10k"] is None and data["matrix"]["ap10k"]["coco"] is None
    assert data["meta"]["checkpoint"] == str(ckpt)
    assert "| mpii | PCKh |" in (out / "crosstype.md").read_text()
    assert "wrote" in capsys.readouterr().out


def test_instances_without_cross_gt_are_rejected(world: Path) -> None:
    from posebh.crosstype import cross_instances
    from posebh.synth import load_cross_gt

    instances, _ = read_dataset(default_spec("aic", "val", world, use_gt_bbox=True))
    bad = [dataclasses.replace(instances[0], ann_id=987654321)]
    with pytest.raises(KeyError, match="no cross-type ground truth"):
        cross_instances(bad, load_cross_gt(world, "aic", "val"), "coco")


# ------------------------------------------------------------------------------------------
# Bootstrap intervals
# ------------------------------------------------------------------------------------------


def test_oracle_intervals_are_degenerate_at_one(world: Path) -> None:
    """A perfect prediction scores 1 (100) on every resample of every image set. Human cells
    only: the OKS resampler takes one category, AP-10K / APT-36K GT has one per species."""
    res = cross_type_eval(None, world, heads=HUMANS, datasets=[*HUMANS, "ochuman"],
                          oracle=True, progress=False, bootstrap=20, bootstrap_seed=3)  # fmt: skip
    for d, e in cross_pairs(HUMANS, [*HUMANS, "ochuman"]):
        top = 100.0 if d == "mpii" else 1.0
        assert res.ci[d][e] == pytest.approx([top, top], abs=1e-12), (d, e)
        assert res.replicates[d][e].shape == (20,)
    s = res.summary()["mpii"]
    assert s["in_domain_ci95"] == pytest.approx([100.0, 100.0], abs=1e-12)
    assert s["cross_mean_ci95"] == pytest.approx([100.0, 100.0], abs=1e-12)
    assert s["gap_ci95"] == pytest.approx([0.0, 0.0], abs=1e-12)
    d = json.loads(json.dumps(res.to_dict()))
    assert "replicates" not in d and d["ci"]["coco"]["aic"] == pytest.approx([1.0, 1.0])
    assert d["meta"]["bootstrap"]["resamples"] == 20
    assert "**100.0** [100.0, 100.0]" in res.to_markdown()


def test_perturbed_intervals_bracket_the_values_and_leave_metrics_unchanged(
    world: Path, tmp_path: Path
) -> None:
    # One work_dir: the metrics' meta names the GT file.
    kw = {"heads": HUMANS, "datasets": HUMANS, "oracle": True, "progress": False,
          "perturb": _shift(6.0, -8.0), "work_dir": tmp_path}  # fmt: skip
    on = cross_type_eval(None, world, bootstrap=200, bootstrap_seed=1, **kw)
    off = cross_type_eval(None, world, **kw)
    assert on.metrics == off.metrics and on.matrix == off.matrix  # bit for bit
    assert off.ci == {} and off.replicates == {}
    for d, e in cross_pairs(HUMANS, HUMANS):
        (lo, hi), v = on.ci[d][e], on.matrix[d][e]
        assert lo <= v <= hi, (d, e, v, on.ci[d][e])
        # A cell strictly between 0 and perfect varies over the resamples of the tiny sets.
        assert lo < hi or v in (0.0, 1.0, 100.0), (d, e, v, on.ci[d][e])
    # The same image set is resampled identically for every head, others independently.
    assert on.meta["bootstrap"]["seeds"]["coco"] != on.meta["bootstrap"]["seeds"]["aic"]
    for d, s in on.summary().items():
        lo, hi = s["cross_mean_ci95"]
        assert lo <= s["cross_mean"] <= hi, (d, s)
        others = [on.replicates[d][e] for e in HUMANS if e != d]
        mean = np.mean(others, axis=0)  # NaN where a set's PCKh is undefined: left out
        assert s["cross_mean_ci95"] == pytest.approx(list(np.nanpercentile(mean, [2.5, 97.5])))
        gap = on.replicates[d][d] - mean
        assert s["gap_ci95"] == pytest.approx(list(np.nanpercentile(gap, [2.5, 97.5])))
    assert not set(off.summary()["coco"]) & {"in_domain_ci95", "gap_ci95"}
