"""Heatmap decode throughput: the fused backends of posebh.ops.decode_heatmaps vs the reference.

Cases (N instances × K keypoints × 64×48 maps, float32, model-like σ = 2 Gaussians + noise):

- ``wholebody_udp``: N 64 × K 133 (COCO-WholeBody), DARK-UDP, kernel 11 — 105 MB of maps; the
  C++ target is ≥ 20× the reference here;
- ``wholebody_flip``: the same maps with the flip test fused (WholeBody's own setting:
  ``'default'``, ``shift_heatmap=True``) — 210 MB read;
- ``coco_udp``: N 64 × K 17 (COCO), DARK-UDP;
- ``coco_udp_flip``: COCO's evaluation setting: DARK-UDP with the flip test fused
  (``shift_heatmap=False``).

Backends: ``reference`` (posebh.decode.keypoints_from_heatmaps, after
posebh.decode.flip_test_merge for the flip cases, on CPU maps), ``cpp``, ``triton`` and
``cuda``.  Each backend decodes maps on its own device, as the evaluation hands them over:
the GPU backends get CUDA maps (the model's output, with CPU ``center``/``scale``) when CUDA
exists, and are skipped with the dispatcher's reason otherwise (CPU maps: Triton needs the
interpreter, the CUDA op a GPU).  GPU rows are timed to a ``torch.cuda.synchronize()``.
``extra_info`` holds, per run:
``speedup_vs_reference`` (reference min time / this min time, the reference timed in the same
session), ``device``, ``peak_mb`` (peak of torch's CPU allocator, from the profiler's memory
events, plus NumPy/Python's traced peak; the C++ op's per-thread O(H·W) scratch is not
counted; on CUDA the CUDA allocator's peak), ``input_mb``, ``read_gbps`` (the best of
torch.sum on the benchmark's threads, on one thread, and NumPy's max over the 105 MB
wholebody maps: this machine's streaming read bandwidth; on CUDA torch.sum over those maps on
the GPU, synchronised), ``floor_ms`` (bytes / read_gbps: the time one read of the input takes
from memory) and ``pct_of_floor`` (floor_ms / this time: how close the decode gets to reading
its input once). The COCO inputs (13–26 MB) partly stay in the 32 MB L3 cache between
rounds, so their "floor" can be beaten.

With ``--benchmark-disable`` (the CI smoke run) the maps shrink to N 2 and nothing is timed or
profiled: every backend still runs once and is checked against the reference.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import torch
from timing import min_ms

from posebh.decode import flip_test_merge
from posebh.decode import keypoints_from_heatmaps as reference_decode
from posebh.ops import decode as ops_decode
from posebh.skeletons import get_skeleton

CASES: dict[str, dict[str, Any]] = {
    "wholebody_udp": {"k": 133, "flip": False, "kw": {"post_process": "default", "use_udp": True}},
    "wholebody_flip": {"k": 133, "flip": True, "shift": True, "kw": {"post_process": "default"}},
    "coco_udp": {"k": 17, "flip": False, "kw": {"post_process": "default", "use_udp": True}},
    "coco_udp_flip": {
        "k": 17,
        "flip": True,
        "shift": False,
        "kw": {"post_process": "default", "use_udp": True},
    },
}
BACKENDS = ["reference", "cpp", "triton", "cuda"]
N_FULL, N_SMOKE, H, W = 64, 2, 64, 48

_INPUTS: dict[tuple[str, int, str], dict[str, Any]] = {}
_REFERENCE_MS: dict[str, float] = {}


def _device(backend: str) -> str:
    """Where ``backend``'s maps live: CUDA for the GPU backends when there is one."""
    return "cuda" if backend in ("triton", "cuda") and torch.cuda.is_available() else "cpu"


def _maps(n: int, k: int, seed: int) -> torch.Tensor:
    """[n, k, H, W] σ = 2 Gaussians at random sub-pixel centres + 1% noise (model-like)."""
    gen = torch.Generator().manual_seed(seed)
    cx = torch.rand(n, k, 1, 1, generator=gen) * (W + 2) - 1
    cy = torch.rand(n, k, 1, 1, generator=gen) * (H + 2) - 1
    ys = torch.arange(H, dtype=torch.float32).view(1, 1, H, 1)
    xs = torch.arange(W, dtype=torch.float32).view(1, 1, 1, W)
    maps = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 8.0)
    return maps + 0.01 * torch.randn(n, k, H, W, generator=gen)


def _inputs(case: str, n: int, device: str = "cpu") -> dict[str, Any]:
    key = (case, n, device)
    if device != "cpu" and key not in _INPUTS:
        on_cpu = _inputs(case, n)
        _INPUTS[key] = {
            **on_cpu,
            "heatmaps": on_cpu["heatmaps"].to(device),
            "flipped": None if on_cpu["flipped"] is None else on_cpu["flipped"].to(device),
        }
    if key not in _INPUTS:
        cfg = CASES[case]
        k = cfg["k"]
        gen = torch.Generator().manual_seed(1)
        flip_indices = (
            list(get_skeleton("coco_wholebody" if k == 133 else "coco").flip_indices)
            if cfg["flip"]
            else None
        )
        _INPUTS[key] = {
            "heatmaps": _maps(n, k, seed=2),
            "flipped": _maps(n, k, seed=3) if cfg["flip"] else None,
            "flip_indices": flip_indices,
            "shift": cfg.get("shift", False),
            "center": torch.rand(n, 2, generator=gen) * 400 + 100,
            "scale": torch.rand(n, 2, generator=gen) * 1.5 + 0.5,
            "kw": cfg["kw"],
        }
    return _INPUTS[key]


def _runner(backend: str, a: dict[str, Any]) -> Callable[[], Any]:
    if backend == "reference":

        def run() -> Any:
            hm = a["heatmaps"]
            if a["flipped"] is not None:
                hm = flip_test_merge(hm, a["flipped"], a["flip_indices"], a["shift"])
            return reference_decode(hm, a["center"], a["scale"], **a["kw"])

        return run

    on_gpu = a["heatmaps"].device.type == "cuda"

    def run_fused() -> Any:
        out = ops_decode.decode_heatmaps(
            a["heatmaps"],
            a["center"],
            a["scale"],
            flipped=a["flipped"],
            flip_indices=a["flip_indices"],
            shift=a["shift"],
            backend=backend,
            **a["kw"],
        )
        if on_gpu:
            torch.cuda.synchronize()  # the kernels run asynchronously: time them to the end
        return out

    return run_fused


def _skip_reason(backend: str, a: dict[str, Any]) -> str | None:
    if backend == "reference":
        return None
    info = ops_decode._call_info(
        a["heatmaps"].device,
        a["heatmaps"].dtype,
        a["kw"].get("post_process"),
        a["kw"].get("use_udp", False),
        11,
        a["flipped"] is not None,
    )
    return ops_decode.DECODE.backends[backend].check(info)


_READ_GBPS: list[float] = []
_DEVICE_READ_GBPS: list[float] = []


def _device_read_gbps() -> float:
    """Streaming read bandwidth of the GPU (GB/s): torch.sum over the 105 MB wholebody maps
    on CUDA, synchronised, best of 10."""
    if not _DEVICE_READ_GBPS:
        big = _inputs("wholebody_udp", N_FULL, "cuda")["heatmaps"]

        def read() -> None:
            big.sum()
            torch.cuda.synchronize()

        read()
        ms = min_ms(read, 10)
        _DEVICE_READ_GBPS.append(big.numel() * big.element_size() / (ms * 1e-3) / 1e9)
    return _DEVICE_READ_GBPS[0]


def _read_gbps() -> float:
    """Streaming read bandwidth of this machine (GB/s): the best of torch.sum with the
    benchmark's threads, torch.sum on one thread and NumPy's max over the 105 MB wholebody maps
    (larger than any cache), best of 10 each. Several probes because on a shared machine a
    2-thread reduction is often slower than a 1-thread one."""
    if not _READ_GBPS:
        big = _inputs("wholebody_udp", N_FULL)["heatmaps"]
        threads = torch.get_num_threads()
        ms = [min_ms(lambda: big.sum(), 10), min_ms(lambda: big.numpy().max(), 10)]
        torch.set_num_threads(1)
        try:
            ms.append(min_ms(lambda: big.sum(), 10))
        finally:
            torch.set_num_threads(threads)
        _READ_GBPS.append(big.numel() * big.element_size() / (min(ms) * 1e-3) / 1e9)
    return _READ_GBPS[0]


def _peak_mb(fn: Callable[[], Any], device: str = "cpu") -> float:
    """Peak of torch's CPU allocator (profiler memory events) + NumPy/Python's traced peak;
    on CUDA the CUDA allocator's peak above what was allocated before the call."""
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    tracemalloc.start()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()  # type: ignore[union-attr]
        if e.name() == "[memory]"
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return (peak + traced) / 2**20


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(CASES))
def test_bench_decode(benchmark, case: str, backend: str) -> None:
    n = N_SMOKE if benchmark.disabled else N_FULL
    device = _device(backend)
    a = _inputs(case, n, device)
    why = _skip_reason(backend, a)
    if why is not None:
        pytest.skip(f"{backend}: {why}")
    run = _runner(backend, a)
    rounds = 1 if benchmark.disabled else (5 if backend == "reference" else 30)
    warmup = 0 if benchmark.disabled else 1
    preds, maxvals = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=warmup)
    assert torch.as_tensor(preds).device.type == device  # decoded where the maps are
    ref_preds, ref_maxvals = _runner("reference", _inputs(case, n))()
    torch.testing.assert_close(torch.as_tensor(preds).cpu(), ref_preds, atol=1e-3, rtol=0)
    torch.testing.assert_close(torch.as_tensor(maxvals).cpu(), ref_maxvals, atol=1e-6, rtol=0)
    if benchmark.disabled or not benchmark.stats:
        return
    mine_ms = benchmark.stats.stats.min * 1e3
    if case not in _REFERENCE_MS:
        ref = _runner("reference", _inputs(case, n))
        _REFERENCE_MS[case] = mine_ms if backend == "reference" else min_ms(ref, 5)
    hm = a["heatmaps"]
    nbytes = hm.numel() * hm.element_size() * (2 if a["flipped"] is not None else 1)
    read_gbps = _device_read_gbps() if device == "cuda" else _read_gbps()
    floor_ms = nbytes / (read_gbps * 1e9) * 1e3
    benchmark.extra_info.update(
        {
            "case": case,
            "backend": backend,
            "device": device,
            "shape": list(hm.shape),
            "settings": {**a["kw"], "flip": a["flipped"] is not None, "shift": a["shift"]},
            "threads": torch.get_num_threads(),
            "cpu_isa": ops_decode.cpu_isa() if backend == "cpp" else None,
            "min_ms": round(mine_ms, 3),
            "reference_min_ms": round(_REFERENCE_MS[case], 3),
            "speedup_vs_reference": round(_REFERENCE_MS[case] / mine_ms, 2),
            "peak_mb": round(_peak_mb(run, device), 2),
            "input_mb": round(nbytes / 2**20, 1),
            "read_gbps": round(read_gbps, 2),
            "floor_ms": round(floor_ms, 3),
            "pct_of_floor": round(100 * floor_ms / mine_ms, 1),
        }
    )
