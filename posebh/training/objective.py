"""The PoseBH loss of one training step (official ``TopDownMoEProto.forward_train`` +
``KptProtoHead.get_loss``), composed from the loss families of :mod:`posebh.losses`,
:mod:`posebh.cps` and :mod:`posebh.css`:

* every heatmap head d runs on every image; ``hm/<dataset>`` = JointsMSE(head_d, targets of
  d's images, weights of d's images) with the other images' targets and weights zeroed, i.e.
  averaged over the whole batch as officially (with ``heads_on_own_images``, the tiny
  recipes' setting, head d runs only on d's images while CSS is off, and the loss is rescaled
  to the same whole-batch mean: identical values but for the heads' BatchNorm statistics);
* ``proto`` (PPC + PPD) and ``proto_heatmap`` (prototype-heatmap MSE × λ) per dataset present
  (:func:`posebh.losses.prototype_losses`), the prototypes moving on the way;
* ``cps`` once the cluster bank exists and the stage says so (:func:`posebh.cps.cps_loss`);
* ``css`` while CSS is on (:func:`posebh.css.css_loss`), which moves the prototypes too;
* then the prototypes are averaged across ranks once.

The total is the plain sum, in that order; the weights live inside each term, as in the
release.  Heads that no training dataset maps to (a ``--datasets`` subset) are left out of
the total, so AdamW's weight decay does not erode them.

Departures from the release, none of which changes a loss value: without CSS only each
image's own class block of the prototype heatmaps is computed; a non-finite CSS term skips
CSS for that step (the release exits).

Shape vocabulary: B images, D heads, K_d keypoints of head d, J = Σ K_d prototype classes,
F embedding channels, H×W heatmaps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from posebh.cps import cps_loss
from posebh.css import css_loss
from posebh.losses import JointsMSELoss, PixelPrototypeLoss, prototype_losses
from posebh.models import PoseBH
from posebh.prototypes import KeypointPrototypes
from posebh.training.config import LossConfig

__all__ = ["Objective", "head_targets", "own_block_heatmaps"]

Terms = dict[str, Tensor]


def head_targets(
    batch: Mapping[str, Tensor], num_keypoints: Sequence[int]
) -> tuple[list[Tensor], list[Tensor]]:
    """Per head d: the batch's targets [B, K_d, H, W] and weights [B, K_d, 1] with the rows
    of other datasets' images zeroed (how the release feeds each head's loss)."""
    dataset_idx = batch["dataset_idx"]
    target, target_weight = batch["target"], batch["target_weight"]
    targets: list[Tensor] = []
    weights: list[Tensor] = []
    for h, k in enumerate(num_keypoints):
        mask = (dataset_idx == h).to(target.dtype)
        targets.append(target[:, :k] * mask[:, None, None, None])
        weights.append(target_weight[:, :k] * mask[:, None, None])
    return targets, weights


def own_block_heatmaps(protos: KeypointPrototypes, emb: Tensor, dataset_idx: Tensor) -> Tensor:
    """[B, J, H, W] prototype heatmaps holding, for each image, only its own dataset's
    class block (zeros elsewhere); ``heatmaps(x, d)`` equals the block of
    ``heatmaps(x, -1)`` bit for bit."""
    b, _, h, w = emb.shape
    out = emb.new_zeros(b, protos.num_classes, h, w)
    for d in range(len(protos.num_keypoints)):
        rows = (dataset_idx == d).nonzero().squeeze(1)
        if rows.numel():
            cls = protos.class_slice(d)
            out[rows, cls] = protos.heatmaps(emb[rows], d)
    return out


class Objective:
    """The loss of one step of ``model`` under the loss settings ``loss``.

    ``on_css_skipped`` (set by the trainer) hears about every step whose CSS term was not
    finite, with that term's parts.
    """

    def __init__(self, model: PoseBH, loss: LossConfig) -> None:
        self.model = model
        self.loss = loss
        self.mse = JointsMSELoss(use_target_weight=True)
        self.proto_criterion = PixelPrototypeLoss(
            weight=loss.proto_weight,
            ppc_weight=loss.ppc_weight,
            ppd_weight=loss.ppd_weight,
            num_prototypes=model.config.num_prototypes,
        )
        self.on_css_skipped: Callable[[Terms], None] | None = None

    def __call__(
        self,
        out: Any,
        batch: Mapping[str, Tensor],
        *,
        heads: Mapping[int, str],
        cps: bool,
        css: bool,
        head_rows: Sequence[Tensor] | None = None,
    ) -> tuple[Tensor, Terms]:
        """(total, detached terms) of one step.

        ``out``: the model's :class:`~posebh.models.PoseBHOutput`; ``batch``: ``dataset_idx``
        [B], ``target`` [B, K_max, H, W], ``target_weight`` [B, K_max, 1].  ``heads``: the
        trained heads (index → dataset name); ``cps`` / ``css``: the stage's switches (CSS
        also needs a positive weight, the caller's decision).  ``head_rows``: head d's
        heatmaps cover only the rows ``head_rows[d]`` of the batch (``heads_on_own_images``);
        its loss is rescaled to the official whole-batch mean.
        """
        model = self.model
        dataset_idx = batch["dataset_idx"]
        targets, weights = head_targets(batch, [h.num_keypoints for h in model.heads])
        logs: Terms = {}
        total = batch["target"].new_zeros(())
        for h, loss in self._heatmap_terms(out, targets, weights, heads, head_rows):
            logs[f"hm/{heads[h]}"] = loss.detach()
            total = total + loss
        protos = model.keypoint_prototypes
        if protos is None:
            logs["loss"] = total.detach()
            return total, logs
        emb = out.embeddings.float()
        # Before any update, as the release.  CSS reads every dataset's classes on every
        # image; without it only each image's own block is ever read, so only those are
        # computed (the same values, ~D× less work on the largest tensor of the step).
        proto_hm = protos.heatmaps(emb, -1) if css else own_block_heatmaps(protos, emb, dataset_idx)
        pl = self._prototype_terms(emb, targets, weights, dataset_idx, protos, proto_hm)
        total = total + pl["proto"] + pl["proto_heatmap"]
        logs["proto"] = pl["proto"].detach()
        logs["proto_heatmap"] = pl["proto_heatmap"].detach()
        logs["ppc"], logs["ppd"] = pl["ppc"], pl["ppd"]
        if cps and model.cluster_prototypes is not None:
            c = self._cps_term(emb, targets, weights, dataset_idx)
            total = total + c
            logs["cps"] = c.detach()
        if css:
            c = self._css_term(out, emb, dataset_idx, protos, proto_hm)
            skipped = not bool(torch.isfinite(c["css"]))
            if skipped:
                if self.on_css_skipped is not None:
                    self.on_css_skipped(c)
            else:
                total = total + c["css"]
            logs["css"] = c["css"].detach() if not skipped else total.new_zeros(())
            logs["css_skipped"] = total.new_tensor(float(skipped))
            logs["css_pseudo_labels"] = c["css_pseudo_labels"].to(total.dtype)
        # One cross-rank average per step, after every update of the step (the release's
        # all_reduce at the end of get_loss); a no-op on one rank or when frozen.
        protos.synchronize()
        logs["loss"] = total.detach()
        return total, logs

    def _heatmap_terms(
        self,
        out: Any,
        targets: Sequence[Tensor],
        weights: Sequence[Tensor],
        heads: Mapping[int, str],
        head_rows: Sequence[Tensor] | None,
    ) -> list[tuple[int, Tensor]]:
        """(head, JointsMSE) of every trained head, in head order."""
        terms = []
        for h in range(len(self.model.heads)):
            if h not in heads:
                continue
            t, w = targets[h], weights[h]
            hm = out.heatmaps[h].float()
            rows = None if head_rows is None else head_rows[h]
            if rows is None:
                loss = self.mse(hm, t, w)
            elif rows.numel() == 0:
                loss = hm.sum() * 0.0  # keeps the head in the graph (DDP)
            else:
                # The other rows would add zeros (their weights are zeroed): same mean.
                loss = self.mse(hm, t[rows], w[rows]) * (rows.numel() / t.shape[0])
            terms.append((h, loss))
        return terms

    def _prototype_terms(
        self,
        emb: Tensor,
        targets: Sequence[Tensor],
        weights: Sequence[Tensor],
        dataset_idx: Tensor,
        protos: KeypointPrototypes,
        proto_hm: Tensor,
    ) -> Terms:
        lc = self.loss
        return prototype_losses(
            emb,
            targets,
            weights,
            dataset_idx,
            protos,
            prototype_heatmaps=proto_hm,
            criterion=self.proto_criterion,
            heatmap_criterion=self.mse,
            threshold=lc.sample_threshold,
            phm_weight=lc.phm_weight,
            synchronize=False,
        )

    def _cps_term(
        self,
        emb: Tensor,
        targets: Sequence[Tensor],
        weights: Sequence[Tensor],
        dataset_idx: Tensor,
    ) -> Tensor:
        lc = self.loss
        return cps_loss(
            emb,
            targets,
            weights,
            dataset_idx,
            self.model.cluster_prototypes,
            criterion=self.proto_criterion,
            heatmap_criterion=self.mse,
            threshold=lc.sample_threshold,
            phm_weight=lc.phm_weight,
            weight=lc.cps_weight,
        )["cps"]

    def _css_term(
        self,
        out: Any,
        emb: Tensor,
        dataset_idx: Tensor,
        protos: KeypointPrototypes,
        proto_hm: Tensor,
    ) -> Terms:
        lc = self.loss
        # Safety net for a non-finite result: see the caller.  Its known cause (a singular
        # DARK-UDP step at a border peak, NaN · 0 in a zero-weight map; the release stops
        # training there) is handled in posebh.css.finite_peaks.
        return css_loss(
            [hm.float() for hm in out.heatmaps],
            emb,
            dataset_idx,
            protos,
            proto_heatmaps=proto_hm,
            conf_thr=lc.css_conf_thr,
            match_dist=lc.css_match_dist,
            phm_weight=lc.phm_weight,
            weight=lc.css_weight,
            threshold=lc.sample_threshold,
            criterion=self.proto_criterion,
            heatmap_criterion=self.mse,
        )
