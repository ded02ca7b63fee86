"""Model forward time on the CPU (batch 1, 256×192), for the closing-note figures.

The reference in the same run is the backbone alone, so the ratio says what the six heads
and the prototype head add on top of the ViT.
"""

from __future__ import annotations

import pytest
import torch

from posebh.models import build_model


@pytest.fixture(scope="module")
def base_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("posebh_vit_base").eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(1, 3, 256, 192)


@pytest.mark.benchmark(group="model-forward-b1")
def test_bench_backbone_base(benchmark, base_model, image) -> None:
    idx = torch.zeros(1, dtype=torch.long)
    with torch.inference_mode():
        out = benchmark(base_model.backbone, image, idx)
    assert out.shape == (1, 768, 16, 12) and torch.isfinite(out).all()


@pytest.mark.benchmark(group="model-forward-b1")
def test_bench_posebh_base_full(benchmark, base_model, image) -> None:
    idx = torch.zeros(1, dtype=torch.long)

    def run():
        out = base_model(image, idx)
        return base_model.prototype_heatmaps(out.embeddings, 0)

    with torch.inference_mode():
        maps = benchmark(run)
    assert maps.shape == (1, 17, 64, 48)
    assert maps.min() >= 1e-4 and maps.max() <= 1 - 1e-4
