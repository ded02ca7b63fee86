"""Distributed training: two gloo ranks on the CPU through torchrun end with identical
weights, BatchNorm statistics, keypoint prototypes and cluster bank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import REPO, _sets, data_root  # noqa: F401  (the fixture, re-exported)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_gloo_ranks_stay_identical(data_root: Path, tmp_path: Path) -> None:  # noqa: F811
    digests = tmp_path / "digests"
    work = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "posebh.train", "--preset", "posebh_tiny_synth", "--data-root", str(data_root),
        "--work-dir", str(work), "--init", "scratch", "--no-eval", "--no-progress",
        *_sets({"batch_size": 3, "heads_on_own_images": True}),
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "POSEBH_DEBUG_STATE_DIGEST": str(digests),
    }
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    # Rank 0 alone logs and writes checkpoints.
    assert proc.stdout.count("posebh train: preset") == 1
    r0 = json.loads((digests / "rank0.json").read_text())
    r1 = json.loads((digests / "rank1.json").read_text())
    assert r0["step"] == r1["step"] == 8
    assert r0["state"].keys() == r1["state"].keys()
    differ = [k for k in r0["state"] if r0["state"][k] != r1["state"][k]]
    assert not differ, differ
    assert "keypoint_prototypes.prototypes" in r0["state"]
    assert "cluster_prototypes.prototypes" in r0["state"]
    ckpt = torch.load(work / "final.pth", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["global_batch"] == 6
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "train"] == [2, 4, 6, 8]


@pytest.mark.slow
def test_two_gloo_ranks_train_as_one_process_on_their_union(
    data_root: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """2 ranks × 3 images and 1 process × 6 images see the same global batches (the
    sampler slices one shuffled list of G keys per step) and end with the same weights.

    Equivalence is well defined only where no statistic is taken per rank: BatchNorm in
    training mode normalises by the rank's own batch, so the configuration has none (no
    deconvolutions, head_filters = embed_dim, no prototype head: a vitpose_plus model);
    drop path draws from (seed, step, rank), so it is off.  What remains is a mean over
    equal-sized batches, whose gradient DDP's average reproduces up to summation order."""
    common = [
        "--preset", "vitpose_plus_tiny_synth", "--data-root", str(data_root), "--init",
        "scratch", "--no-eval", "--no-progress",
        *_sets({"events": [], "length": 4, "model.num_deconv": 0, "model.head_filters": 32,
                "model.drop_path_rate": 0.0, "heads_on_own_images": False,
                "eval_at_end": False, "ckpt_every": 1, "keep_every": 1}),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    ddp = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "posebh.train", *common, "--work-dir", str(tmp_path / "ddp"),
        "--set", "batch_size=3",
    ]  # fmt: skip
    single = [
        sys.executable, "-m", "posebh.train", *common, "--work-dir", str(tmp_path / "one"),
        "--set", "batch_size=6",
    ]  # fmt: skip
    for cmd in (ddp, single):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    a = torch.load(tmp_path / "ddp/final.pth", weights_only=True)
    b = torch.load(tmp_path / "one/final.pth", weights_only=True)
    assert a["global_batch"] == b["global_batch"] == 6 and a["world_size"] == 2
    assert not any("running" in k for k in a["model"])  # no BatchNorm in the path
    start = torch.load(tmp_path / "one/step_1.pth", weights_only=True)["model"]
    assert a["model"].keys() == b["model"].keys()
    moved = 0
    for k, v in b["model"].items():
        torch.testing.assert_close(a["model"][k], v, rtol=1e-5, atol=1e-7, msg=k)
        moved += int(not torch.equal(v, start[k]))
    assert moved == len(b["model"])  # every tensor trained after step 1
