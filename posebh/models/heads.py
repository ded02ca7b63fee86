"""Heatmap heads and the prototype (embedding) head.

Shape vocabulary: B images, C backbone channels on an h×w grid (16×12), K keypoints of one
dataset, F embedding dimensions; every head upsamples ×4 to H×W = 64×48.

Module and parameter names follow the official ``TopdownHeatmapSimpleHead`` and
``KptProtoHead`` (``deconv_layers.{0,1,3,4}``, ``final_layer``, ``neck.*``, ``head.{0,1,3}``)
so that official tensors map one to one.  :class:`HeatmapHead` is the classic decoder (the
head of every ViTPose / ViTPose++ / PoseBH release), :class:`SimpleHeatmapHead` the simple
decoder of the ViTPose ``*_simple_*`` configs.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def deconv_stack(in_channels: int, filters: int, num_layers: int, kernel: int) -> nn.Sequential:
    """``num_layers`` × (ConvTranspose k×k stride 2 → BN → ReLU), each doubling H and W."""
    if kernel not in (2, 3, 4):
        raise ValueError(f"deconv kernel must be 2, 3 or 4, got {kernel}")
    padding, output_padding = {4: (1, 0), 3: (1, 1), 2: (0, 0)}[kernel]
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        layers += [
            nn.ConvTranspose2d(
                in_channels,
                filters,
                kernel,
                stride=2,
                padding=padding,
                output_padding=output_padding,
                bias=False,
            ),
            nn.BatchNorm2d(filters),
            nn.ReLU(inplace=True),
        ]
        in_channels = filters
    return nn.Sequential(*layers)


class HeatmapHead(nn.Module):
    """Features [B, C, h, w] → heatmaps [B, K, 4h, 4w] (two deconvs, then a 1×1 conv)."""

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        filters: int = 256,
        num_deconv: int = 2,
        kernel: int = 4,
    ) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.deconv_layers = deconv_stack(in_channels, filters, num_deconv, kernel)
        self.final_layer = nn.Conv2d(filters, num_keypoints, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.final_layer(self.deconv_layers(features))

    def reset_parameters(self) -> None:
        # mmpose's init for this head: N(0, 0.001) convs, unit BN, zero bias.
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class SimpleHeatmapHead(nn.Module):
    """Features [B, C, h, w] → heatmaps [B, K, 4h, 4w]: ReLU → bilinear ×4 → 3×3 conv.

    The official ``TopdownHeatmapSimpleHead`` with ``num_deconv_layers=0``, ``upsample=4``
    and ``extra=dict(final_conv_kernel=3)`` (its ``align_corners=False`` default; the same
    as ``transformers``' ``VitPoseSimpleDecoder``).  Its only tensors are ``final_layer.*``.
    """

    upsample = 4

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.final_layer = nn.Conv2d(in_channels, num_keypoints, 3, padding=1)

    def forward(self, features: Tensor) -> Tensor:
        # relu is not in place: the features are shared with the other heads.
        upsampled = F.interpolate(
            F.relu(features), scale_factor=self.upsample, mode="bilinear", align_corners=False
        )
        return self.final_layer(upsampled)

    def reset_parameters(self) -> None:
        # mmpose's init for the final conv: N(0, 0.001) weight, zero bias.
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)


class ResidualBlock(nn.Module):
    """3×3 conv → BN → SiLU → 3×3 conv → BN, plus a 1×1 conv + BN shortcut, SiLU after."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act = nn.SiLU()
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels))
            if in_channels != channels
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(out + shortcut)


class PrototypeHead(nn.Module):
    """Features [B, C, h, w] → pixel embeddings [B, F, 4h, 4w] (not normalised).

    Two deconvs as in the heatmap heads, a residual neck (filters → ``channels``), then
    3×3 conv → BN → SiLU → 1×1 conv to ``embed_dim``.
    """

    def __init__(
        self,
        in_channels: int,
        filters: int = 256,
        channels: int = 64,
        embed_dim: int = 64,
        num_deconv: int = 2,
        kernel: int = 4,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.deconv_layers = deconv_stack(in_channels, filters, num_deconv, kernel)
        self.neck = ResidualBlock(filters, channels)
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.SiLU(),
            nn.Conv2d(channels, embed_dim, 1),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.head(self.neck(self.deconv_layers(features)))

    def reset_parameters(self) -> None:
        for m in self.deconv_layers.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
