"""Clustered prototype supervision (CPS): cluster the keypoint prototypes, then supervise the
frozen cluster prototypes with each dataset's GT heatmaps mapped onto the clusters.

Shape vocabulary: J keypoint classes (214), M prototypes per class (3), F embedding
dimensions, C clusters, D datasets with K_d keypoints starting at class start_d, B images,
H×W heatmaps.  Flat prototype row ``j·M + m`` is prototype m of class j.

Steps (official ``CPSInitHook`` + ``KptProtoHead.set_cluster_prototypes`` /
``get_cps_loss``):

1. **Soft k-means** (:func:`cluster_prototypes`) of the J·M L2-normalised prototypes with the
   cosine distance d = (1 − cos)/2 and assignments softmax(−β·d), β = 20; the C centres start
   at the first prototype of classes 0..C−1.
2. **Choice of C** (:func:`choose_num_clusters`) among (64, 96, 128) by the reconstruction
   error weighted by (C/J)².
3. **Cluster bank**: cluster c gets M member prototypes and the keypoint class of its first
   member, ``closest_keypoint[c]``; the bank [C, M, F] is frozen
   (:class:`ClusterPrototypes`).
4. **Targets** (:func:`cluster_target_maps`): dataset d's GT channel k goes to every cluster
   whose closest keypoint is start_d + k; clusters of other datasets get zero maps/weights.
5. **Loss** (:func:`cps_loss`): PPC/PPD of the pixels sampled from the mapped targets against
   the cluster bank, plus phm_weight × MSE of the cluster heatmaps, all × cps weight 1e-2.

``compat="official"`` reproduces the released code where it departs from the method:

* **deviation 6** — members are ``argsort(dist, dim=1)[:M].T``: row c lists the c-th nearest
  *cluster* of prototypes 0..M−1, which is then used as a *prototype* index, so the bank is
  ``proto_flat[cluster ranks]`` and ``closest_keypoint`` only takes values 0..⌊(C−1)/M⌋
  (0..21 for C = 64: COCO and AIC clusters only).  The paper
  mode takes the M prototypes nearest each centre (``argsort(dist, dim=0)[:M].T``).
* the reconstruction error is the least-squares residual of the prototypes on the span of the
  centres.  Whenever C ≥ F (always in the release: F = 64, C ∈ {64, 96, 128}) the centres span
  the whole space, the error is rounding noise (~1e-11) and the "best C" compares noise.  The
  paper mode reconstructs each prototype from its *soft assignment*, x̂_i = Σ_c a_ic·c_c
  (c_c the soft-k-means centre, a weighted mean of prototypes), so the error measures how
  well C soft clusters summarise the bank; weighted by (C/J)² it trades fidelity against the
  number of clusters.  Degenerate case: if every prototype coincides (or β → ∞ with C = J·M)
  all errors are 0 and the first option wins.
* the CPS heatmap MSE compares the cluster heatmaps of the batch (batch order) with targets
  concatenated dataset by dataset (dataset order): rows are misaligned unless the batch is
  sorted by dataset.  The paper mode aligns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from posebh.losses import JointsMSELoss, PixelPrototypeLoss, sample_prototype_pixels
from posebh.prototypes import Compat, KeypointPrototypes
from posebh.skeletons import NUM_KEYPOINTS

__all__ = [
    "ClusterPrototypes",
    "ClusterResult",
    "choose_num_clusters",
    "cluster_prototypes",
    "cluster_target_maps",
    "cps_loss",
]

_COMPATS = ("paper", "official")


def _check_compat(compat: str) -> None:
    if compat not in _COMPATS:
        raise ValueError(f"compat must be one of {_COMPATS}, got {compat!r}")


@dataclass
class ClusterResult:
    """Outcome of one clustering.

    Attributes:
        assign: [J·M, C] soft assignments of the flat prototypes (rows sum to 1).
        closest_keypoint: [C] int64, keypoint class (0..J−1) of each cluster's first member.
        centroids: [C, M, F] member prototypes of each cluster — the frozen cluster bank (the
            official name; these are prototypes, not the k-means centres).
        error: reconstruction error (see the module docstring for the two definitions).
        centers: [C, F] soft-k-means centres, not normalised.
        members: [C, M] int64 flat prototype indices of ``centroids`` (row j·M + m).
    """

    assign: Tensor
    closest_keypoint: Tensor
    centroids: Tensor
    error: float
    centers: Tensor
    members: Tensor

    @property
    def num_clusters(self) -> int:
        return int(self.centroids.shape[0])

    def weighted_error(self, num_classes: int) -> float:
        """error · (C / J)², the quantity :func:`choose_num_clusters` minimises."""
        return self.error * (self.num_clusters / num_classes) ** 2


def _soft_kmeans(x: Tensor, num_clusters: int, iters: int, beta: float, m: int, broadcast: bool):
    """Cosine soft k-means of rows x [P, F]; returns (assign [P, C], dist [P, C], centres).

    ``broadcast=True`` evaluates the similarities and centre sums on [P, C, F] broadcasts,
    the release's order of operations, which reproduces its float32 rounding bit for bit
    (the matmul form differs by ~3e-5 in the assignments after 50 iterations).
    """

    def step(centres: Tensor) -> tuple[Tensor, Tensor]:
        if broadcast:
            cos = F.cosine_similarity(x[:, None, :], centres[None, :, :], dim=2)
        else:
            cos = F.normalize(x, dim=1, eps=1e-8) @ F.normalize(centres, dim=1, eps=1e-8).t()
        dist = (1.0 - cos) * 0.5
        return torch.softmax(-beta * dist, dim=1), dist

    # Deterministic start: the first prototype of each of classes 0..C−1.
    centres = x[torch.arange(num_clusters, device=x.device) * m]
    for _ in range(iters):
        assign, _ = step(centres)
        num = (assign[:, :, None] * x[:, None, :]).sum(dim=0) if broadcast else assign.t() @ x
        centres = num / assign.sum(dim=0)[:, None]
    assign, dist = step(centres)
    return assign, dist, centres


@torch.no_grad()
def cluster_prototypes(
    prototypes: Tensor,
    num_clusters: int,
    iters: int = 50,
    beta: float = 20.0,
    compat: Compat = "paper",
) -> ClusterResult:
    """Soft k-means of the keypoint prototypes [J, M, F] into ``num_clusters`` clusters.

    Paper mode normalises the prototypes first; official mode (``CPSInitHook.get_clusters``)
    takes them as given (its hook normalises before calling, as :func:`choose_num_clusters`
    does).  Runs in the dtype of ``prototypes``.

    Raises:
        ValueError: if ``num_clusters`` exceeds J (the start needs one class per cluster).
    """
    _check_compat(compat)
    j, m, f = prototypes.shape
    if not 1 <= num_clusters <= j:
        raise ValueError(f"num_clusters must lie in [1, J={j}], got {num_clusters}")
    x = prototypes.reshape(j * m, f)
    if compat == "paper":
        x = F.normalize(x, dim=1)
    assign, dist, centres = _soft_kmeans(
        x, num_clusters, iters, beta, m, broadcast=compat == "official"
    )

    if compat == "official":
        # Deviation 6: cluster ranks of prototypes 0..M−1, used as prototype indices.
        members = torch.argsort(dist, dim=1)[:m].t()
        # Least-squares residual of the prototypes on the span of the centres (noise once
        # C ≥ F).
        a, b = centres.t(), x.t()  # [F, C], [F, P]
        w = torch.linalg.lstsq(a, b).solution
        error = float(((b - a @ w) ** 2).sum())
    else:
        # The M prototypes nearest each centre.
        members = torch.argsort(dist, dim=0)[:m].t()
        error = float(((x - assign @ centres) ** 2).sum())
    members = members.contiguous()
    return ClusterResult(
        assign=assign,
        closest_keypoint=torch.div(members[:, 0], m, rounding_mode="floor"),
        centroids=x[members].clone(),
        error=error,
        centers=centres,
        members=members,
    )


@torch.no_grad()
def choose_num_clusters(
    prototypes: Tensor,
    options: Sequence[int] = (64, 96, 128),
    iters: int = 50,
    beta: float = 20.0,
    compat: Compat = "paper",
) -> ClusterResult:
    """Cluster the L2-normalised prototypes [J, M, F] for every C in ``options`` (C ≥ J is
    skipped, as officially) and return the result with the smallest error·(C/J)².

    Runs in float32 like the release's hook.  Ties keep the earlier option.  The released
    config runs 500 iterations (``cluster_iter``); the default here is the 50 of the golden
    vectors.  In official mode the error is rounding noise whenever C ≥ F (see the module
    docstring), so the choice is arbitrary there; the paper-mode error makes it a real
    fidelity/size trade-off.

    Raises:
        ValueError: if no option is below J.
    """
    _check_compat(compat)
    j = prototypes.shape[0]
    x = F.normalize(prototypes.float(), p=2, dim=-1)
    best: ClusterResult | None = None
    best_weighted = float("inf")
    for c in options:
        if c >= j:
            continue
        result = cluster_prototypes(x, int(c), iters=iters, beta=beta, compat=compat)
        weighted = result.weighted_error(j)
        if weighted < best_weighted or best is None:
            best, best_weighted = result, weighted
    if best is None:
        raise ValueError(f"every cluster option {tuple(options)} is ≥ J = {j}")
    return best


def cluster_target_maps(
    num_keypoints: Sequence[int], closest_keypoint: Tensor
) -> tuple[list[Tensor], list[Tensor]]:
    """Per dataset d, which GT channels feed which clusters (official ``kpt_conv_idxs`` and
    ``cst_conv_idxs``).

    Args:
        num_keypoints: K_d per dataset, in dataset-index order.
        closest_keypoint: [C] int64 global keypoint class of each cluster.

    Returns:
        ``(kpt_idxs, cluster_idxs)``, two lists of D int64 tensors of equal lengths per d:
        cluster ``cluster_idxs[d][i]`` is supervised by local channel ``kpt_idxs[d][i]`` of
        dataset d.  Clusters are listed in ascending order; a keypoint may feed several
        clusters, and a dataset may have none.
    """
    kpt_idxs: list[Tensor] = []
    cluster_idxs: list[Tensor] = []
    start = 0
    for k in num_keypoints:
        mask = (closest_keypoint >= start) & (closest_keypoint < start + k)
        cluster_idxs.append(mask.nonzero().squeeze(1))
        kpt_idxs.append(closest_keypoint[mask] - start)
        start += k
    return kpt_idxs, cluster_idxs


class ClusterPrototypes(KeypointPrototypes):
    """The frozen cluster-prototype bank: C "classes" of M prototypes, plus the cluster →
    keypoint mapping.

    A :class:`~posebh.prototypes.KeypointPrototypes` with one block of C classes (so
    ``heatmaps(emb)`` gives [B, C, H, W] cluster heatmaps and ``learn(..., dataset=0,
    update=False)`` the PPC/PPD logits and targets), permanently frozen.

    Buffers:
        prototypes: [C, M, F], persistent — the only tensor in the state dict (the official
            ``proto_head.cluster_prototype.prototypes`` maps onto it).
        closest_keypoint: [C] int64 global keypoint class of each cluster, −1 until
            :meth:`set_clusters`; not persistent, because official checkpoints do not store
            it (neither does the release: a resumed official run never re-enables CPS).

    Args:
        num_clusters: C.
        num_prototypes: M.
        dim: F.
        num_keypoints: K_d of the datasets whose targets are mapped onto the clusters.
        compat: "paper" or "official" (the Sinkhorn target and the CPS loss alignment).
    """

    closest_keypoint: Tensor

    def __init__(
        self,
        num_clusters: int,
        num_prototypes: int = 3,
        dim: int = 64,
        num_keypoints: Sequence[int] = NUM_KEYPOINTS,
        compat: Compat = "paper",
    ) -> None:
        super().__init__((int(num_clusters),), num_prototypes, dim, compat=compat)
        self.dataset_keypoints: tuple[int, ...] = tuple(int(k) for k in num_keypoints)
        self.register_buffer(
            "closest_keypoint",
            torch.full((int(num_clusters),), -1, dtype=torch.long),
            persistent=False,
        )
        self.freeze()

    @property
    def num_clusters(self) -> int:
        return int(self.prototypes.shape[0])

    def thaw(self) -> None:
        raise RuntimeError("cluster prototypes are frozen by design")

    def extra_repr(self) -> str:
        return (
            f"num_clusters={self.num_clusters}, num_prototypes={self.num_prototypes}, "
            f"dim={self.dim}, dataset_keypoints={self.dataset_keypoints}, compat={self.compat!r}"
        )

    @classmethod
    def from_result(
        cls,
        result: ClusterResult,
        num_keypoints: Sequence[int] = NUM_KEYPOINTS,
        compat: Compat = "paper",
    ) -> ClusterPrototypes:
        """A bank holding ``result`` (sized to its C)."""
        c, m, f = result.centroids.shape
        bank = cls(c, m, f, num_keypoints, compat).to(result.centroids.device)
        bank.set_clusters(result.centroids, result.closest_keypoint)
        return bank

    @torch.no_grad()
    def set_clusters(self, centroids: Tensor, closest_keypoint: Tensor) -> None:
        """Install a bank [C, M, F] (normalised on the way) and its mapping [C] (same C)."""
        if centroids.shape != self.prototypes.shape:
            raise ValueError(
                f"bank must be {tuple(self.prototypes.shape)}, got {tuple(centroids.shape)}"
            )
        if closest_keypoint.shape != (self.num_clusters,):
            raise ValueError(f"closest_keypoint must be [{self.num_clusters}]")
        self.prototypes.copy_(F.normalize(centroids.to(self.prototypes), p=2, dim=-1))
        self.closest_keypoint.copy_(closest_keypoint.to(self.closest_keypoint))

    def target_maps(self) -> tuple[list[Tensor], list[Tensor]]:
        """:func:`cluster_target_maps` of this bank's mapping."""
        if bool((self.closest_keypoint < 0).any()):
            raise RuntimeError("cluster → keypoint mapping unset: call set_clusters first")
        return cluster_target_maps(self.dataset_keypoints, self.closest_keypoint)

    def map_targets(
        self, targets: Sequence[Tensor], target_weights: Sequence[Tensor], dataset_idx: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Cluster targets [B, C, H, W] and weights [B, C, 1], in batch order.

        Image b of dataset d gets, on cluster ``cluster_idxs[d][i]``, its GT channel
        ``kpt_idxs[d][i]``; all other clusters are zero with weight 0.
        """
        kpt_idxs, cluster_idxs = self.target_maps()
        b, _, h, w = targets[0].shape
        ref = targets[0]
        out = ref.new_zeros(b, self.num_clusters, h, w)
        out_w = target_weights[0].new_zeros(b, self.num_clusters, 1)
        for d in range(len(self.dataset_keypoints)):
            rows = (dataset_idx == d).nonzero().squeeze(1)
            if rows.numel() == 0 or cluster_idxs[d].numel() == 0:
                continue
            ri, ci = rows[:, None], cluster_idxs[d][None, :]
            out[ri, ci] = targets[d][rows][:, kpt_idxs[d]]
            out_w[ri, ci] = target_weights[d][rows][:, kpt_idxs[d]]
        return out, out_w


def cps_loss(
    embeddings: Tensor,
    targets: Sequence[Tensor],
    target_weights: Sequence[Tensor],
    dataset_idx: Tensor,
    cluster_prototypes: ClusterPrototypes,
    *,
    criterion: PixelPrototypeLoss | None = None,
    heatmap_criterion: JointsMSELoss | None = None,
    threshold: float = 0.0,
    phm_weight: float = 3.33e-6,
    weight: float = 1.0e-2,
    compat: Compat | None = None,
) -> dict[str, Tensor]:
    """Clustered prototype supervision loss of one step (official ``get_cps_loss``).

    For the datasets present, in index order: map each image's GT heatmaps onto the clusters
    (:meth:`ClusterPrototypes.map_targets`), sample the pixels whose mapped-target maximum
    exceeds ``threshold`` (label = arg-max cluster, confidence = that maximum), and run one
    :meth:`~posebh.prototypes.KeypointPrototypes.learn` (no update: the bank is frozen) on all
    of them for the PPC/PPD logits and targets.  Then

        cps = weight · (PixelPrototypeLoss(logits, target) + phm_weight · JointsMSE(
              cluster heatmaps [B, C, H, W], mapped targets, mapped weights))

    Official mode feeds the MSE the targets concatenated dataset by dataset against heatmaps
    in batch order (see the module docstring).  If no pixel is sampled the PPC/PPD term is 0
    (the release would fail on an empty concatenation).

    Args:
        embeddings: [B, F, H, W] prototype-head output (gradients flow into it).
        targets: per dataset d, [B, K_d, H, W] GT heatmaps (other datasets' rows ignored).
        target_weights: per dataset d, [B, K_d, 1].
        dataset_idx: [B] int in 0..D−1.
        cluster_prototypes: the frozen bank with its mapping set.
        criterion: PPC/PPD loss (``PixelPrototypeLoss(num_prototypes=M)`` if None).
        heatmap_criterion: ``JointsMSELoss(use_target_weight=True)`` if None.
        threshold: pixel sampling threshold (official ``cluster_conf_thr`` = 0).
        phm_weight: factor of the heatmap term (3.33e-6).
        weight: CPS weight (1e-2).
        compat: overrides ``cluster_prototypes.compat``.

    Returns:
        ``{"cps": total, "cps_proto": PPC/PPD term, "cps_heatmap": MSE term}``; the last two
        are detached and unweighted (before ``weight`` and ``phm_weight``).
    """
    bank = cluster_prototypes
    compat = bank.compat if compat is None else compat
    _check_compat(compat)
    num_datasets = len(bank.dataset_keypoints)
    if dataset_idx.numel() and (
        int(dataset_idx.min()) < 0 or int(dataset_idx.max()) >= num_datasets
    ):
        raise ValueError(f"dataset_idx must lie in [0, {num_datasets})")
    if criterion is None:
        criterion = PixelPrototypeLoss(num_prototypes=bank.num_prototypes)
    if heatmap_criterion is None:
        heatmap_criterion = JointsMSELoss(use_target_weight=True)

    pred = bank.heatmaps(embeddings, -1)  # [B, C, H, W]
    cst_t, cst_w = bank.map_targets(targets, target_weights, dataset_idx)
    # Pixels are gathered dataset by dataset, (b, y, x) order within each, as officially.
    order = torch.cat([(dataset_idx == d).nonzero().squeeze(1) for d in range(num_datasets)])
    emb, labels, conf = sample_prototype_pixels(embeddings[order], cst_t[order], threshold)
    if emb.shape[0]:
        out = bank.learn(emb, labels, conf, 0, update=False)
        proto, _ = criterion(out.logits, out.target, bank.num_clusters)
    else:
        proto = embeddings.sum() * 0.0
    if compat == "official":
        # The release concatenates the targets by dataset but keeps the heatmaps in batch
        # order.
        cst_t, cst_w = cst_t[order], cst_w[order]
    mse = heatmap_criterion(pred, cst_t, cst_w)
    total = (proto + mse * phm_weight) * weight
    return {"cps": total, "cps_proto": proto.detach(), "cps_heatmap": mse.detach()}
