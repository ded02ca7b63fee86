"""``posebh compare`` and ``posebh eval --bootstrap``: paired bootstrap on the real fixtures.

References stay independent of the bootstrap: full-set values come from ``oks_eval`` itself,
and a resample's delta is checked against ``oks_eval`` on the duplicated-image dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from posebh.cli import main as cli_main
from posebh.compare import CompareInputs, compare
from posebh.evaluation import oks_eval
from posebh.evaluation.bootstrap import resample_counts
from posebh.skeletons import get_skeleton

pytest.importorskip("pycocotools")


@pytest.fixture()
def coco_pair(shared_dir: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The xtcocotools example GT, its predictions (A) and a noisier copy (B)."""
    examples = shared_dir / "data" / "xtcocoapi_examples"
    gt = examples / "example_coco_val.json"
    preds = json.loads((examples / "example_coco_preds.json").read_text())
    rng = np.random.default_rng(0)
    noisy = []
    for p in preds:
        k = np.asarray(p["keypoints"], dtype=np.float64).reshape(-1, 3)
        k[:, :2] += rng.normal(0, 4.0, (k.shape[0], 2))
        noisy.append({**p, "keypoints": k.ravel().tolist()})
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(preds))
    b.write_text(json.dumps(noisy))
    return gt, a, b


def _sigmas() -> np.ndarray:
    return get_skeleton("coco").sigmas_array()


def test_identical_inputs_give_zero_delta(coco_pair, tmp_path: Path, capsys) -> None:
    gt, a, _ = coco_pair
    out = tmp_path / "cmp"
    status = cli_main(["compare", str(a), str(a), "--dataset", "coco", "--ann-file", str(gt),
                       "--bootstrap", "200", "--out", str(out), "--no-progress"])  # fmt: skip
    assert status == 0
    result = json.loads((out / "compare.json").read_text())
    ap = result["metrics"]["AP"]
    assert ap["delta"] == 0.0 and ap["ci95"] == [0.0, 0.0] and ap["p"] == 1.0
    assert ap["a"] == pytest.approx(100 * oks_eval(gt, a, sigmas=_sigmas())["AP"], abs=1e-12)
    assert "| AP " in capsys.readouterr().out  # the one-screen table


def test_delta_and_its_interval_are_paired(coco_pair) -> None:
    gt, a, b = coco_pair
    inputs = CompareInputs("coco", gt)
    result = compare(a, b, inputs, num_resamples=300, seed=3)
    full_a = oks_eval(gt, a, sigmas=_sigmas())
    full_b = oks_eval(gt, b, sigmas=_sigmas())
    for name in ("AP", "AP50", "AR"):
        m = result["metrics"][name]
        assert m["delta"] == pytest.approx(100 * (full_b[name] - full_a[name]), abs=1e-12)
        lo, hi = m["ci95"]
        assert lo <= hi
    # One resample by hand: pycocotools on the duplicated dataset, for A and for B, with the
    # resample the comparison's seed draws first. The paired delta is their difference.
    data = json.loads(gt.read_text())
    ids = sorted(img["id"] for img in data["images"])
    (counts,) = next(resample_counts(len(ids), 1, seed=3))
    dup = {}
    for side, path in (("a", a), ("b", b)):
        dets = json.loads(path.read_text())
        images, anns, res = [], [], []
        for i, old in enumerate(ids):
            for c in range(counts[i]):
                new = old * 100 + c
                images += [{**im, "id": new} for im in data["images"] if im["id"] == old]
                anns += [{**x, "id": len(anns) + 1 + j, "image_id": new}
                         for j, x in enumerate(y for y in data["annotations"]
                                               if y["image_id"] == old)]  # fmt: skip
                res += [{**d, "image_id": new} for d in dets if d["image_id"] == old]
        dup[side] = oks_eval({**data, "images": images, "annotations": anns}, res,
                             sigmas=_sigmas())["AP"]  # fmt: skip
    from posebh.compare import resampler_of

    _, ra = resampler_of(a, inputs)
    _, rb = resampler_of(b, inputs)
    first = counts[None]
    got = rb.values(first)[0, 0] - ra.values(first)[0, 0]
    assert got == pytest.approx(dup["b"] - dup["a"], abs=1e-12)


def test_compare_errors_name_file_field_and_fix(coco_pair, tmp_path: Path) -> None:
    gt, a, _ = coco_pair
    inputs = CompareInputs("coco", gt)
    preds = json.loads(a.read_text())
    bad_id = tmp_path / "bad_id.json"
    bad_id.write_text(json.dumps([{**preds[0], "image_id": 987654321}, *preds[1:]]))
    with pytest.raises(ValueError, match=r"bad_id\.json.*image_id 987654321 is not in the GT"):
        compare(a, bad_id, inputs, num_resamples=10)
    short = tmp_path / "short.json"
    short.write_text(json.dumps([{**preds[0], "keypoints": preds[0]["keypoints"][:-3]}]))
    with pytest.raises(ValueError, match=r"short\.json.*keypoints"):
        compare(a, short, inputs, num_resamples=10)
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.json.*empty"):
        compare(a, empty, inputs, num_resamples=10)
    with pytest.raises(FileNotFoundError, match=r"without predictions\.json"):
        compare(a, tmp_path, inputs, num_resamples=10)


def test_eval_bootstrap_writes_ci95_and_the_seed(fixtures_dir: Path, tmp_path: Path) -> None:
    folder = fixtures_dir / "coco"
    out = tmp_path / "eval"
    args = ["eval", "--dataset", "coco", "--ann-file", str(folder / "test_coco.json"),
            "--img-prefix", str(folder), "--gt-as-prediction", "--no-progress"]  # fmt: skip
    assert cli_main([*args, "--bootstrap", "100", "--bootstrap-seed", "7", "--out", str(out)]) == 0
    saved = json.loads((out / "metrics.json").read_text())
    boot = saved["meta"]["bootstrap"]
    assert boot["resamples"] == 100 and boot["seed"] == 7 and boot["images"] >= 1
    lo, hi = saved["metrics"]["ci95"]["AP"]
    assert lo <= saved["metrics"]["AP"] <= hi
    assert cli_main([*args, "--bootstrap", "0", "--out", str(out / "off")]) == 0
    off = json.loads((out / "off" / "metrics.json").read_text())
    assert "ci95" not in off["metrics"] and off["meta"]["bootstrap"] is None
    assert off["metrics"]["AP"] == saved["metrics"]["AP"]  # the full-set value is untouched


# ------------------------------------------------------------------------------------------
# SynthPose: every metric family of the six datasets, in the real on-disk formats
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from posebh.synth import generate

    out = tmp_path_factory.mktemp("synth_bootstrap")
    generate(out, "tiny", seed=0, progress=False)
    return out


def _noisy_predictions(instances, sigma_px: float, seed: int) -> list[dict]:
    from posebh.evaluate import ground_truth_predictions

    rng = np.random.default_rng(seed)
    preds = ground_truth_predictions(instances)
    for p in preds:
        k = np.asarray(p["keypoints"], dtype=np.float64)
        k[:, :2] += rng.normal(0, sigma_px, (k.shape[0], 2))
        k[:, 2] = rng.uniform(0.3, 1.0, k.shape[0])
        p["keypoints"] = k
        p["score"] = float(rng.uniform(0.5, 1.0))
    return preds


@pytest.mark.parametrize("dataset", ["coco", "aic", "mpii", "ap10k", "coco_wholebody"])
def test_identity_resample_on_synthpose(synth_world: Path, dataset: str) -> None:
    """On SynthPose the identity resample gives the full-set metrics (pycocotools' for OKS AP,
    pckh's for MPII) to 1e-12."""
    from posebh.datasets import default_spec, read_dataset
    from posebh.evaluate import _flat_metrics, default_protocol, score_records, scored_records

    spec = default_spec(dataset, "test" if dataset == "ap10k" else "val", synth_world)
    instances, _ = read_dataset(spec)
    protocol = default_protocol(dataset)
    records, _ = scored_records(_noisy_predictions(instances, 3.0, 0), instances, spec, protocol)
    metrics, r = score_records(records, instances, spec, protocol, resample=True)
    flat = _flat_metrics(metrics)
    want = np.array([np.nan if flat[n] == -1 else flat[n] for n in r.names])
    got = r.values(np.ones((1, r.num_units), dtype=np.int64))[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)
    assert metrics == score_records(records, instances, spec, protocol)[0]


def test_compare_mpii_predictions(synth_world: Path, tmp_path: Path) -> None:
    """posebh compare on posebh's per-instance predictions.json (MPII PCKh): Δ is the full-set
    PCKh difference; a record with a wrong index is refused naming file and field."""
    from posebh.datasets import default_spec, read_dataset
    from posebh.evaluate import default_protocol, score_records, scored_records

    spec = default_spec("mpii", "val", synth_world)
    instances, _ = read_dataset(spec)
    protocol = default_protocol("mpii")
    files, pckh_of = [], []
    for sigma, name in ((2.0, "a.json"), (6.0, "b.json")):
        records, _ = scored_records(_noisy_predictions(instances, sigma, 1), instances, spec,
                                    protocol)  # fmt: skip
        (tmp_path / name).write_text(json.dumps(records))
        files.append(tmp_path / name)
        pckh_of.append(score_records(records, instances, spec, protocol)[0]["PCKh"])
    inputs = CompareInputs("mpii", Path(spec.ann_file))
    result = compare(*files, inputs, num_resamples=200, seed=0)
    m = result["metrics"]["PCKh"]
    assert m["delta"] == pytest.approx(pckh_of[1] - pckh_of[0], abs=1e-12)
    assert m["ci95"][0] <= m["delta"] <= m["ci95"][1]
    bad = json.loads(files[0].read_text())
    bad[0]["index"] = len(bad) + 5
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"bad\.json: record 0: field 'index'"):
        compare(files[0], tmp_path / "bad.json", inputs, num_resamples=10)
