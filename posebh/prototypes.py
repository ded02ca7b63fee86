"""Non-parametric keypoint prototypes of PoseBH and their Sinkhorn-based online update.

Shape vocabulary, used by every docstring in this module:

- ``N`` sampled pixels (embeddings), ``F`` embedding dimensions;
- ``J`` keypoint classes over all training skeletons (214 for the six PoseBH datasets),
  ``M`` prototypes per class (3), so the flat prototype matrix has ``J·M`` rows and row
  ``j·M + m`` is prototype ``m`` of class ``j``;
- dataset ``d`` owns the contiguous block of classes ``start_d .. start_d + K_d − 1``, where
  ``K_d`` is its keypoint count and ``start_d`` the sum of the counts before it
  (0, 17, 31, 47, 64, 81 for coco, aic, mpii, ap10k, apt36k, wholebody);
- ``B × F × H × W`` embedding maps, ``B × K × H × W`` heatmaps.

The similarity of a pixel to a prototype is ``s = |cos(e, p)|``; a class score is the maximum
over that class's ``M`` prototypes, clamped to ``[1e-4, 1 − 1e-4]`` like the official
``kpt_class``.

Two behaviours are offered (``compat``):

``"paper"`` (default) implements the paper's equations. For every class ``k`` among the sampled
pixels of dataset ``d``, the similarities of those pixels to the ``M`` prototypes of class
``start_d + k`` are balanced by Sinkhorn-Knopp, one prototype per pixel is drawn by hard
Gumbel-softmax, the pixel's PPC/PPD target is the drawn prototype, and each prototype moves
towards the normalised confidence-weighted mean of its assigned embeddings.

``"official"`` reproduces the released code (github.com/uyoung-jeong/PoseBH, commit 8f03438),
which differs in four places, all kept here on purpose so the golden vectors of that code can
be matched:

1. the PPC/PPD logits of dataset ``d`` are the flat similarity columns ``start_d .. start_d +
   M·K_d − 1``: ``start_d`` is not multiplied by ``M``, so every dataset but COCO reads other
   classes' prototypes (the update still moves row ``start_d + k``);
2. the correctness mask compares the arg-max over **all** ``J`` classes (a global index) with
   the dataset-local label, and zeroes the caller's confidence tensor in place;
3. the update weights each embedding by the confidence twice: ``f = Σ q·w²·e``;
4. the Sinkhorn input of local class ``k`` is the similarity to the prototypes of **global**
   class ``k`` (a COCO class), not ``start_d + k``. This is not documented elsewhere; the
   golden targets of dataset 1 only match with it.

In addition the official code passes the Sinkhorn *probabilities* to
``F.gumbel_softmax(L, tau=0.5, hard=True)`` as logits, updates the prototypes with that random
sample, but uses the deterministic arg-max of ``L`` as the target. Official mode makes the same
``F.gumbel_softmax`` call, per class in ascending order, so ``torch.manual_seed(s)`` before
:meth:`KeypointPrototypes.learn` reproduces the release's draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from posebh import ops
from posebh.ops.similarity_reference import (
    SCORE_MAX,
    SCORE_MIN,
    prototype_class_scores,
    prototype_pair_similarity,
)
from posebh.skeletons import NUM_KEYPOINTS

Compat = Literal["paper", "official"]

_COMPATS = ("paper", "official")


def _check_compat(compat: str) -> None:
    if compat not in _COMPATS:
        raise ValueError(f"compat must be one of {_COMPATS}, got {compat!r}")


# --------------------------------------------------------------------------------------------
# Sinkhorn-Knopp and the hard assignment
# --------------------------------------------------------------------------------------------


def sinkhorn_knopp(scores: Tensor, iterations: int = 3, epsilon: float = 0.05) -> Tensor:
    """Balance pixel-to-prototype scores into a soft assignment (Sinkhorn-Knopp).

    Starts from ``exp(scores / epsilon)`` and alternately makes every prototype's column sum to
    ``1/M`` and every pixel's row sum to ``1/N``; the result is rescaled so each row sums to 1.
    This is the matrix ``L`` the official ``distributed_sinkhorn`` hands to Gumbel-softmax.

    If ``|scores| / epsilon`` exceeds 50 anywhere, ``exp`` could overflow or underflow to 0 (a
    prototype column of zeros then gives 0/0), so the same iterations run in the log domain.
    PoseBH's |cos| scores (≤ 1, ε = 0.05) always take the direct path, which reproduces the
    release's matrix bit for bit.

    Args:
        scores: [N, M] similarities of N ≥ 1 pixels of one class to its M prototypes.
        iterations: number of (column, row) normalisation rounds.
        epsilon: entropic regularisation (temperature).

    Returns:
        [N, M], non-negative, rows sum to 1; no gradient is meant to flow (call under
        ``torch.no_grad()`` in training).
    """
    n, m = scores.shape
    if bool(scores.abs().max() / epsilon > 50):
        return _sinkhorn_knopp_log(scores, iterations, epsilon)
    q = torch.exp(scores / epsilon)
    q = q / q.sum()
    for _ in range(iterations):
        # Equal mass 1/M per prototype (columns) ...
        q = q / q.sum(dim=0, keepdim=True)
        q = q / m
        # ... then equal mass 1/N per pixel (rows).
        q = q / q.sum(dim=1, keepdim=True)
        q = q / n
    return q * n


def _sinkhorn_knopp_log(scores: Tensor, iterations: int, epsilon: float) -> Tensor:
    """:func:`sinkhorn_knopp` in the log domain, for scores too large for a direct ``exp``."""
    n, m = scores.shape
    log_q = scores / epsilon
    log_q = log_q - torch.logsumexp(log_q.reshape(-1), dim=0)
    for _ in range(iterations):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(m)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(n)
    return torch.exp(log_q + math.log(n))


def _gumbel_noise(
    shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Standard Gumbel noise ``−log E``, ``E ~ Exp(1)``, drawn as ``F.gumbel_softmax`` does."""
    e = torch.empty(shape, dtype=like.dtype, device=like.device).exponential_(generator=generator)
    return -e.log()


def sinkhorn_assign(
    scores: Tensor,
    *,
    iterations: int = 3,
    epsilon: float = 0.05,
    tau: float = 0.5,
    compat: Compat = "paper",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Hard assignment of N pixels to M prototypes: Sinkhorn-Knopp then Gumbel-softmax.

    ``compat="paper"``: the hard Gumbel-softmax is taken on the *log* of the Sinkhorn matrix
    ``Q``, i.e. ``index_i = argmax_m(log Q_im + g_im)`` with Gumbel noise ``g``: each pixel's
    prototype is a sample from the categorical distribution ``Q_i`` (the Gumbel-max trick).
    ``tau`` does not change a hard sample (dividing by ``tau > 0`` keeps the arg-max); it is
    accepted for signature parity only, since no gradient flows into the assignment. The
    returned one-hot and index describe the same sample, and both the target and the update
    use it. The noise is drawn from ``generator`` (the global RNG when None).

    ``compat="official"``: ``q = F.gumbel_softmax(Q, tau, hard=True)`` with the probabilities
    ``Q`` used as logits (so the sample is close to uniform), while ``index = argmax(Q)`` is
    deterministic and generally disagrees with ``q``. Same call as the release, so seeding the
    global RNG reproduces its draw; ``generator`` must be None.

    Args:
        scores: [N, M] similarities of the pixels of one class to its prototypes.
        iterations, epsilon: Sinkhorn-Knopp settings (3 and 0.05 in PoseBH).
        tau: Gumbel-softmax temperature (0.5 in PoseBH).
        compat: "paper" or "official".
        generator: random generator for the paper-mode draw.

    Returns:
        ``q`` [N, M] one-hot (float, dtype of ``scores``) and ``index`` [N] int64.
    """
    _check_compat(compat)
    q_soft = sinkhorn_knopp(scores, iterations=iterations, epsilon=epsilon)
    if compat == "official":
        if generator is not None:
            raise ValueError("compat='official' draws from the global RNG; pass generator=None")
        index = q_soft.argmax(dim=1)
        q = F.gumbel_softmax(q_soft, tau=tau, hard=True)
        return q, index
    logits = q_soft.log() + _gumbel_noise(tuple(q_soft.shape), q_soft, generator)
    index = (logits / tau).argmax(dim=1)
    q = F.one_hot(index, num_classes=q_soft.shape[1]).to(scores.dtype)
    return q, index


# --------------------------------------------------------------------------------------------
# Momentum update
# --------------------------------------------------------------------------------------------


def update_class_prototypes(
    prototypes: Tensor,
    embeddings: Tensor,
    weights: Tensor,
    assignment: Tensor,
    momentum: float,
    *,
    square_weights: bool = False,
    renormalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """Momentum update of one class's prototypes from its assigned pixels.

    ``f_m = normalise(Σ_i q_im · w_i · e_i)`` and ``p_m ← momentum · p_m + (1 − momentum) ·
    f_m`` for every prototype ``m`` with ``Σ_i q_im · w_i ≠ 0``, then ``p_m`` is re-normalised;
    the other prototypes are returned bit for bit unchanged.

    Args:
        prototypes: [M, F] current prototypes of the class.
        embeddings: [n, F] L2-normalised embeddings of the class's pixels.
        weights: [n] confidences ``w`` (0 for masked pixels).
        assignment: [n, M] assignment ``q`` (one-hot rows in PoseBH).
        momentum: γ, the weight of the old value.
        square_weights: official behaviour, ``f = Σ q·w²·e`` (deviation 3).
        renormalize: re-normalise the moved prototypes (official mode normalises all rows
            once at the end instead, as the release).

    Returns:
        ``new`` [M, F] (a new tensor) and ``moved`` [M] bool.
    """
    qw = assignment * weights[:, None]  # [n, M]
    ew = embeddings * weights[:, None] if square_weights else embeddings  # [n, F]
    f = F.normalize(qw.t() @ ew, p=2, dim=-1)  # [M, F]
    mass = qw.sum(dim=0)  # [M]
    moved = mass != 0
    new = prototypes.clone()
    step = momentum * prototypes[moved] + (1.0 - momentum) * f[moved]
    new[moved] = F.normalize(step, p=2, dim=-1) if renormalize else step
    return new, moved


# --------------------------------------------------------------------------------------------
# The module
# --------------------------------------------------------------------------------------------


@dataclass
class PrototypeLearning:
    """What :meth:`KeypointPrototypes.learn` returns for the N pixels of one dataset d.

    Attributes:
        logits: [N, M·K_d] |cos| similarities used as PPC/PPD logits; column ``k·M + m`` is
            prototype m of local class k (in official mode: flat column ``start_d + k·M + m``
            of all classes, see deviation 1). Carries gradients w.r.t. the embeddings.
        target: [N] int64, ``k·M + m`` for the assigned prototype m of the pixel's label k
            (``-1`` never occurs here but is the ignore value of the loss).
        class_scores: [N, K_d] clamped class scores (max over M) of the dataset's classes.
        weights: [N] confidences after the correctness mask (0 where the predicted class
            differs from the label).
    """

    logits: Tensor
    target: Tensor
    class_scores: Tensor
    weights: Tensor


class KeypointPrototypes(nn.Module):
    """Non-parametric keypoint prototypes ``P`` [J, M, F] with a Sinkhorn momentum update.

    The prototypes are a persistent buffer named ``prototypes`` (the official checkpoint key
    ``proto_head.kpt_prototype.prototypes`` maps onto it). They are not trained by gradients;
    :meth:`learn` moves them and keeps every updated row L2-normalised. Inference never writes
    to the buffer (the official code re-normalises it in place on every call).

    Args:
        num_keypoints: K_d of each dataset, in dataset-index order; J = their sum.
        num_prototypes: M, prototypes per class.
        dim: F, embedding dimensions.
        gamma: momentum γ of the update (weight of the old prototype).
        compat: "paper" (the equations) or "official" (the released code); see the module
            docstring.
        generator: optional generator for the initialisation (trunc-normal, std 0.02, then
            L2-normalised, as the official ``init_proto``).
    """

    prototypes: Tensor

    def __init__(
        self,
        num_keypoints: Sequence[int] = NUM_KEYPOINTS,
        num_prototypes: int = 3,
        dim: int = 64,
        gamma: float = 0.999,
        compat: Compat = "paper",
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_compat(compat)
        self.num_keypoints: tuple[int, ...] = tuple(int(k) for k in num_keypoints)
        self.num_prototypes = int(num_prototypes)
        self.dim = int(dim)
        self.gamma = float(gamma)
        self.compat: Compat = compat
        self.starts: tuple[int, ...] = tuple(
            sum(self.num_keypoints[:d]) for d in range(len(self.num_keypoints))
        )
        self.num_classes = sum(self.num_keypoints)
        proto = torch.empty(self.num_classes, self.num_prototypes, self.dim)
        nn.init.trunc_normal_(proto, mean=0.0, std=0.02, a=-2.0, b=2.0, generator=generator)
        self.register_buffer("prototypes", F.normalize(proto, p=2, dim=-1), persistent=True)
        self._frozen = False

    def extra_repr(self) -> str:
        return (
            f"num_keypoints={self.num_keypoints}, num_prototypes={self.num_prototypes}, "
            f"dim={self.dim}, gamma={self.gamma}, compat={self.compat!r}, frozen={self._frozen}"
        )

    # ---------------------------------------------------------------- freeze switch

    @property
    def frozen(self) -> bool:
        """True while :meth:`learn` and :meth:`synchronize` leave the prototypes untouched."""
        return self._frozen

    def freeze(self) -> None:
        """Stop prototype updates (targets and logits are still produced)."""
        self._frozen = True

    def thaw(self) -> None:
        """Resume prototype updates."""
        self._frozen = False

    # ---------------------------------------------------------------- inference

    def class_slice(self, dataset: int) -> slice:
        """The classes of dataset ``dataset`` (``-1``: all J classes) as a slice of 0..J−1."""
        if dataset == -1:
            return slice(0, self.num_classes)
        if not 0 <= dataset < len(self.num_keypoints):
            raise IndexError(f"dataset {dataset} out of range [-1, {len(self.num_keypoints)})")
        start = self.starts[dataset]
        return slice(start, start + self.num_keypoints[dataset])

    def similarity(self, embeddings: Tensor) -> Tensor:
        """|cos| of embeddings [N, F] to every prototype: [N, J, M] (differentiable)."""
        return prototype_pair_similarity(embeddings, self.prototypes)

    def class_scores(self, embeddings: Tensor, dataset: int = -1) -> Tensor:
        """Clamped class scores [N, K] of dataset ``dataset`` (K = J for ``-1``)."""
        return prototype_class_scores(embeddings, self.prototypes)[:, self.class_slice(dataset)]

    #: Backend of :meth:`heatmaps` when none is passed: "auto" (the fused kernels of
    #: :func:`posebh.ops.prototype_similarity` where available) or "torch" to force the
    #: reference :func:`posebh.ops.similarity_reference.prototype_similarity_heatmaps`;
    #: settable per instance.
    heatmap_backend: str = "auto"

    def heatmaps(
        self, embeddings: Tensor, dataset: int = -1, *, backend: str | None = None
    ) -> Tensor:
        """Prototype heatmaps [B, K, H, W] of embedding maps [B, F, H, W].

        ``heatmaps(x, d)`` equals ``heatmaps(x, -1)[:, class_slice(d)]`` bit for bit. Runs
        :func:`posebh.ops.prototype_similarity` with ``backend`` (default
        :attr:`heatmap_backend`).
        """
        return ops.prototype_similarity(
            embeddings,
            self.prototypes,
            self.class_slice(dataset),
            backend=backend or self.heatmap_backend,
        )

    def forward(self, embeddings: Tensor, dataset: int = -1) -> Tensor:
        """Alias of :meth:`heatmaps`."""
        return self.heatmaps(embeddings, dataset)

    #: Backend of the |cos| logits of :meth:`learn`: "auto" (the fused
    #: :func:`posebh.ops.prototype_logits`: the C++ kernels on CPU, Triton/CUDA on GPUs, with
    #: gradients to the embeddings) or "torch" to force the reference
    #: :func:`~posebh.ops.similarity_reference.prototype_pair_similarity` (for debugging and
    #: as the tests' reference); any other backend name of the op forces that backend.
    #: Settable per instance.
    logits_backend: str = "auto"

    def _learn_similarity(self, embeddings: Tensor, classes: slice) -> Tensor:
        """|cos| [N, K, M] of the embeddings to the prototypes of ``classes`` (differentiable
        w.r.t. the embeddings), on :attr:`logits_backend`.

        Both paths compute in the prototypes' dtype (bf16 embeddings from autocast are
        converted, as the reference converts them); on CPU in float32 with F a multiple of 8
        the fused kernel gives the reference's values bit for bit.
        """
        if self.logits_backend == "torch":
            return self.similarity(embeddings)[:, classes]
        x = embeddings.to(self.prototypes.dtype)
        fused = ops.prototype_logits(x, self.prototypes, classes, backend=self.logits_backend)
        return fused.logits.reshape(*fused.best.shape, self.num_prototypes)  # [N, K, M]

    # ---------------------------------------------------------------- training

    def learn(
        self,
        embeddings: Tensor,
        labels: Tensor,
        confidence: Tensor,
        dataset: int,
        *,
        update: bool = True,
        update_weight: float = 1.0,
        generator: torch.Generator | None = None,
        synchronize: bool = False,
    ) -> PrototypeLearning:
        """Assign pixels of dataset ``dataset`` to prototypes, update them, return PPC inputs.

        Steps (see the module docstring for what ``compat="official"`` changes):

        1. ``s = |cos|`` of the N embeddings to the prototypes of d's classes (all classes
           in official mode) on :attr:`logits_backend` (the fused op, or the reference); the
           logits are dataset d's block, flattened to [N, M·K_d].
        2. Correctness mask: a pixel keeps its confidence only if the arg-max of its class
           scores over d's classes equals its label (soft clustering).
        3. For each class k present (ascending), Sinkhorn-Knopp on the pixels' similarities to
           class k's M prototypes, a hard Gumbel-softmax assignment (:func:`sinkhorn_assign`),
           target ``k·M + m``, and a momentum update (:func:`update_class_prototypes`) with
           momentum ``γ`` (``1 − (1 − γ)·update_weight`` when ``update_weight < 1``).
        4. Updated rows are re-normalised.

        The update runs under ``torch.no_grad()``; only ``logits`` (and ``class_scores``)
        carry gradients to ``embeddings``. Everything is computed in the prototypes' dtype
        with autocast off (bf16/fp16 embeddings are converted; their gradient comes back in
        their dtype), so the result under autocast equals the result on the converted
        embeddings without it. Nothing is written when ``update`` is False or the
        module is frozen, but the assignment is still drawn (same RNG use).

        Args:
            embeddings: [N, F] sampled pixel embeddings (not normalised).
            labels: [N] int, local keypoint index in 0..K_d−1.
            confidence: [N] confidence ``w`` of each pixel (GT heatmap maximum). Official mode
                zeroes it **in place** where the mask fails, as the release does.
            dataset: d, the dataset index of these pixels.
            update: move the prototypes (if not frozen).
            update_weight: scales the step ``1 − γ``; values ≥ 1 use γ itself.
            generator: random generator for the paper-mode Gumbel draw (global RNG if None;
                must be None in official mode).
            synchronize: afterwards call :meth:`synchronize` (a collective: every rank must
                call it). :func:`posebh.losses.prototype_losses` synchronises once per step
                instead, which is safe when ranks see different datasets.

        Returns:
            :class:`PrototypeLearning` with logits [N, M·K_d], target [N], class_scores
            [N, K_d] and weights [N].
        """
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings must be [N, {self.dim}], got {tuple(embeddings.shape)}")
        official = self.compat == "official"
        m = self.num_prototypes
        cls = self.class_slice(dataset)
        start, num_k = cls.start, cls.stop - cls.start
        n = embeddings.shape[0]
        labels = labels.to(device=embeddings.device, dtype=torch.long)
        if n and (int(labels.min()) < 0 or int(labels.max()) >= num_k):
            raise ValueError(f"labels must lie in [0, {num_k}) for dataset {dataset}")

        # The compute dtype is the prototypes' (as the reference similarity, which turns
        # autocast off itself): under autocast the update's matmul would otherwise round
        # the step to bf16/fp16.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            if official:
                # All J classes: the logits (deviation 1), the mask (deviation 2) and the Sinkhorn
                # input (deviation 4) read classes outside d's block.
                sim = self._learn_similarity(embeddings, slice(None))  # [N, J, M]
                class_scores_all = sim.amax(dim=2)  # [N, J]
                class_scores = class_scores_all[:, cls].clamp(SCORE_MIN, SCORE_MAX)
                # Deviation 1: column offset start_d instead of start_d·M.
                logits = sim.reshape(n, -1)[:, start : start + num_k * m]
                # Deviation 2: global arg-max against a local label; confidence zeroed in place.
                predicted = class_scores_all.argmax(dim=1)
                with torch.no_grad():
                    confidence[predicted != labels] = 0
                weights = confidence
                # Deviation 4: the release balances the similarities to global class k.
                sinkhorn_input = sim[:, :num_k]
            else:
                sim = self._learn_similarity(embeddings, cls)  # [N, K_d, M], d's block
                block_scores = sim.amax(dim=2)  # [N, K_d]
                class_scores = block_scores.clamp(SCORE_MIN, SCORE_MAX)
                logits = sim.reshape(n, num_k * m)
                predicted = block_scores.argmax(dim=1)
                weights = torch.where(predicted == labels, confidence, torch.zeros_like(confidence))
                sinkhorn_input = sim

            momentum = (
                self.gamma if update_weight >= 1.0 else 1.0 - (1.0 - self.gamma) * update_weight
            )
            write = update and not self._frozen
            target = torch.full((n,), -1, dtype=torch.long, device=embeddings.device)
            with torch.no_grad():
                sim_d = sinkhorn_input.detach()  # [N, K_d, M]: row k feeds class k's Sinkhorn
                emb = F.normalize(embeddings.detach().to(sim_d.dtype), p=2, dim=-1)
                w_all = weights.detach().to(sim_d.dtype)
                protos = self.prototypes.clone()
                for k in range(num_k):
                    idx = (labels == k).nonzero().squeeze(1)
                    if idx.numel() == 0:
                        continue
                    q, index = sinkhorn_assign(
                        sim_d[idx, k], compat=self.compat, generator=generator
                    )
                    target[idx] = index + m * k
                    w = w_all[idx]
                    # The release only enters the update when the total mass is positive.
                    if official and not bool((q * w[:, None]).sum() > 0):
                        continue
                    protos[start + k], _ = update_class_prototypes(
                        protos[start + k],
                        emb[idx],
                        w,
                        q,
                        momentum,
                        square_weights=official,
                        renormalize=not official,
                    )
                if write:
                    # The release re-normalises every row once after the update; the paper mode
                    # has already normalised the moved prototypes and leaves the others untouched.
                    self.prototypes.copy_(F.normalize(protos, p=2, dim=-1) if official else protos)
        if synchronize:
            self.synchronize()
        return PrototypeLearning(
            logits=logits, target=target, class_scores=class_scores, weights=weights
        )

    @torch.no_grad()
    def synchronize(self) -> None:
        """Average the prototypes over all ranks of the default process group.

        A no-op when ``torch.distributed`` is not initialised, the world has one rank, or the
        module is frozen. Collective: every rank must call it the same number of times. The
        mean of unit vectors is shorter than 1, so it is re-normalised to keep the buffer's
        invariant (the release leaves that to its next forward's in-place normalisation).
        """
        if self._frozen or not (dist.is_available() and dist.is_initialized()):
            return
        world = dist.get_world_size()
        if world == 1:
            return
        total = self.prototypes.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        self.prototypes.copy_(F.normalize(total / world, p=2, dim=-1))


def use_similarity_backend(module: nn.Module, backend: str) -> None:
    """Route every prototype bank in ``module`` (keypoint and cluster prototypes) through
    ``backend``: sets :attr:`KeypointPrototypes.logits_backend` and
    :attr:`KeypointPrototypes.heatmap_backend` ("auto" for the fused kernels, "torch" for the
    reference)."""
    for sub in module.modules():
        if isinstance(sub, KeypointPrototypes):
            sub.logits_backend = backend
            sub.heatmap_backend = backend
