"""Cross-type self-supervision (CSS): pseudo labels for the keypoints an image's own dataset
does not annotate.

Shape vocabulary: B images, D datasets with K_d keypoints (classes start_d .. start_d+K_d−1
of the J prototype classes), F embedding dimensions, H×W heatmaps (64×48).

For dataset d and every image **not** of d, dataset d's keypoints are predicted twice: by
d's heatmap head and by d's prototype heatmaps.  A joint becomes a pseudo label when

* both peak values exceed ``conf_thr`` (0.25), and
* the two integer peak locations lie within ``match_dist`` (2.1) heatmap pixels;

its location is the confidence-weighted mean of the two sub-pixel predictions
(w_h·x_h + w_p·x_p with w = conf / (conf_h + conf_p)), rendered as a UDP Gaussian (σ 2) and
weighted by the smaller confidence.  The CSS loss of d is
MSE(head, pseudo) + λ·MSE(prototype heatmap, pseudo) + the prototype (PPC/PPD) loss of the
embeddings at the pseudo-labelled pixels, summed over d and multiplied by 1e-3.

``compat="official"`` reproduces the released ``KptProtoHead.get_css_loss``:

* **deviation 4** — the location check is sqrt((x_h − x_p)² + (x_p − y_p)²) ≤ 2.1 (the second
  term compares the prototype peak's x with its own y) instead of the distance between the
  two peaks;
* **deviation 5** — the pseudo keypoint is w_h·(x_h, y_h) + w_p·conf_p: the prototype
  branch contributes its *score* where its coordinate belongs;
* the prototype update of CSS pixels uses ``update_weight`` 1 (the release does not pass
  ``css_update_weight``, which it reads from the config but never uses);
* the pseudo target weight ignores whether the pseudo keypoint's Gaussian window fell off the
  map (the paper mode zeroes it then, which only deviation 5 can cause in practice);
* a dataset whose pseudo targets yield no sampled pixel is skipped entirely (the paper mode
  still adds its heatmap terms).

Sub-pixel predictions use the decode of the release in both modes: integer arg-max plus the
DARK-UDP step with an 11×11 Gaussian (``_get_max_preds`` + ``post_dark_udp``).  One departure
from the release in both modes: where that step is not finite, the integer arg-max is used
(:func:`finite_peaks`).  The step solves with the ε-regularised Hessian of the log-heatmap;
at a peak on the map border the edge padding makes the outer neighbour equal the peak, so the
diagonal entry is the one-sided difference plus ε, which is exactly 0 when the inner
neighbour lies one float32 ulp below (a flat stretch along the border, common in prototype
heatmaps), and the cross term vanishes at a corner: det = 0 and the step is ±inf or NaN.  The
release then renders NaN into the joint's pseudo heatmap, which its zero weight does not
cancel (NaN · 0 = NaN), and the loss of the whole step is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from posebh.codecs import UDPHeatmap
from posebh.decode import get_max_preds
from posebh.losses import JointsMSELoss, PixelPrototypeLoss, sample_prototype_pixels
from posebh.prototypes import Compat, KeypointPrototypes

__all__ = ["CSSTargets", "css_loss", "css_pseudo_targets", "finite_peaks", "peak_locations"]

_COMPATS = ("paper", "official")

#: Defaults of the released config (``vitb_posebh.py``).
CSS_WEIGHT = 1.0e-3
CSS_CONF_THR = 0.25
CSS_MATCH_DIST = 2.1
CSS_UPDATE_WEIGHT = 3.13e-9
PHM_WEIGHT = 3.33e-6


@dataclass
class CSSTargets:
    """Pseudo labels of one dataset's keypoints on N images.

    Attributes:
        targets: [N, K, H, W] UDP Gaussian pseudo heatmaps (zero where not kept).
        target_weight: [N, K, 1] min(conf_head, conf_proto) where kept, else 0.
        keypoints: [N, K, 2] pseudo keypoints (x, y) in heatmap pixels (computed for every
            joint; meaningful where ``keep``).
        keep: [N, K] bool, the joints that passed the confidence and location checks.
    """

    targets: Tensor
    target_weight: Tensor
    keypoints: Tensor
    keep: Tensor

    @property
    def instances(self) -> Tensor:
        """[N] bool: images with at least one pseudo label (those the loss averages over)."""
        return self.keep.any(dim=1)


def _check_compat(compat: str) -> None:
    if compat not in _COMPATS:
        raise ValueError(f"compat must be one of {_COMPATS}, got {compat!r}")


def peak_locations(heatmaps: Tensor) -> Tensor:
    """Integer peak (x, y) [N, K, 2] int64 of heatmaps [N, K, H, W], read off the row and
    column maxima: x = argmax_w max_h, y = argmax_h max_w (the release's location check).

    For a unique maximum this is its position; on ties x and y may come from different
    maxima (the first of each projection).
    """
    x = heatmaps.amax(dim=2).argmax(dim=2)
    y = heatmaps.amax(dim=3).argmax(dim=2)
    return torch.stack([x, y], dim=-1)


def finite_peaks(xy: Tensor, heatmaps: Tensor) -> Tensor:
    """``xy`` [N, K, 2] with every non-finite (x, y) pair replaced by the integer arg-max of
    its map in ``heatmaps`` [N, K, H, W] (the first maximum in row-major order, as
    ``_get_max_preds``; (−1, −1) where the maximum is not positive).

    A refinement step that is not finite carries no information about the peak (module
    docstring), so the peak it started from is kept; finite pairs pass through unchanged.
    """
    bad = ~torch.isfinite(xy).all(dim=-1)
    if not bool(bad.any()):
        return xy
    arg, _ = get_max_preds(heatmaps.detach())
    return torch.where(bad[..., None], arg.to(xy.dtype), xy)


@torch.no_grad()
def css_pseudo_targets(
    head_heatmaps: Tensor,
    proto_heatmaps: Tensor,
    *,
    conf_thr: float = CSS_CONF_THR,
    match_dist: float = CSS_MATCH_DIST,
    sigma: float = 2.0,
    refine: Literal["dark_udp", "quarter", "none"] = "dark_udp",
    compat: Compat = "paper",
) -> CSSTargets:
    """Pseudo labels from a heatmap head and the prototype heatmaps of the same keypoints.

    Args:
        head_heatmaps: [N, K, H, W] dataset d's head on images not of d.
        proto_heatmaps: [N, K, H, W] prototype heatmaps of d's classes on those images.
        conf_thr: both peak values must exceed it (strictly).
        match_dist: the peaks' distance must not exceed it (heatmap pixels).
        sigma: Gaussian σ of the pseudo targets.
        refine: sub-pixel decode (see :meth:`posebh.codecs.UDPHeatmap.peaks`); the release uses
            ``"dark_udp"`` (11×11).
        compat: "paper" or "official" (deviations 4 and 5, see the module docstring).

    Returns:
        :class:`CSSTargets` (no gradient).
    """
    _check_compat(compat)
    if head_heatmaps.shape != proto_heatmaps.shape:
        raise ValueError(
            f"head and prototype heatmaps differ: {tuple(head_heatmaps.shape)} vs "
            f"{tuple(proto_heatmaps.shape)}"
        )
    h, w = head_heatmaps.shape[-2:]
    # The release decodes and renders pseudo labels with the UDP codec (DARK-UDP, 11×11).
    codec = UDPHeatmap(heatmap_size=(int(w), int(h)), sigma=sigma)
    xy_h, conf_h = codec.peaks(head_heatmaps, refine)
    xy_p, conf_p = codec.peaks(proto_heatmaps, refine)
    # A degenerate DARK-UDP step (a border peak, module docstring) would put ±inf / NaN into
    # the pseudo keypoint and, through NaN · 0, into the loss of the whole step.
    xy_h = finite_peaks(xy_h, head_heatmaps)
    xy_p = finite_peaks(xy_p, proto_heatmaps)

    confident = (conf_h > conf_thr) & (conf_p > conf_thr)
    loc_h = peak_locations(head_heatmaps).to(torch.float32)
    loc_p = peak_locations(proto_heatmaps).to(torch.float32)
    if compat == "official":
        # Deviation 4: the second term is the prototype peak's x minus its own y.
        d2 = (loc_h[..., 0] - loc_p[..., 0]) ** 2 + (loc_p[..., 0] - loc_p[..., 1]) ** 2
    else:
        d2 = ((loc_h - loc_p) ** 2).sum(dim=-1)
    keep = confident & (d2.sqrt() <= match_dist)

    total = (conf_h + conf_p).clamp_min(1.0e-4)
    w_h, w_p = (conf_h / total)[..., None], (conf_p / total)[..., None]
    if compat == "official":
        # Deviation 5: the prototype branch adds its score, not its coordinate.
        keypoints = w_h * xy_h + w_p * conf_p[..., None]
    else:
        keypoints = w_h * xy_h + w_p * xy_p

    heatmaps, in_map = codec.render(keypoints, keep.to(torch.float32))
    weight = torch.minimum(conf_h, conf_p) * keep
    if compat == "paper":
        # A pseudo keypoint whose Gaussian window misses the map has nothing to supervise.
        weight = weight * in_map[..., 0]
    return CSSTargets(
        targets=heatmaps.to(head_heatmaps.dtype),
        target_weight=weight[..., None].to(head_heatmaps.dtype),
        keypoints=keypoints,
        keep=keep,
    )


def css_loss(
    head_heatmaps: Sequence[Tensor],
    embeddings: Tensor,
    dataset_idx: Tensor,
    prototypes: KeypointPrototypes,
    *,
    proto_heatmaps: Tensor | None = None,
    conf_thr: float = CSS_CONF_THR,
    match_dist: float = CSS_MATCH_DIST,
    sigma: float = 2.0,
    phm_weight: float = PHM_WEIGHT,
    weight: float = CSS_WEIGHT,
    update: bool = True,
    update_weight: float | None = None,
    threshold: float = 0.0,
    criterion: PixelPrototypeLoss | None = None,
    heatmap_criterion: JointsMSELoss | None = None,
    compat: Compat | None = None,
) -> dict[str, Tensor]:
    """CSS loss of one training step over every (dataset d, images not of d) pair.

    For each d in index order with images of other datasets in the batch:

    1. :func:`css_pseudo_targets` from ``head_heatmaps[d]`` and the prototype heatmaps of d's
       classes on those images; images without any pseudo label are dropped;
    2. ``hm = JointsMSE(head, pseudo)``, ``phm = JointsMSE(prototype heatmaps, pseudo)``
       (averaged over the remaining images × K_d joints);
    3. pixels of ``pseudo targets × weights`` above ``threshold`` are sampled
       (:func:`~posebh.losses.sample_prototype_pixels`) and fed to
       ``prototypes.learn(..., dataset=d)`` (which moves the prototypes, scaled by
       ``update_weight``); ``proto = PixelPrototypeLoss(logits, target)``;
    4. ``css += hm + phm_weight · phm + proto``.

    The total is ``weight · css``.  Gradients reach the heads' heatmaps and the embeddings
    (through the prototype heatmaps and the PPC/PPD logits); the pseudo targets carry none.

    Args:
        head_heatmaps: D tensors [B, K_d, H, W], every head run on every image.
        embeddings: [B, F, H, W] prototype-head output.
        dataset_idx: [B] int, the dataset of each image.
        prototypes: the keypoint prototypes (their ``compat`` is the default ``compat``).
        proto_heatmaps: [B, J, H, W] prototype heatmaps of all classes.  Pass the ones the
            prototype loss used — the release computes them once, before any prototype
            update of the step; ``prototypes.heatmaps(embeddings)`` if None.
        conf_thr, match_dist, sigma: pseudo-label settings (0.25, 2.1, 2).
        phm_weight: λ of the prototype-heatmap term (3.33e-6).
        weight: CSS weight (1e-3).
        update: let ``learn`` move the prototypes (ignored when they are frozen).
        update_weight: step scale of the prototype update; None = ``css_update_weight``
            3.13e-9 in paper mode, 1 in official mode (what the release passes).
        threshold: pixel sampling threshold (0).
        criterion: ``PixelPrototypeLoss(num_prototypes=M)`` if None.
        heatmap_criterion: ``JointsMSELoss(use_target_weight=True)`` if None.
        compat: overrides ``prototypes.compat`` for the pseudo labels and the release's quirks.

    Returns:
        ``{"css": weighted total, "css_heatmap": Σ hm, "css_proto_heatmap": Σ phm,
        "css_proto": Σ proto, "css_pseudo_labels": number of pseudo-labelled joints}``; all
        but ``css`` are detached and unweighted.
    """
    compat = prototypes.compat if compat is None else compat
    _check_compat(compat)
    official = compat == "official"
    num_datasets = len(prototypes.num_keypoints)
    if len(head_heatmaps) != num_datasets:
        raise ValueError(f"expected {num_datasets} head outputs, got {len(head_heatmaps)}")
    if update_weight is None:
        update_weight = 1.0 if official else CSS_UPDATE_WEIGHT
    if criterion is None:
        criterion = PixelPrototypeLoss(num_prototypes=prototypes.num_prototypes)
    if heatmap_criterion is None:
        heatmap_criterion = JointsMSELoss(use_target_weight=True)
    if proto_heatmaps is None:
        proto_heatmaps = prototypes.heatmaps(embeddings, -1)

    zero = embeddings.sum() * 0.0
    hm_sum, phm_sum, proto_sum = zero, zero, zero
    count = 0
    for d in range(num_datasets):
        others = (dataset_idx != d).nonzero().squeeze(1)
        if others.numel() == 0:
            continue
        head = head_heatmaps[d][others]
        proto_hm = proto_heatmaps[others][:, prototypes.class_slice(d)]
        pseudo = css_pseudo_targets(
            head.detach(),
            proto_hm.detach(),
            conf_thr=conf_thr,
            match_dist=match_dist,
            sigma=sigma,
            compat=compat,
        )
        rows = pseudo.instances.nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        tgt, tw = pseudo.targets[rows], pseudo.target_weight[rows]
        hm = heatmap_criterion(head[rows], tgt, tw)
        phm = heatmap_criterion(proto_hm[rows], tgt, tw)

        emb, labels, conf = sample_prototype_pixels(
            embeddings[others[rows]], tgt * tw[..., None], threshold
        )
        if emb.shape[0] == 0:
            if official:
                continue  # the release skips the whole dataset here
            proto = zero
        else:
            out = prototypes.learn(emb, labels, conf, d, update=update, update_weight=update_weight)
            proto, _ = criterion(out.logits, out.target, prototypes.num_keypoints[d])
        hm_sum = hm_sum + hm
        phm_sum = phm_sum + phm
        proto_sum = proto_sum + proto
        count += int(pseudo.keep.sum())
    total = (hm_sum + phm_sum * phm_weight + proto_sum) * weight
    return {
        "css": total,
        "css_heatmap": hm_sum.detach(),
        "css_proto_heatmap": phm_sum.detach(),
        "css_proto": proto_sum.detach(),
        "css_pseudo_labels": torch.tensor(count, device=embeddings.device),
    }
