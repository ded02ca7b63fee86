"""posebh.bench: the report built from pytest-benchmark's JSON, its files, and one real run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from posebh.bench import (
    MEMORY_TARGETS,
    SPEEDUP_TARGETS,
    BenchReport,
    build_report,
    find_benchmarks_dir,
    markdown_table,
    run_benchmarks,
    write_report,
)
from posebh.cli import build_parser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHA = "0123456789abcdef0123456789abcdef01234567"
VERSIONS = {"python": "3.x", "torch": "t"}


def _bench(
    module: str,
    function: str,
    params: dict[str, str] | None = None,
    *,
    min_s: float,
    median_s: float,
    rounds: int,
    extra: dict[str, Any] | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """One entry of pytest-benchmark's ``benchmarks`` list, as it writes it."""
    name = function + (f"[{'-'.join(params.values())}]" if params else "")
    return {
        "group": group,
        "name": name,
        "fullname": f"benchmarks/{module}.py::{name}",
        "params": params,
        "param": "-".join(params.values()) if params else None,
        "extra_info": extra or {},
        "stats": {"min": min_s, "median": median_s, "rounds": rounds, "mean": median_s},
    }


def _outcome(module: str, name: str, outcome: str, reason: str | None = None, **params: str):
    return {
        "nodeid": f"benchmarks/{module}.py::{name}",
        "name": name,
        "outcome": outcome,
        "reason": reason,
        "params": params,
        "group": None,
    }


@pytest.fixture()
def benchmark_json() -> dict[str, Any]:
    sim, dec = "test_bench_similarity", "test_bench_decode"
    return {
        "machine_info": {
            "node": "box",
            "machine": "x86_64",
            "system": "Linux",
            "release": "6.1",
            "python_version": "3.11.7",
            "cpu": {"brand_raw": "Test CPU 9000", "count": 2, "arch": "X86_64"},
        },
        "commit_info": {"id": SHA, "dirty": False, "branch": "main"},
        "datetime": "2026-01-01T00:00:00+00:00",
        "benchmarks": [
            _bench(sim, "test_bench_prototype_heatmaps", {"case": "all", "backend": "cpp@cpu"},
                   min_s=0.1, median_s=0.11, rounds=3,
                   extra={"backend": "cpp@cpu", "ratio_vs_reference": 3.9,
                          "peak_extra_mb": 120.5}),
            _bench(sim, "test_bench_prototype_heatmaps", {"case": "all", "backend": "torch@cpu"},
                   min_s=0.4, median_s=0.42, rounds=3,
                   extra={"backend": "torch@cpu", "ratio_vs_reference": 1.0}),
            _bench(dec, "test_bench_decode", {"case": "wholebody_udp", "backend": "reference"},
                   min_s=0.0827, median_s=0.0964, rounds=5, extra={"threads": 2}),
            _bench(dec, "test_bench_decode", {"case": "wholebody_udp", "backend": "cpp"},
                   min_s=0.00384, median_s=0.004, rounds=30, extra={"peak_mb": 1.5}),
            _bench(dec, "test_bench_decode", {"case": "coco_udp", "backend": "cpp"},
                   min_s=0.0003, median_s=0.00035, rounds=30),
            _bench("test_bench_train", "test_bench_train_step_tiny", min_s=0.5, median_s=0.64,
                   rounds=5, extra={"images_per_s": 50.0}, group="train-tiny"),
        ],
    }  # fmt: skip


@pytest.fixture()
def outcomes() -> list[dict[str, Any]]:
    dec = "test_bench_decode"
    return [
        _outcome(dec, "test_bench_decode[wholebody_udp-reference]", "passed",
                 case="wholebody_udp", backend="reference"),
        _outcome(dec, "test_bench_decode[wholebody_udp-cpp]", "passed",
                 case="wholebody_udp", backend="cpp"),
        _outcome(dec, "test_bench_decode[wholebody_udp-triton]", "skipped",
                 "triton: tensors are on cpu", case="wholebody_udp", backend="triton"),
    ]  # fmt: skip


def _row(report: BenchReport, suite: str, case: str, backend: str | None):
    (row,) = [r for r in report.rows if (r.suite, r.case, r.backend) == (suite, case, backend)]
    return row


def test_build_report_rows_ratios_and_units(benchmark_json, outcomes) -> None:
    report = build_report(benchmark_json, outcomes, versions=VERSIONS)
    assert len(report.rows) == len(benchmark_json["benchmarks"]) + 1  # + the skipped triton

    ref = _row(report, "decode", "wholebody_udp", "reference")
    cpp = _row(report, "decode", "wholebody_udp", "cpp")
    assert ref.min_ms == pytest.approx(82.7) and ref.median_ms == pytest.approx(96.4)
    assert ref.rounds == 5 and ref.is_reference and ref.ratio_vs_reference == 1.0
    # No ratio in extra_info: computed from the reference row of the same case (min / min).
    assert cpp.ratio_vs_reference == pytest.approx(0.0827 / 0.00384)
    assert cpp.ratio_source == "computed" and cpp.peak_mb == 1.5
    assert cpp.target == SPEEDUP_TARGETS[("decode", "wholebody_udp")]
    assert cpp.meets_target is (cpp.ratio_vs_reference >= cpp.target)

    # The ratio the test measured itself wins over the one computable from the JSON (4.0).
    sim = _row(report, "similarity", "all", "cpp@cpu")
    assert sim.ratio_vs_reference == 3.9 and sim.ratio_source == "extra_info"
    assert sim.peak_mb == 120.5 and sim.meets_target is True
    assert _row(report, "similarity", "all", "torch@cpu").is_reference

    # A backend without a reference row in the run has no ratio; skipped ones keep their reason.
    coco = _row(report, "decode", "coco_udp", "cpp")
    assert coco.min_ms == pytest.approx(0.3) and coco.ratio_vs_reference is None
    triton = _row(report, "decode", "wholebody_udp", "triton")
    assert triton.status == "skipped" and triton.reason == "triton: tensors are on cpu"
    assert triton.min_ms is None and triton.ratio_vs_reference is None

    train = _row(report, "train", "train_step_tiny", None)
    assert train.group == "train-tiny" and train.images_per_s == 50.0
    assert train.ratio_vs_reference is None

    # Within a case the reference comes first.
    decode_rows = [r.backend for r in report.rows if r.case == "wholebody_udp"]
    assert decode_rows[0] == "reference" and set(decode_rows) == {"reference", "cpp", "triton"}

    assert report.machine["cpu"] == "Test CPU 9000" and report.machine["cores"] == 2
    assert report.machine["threads"] == 2  # from the decode rows' extra_info
    assert report.commit["id"] == SHA and report.versions == VERSIONS
    assert report.timed


def test_write_report_files(benchmark_json, outcomes, tmp_path: Path) -> None:
    report = build_report(benchmark_json, outcomes, torch_threads=2, versions=VERSIONS)
    files = write_report(report, tmp_path)
    assert set(files) == {"json", "md", "png"}

    data = json.loads(files["json"].read_text())
    assert data["commit"]["id"] == SHA and data["machine"]["cpu"] == "Test CPU 9000"
    assert data["timed"] is True and len(data["rows"]) == len(report.rows)
    assert {"decode/wholebody_udp", "similarity/all"} <= set(data["targets"])
    cpp = next(r for r in data["rows"] if r["case"] == "wholebody_udp" and r["backend"] == "cpp")
    assert cpp["min_ms"] == pytest.approx(3.84)

    md = files["md"].read_text()
    assert f"our measurement on Test CPU 9000 (2 cores), 2 threads, commit {SHA[:12]}" in md
    assert "| suite" in md and "| decode" in md and "skipped: triton: tensors are on cpu" in md
    assert "3.90×" in md and "target" in md

    png = files["png"].read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000


def test_disabled_run_writes_json_and_md_without_plot(outcomes, tmp_path: Path) -> None:
    (tmp_path / "bench.png").write_bytes(PNG_MAGIC)  # a stale plot from an earlier run
    report = build_report({}, outcomes, versions=VERSIONS)
    assert not report.timed
    assert [r.status for r in report.rows] == ["not timed", "not timed", "skipped"]
    files = write_report(report, tmp_path)
    assert set(files) == {"json", "md"} and not (tmp_path / "bench.png").exists()
    assert json.loads(files["json"].read_text())["timed"] is False
    md = files["md"].read_text()
    assert "No benchmark was timed" in md and "our measurement on an unknown CPU" in md


def test_timed_rows_without_reference_write_no_plot(benchmark_json, tmp_path: Path) -> None:
    benchmark_json["benchmarks"] = benchmark_json["benchmarks"][-1:]  # the train case only
    files = write_report(build_report(benchmark_json, versions=VERSIONS), tmp_path)
    assert "png" not in files
    assert "no speed-up plot" in files["md"].read_text()


def test_bench_command_line_flags() -> None:
    args = build_parser().parse_args(["bench", "-k", "decode", "--disable", "--out", "x"])
    assert (args.k, args.disable, args.out, args.benchmarks) == ("decode", True, Path("x"), None)


@pytest.mark.slow
def test_run_benchmarks_end_to_end(tmp_path: Path) -> None:
    """The cheapest real case: the reference decode of 64×17 COCO maps (5 rounds of ~10 ms)."""
    bench_dir = find_benchmarks_dir()
    assert (bench_dir / "test_bench_decode.py").is_file()
    report = run_benchmarks(
        tmp_path,
        select="test_bench_decode and coco_udp-reference",
        extra_pytest_args=("-q", "-p", "no:cacheprovider"),
    )
    assert report.returncode == 0
    row = _row(report, "decode", "coco_udp", "reference")
    assert row.status == "timed" and row.min_ms is not None and row.min_ms > 0
    assert row.median_ms >= row.min_ms and row.rounds >= 1
    raw = json.loads((tmp_path / "pytest-benchmark.json").read_text())
    assert [b["name"] for b in raw["benchmarks"]] == [row.name]
    assert report.machine["threads"] and report.commit["id"]
    files = write_report(report, tmp_path)
    assert json.loads(files["json"].read_text())["rows"][0]["min_ms"] > 0


def test_memory_ratio_against_the_reference_peak_and_its_target() -> None:
    scale = "test_bench_readers"
    data = {
        "benchmarks": [
            _bench(scale, "test_bench_reader", {"case": "keypoints_train", "backend": "reference"},
                   min_s=3.2, median_s=3.3, rounds=1, extra={"peak_mb": 450.0}),
            _bench(scale, "test_bench_reader", {"case": "keypoints_train", "backend": "posebh"},
                   min_s=2.9, median_s=3.0, rounds=1, extra={"peak_mb": 500.0}),
            _bench(scale, "test_bench_reader", {"case": "keypoints_train", "backend": "per_record"},
                   min_s=11.0, median_s=11.0, rounds=1, extra={"peak_mb": 765.0}),
            _bench(scale, "test_bench_other", {"case": "other", "backend": "reference"},
                   min_s=1.0, median_s=1.0, rounds=1, extra={"peak_mb": 100.0}),
            _bench(scale, "test_bench_other", {"case": "other", "backend": "posebh"},
                   min_s=1.0, median_s=1.0, rounds=1, extra={"peak_mb": 300.0}),
        ]
    }  # fmt: skip
    report = build_report(data, versions=VERSIONS)
    reader = _row(report, "readers", "keypoints_train", "posebh")
    assert reader.memory_ratio == pytest.approx(500.0 / 450.0)
    assert reader.memory_target == MEMORY_TARGETS[("readers", "keypoints_train")] == 1.2
    assert reader.meets_memory_target is True  # 1.11 ≤ 1.2
    assert reader.ratio_vs_reference == pytest.approx(3.2 / 2.9) and reader.meets_target
    other = _row(report, "readers", "other", "posebh")  # a ratio, but no target to meet
    assert other.memory_ratio == pytest.approx(3.0) and other.meets_memory_target is None
    assert _row(report, "readers", "keypoints_train", "reference").memory_ratio is None
    # The code a fused backend replaced is timed for the record: a ratio, never a target.
    old = _row(report, "readers", "keypoints_train", "per_record")
    assert old.ratio_vs_reference == pytest.approx(3.2 / 11.0) and old.memory_ratio == 1.7
    assert old.target is None and old.meets_target is None and old.meets_memory_target is None
    table = markdown_table(report)
    assert "1.11× (≤ 1.2× target)" in table and "3.00×" in table
    assert report.to_dict()["targets"]["readers/keypoints_train"] == {
        "speedup": 1.0,
        "peak_memory_ratio": 1.2,
        "source": "issue 15",
    }
