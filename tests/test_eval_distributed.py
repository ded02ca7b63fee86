"""Multi-rank evaluation: ``torchrun --nproc_per_node 2 -m posebh.cli eval`` (two gloo ranks
on the CPU) writes the single process's metrics.json and predictions.json, byte for byte;
rank 0 alone writes.  The sharding is checked against its definition on many sizes."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_evaluate_grouped import ConvStub, _as_json
from test_reproduce import fixture_root, fixture_weights  # noqa: F401  (the fixtures)

import posebh.evaluation.distributed as distributed
from posebh.datasets import DatasetSpec, read_dataset
from posebh.evaluate import default_protocol, predict
from posebh.evaluation.distributed import eval_world, shard

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "embed_dim": 32, "depth": 1, "num_heads": 2, "part_features": 8, "head_filters": 16,
    "proto_channels": 8, "proto_dim": 8,
}  # fmt: skip
#: meta fields that legitimately differ between the runs (timing, the rank count itself).
RUN_FIELDS = ("wall_time_s", "world_size")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_shards_are_contiguous_whole_batches_in_rank_order(world: int, batch_size: int) -> None:
    for n in [0, 1, 3, 31, 32, 33, 118, 257]:
        parts = [shard(n, batch_size, r, world) for r in range(world)]
        # In rank order they are exactly 0..n-1 (concatenation restores the order).
        assert [i for p in parts for i in p] == list(range(n))
        batches = -(-n // batch_size)
        counts = []
        for p in parts:
            # Every border is a batch border of the single process (or the end).
            assert p.start % batch_size == 0 and (p.stop % batch_size == 0 or p.stop == n)
            counts.append(-(-len(p) // batch_size))
        assert sum(counts) == batches and max(counts) - min(counts) <= 1


def test_shard_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank 2 outside a world of 2"):
        shard(10, 4, 2, 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        shard(10, 0, 0, 2)


def test_a_single_process_is_a_world_of_one() -> None:
    assert eval_world() == (0, 1)


def test_gathered_shards_are_the_whole_prediction_list(
    fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ranks simulated in one process (the world and the gather replaced): rank 0's
    gathered list is predict()'s on all instances, every field (``index`` too) and byte."""
    coco = fixtures_dir / "coco"
    spec = DatasetSpec(
        "coco", str(coco / "test_coco.json"), str(coco),
        det_file=str(coco / "test_coco_det_AP_H_56.json"), use_gt_bbox=False, det_bbox_thr=0.3,
    )  # fmt: skip
    instances, _ = read_dataset(spec)
    model, proto = ConvStub().eval(), default_protocol("coco")
    sent: list[object] = []

    def gather(obj, gathered, dst):
        assert dst == 0
        if gathered is None:
            sent.append(obj)
        else:
            gathered[:] = [obj, *sent]

    monkeypatch.setattr(distributed.dist, "gather_object", gather)
    kw = {"batch_size": 5, "num_workers": 0, "progress": False}
    monkeypatch.setattr(distributed, "eval_world", lambda: (1, 2))
    assert distributed.predict_on_ranks(model, instances, proto, **kw) is None
    monkeypatch.setattr(distributed, "eval_world", lambda: (0, 2))
    got = distributed.predict_on_ranks(model, instances, proto, **kw)
    assert len(sent[0]) == 18 and len(got) == len(instances) == 33  # 3 | 4 batches of 5
    assert [p["index"] for p in got] == list(range(33))
    assert _as_json(got) == _as_json(predict(model, instances, proto, **kw))


def _eval_argv(fixtures_dir: Path, out: Path) -> list[str]:
    """The whole COCO fixture with its detection file (118 boxes over 4 images), a seeded
    random tiny PoseBH, batches of 8 (15 batches: the rank border falls inside an image)."""
    coco = fixtures_dir / "coco"
    overrides = [a for k, v in TINY.items() for a in ("--override", f"{k}={v}")]
    return [
        "eval", "--dataset", "coco", "--ann-file", str(coco / "test_coco.json"),
        "--img-prefix", str(coco), "--det-file", str(coco / "test_coco_det_AP_H_56.json"),
        "--preset", "posebh_vit_small", *overrides, "--seed", "3", "--batch-size", "8",
        "--workers", "0", "--no-progress", "--out", str(out),
    ]  # fmt: skip


@pytest.mark.slow
def test_two_gloo_ranks_write_the_single_process_results(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    # One intra-op thread in both runs: torchrun gives each rank one; the single process
    # runs with the same so that no kernel's reduction order can differ.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    single, ranks = tmp_path / "single", tmp_path / "ranks"
    one = subprocess.run(
        [sys.executable, "-m", "posebh.cli", *_eval_argv(fixtures_dir, single)],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-4000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         "-m", "posebh.cli", *_eval_argv(fixtures_dir, ranks)],
        env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-4000:]
    # Rank 0 alone reports and writes.
    assert two.stdout.count("wrote ") == 1 and one.stdout.count("wrote ") == 1
    assert sorted(p.name for p in ranks.iterdir()) == [
        "metrics.json", "metrics.md", "predictions.json"
    ]  # fmt: skip
    assert (ranks / "predictions.json").read_bytes() == (single / "predictions.json").read_bytes()
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((ranks / "metrics.json").read_text())
    assert a["meta"]["world_size"] == 1 and b["meta"]["world_size"] == 2
    assert a["meta"]["instances"] == b["meta"]["instances"] == 118
    assert a["metrics"] == b["metrics"]
    for meta in (a["meta"], b["meta"]):
        for key in RUN_FIELDS:
            del meta[key]
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert (ranks / "metrics.md").read_bytes() == (single / "metrics.md").read_bytes()


# ------------------------------------------------------------------------------------------
# posebh reproduce --gpus N: one torchrun evaluation per (model, row)
# ------------------------------------------------------------------------------------------


def test_real_mode_gpus_dry_run_prints_one_torchrun_eval_per_cell(
    fixture_root: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from posebh.cli import main as cli_main
    from posebh.reproduce.tables import load_table

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "posebh_base.pth").write_bytes(b"")  # a dry run only looks for the file
    out = tmp_path / "run"
    argv = [
        "reproduce", "table1", "--data-root", str(fixture_root), "--weights", str(weights),
        "--gpus", "4", "--device", "cuda", "--dry-run", "--max-instances", "64",
        "--out", str(out), "--models", "posebh_b,vitpose_plus_b",
    ]  # fmt: skip
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert cli_main(argv) == 0
    lines = [x for x in buffer.getvalue().splitlines() if x.startswith("$ ")]
    rows = load_table("table1").rows
    assert len(lines) == len(rows)  # vitpose+_base.pth is absent: its cells are not planned
    for line, row in zip(lines, rows, strict=True):
        assert "-m torch.distributed.run --standalone --nproc_per_node 4 -m posebh.cli eval" in line
        assert f"--dataset {row.dataset} --split {row.split} " in line
        assert ("--gt-bbox" if row.use_gt_bbox else "--det-bbox") in line
        assert f"--checkpoint {weights / 'posebh_base.pth'}" in line
        assert "--device cuda" in line and "--max-instances 64" in line
        assert f"--out {out / 'eval' / 'posebh_b' / f'{row.dataset}_{row.split}'}" in line
    assert not (out / "eval").exists()


def test_eval_ranks_need_cuda_and_real_or_train_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from posebh.reproduce.run import TableOptions, _eval_ranks

    real = {"data_root": Path("d"), "weights": Path("w")}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _eval_ranks(TableOptions(**real, gpus=4)) == 1  # CPU: in-process
    assert _eval_ranks(TableOptions(**real, gpus=4, device="cuda")) == 4
    assert _eval_ranks(TableOptions(gpus=4, device="cuda")) == 1  # synthetic default
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _eval_ranks(TableOptions(**real)) == 1  # real mode defaults to one process
    assert _eval_ranks(TableOptions(**real, gpus=2)) == 2
    assert _eval_ranks(TableOptions(**real, gpus=2, device="cpu")) == 1
    assert _eval_ranks(TableOptions(data_root=Path("d"), train=True)) == 8  # as training


@pytest.mark.slow
def test_a_planned_cell_run_on_two_gloo_ranks_is_the_in_process_cell(
    fixture_root: Path,  # noqa: F811
    fixture_weights: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The harness's COCO cell of the multi-dataset PoseBH file as its torchrun command (on
    2 gloo ranks instead of CUDA) gives the in-process harness's metrics and predictions."""
    from posebh.reproduce.harness import RunContext, evaluate_table
    from posebh.reproduce.launch import eval_plan, evaluate_with_torchrun
    from posebh.reproduce.tables import load_table

    table = load_table("table1")
    table = dataclasses.replace(table, rows=[r for r in table.rows if r.dataset == "coco"])
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = {"batch_size": 8, "max_instances": 40, "progress": False}
    [cmd] = eval_plan(
        table, fixture_root, fixture_weights, tmp_path / "ranks", models=["posebh_b"],
        ranks=2, device="cpu", **settings,
    )  # fmt: skip
    assert "--as-single-dataset" in cmd and "--det-bbox" in cmd
    launched = evaluate_with_torchrun(cmd)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank
    try:
        context = RunContext(
            data_root=fixture_root, weights=fixture_weights, mode="real", measured_label="x",
            batch_size=8, max_instances=40, progress=False, floor=False,
        )  # fmt: skip
        run = evaluate_table(table, context, tmp_path / "single", models=["posebh_b"], log=None)
    finally:
        torch.set_num_threads(threads)
    assert launched.meta["world_size"] == 2 and launched.meta["instances"] == 40
    cell = next(c for c in run.cells if c.metric == "AP")
    assert cell.measured is not None and cell.eval_dir
    single = json.loads((Path(cell.eval_dir) / "metrics.json").read_text())
    assert launched.metrics == single["metrics"]
    assert (
        Path(launched.files["predictions"]).read_bytes()
        == (Path(cell.eval_dir) / "predictions.json").read_bytes()
    )
