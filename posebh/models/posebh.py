"""PoseBH and ViTPose++: ViTMoE backbone, one heatmap head per dataset, prototype head.

Shape vocabulary: B images of 256×192 (H_in×W_in), C backbone channels on a 16×12 grid,
D datasets with K_d keypoints each, J = Σ K_d prototype classes, M prototypes per class,
F embedding dimensions, heatmaps of H×W = 64×48.

``build_model("posebh_vit_base")`` gives the released PoseBH-B architecture;
``vitpose_plus_*`` is the same multi-head model without the prototype head.  The official
checkpoints load through :func:`posebh.checkpoint.load_model`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from posebh.cps import ClusterPrototypes
from posebh.models.heads import HeatmapHead, PrototypeHead, SimpleHeatmapHead
from posebh.models.vit_moe import ViTMoE
from posebh.prototypes import KeypointPrototypes
from posebh.skeletons import NUM_KEYPOINTS


@dataclass(frozen=True)
class PoseBHConfig:
    """Architecture of a PoseBH / ViTPose++ model (defaults: PoseBH-B, ``vitb_posebh.py``)."""

    img_size: tuple[int, int] = (256, 192)
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_path_rate: float = 0.3
    # 0 experts = the plain ViT that merging one expert into fc2 produces.
    num_experts: int = 6
    part_features: int = 192
    # One heatmap head per entry.
    # The keypoint counts of the official six-dataset training order (posebh.skeletons).
    num_keypoints: tuple[int, ...] = NUM_KEYPOINTS
    # "classic": num_deconv × (deconv → BN → ReLU), then a 1×1 conv (head_filters,
    # head_kernel); "simple": ReLU → bilinear ×4 → 3×3 conv (the ViTPose *_simple_* configs),
    # which has no deconvs: num_deconv is set to 0 for it.
    decoder: str = "classic"
    head_filters: int = 256
    head_kernel: int = 4
    num_deconv: int = 2
    proto_head: bool = True
    proto_channels: int = 64
    proto_dim: int = 64
    num_prototypes: int = 3
    # Class blocks of the prototype bank; empty = ``num_keypoints``.
    proto_keypoints: tuple[int, ...] = field(default=())
    # Clustered prototypes (CPS); 0 = none yet (created at CPS initialisation).
    num_clusters: int = 0
    # "paper" = the published equations; "official" = the released code's behaviour.
    compat: str = "paper"

    def __post_init__(self) -> None:
        if self.compat not in ("paper", "official"):
            raise ValueError(f"compat must be 'paper' or 'official', got {self.compat!r}")
        if self.decoder not in ("classic", "simple"):
            raise ValueError(f"decoder must be 'classic' or 'simple', got {self.decoder!r}")
        if self.decoder == "simple":
            if self.proto_head:
                raise ValueError(
                    "the prototype head is built on the classic decoder's deconvs; with "
                    "decoder='simple' pass proto_head=False"
                )
            object.__setattr__(self, "num_deconv", 0)
        if not self.num_keypoints or min(self.num_keypoints) < 1:
            raise ValueError(f"num_keypoints needs ≥ 1 head of ≥ 1 keypoint: {self.num_keypoints}")
        object.__setattr__(self, "img_size", tuple(self.img_size))
        object.__setattr__(self, "num_keypoints", tuple(self.num_keypoints))
        if not self.proto_keypoints:
            object.__setattr__(self, "proto_keypoints", tuple(self.num_keypoints))
        else:
            object.__setattr__(self, "proto_keypoints", tuple(self.proto_keypoints))

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(H, W) of the heatmaps: the patch grid upsampled 2× per deconv (×4 for the
        simple decoder)."""
        up = SimpleHeatmapHead.upsample if self.decoder == "simple" else 2**self.num_deconv
        return (self.img_size[0] // self.patch_size * up, self.img_size[1] // self.patch_size * up)


# Widths from the ViTPose / ViTPose++ releases; drop-path rates from their configs
# (base 0.3 is also PoseBH's vitb_posebh.py).
_WIDTHS: dict[str, dict] = {
    "small": dict(embed_dim=384, depth=12, num_heads=12, part_features=96, drop_path_rate=0.1),
    "base": dict(embed_dim=768, depth=12, num_heads=12, part_features=192, drop_path_rate=0.3),
    "large": dict(embed_dim=1024, depth=24, num_heads=16, part_features=256, drop_path_rate=0.5),
    "huge": dict(embed_dim=1280, depth=32, num_heads=16, part_features=320, drop_path_rate=0.55),
}

PRESETS: dict[str, dict] = {}
for _size, _width in _WIDTHS.items():
    PRESETS[f"posebh_vit_{_size}"] = dict(_width, proto_head=True)
    PRESETS[f"vitpose_plus_{_size}"] = dict(_width, proto_head=False)

# num_heads cannot be read off tensor shapes; the checkpoint loader looks it up here.
NUM_HEADS_BY_WIDTH: dict[int, int] = {w["embed_dim"]: w["num_heads"] for w in _WIDTHS.values()}


@dataclass
class PoseBHOutput:
    """What one forward pass returns.

    features: [B, C, 16, 12] backbone output.
    heatmaps: one [B, K_d, 64, 48] tensor per dataset head, every head run on every image
        (``None`` for heads skipped with ``heads=``).
    embeddings: [B, F, 64, 48] prototype-head output, not normalised; ``None`` without a
        prototype head.
    """

    features: Tensor
    heatmaps: list[Tensor | None]
    embeddings: Tensor | None


class PoseBH(nn.Module):
    """ViTPose++ multi-head model with PoseBH's prototype head and keypoint prototypes."""

    def __init__(self, config: PoseBHConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or PoseBHConfig()
        self.backbone = ViTMoE(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=cfg.qkv_bias,
            drop_path_rate=cfg.drop_path_rate,
            num_experts=cfg.num_experts,
            part_features=cfg.part_features,
        )
        self.heads = nn.ModuleList(
            SimpleHeatmapHead(cfg.embed_dim, k)
            if cfg.decoder == "simple"
            else HeatmapHead(cfg.embed_dim, k, cfg.head_filters, cfg.num_deconv, cfg.head_kernel)
            for k in cfg.num_keypoints
        )
        self.proto_head: PrototypeHead | None = None
        self.keypoint_prototypes: KeypointPrototypes | None = None
        self.cluster_prototypes: ClusterPrototypes | None = None
        if cfg.proto_head:
            self.proto_head = PrototypeHead(
                cfg.embed_dim,
                cfg.head_filters,
                cfg.proto_channels,
                cfg.proto_dim,
                cfg.num_deconv,
                cfg.head_kernel,
            )
            self.keypoint_prototypes = KeypointPrototypes(
                cfg.proto_keypoints, cfg.num_prototypes, cfg.proto_dim, compat=cfg.compat
            )
            if cfg.num_clusters:
                self.cluster_prototypes = ClusterPrototypes(
                    cfg.num_clusters,
                    cfg.num_prototypes,
                    cfg.proto_dim,
                    cfg.proto_keypoints,
                    compat=cfg.compat,
                )
        self.reset_parameters()

    @property
    def num_datasets(self) -> int:
        return len(self.heads)

    def reset_parameters(self) -> None:
        """The official initialisation: trunc-normal(0.02) linears, unit LayerNorm, heads
        N(0, 0.001).  Loading a checkpoint overwrites all of it."""
        for m in self.backbone.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.backbone.pos_embed, std=0.02)
        for head in self.heads:
            head.reset_parameters()
        if self.proto_head is not None:
            self.proto_head.reset_parameters()

    def forward(
        self,
        images: Tensor,
        dataset_idx: Tensor | Sequence[int] | int | None = None,
        *,
        heads: Sequence[int] | None = None,
        head_rows: Sequence[Tensor | None] | None = None,
    ) -> PoseBHOutput:
        """Run the backbone (routing image b through expert ``dataset_idx[b]``), the
        heatmap heads (all, or those listed in ``heads``) and the prototype head.

        images: [B, 3, 256, 192]; dataset_idx: [B] (an int routes every image the same
        way; may be omitted for a plain ViT without experts).  ``head_rows[d]`` (a [n_d]
        index tensor, or None for all rows) runs head d on those images only: its heatmaps
        are then [n_d, K, H, W] (an empty index still runs it, on zero rows).
        """
        if isinstance(dataset_idx, int):
            dataset_idx = torch.full((images.shape[0],), dataset_idx, dtype=torch.long)
        elif dataset_idx is not None:
            dataset_idx = torch.as_tensor(dataset_idx, dtype=torch.long)
        if dataset_idx is not None:
            dataset_idx = dataset_idx.to(images.device)
        features = self.backbone(images, dataset_idx)
        wanted = range(len(self.heads)) if heads is None else set(heads)
        if head_rows is not None and len(head_rows) != len(self.heads):
            raise ValueError(f"head_rows has {len(head_rows)} entries for {len(self.heads)} heads")

        def rows(d: int) -> Tensor:
            r = None if head_rows is None else head_rows[d]
            return features if r is None else features.index_select(0, r.to(features.device))

        heatmaps = [h(rows(d)) if d in wanted else None for d, h in enumerate(self.heads)]
        embeddings = self.proto_head(features) if self.proto_head is not None else None
        return PoseBHOutput(features=features, heatmaps=heatmaps, embeddings=embeddings)

    def prototype_heatmaps(self, embeddings: Tensor, dataset: int = -1) -> Tensor:
        """Prototype heatmaps [B, K, H, W] of ``dataset``'s classes (-1: all J classes):
        clamp(max_m |cos(e, p_km)|, 1e-4, 1 − 1e-4) per pixel."""
        if self.keypoint_prototypes is None:
            raise RuntimeError("this model has no prototype head (a vitpose_plus_* preset?)")
        return self.keypoint_prototypes.heatmaps(embeddings, dataset)


def build_model(preset: str = "posebh_vit_base", **overrides) -> PoseBH:
    """Build a preset (``posebh_vit_{small,base,large,huge}``, ``vitpose_plus_*``), with any
    :class:`PoseBHConfig` field overridden, e.g. ``build_model("posebh_vit_small",
    embed_dim=64, depth=2, num_heads=4, part_features=16)``.  A ViTPose-*-simple model:
    ``build_model("vitpose_plus_base", decoder="simple", num_experts=0, num_keypoints=(17,))``."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(PoseBHConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise TypeError(f"unknown config fields {sorted(unknown)}; valid: {sorted(fields)}")
    return PoseBH(PoseBHConfig(**{**PRESETS[preset], **overrides}))
