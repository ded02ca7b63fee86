"""Evaluation throughput without the network (instances/s): crop pipeline + flip merge +
decode + rescoring/NMS + COCO eval, on the real COCO fixture replicated to 192 instances.

A stub stands in for the model (it returns fixed Gaussian-like heatmaps), so the figure is
what posebh's evaluation costs on top of whatever the network costs.  The decode-only run is
the reference in the same session, to show which part dominates.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from posebh.datasets import DatasetSpec, read_dataset
from posebh.decode import keypoints_from_heatmaps
from posebh.evaluate import compute_metrics, default_protocol, predict

REPEAT = 16


class StubHeads(nn.Module):
    """Quacks like PoseBH for predict(): one 17-keypoint head, no experts."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleList([nn.Identity()])
        self.heads[0].num_keypoints = 17
        self.backbone = nn.Module()
        self.backbone.num_experts = 0
        self.anchor = nn.Parameter(torch.zeros(1))
        yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
        centres = torch.rand(17, 2, generator=torch.Generator().manual_seed(0)) * 40 + 4
        d2 = (xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2
        self.register_buffer("maps", torch.exp(-d2 / 8.0))

    def forward(self, images, dataset_idx=None, *, heads=None):
        class Out:
            pass

        out = Out()
        out.heatmaps = [self.maps.expand(images.shape[0], -1, -1, -1).clone()]
        return out


@pytest.fixture(scope="module")
def coco(fixtures_dir: Path, shared_file):
    folder = fixtures_dir / "coco"
    spec = DatasetSpec("coco", str(shared_file(folder / "test_coco.json")), str(folder))
    instances, _ = read_dataset(spec)
    many = [replace(inst, image_id=inst.image_id) for _ in range(REPEAT) for inst in instances]
    return spec, many


def test_bench_eval_pipeline_without_network(benchmark, coco) -> None:
    spec, instances = coco
    protocol = default_protocol("coco")
    model = StubHeads()

    def run():
        preds = predict(model, instances, protocol, batch_size=64, progress=False)
        return compute_metrics(preds, instances[:12], spec, protocol)[0]

    metrics = benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, iterations=1)
    assert -1.0 <= metrics["AP"] <= 1.0
    if not benchmark.disabled and benchmark.stats:
        benchmark.extra_info["instances_per_s"] = len(instances) / benchmark.stats.stats.min


def test_bench_decode_only_reference(benchmark, coco) -> None:
    _, instances = coco
    n = len(instances)
    maps = StubHeads().maps.expand(n, -1, -1, -1).numpy().copy()
    center = np.stack([i.center for i in instances]).astype(np.float32)
    scale = np.stack([i.scale for i in instances]).astype(np.float32)
    preds, _ = benchmark(keypoints_from_heatmaps, maps, center, scale, use_udp=True)
    assert preds.shape == (n, 17, 2)
