"""Prototype-similarity heatmaps: every available backend against the PyTorch reference.

Cases (embeddings [B, 64, 64, 48], prototypes [214, 3, 64], B = 64, N = B·64·48 = 196,608
pixels): ``coco`` (the 17 COCO classes) and ``all`` (all 214 training classes). Under
``--benchmark-disable`` (the CI smoke run) B = 2 and each backend runs once, checked against
the reference.

Recorded in ``benchmark.extra_info`` (see ``--benchmark-json``):

- ``ratio_vs_reference``: reference time / backend time, both measured in this test (min of
  the same number of rounds), so machine noise affects both alike;
- ``peak_extra_mb``: the peak resident memory the call adds above what was resident before it,
  measured by resetting the kernel's high-water mark (``echo 5 > /proc/self/clear_refs``) and
  reading ``VmHWM`` after the call (torch's CPU allocator returns large blocks to the OS, so
  this sees every temporary; ``tracemalloc`` does not see torch). ``output_mb`` is the size of
  the result for comparison;
- ``gflops`` / ``pct_flop_peak``: useful FLOPs (2·N·K·M·F for the requested K classes) per
  second against the machine's measured fp32 matmul peak;
- ``gbps`` / ``pct_bandwidth``: compulsory bytes (embeddings read + heatmaps written) per
  second against the measured copy bandwidth (read + write of a 256 MB tensor).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from posebh import ops
from posebh.ops.registry import CallInfo
from posebh.ops.similarity_reference import prototype_similarity_heatmaps

F_DIM, H, W, J, M = 64, 64, 48, 214, 3
CASES = {"coco": slice(0, 17), "all": slice(0, J)}
ROUNDS = 3
_HWM_RESET = Path("/proc/self/clear_refs")


def _backends() -> list[str]:
    """Backends that can run float32 heatmaps on this machine (the reference included)."""
    op = ops.get_op("prototype_similarity")
    devices = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
    out = []
    for device in devices:
        info = CallInfo(device=torch.device(device), dtype=torch.float32)
        for name, (cannot, _declined) in op.reasons(info).items():
            if cannot is None and name != "torch" and f"{name}@{device}" not in out:
                if name == "triton" and device == "cpu":
                    continue  # the interpreter is a debugging tool
                out.append(f"{name}@{device}")
    return [*out, "torch@cpu"]


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_extra_mb(fn: Callable[[], torch.Tensor]) -> float | None:
    """Peak resident memory added by ``fn()`` (MB), or None where Linux' counters are absent."""
    try:
        _HWM_RESET.write_text("5")  # reset VmHWM to the current VmRSS
        before = _rss_kb("VmRSS")
        out = fn()
        peak = _rss_kb("VmHWM")
    except (OSError, KeyError):
        return None
    del out
    return (peak - before) / 1024


def best_time(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@pytest.fixture(scope="module")
def limits(request: pytest.FixtureRequest) -> dict[str, float]:
    """Measured fp32 matmul FLOP/s and copy bandwidth (bytes/s) of this machine."""
    if request.config.getoption("benchmark_disable", default=False):
        return {}
    a = torch.randn(2048, 2048)
    flops = 2 * 2048**3 / best_time(lambda: a @ a, 5)
    src = torch.ones(64 * 2**20)  # 256 MB
    dst = torch.empty_like(src)
    bandwidth = 2 * src.numel() * 4 / best_time(lambda: dst.copy_(src), 5)
    return {"flops": flops, "bandwidth": bandwidth}


@pytest.fixture(scope="module")
def inputs(request: pytest.FixtureRequest) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    disabled = request.config.getoption("benchmark_disable", default=False)
    batch = 2 if disabled else 64
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(batch, F_DIM, H, W, generator=gen)
    protos = torch.nn.functional.normalize(torch.randn(J, M, F_DIM, generator=gen), dim=-1)
    out = {"cpu": (emb, protos)}
    if torch.cuda.is_available():
        out["cuda"] = (emb.cuda(), protos.cuda())
    return out


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("case", list(CASES))
def test_bench_prototype_heatmaps(benchmark, case, backend, inputs, limits) -> None:
    name, device = backend.split("@")
    emb, protos = inputs[device]
    cls = CASES[case]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run() -> torch.Tensor:
        out = ops.prototype_similarity(emb, protos, cls, backend=name)
        sync()
        return out

    def reference() -> torch.Tensor:
        out = prototype_similarity_heatmaps(emb, protos, cls)
        sync()
        return out

    with torch.inference_mode():
        out = run()  # warm-up: builds/loads the extension, autotunes Triton
        ref = reference()
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
        if benchmark.disabled:
            benchmark(run)
            return
        result = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=0)
        assert result.shape == ref.shape
        t_backend = benchmark.stats.stats.min
        t_ref = best_time(reference) if name != "torch" else t_backend
        n = emb.shape[0] * H * W
        k = cls.stop - cls.start
        flop = 2 * n * k * M * F_DIM
        moved = (emb.numel() + out.numel()) * 4
        info = benchmark.extra_info
        info["backend"] = backend
        info["ratio_vs_reference"] = round(t_ref / t_backend, 2)
        info["reference_s"] = round(t_ref, 4)
        info["output_mb"] = round(out.numel() * 4 / 2**20, 1)
        info["gflops"] = round(flop / t_backend / 1e9, 1)
        info["gbps"] = round(moved / t_backend / 1e9, 2)
        if limits:
            info["pct_flop_peak"] = round(100 * flop / t_backend / limits["flops"], 1)
            info["pct_bandwidth"] = round(100 * moved / t_backend / limits["bandwidth"], 1)
            info["machine_gflops"] = round(limits["flops"] / 1e9, 1)
            info["machine_gbps"] = round(limits["bandwidth"] / 1e9, 1)
        del out, ref, result
        if device == "cpu":
            info["peak_extra_mb"] = peak_extra_mb(run)
            if name != "torch":
                info["reference_peak_extra_mb"] = peak_extra_mb(reference)
        if name == "cpp":
            info["cpu_isa"] = ops.similarity.cpu_isa()  # type: ignore[attr-defined]
