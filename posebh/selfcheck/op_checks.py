"""Every fused op on one backend against its reference, on an adversarial suite.

Similarity (heatmaps and logits): PoseBH-like and odd shapes, K = 1, F not a multiple of 8,
zero embeddings, NaN, tied prototypes, empty batch and empty class slice; fp32 within 1e-5 of
the reference, fp16/bf16 within twice the reference's own error in that dtype (+1e-3), the
fp32 gradient within 1e-5, ``gradcheck`` in float64, ``opcheck`` of the extension's operators.

Decode: the modes the GPU kernels implement (``None``, ``'default'``, DARK-UDP at kernels 3,
11 and the backend's largest) with and without the flip test and shift, on model-like maps,
ties, flat maps, border peaks, NaN, all-negative maps, an empty batch, K = 1 and odd sizes;
the kernels use IEEE operations in the reference's order, so the rule is bit equality (NaN
where the reference has NaN).

The reference always runs on the CPU (``backend="torch"``) on the same values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from posebh import ops
from posebh.ops.similarity_reference import (
    prototype_pair_similarity,
    prototype_similarity_heatmaps,
)
from posebh.selfcheck.report import FAIL, PASS, SKIP, Check

__all__ = ["decode_checks", "similarity_checks"]

_SECTION = "ops"
# (B, F, H, W, J, M, classes): PoseBH-like; K = 1; odd H/W; F not a multiple of 8/16.
SIMILARITY_SHAPES = [
    (2, 64, 64, 48, 214, 3, slice(None)),
    (3, 64, 7, 5, 13, 3, slice(4, 5)),
    (1, 64, 9, 11, 37, 3, slice(17, 31)),
    (2, 24, 5, 7, 29, 2, slice(3, 20)),
    (2, 13, 9, 3, 19, 4, slice(None)),
]


def _cannot_run(fn: Callable[[], Any]) -> str | None:
    """The dispatcher's reason when a forced backend cannot run a call, else None."""
    try:
        fn()
    except RuntimeError as exc:
        if "cannot run" in str(exc):
            return str(exc).splitlines()[0]
        raise
    return None


def _max_err(out: Tensor, ref: Tensor) -> tuple[bool, float]:
    """(NaN positions agree, max |out − ref| over the rest)."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    same_nan = bool(torch.equal(torch.isnan(out), torch.isnan(ref)))
    keep = ~torch.isnan(ref) & ~torch.isnan(out)
    err = float((out[keep] - ref[keep]).abs().max()) if keep.any() else 0.0
    return same_nan, err


def _verdict(section: str, name: str, ok: bool, rule: str, t0: float, **figures: Any) -> Check:
    return Check(section, name, PASS if ok else FAIL, rule, figures,
                 seconds=time.perf_counter() - t0)  # fmt: skip


def _similarity_inputs(b, f, h, w, j, m, seed, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, f, h, w, generator=gen, dtype=dtype)
    protos = torch.randn(j, m, f, generator=gen, dtype=dtype) * 1.7
    return emb, protos


def similarity_checks(
    device: str, backend: str, shapes: list[tuple] | None = None
) -> Iterator[Check]:
    """The similarity suite for ``backend`` on ``device`` (see the module docstring);
    ``shapes`` replaces :data:`SIMILARITY_SHAPES` (the interpreter needs small ones)."""
    dev = torch.device(device)
    name = f"similarity/{backend}"
    probe = _similarity_inputs(1, 16, 2, 2, 3, 2, 0)
    reason = _cannot_run(
        lambda: ops.prototype_similarity(probe[0].to(dev), probe[1].to(dev), backend=backend)
    )
    if reason:
        yield Check(_SECTION, name, SKIP if dev.type == "cpu" else FAIL, detail=reason)
        return
    rule = "NaN where the reference has NaN; max |Δ| ≤ 1e-5"
    for i, (*dims, cls) in enumerate(SIMILARITY_SHAPES if shapes is None else shapes):
        t0 = time.perf_counter()
        emb, protos = _similarity_inputs(*dims, seed=10 + i)
        out = ops.prototype_similarity(emb.to(dev), protos.to(dev), cls, backend=backend)
        ref = prototype_similarity_heatmaps(emb, protos, cls)
        same_nan, err = _max_err(out, ref)
        label = "x".join(map(str, dims))
        ok = same_nan and err <= 1e-5 and out.shape == ref.shape and out.dtype == ref.dtype
        yield _verdict(_SECTION, f"{name}/heatmaps {label}", ok, rule, t0, max_abs_err=err)
        flat = emb[0].flatten(1).t().contiguous()
        got = ops.prototype_logits(flat.to(dev), protos.to(dev), cls, backend=backend)
        sim = prototype_pair_similarity(flat, protos)[:, cls]
        same_nan, err = _max_err(got.logits, sim.reshape(sim.shape[0], -1))
        best_ok = bool(torch.equal(got.best.cpu(), sim.argmax(dim=2)))
        yield _verdict(
            _SECTION, f"{name}/logits {label}", same_nan and err <= 1e-5 and best_ok,
            rule + "; arg-max equal", t0, max_abs_err=err,
        )  # fmt: skip
    yield from _similarity_adversarial(dev, backend, name)
    yield from _similarity_gradients(dev, backend, name)
    yield from _similarity_low_precision(dev, backend, name)
    if backend == "cuda":
        yield from _similarity_opcheck(dev, name)


def _similarity_adversarial(dev: torch.device, backend: str, name: str) -> Iterator[Check]:
    t0 = time.perf_counter()
    emb, protos = _similarity_inputs(2, 16, 3, 5, 7, 3, seed=2)
    emb[0, :, 1] = 0.0  # zero embeddings: the clamp floor
    emb[1, 3, 2, 4] = float("nan")
    protos[:, 2] = protos[:, 0]  # tied prototypes
    out = ops.prototype_similarity(emb.to(dev), protos.to(dev), backend=backend)
    ref = prototype_similarity_heatmaps(emb, protos)
    same_nan, err = _max_err(out, ref)
    floor = bool(torch.all(out[0, :, 1].cpu() == 1e-4))
    yield _verdict(
        _SECTION, f"{name}/zero, NaN, ties", same_nan and err <= 1e-5 and floor,
        "zero pixels give 1e-4; NaN where the reference has NaN; max |Δ| ≤ 1e-5", t0,
        max_abs_err=err,
    )  # fmt: skip
    t0 = time.perf_counter()
    flat = emb[1].flatten(1).t().contiguous()
    got = ops.prototype_logits(flat.to(dev), protos.to(dev), slice(1, 6), backend=backend)
    sim = prototype_pair_similarity(flat, protos)[:, 1:6]
    ok = bool(torch.equal(got.best.cpu(), sim.argmax(dim=2)))
    yield _verdict(_SECTION, f"{name}/arg-max with NaN and ties", ok,
                   "torch.argmax's rule (NaN largest, first of ties)", t0)  # fmt: skip
    t0 = time.perf_counter()
    empty = ops.prototype_similarity(emb[:0].to(dev), protos.to(dev), backend=backend)
    no_cls = ops.prototype_similarity(emb.to(dev), protos.to(dev), slice(2, 2), backend=backend)
    ok = tuple(empty.shape) == (0, 7, 3, 5) and no_cls.shape[1] == 0
    yield _verdict(_SECTION, f"{name}/empty batch and class slice", ok, "empty results", t0)


def _similarity_gradients(dev: torch.device, backend: str, name: str) -> Iterator[Check]:
    t0 = time.perf_counter()
    emb, protos = _similarity_inputs(2, 64, 5, 7, 40, 3, seed=5)
    weight = torch.randn(2, 40, 5, 7, generator=torch.Generator().manual_seed(6))
    grads = []
    for b, d in ((backend, dev), ("torch", torch.device("cpu"))):
        x = emb.to(d, copy=True).requires_grad_(True)  # a fresh leaf per backend
        (ops.prototype_similarity(x, protos.to(d), backend=b) * weight.to(d)).sum().backward()
        grads.append(x.grad.cpu())
    _, err = _max_err(grads[0], grads[1])
    scale = float(grads[1].abs().max())
    ok = err <= 1e-5 + 1e-4 * scale
    yield _verdict(_SECTION, f"{name}/gradient fp32", ok, "max |Δ| ≤ 1e-5 + 1e-4·max|g|", t0,
                   max_abs_err=err)  # fmt: skip
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 8, 2, 3, dtype=torch.float64, generator=gen).to(dev).requires_grad_(True)
    p = torch.randn(6, 3, 8, dtype=torch.float64, generator=gen)
    p[4, 2] = p[4, 0]
    p = p.to(dev)
    pix = torch.randn(5, 8, dtype=torch.float64, generator=gen).to(dev).requires_grad_(True)
    reason = _cannot_run(lambda: ops.prototype_similarity(x.detach(), p, backend=backend))
    if reason:  # a documented limit of the backend (the CUDA kernels are float32-only)
        yield Check(_SECTION, f"{name}/gradcheck float64", SKIP, detail=reason)
        return
    ok = torch.autograd.gradcheck(
        lambda e: ops.prototype_similarity(e, p, slice(1, 6), backend=backend), (x,)
    ) and torch.autograd.gradcheck(
        lambda e: ops.prototype_logits(e, p, slice(0, 5), backend=backend).logits, (pix,)
    )
    yield _verdict(_SECTION, f"{name}/gradcheck float64", bool(ok), "torch.autograd.gradcheck", t0)


def _similarity_low_precision(dev: torch.device, backend: str, name: str) -> Iterator[Check]:
    for dtype in (torch.float16, torch.bfloat16):
        t0 = time.perf_counter()
        emb, protos = _similarity_inputs(2, 64, 6, 5, 30, 3, seed=6)
        exact = prototype_similarity_heatmaps(emb.double(), protos.double())
        low_e, low_p = emb.to(dtype), protos.to(dtype)
        label = f"{name}/{str(dtype).removeprefix('torch.')}"

        def run(e: Tensor = low_e, p: Tensor = low_p) -> Tensor:
            return ops.prototype_similarity(e.to(dev), p.to(dev), backend=backend)

        reason = _cannot_run(run)
        if reason:  # a documented limit of the backend (the C++ kernels: float32/float64)
            yield Check(_SECTION, label, SKIP, detail=reason)
            continue
        ours = run()
        theirs = prototype_similarity_heatmaps(low_e.float(), low_p.float()).to(dtype)
        err_ours = float((ours.cpu().double() - exact).abs().max())
        err_torch = float((theirs.double() - exact).abs().max())
        ok = ours.dtype == dtype and err_ours <= 2 * err_torch + 1e-3
        yield _verdict(
            _SECTION, label, ok,
            "|ours − fp64| ≤ 2·|reference in that dtype − fp64| + 1e-3", t0,
            err=err_ours, reference_err=err_torch,
        )  # fmt: skip


def _similarity_opcheck(dev: torch.device, name: str) -> Iterator[Check]:
    t0 = time.perf_counter()
    emb, protos = _similarity_inputs(2, 16, 3, 5, 7, 3, seed=7)
    emb, protos = emb.to(dev), protos.to(dev)
    torch.library.opcheck(torch.ops.posebh.prototype_heatmaps.default, (emb, protos, 1, 6))
    flat = emb[0].flatten(1).t().contiguous()
    torch.library.opcheck(torch.ops.posebh.prototype_logits.default, (flat, protos, 0, 7))
    yield _verdict(_SECTION, f"{name}/opcheck", True, "torch.library.opcheck", t0)


# ------------------------------------------------------------------------------------------
# Decode
# ------------------------------------------------------------------------------------------


def _gaussian_maps(n: int, k: int, h: int, w: int, seed: int) -> np.ndarray:
    """σ = 2 Gaussians at sub-pixel centres (some off the map) plus noise: model-like maps."""
    rng = np.random.default_rng(seed)
    cx = rng.uniform(-2, w + 1, (n, k, 1, 1))
    cy = rng.uniform(-2, h + 1, (n, k, 1, 1))
    ys, xs = np.mgrid[0:h, 0:w]
    maps = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 8.0)
    return (maps + rng.normal(0, 0.01, maps.shape)).astype(np.float32)


def decode_maps() -> dict[str, np.ndarray]:
    """The decode suite's inputs, [N, K, H, W] float32 each."""
    maps = {"model-like 64x48": _gaussian_maps(4, 17, 64, 48, 1)}
    adv = _gaussian_maps(3, 6, 9, 7, 2)
    adv[0, 0] = 0.0  # flat zero map: no maximum above 0
    adv[0, 1] = 0.25  # flat positive map: every pixel ties
    adv[0, 2, 4, 1] = adv[0, 2, 2, 5] = adv[0, 2].max() + 1  # two equal maxima
    adv[1, 0, 0, 0] = 5.0  # corner peak
    adv[1, 1, 8, 3] = 5.0  # bottom-border peak
    adv[1, 2, 3, 6] = 5.0  # right-border peak
    adv[2, 0, 2, 2] = np.nan
    adv[2, 1] = -np.abs(adv[2, 1]) - 0.1  # all negative
    maps["adversarial 9x7"] = adv
    maps["K=1 odd 5x3"] = _gaussian_maps(2, 1, 5, 3, 3)
    maps["empty batch"] = np.zeros((0, 17, 64, 48), np.float32)
    return maps


def _decode_settings(max_kernel: int) -> list[tuple[str | None, bool, int]]:
    return [(None, False, 11), ("default", False, 11), ("default", True, 3),
            ("default", True, 11), ("default", True, max_kernel)]  # fmt: skip


def decode_checks(
    device: str, backend: str, max_kernel: int, *, small: bool = False
) -> Iterator[Check]:
    """The decode suite for ``backend`` on ``device``: bit equality with the reference;
    ``small`` drops the 64×48 maps (for the interpreter)."""
    dev = torch.device(device)
    name = f"decode/{backend}"
    maps = decode_maps()
    if small:
        maps.pop("model-like 64x48")
    probe = torch.from_numpy(maps["K=1 odd 5x3"]).to(dev)
    ctr, scl = torch.full((2, 2), 100.0), torch.ones(2, 2)
    reason = _cannot_run(lambda: ops.decode_heatmaps(probe, ctr, scl, backend=backend))
    if reason:
        yield Check(_SECTION, name, SKIP if dev.type == "cpu" else FAIL, detail=reason)
        return
    rng = np.random.default_rng(9)
    for label, hm in maps.items():
        n, k = hm.shape[:2]
        center = torch.from_numpy(rng.uniform(100, 300, (n, 2)).astype(np.float32))
        scale = torch.from_numpy(rng.uniform(0.5, 2.0, (n, 2)).astype(np.float32))
        flipped = torch.from_numpy(hm[..., ::-1].copy() * 0.9)
        flip_indices = list(range(k))[::-1]
        for post, udp, kernel in _decode_settings(max_kernel):
            for flip, shift in ((False, False), (True, False), (True, True)):
                t0 = time.perf_counter()
                kw = dict(post_process=post, use_udp=udp, kernel=kernel, shift=shift)
                if flip:
                    kw.update(flipped=flipped, flip_indices=flip_indices)
                ref = ops.decode_heatmaps(torch.from_numpy(hm), center, scale, backend="torch",
                                          **kw)  # fmt: skip
                if flip:
                    kw["flipped"] = flipped.to(dev)
                got = ops.decode_heatmaps(torch.from_numpy(hm).to(dev), center.to(dev),
                                          scale.to(dev), backend=backend, **kw)  # fmt: skip
                equal = all(
                    torch.equal(torch.isnan(a.cpu()), torch.isnan(b))
                    and torch.equal(a.cpu().nan_to_num(7.0), b.nan_to_num(7.0))
                    for a, b in zip(got, ref, strict=True)
                )
                errs = [_max_err(a, b)[1] for a, b in zip(got, ref, strict=True)]
                mode = f"{post or 'none'}{'+udp' if udp else ''} k{kernel}"
                extra = f"{' flip' if flip else ''}{' shift' if shift else ''}"
                yield _verdict(
                    _SECTION, f"{name}/{label} {mode}{extra}", equal, "bit-equal to the "
                    "reference (NaN where it has NaN)", t0, preds_err=errs[0],
                    maxvals_err=errs[1],
                )  # fmt: skip
    yield from _decode_low_precision(dev, backend, name)
    if backend == "cuda":
        t0 = time.perf_counter()
        hm = torch.from_numpy(maps["adversarial 9x7"]).to(dev)
        c, s = torch.full((3, 2), 150.0, device=dev), torch.ones(3, 2, device=dev)
        op = torch.ops.posebh.decode_heatmaps.default
        torch.library.opcheck(op, (hm, c, s, None, None, False, "default", False, 11))
        torch.library.opcheck(op, (hm, c, s, hm.flip(3), list(range(6)), True, None, True, 11))
        yield _verdict(_SECTION, f"{name}/opcheck", True, "torch.library.opcheck", t0)


def _decode_low_precision(dev: torch.device, backend: str, name: str) -> Iterator[Check]:
    """bf16/fp16 maps (autocast inference) are merged in their dtype, then decoded in fp32:
    the same bits as the reference on the same low-precision input."""
    hm = _gaussian_maps(3, 17, 64, 48, 4)
    center, scale = torch.full((3, 2), 160.0), torch.full((3, 2), 1.2)
    for dtype in (torch.bfloat16, torch.float16):
        t0 = time.perf_counter()
        low = torch.from_numpy(hm).to(dtype)
        fl = low.flip(3).contiguous()
        kw = dict(flip_indices=list(range(17)), shift=True, post_process="default")
        ref = ops.decode_heatmaps(low, center, scale, flipped=fl, backend="torch", **kw)
        got = ops.decode_heatmaps(low.to(dev), center.to(dev), scale.to(dev),
                                  flipped=fl.to(dev), backend=backend, **kw)  # fmt: skip
        ok = all(torch.equal(a.cpu(), b) for a, b in zip(got, ref, strict=True))
        yield _verdict(_SECTION, f"{name}/{str(dtype).removeprefix('torch.')} maps flip", ok,
                       "bit-equal to the reference on the same input", t0)  # fmt: skip
