"""Losses of PoseBH: heatmap MSE and the pixel-prototype losses (PPC + PPD).

Shape vocabulary: ``B`` images, ``K`` keypoints of one dataset (``K_d`` for dataset ``d``),
``J`` classes over all datasets, ``M`` prototypes per class, ``F`` embedding dimensions,
``H × W`` heatmap size, ``N`` sampled pixels.

The prototype objective of one training step (official ``KptProtoHead.get_prt_loss``) is, for
every dataset ``d`` present in the batch:

- sample the pixels of ``d``'s images whose GT heatmap maximum exceeds a threshold
  (:func:`sample_prototype_pixels`), label = arg-max keypoint, confidence = that maximum;
- assign and update the prototypes (:meth:`KeypointPrototypes.learn`);
- ``proto += weight · (ppc_weight · PPC + ppd_weight · PPD)`` (:class:`PixelPrototypeLoss`);
- ``proto_heatmap += phm_weight · JointsMSE(prototype heatmaps of d's classes, targets)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from posebh.prototypes import KeypointPrototypes


class JointsMSELoss(nn.Module):
    """Heatmap MSE, averaged over joints (mmpose ``JointsMSELoss``).

    ``loss = loss_weight · mean_k mean_{b,y,x} ((output − target) · w_bk)²`` with ``w`` the
    target weight when ``use_target_weight`` (else 1). There is no extra factor ½: the official
    ``mse_loss.py`` has none, and the golden values confirm it. Because every joint has the same
    number of pixels, the mean over joints of per-joint means is the mean over all elements.

    Args:
        use_target_weight: weight each joint's map by its target weight.
        loss_weight: global factor.
    """

    def __init__(self, use_target_weight: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.use_target_weight = use_target_weight
        self.loss_weight = loss_weight

    def forward(
        self, output: Tensor, target: Tensor, target_weight: Tensor | None = None
    ) -> Tensor:
        """Args: output, target [B, K, H, W]; target_weight [B, K, 1]. Returns a scalar."""
        b, k = output.shape[:2]
        pred = output.reshape(b, k, -1)
        gt = target.reshape(b, k, -1)
        if self.use_target_weight:
            if target_weight is None:
                raise ValueError("use_target_weight=True needs target_weight")
            w = target_weight.reshape(b, k, 1)
            # Weight both sides (not the difference) as mmpose does: same value, same rounding.
            pred, gt = pred * w, gt * w
        return F.mse_loss(pred, gt) * self.loss_weight


class PixelPrototypeLoss(nn.Module):
    """Pixel-prototype contrast (PPC) and distance (PPD) losses (official PixelPrototypeCELoss).

    With logits ``s`` [N, M·K] (|cos| of each pixel to the M·K prototypes of its dataset) and
    targets ``t`` [N] (``k·M + m``, ``ignore_index`` to skip a pixel):

    - ``PPC = cross_entropy(s, t)`` averaged over non-ignored pixels (the similarities are the
      logits as they are, no temperature);
    - ``PPD = mean (1 − s[i, t_i])²`` over non-ignored pixels;
    - ``loss = weight · (ppc_weight · PPC + ppd_weight · PPD)``.

    The returned dictionary holds ``ppc_weight · PPC`` and ``ppd_weight · PPD`` (detached),
    i.e. already multiplied by their weights but not by ``weight``, as the release logs them.

    If every pixel is ignored, the release returns NaN (0/0); here the loss is a zero that
    still belongs to the graph.

    Args:
        weight: global factor (1.25e-5 in PoseBH).
        ppc_weight, ppd_weight: factors of the two terms (0.01 and 0.001).
        num_prototypes: M.
        ignore_index: target value of pixels without a target.
    """

    def __init__(
        self,
        weight: float = 1.25e-5,
        ppc_weight: float = 0.01,
        ppd_weight: float = 0.001,
        num_prototypes: int = 3,
        ignore_index: int = -1,
    ) -> None:
        super().__init__()
        self.weight = weight
        self.ppc_weight = ppc_weight
        self.ppd_weight = ppd_weight
        self.num_prototypes = num_prototypes
        self.ignore_index = ignore_index

    def forward(
        self, logits: Tensor, target: Tensor, num_keypoints: int | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Args:
            logits: [N, M·K] similarities.
            target: [N] int, in 0..M·K−1 or ``ignore_index``.
            num_keypoints: K; only checked against ``logits`` (the release builds an all-ones
                class-weight vector of size M·K from it, which changes nothing else).

        Returns:
            ``(loss, {"ppc": ppc_weight·PPC, "ppd": ppd_weight·PPD})``, loss a scalar.
        """
        if num_keypoints is not None and logits.shape[1] != num_keypoints * self.num_prototypes:
            raise ValueError(
                f"logits have {logits.shape[1]} columns, expected "
                f"{num_keypoints} keypoints × {self.num_prototypes} prototypes"
            )
        target = target.long()
        valid = target != self.ignore_index
        if not bool(valid.any()):
            zero = logits.sum() * 0.0
            return zero, {"ppc": zero.detach(), "ppd": zero.detach()}
        ppc = F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        picked = logits[valid].gather(1, target[valid, None]).squeeze(1)
        ppd = (1.0 - picked).pow(2).mean()
        ppc, ppd = ppc * self.ppc_weight, ppd * self.ppd_weight
        return (ppc + ppd) * self.weight, {"ppc": ppc.detach(), "ppd": ppd.detach()}


def sample_prototype_pixels(
    embeddings: Tensor, target_heatmaps: Tensor, threshold: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Pixels whose GT heatmap maximum over keypoints exceeds ``threshold`` (official hm_sample).

    Args:
        embeddings: [B, F, H, W] prototype-head output.
        target_heatmaps: [B, K, H, W] GT heatmaps of the images' dataset.
        threshold: strict lower bound on the maximum (0.0 in PoseBH).

    Returns:
        ``emb`` [N, F] (keeps gradients), ``labels`` [N] int64 (arg-max keypoint, first on
        ties) and ``confidence`` [N] (that maximum), pixels in (b, y, x) order.
    """
    b, f, h, w = embeddings.shape
    k = target_heatmaps.shape[1]
    emb = embeddings.permute(0, 2, 3, 1).reshape(b * h * w, f)
    hm = target_heatmaps.permute(0, 2, 3, 1).reshape(b * h * w, k)
    confidence, labels = hm.max(dim=1)
    keep = confidence > threshold
    return emb[keep], labels[keep], confidence[keep]


def prototype_losses(
    embeddings: Tensor,
    targets: Sequence[Tensor],
    target_weights: Sequence[Tensor],
    dataset_idx: Tensor,
    prototypes: KeypointPrototypes,
    *,
    prototype_heatmaps: Tensor | None = None,
    criterion: PixelPrototypeLoss | None = None,
    heatmap_criterion: JointsMSELoss | None = None,
    threshold: float = 0.0,
    phm_weight: float = 3.33e-6,
    update: bool = True,
    update_weight: float = 1.0,
    synchronize: bool = True,
) -> dict[str, Tensor]:
    """Prototype losses of one training step, updating the prototypes on the way.

    Datasets are visited in index order; each ``learn`` call sees the prototypes as updated by
    the previous one, as in the release. The prototype heatmaps are computed once, **before**
    any update (the release's order), unless given.

    Differences from the release: the heatmap loss of a dataset is added even when none of its
    pixels passes ``threshold`` (the release skips both terms then), and the prototypes are
    averaged over ranks at the end (see ``synchronize``).

    Args:
        embeddings: [B, F, H, W] prototype-head output.
        targets: per dataset d, [B, K_d, H, W] GT heatmaps (rows of other datasets' images are
            ignored).
        target_weights: per dataset d, [B, K_d, 1].
        dataset_idx: [B] int, the dataset of each image.
        prototypes: the :class:`KeypointPrototypes` to learn (its ``compat`` decides paper or
            official behaviour).
        prototype_heatmaps: [B, J, H, W] heatmaps of all classes; ``prototypes.heatmaps
            (embeddings)`` if None.
        criterion: PPC/PPD loss; ``PixelPrototypeLoss(num_prototypes=M)`` if None.
        heatmap_criterion: prototype-heatmap loss; ``JointsMSELoss(use_target_weight=True)``.
        threshold: pixel sampling threshold on the GT heatmap maximum.
        phm_weight: factor of the prototype-heatmap loss.
        update, update_weight: passed to :meth:`KeypointPrototypes.learn`.
        synchronize: call :meth:`KeypointPrototypes.synchronize` once at the end (a collective
            when torch.distributed is initialised: every rank must call this function each
            step, whatever datasets it holds).

    Returns:
        ``{"proto": Σ_d PixelPrototypeLoss, "proto_heatmap": phm_weight · Σ_d JointsMSE,
        "ppc": Σ_d weighted PPC, "ppd": Σ_d weighted PPD}`` (the last two detached), all
        scalars; zeros when no dataset contributes.
    """
    if criterion is None:
        criterion = PixelPrototypeLoss(num_prototypes=prototypes.num_prototypes)
    if heatmap_criterion is None:
        heatmap_criterion = JointsMSELoss(use_target_weight=True)
    if prototype_heatmaps is None:
        prototype_heatmaps = prototypes.heatmaps(embeddings, -1)

    zero = embeddings.sum() * 0.0
    proto, phm = zero, zero
    ppc_log, ppd_log = zero.detach(), zero.detach()
    for d in range(len(prototypes.num_keypoints)):
        mask = dataset_idx == d
        if not bool(mask.any()):
            continue
        num_k = prototypes.num_keypoints[d]
        gt_hm, gt_w = targets[d][mask], target_weights[d][mask]
        phm = phm + heatmap_criterion(
            prototype_heatmaps[mask][:, prototypes.class_slice(d)], gt_hm, gt_w
        )
        emb, labels, conf = sample_prototype_pixels(embeddings[mask], gt_hm, threshold)
        if emb.shape[0] == 0:
            continue
        out = prototypes.learn(emb, labels, conf, d, update=update, update_weight=update_weight)
        loss_d, parts = criterion(out.logits, out.target, num_k)
        proto = proto + loss_d
        ppc_log, ppd_log = ppc_log + parts["ppc"], ppd_log + parts["ppd"]
    if synchronize and update:
        prototypes.synchronize()
    return {"proto": proto, "proto_heatmap": phm * phm_weight, "ppc": ppc_log, "ppd": ppd_log}


__all__ = [
    "JointsMSELoss",
    "PixelPrototypeLoss",
    "prototype_losses",
    "sample_prototype_pixels",
]
