"""ViTPose++ backbone: a plain ViT whose FFN ends in per-dataset experts.

Shape vocabulary: B images, C = ``embed_dim`` channels, ``h × w`` patch grid (16×12 for a
256×192 input), T = h·w tokens, E experts, P = ``part_features`` expert channels.

Each block's FFN computes ``fc1 → GELU`` once; ``fc2`` maps to the first C − P channels
(shared by every dataset) and expert e (chosen per image by ``dataset_idx``) maps to the
last P.  With ``num_experts == 0`` the FFN is an ordinary ``fc2`` to C channels: the plain
single-expert ViT that merging one expert into ``fc2`` produces (the official
``tools/model_split.py``).

Facts of the official ``ViTMoE`` this module reproduces (parameter names included, so the
official ``backbone.*`` tensors load as they are):

- patch embedding: Conv2d(k=16, s=16, **padding 2**), so 256×192 gives 16×12 tokens;
- position embedding ``pos_embed`` [1, 1 + T, C] keeps a leading cls slot although there
  is no cls token, and **both** ``pos_embed[:, 1:]`` and ``pos_embed[:, :1]`` are added to
  every token;
- LayerNorm eps 1e-6, pre-norm blocks, a final ``last_norm``;
- an expert index outside [0, E) leaves the expert channels at zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-6


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples of a residual branch, rescale the rest."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


class PatchEmbed(nn.Module):
    """Image → tokens with a strided conv (padding 2, as the official ViTPose backbone)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size, padding=2)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return x.flatten(2).transpose(1, 2), (h, w)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        # Same math as the official q·scale @ kᵀ → softmax → @ v; the fused kernel avoids the
        # [B, heads, T, T] intermediate on the CPU and on CUDA.
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, t, c))


class MoEMlp(nn.Module):
    """FFN with a shared ``fc2`` (C − P outputs) and one expert ``Linear(hidden, P)`` each."""

    def __init__(self, dim: int, hidden: int, num_experts: int, part_features: int) -> None:
        super().__init__()
        if num_experts and not 0 < part_features < dim:
            raise ValueError(f"part_features must lie in (0, {dim}), got {part_features}")
        self.part_features = part_features if num_experts else 0
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim - self.part_features)
        self.experts = nn.ModuleList(nn.Linear(hidden, part_features) for _ in range(num_experts))

    def forward(self, x: Tensor, dataset_idx: Tensor | None) -> Tensor:
        x = self.act(self.fc1(x))
        shared = self.fc2(x)
        if not self.experts:
            return shared
        if dataset_idx is None:
            raise ValueError("a model with dataset experts needs dataset_idx [B] in forward()")
        expert = x.new_zeros(x.shape[0], x.shape[1], self.part_features)
        # Route each image through its own expert only (the official code runs every expert
        # on every image and masks); the per-image result is the same.
        for e, layer in enumerate(self.experts):
            rows = (dataset_idx == e).nonzero(as_tuple=True)[0]
            if rows.numel() == x.shape[0]:
                expert = layer(x)
            elif rows.numel():
                expert = expert.index_copy(0, rows, layer(x.index_select(0, rows)))
        return torch.cat([shared, expert], dim=-1)


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        qkv_bias: bool,
        drop_path: float,
        num_experts: int,
        part_features: int,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = MoEMlp(dim, int(dim * mlp_ratio), num_experts, part_features)

    def forward(self, x: Tensor, dataset_idx: Tensor | None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x), dataset_idx))


class ViTMoE(nn.Module):
    """ViT backbone with per-dataset FFN experts; returns features [B, C, h, w]."""

    def __init__(
        self,
        img_size: tuple[int, int] = (256, 192),
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        num_experts: int = 6,
        part_features: int = 192,
    ) -> None:
        super().__init__()
        self.img_size = tuple(img_size)
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_experts = num_experts
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        # The official grid size: floor(size / patch); padding 2 keeps the conv output equal.
        self.grid = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], embed_dim))
        # Linear stochastic-depth decay (0 → drop_path_rate); plain floats so that building
        # on the meta device works.
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, r, num_experts, part_features)
            for r in rates
        )
        self.last_norm = nn.LayerNorm(embed_dim, eps=LAYER_NORM_EPS)

    def forward(self, images: Tensor, dataset_idx: Tensor | None = None) -> Tensor:
        if images.ndim != 4:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        b = images.shape[0]
        if dataset_idx is not None:
            dataset_idx = torch.as_tensor(dataset_idx, device=images.device).reshape(-1)
            if dataset_idx.numel() != b:
                raise ValueError(f"dataset_idx has {dataset_idx.numel()} entries for {b} images")
        x, (h, w) = self.patch_embed(images)
        if (h, w) != self.grid:
            raise ValueError(
                f"input {tuple(images.shape[-2:])} gives a {h}×{w} patch grid; this model's "
                f"position embedding is for {self.grid} (img_size {self.img_size})"
            )
        x = x + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for block in self.blocks:
            x = block(x, dataset_idx)
        x = self.last_norm(x)
        return x.transpose(1, 2).reshape(b, self.embed_dim, h, w)
