"""GPU timings of the fused ops against torch eager and against their roofline.

The roofline of a call is ``max(bytes moved / copy bandwidth, FLOPs / matmul rate)``, with both
rates measured in the same run: the copy bandwidth by a large device-to-device copy (bytes read
plus written), the matmul rate by an 8192³ product in the dtype the kernel computes in (the
similarity kernels accumulate in IEEE fp32 whatever the input dtype, so fp32 with TF32 off).
Times are ``triton.testing.do_bench`` medians in milliseconds.

Targets (the issue's): similarity at B 64 × J 214 ≥ 3× torch eager and within 1.5× of the
roofline, in fp32 and with bf16 embeddings; decode of B 256 × K 133 × 64×48 at ≥ 50 % of the
copy bandwidth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from posebh import ops
from posebh.ops.similarity_reference import prototype_similarity_heatmaps
from posebh.selfcheck.report import FAIL, PASS, Check

__all__ = ["measure_rates", "timing_checks"]

_SECTION = "timing"
#: The similarity benchmark: B images of F-dim 64×48 embedding maps, J classes × M prototypes.
SIMILARITY_SHAPE = dict(b=64, f=64, h=64, w=48, j=214, m=3)
#: The decode benchmark: N boxes × K keypoints of 64×48 maps (WholeBody's K).
DECODE_SHAPE = dict(n=256, k=133, h=64, w=48)


def _bench(fn: Callable[[], Any]) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median"))


def measure_rates(device: torch.device) -> dict[str, float]:
    """Copy bandwidth (GB/s, read + written) and matmul rates (TFLOP/s: fp32 without TF32,
    bf16) measured on ``device``."""
    src = torch.empty(1 << 29, dtype=torch.float32, device=device)  # 2 GiB
    dst = torch.empty_like(src)
    ms = _bench(lambda: dst.copy_(src))
    rates = {"copy_GBps": 2 * src.numel() * 4 / ms / 1e6}
    src = dst = None  # free 4 GiB before the matmuls
    n = 8192
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            ms = _bench(lambda a=a, b=b: a @ b)
            rates[f"matmul_{label}_TFLOPs"] = 2 * n**3 / ms / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.cuda.empty_cache()
    return rates


def _ratio_check(name: str, ok: bool, rule: str, t0: float, **figures: Any) -> Check:
    return Check(_SECTION, name, PASS if ok else FAIL, rule, figures,
                 seconds=time.perf_counter() - t0)  # fmt: skip


def similarity_timings(
    device: torch.device, backend: str, rates: dict[str, float]
) -> Iterator[Check]:
    s = SIMILARITY_SHAPE
    gen = torch.Generator(device=device).manual_seed(0)
    protos = torch.randn(s["j"], s["m"], s["f"], device=device, generator=gen)
    for label, dtype in (("fp32", torch.float32), ("bf16 embeddings", torch.bfloat16)):
        t0 = time.perf_counter()
        emb = torch.randn(s["b"], s["f"], s["h"], s["w"], device=device, generator=gen)
        emb = emb.to(dtype)
        ours = _bench(lambda e=emb: ops.prototype_similarity(e, protos, backend=backend))
        eager = _bench(lambda e=emb: prototype_similarity_heatmaps(e, protos))
        pixels = s["b"] * s["h"] * s["w"]
        moved = emb.numel() * emb.element_size() + pixels * s["j"] * 4 + protos.numel() * 4
        flops = 2.0 * pixels * s["j"] * s["m"] * s["f"]
        roof_ms = max(moved / rates["copy_GBps"] / 1e6, flops / rates["matmul_fp32_TFLOPs"] / 1e9)
        speedup, of_roof = eager / ours, ours / roof_ms
        yield _ratio_check(
            f"similarity/{backend} B64×J214 {label}", speedup >= 3.0 and of_roof <= 1.5,
            "≥ 3× torch eager and ≤ 1.5× the roofline", t0, ms=ours, eager_ms=eager,
            speedup=speedup, roofline_ms=roof_ms, of_roofline=of_roof, bytes=moved, flops=flops,
        )  # fmt: skip


def decode_timings(device: torch.device, backend: str, rates: dict[str, float]) -> Iterator[Check]:
    s = DECODE_SHAPE
    gen = torch.Generator(device=device).manual_seed(1)
    hm = torch.rand(s["n"], s["k"], s["h"], s["w"], device=device, generator=gen)
    center = torch.full((s["n"], 2), 200.0, device=device)
    scale = torch.full((s["n"], 2), 1.5, device=device)
    flip_indices = list(range(s["k"]))
    for label, kw in (
        ("default", {}),
        ("default, flip test", {"flipped": hm.flip(3).contiguous(), "flip_indices": flip_indices}),
        ("DARK-UDP k11", {"use_udp": True}),
    ):
        t0 = time.perf_counter()
        ms = _bench(lambda kw=kw: ops.decode_heatmaps(hm, center, scale, backend=backend, **kw))
        moved = hm.numel() * 4 * (2 if "flipped" in kw else 1)
        gbps = moved / ms / 1e6
        share = gbps / rates["copy_GBps"]
        yield _ratio_check(
            f"decode/{backend} 256×133×64×48 {label}", share >= 0.5,
            "≥ 50 % of the measured copy bandwidth", t0, ms=ms, GBps=gbps,
            copy_GBps=rates["copy_GBps"], share=share,
        )  # fmt: skip


def timing_checks(device: str, backends: list[str], rates: dict[str, float]) -> Iterator[Check]:
    dev = torch.device(device)
    for backend in backends:
        yield from similarity_timings(dev, backend, rates)
        yield from decode_timings(dev, backend, rates)


def rates_check(device: str) -> tuple[dict[str, float], Check]:
    t0 = time.perf_counter()
    rates = measure_rates(torch.device(device))
    ok = all(v > 0 for v in rates.values())
    return rates, Check(_SECTION, "copy bandwidth and matmul rates", PASS if ok else FAIL,
                        "measured here", rates, seconds=time.perf_counter() - t0)  # fmt: skip
