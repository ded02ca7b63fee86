"""The fused prototype-similarity operators (posebh.ops) against the PyTorch reference.

Backends tested here: ``cpp`` (the C++ CPU extension, compiled on first use), ``torch`` (the
reference) and ``triton`` under the interpreter. The interpreter must be switched on before
Triton kernels are defined, so the ``test_interp_*`` tests run only in a child pytest process
started by :func:`test_triton_interpreter_suite` with ``TRITON_INTERPRET=1``. CUDA cannot run
here; its sources are compiled with nvcc / syntax-checked when the tools exist.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from triton_child import run_interpreter_tests

from posebh import ops
from posebh.ops import extensions
from posebh.ops.similarity_reference import (
    prototype_pair_similarity,
    prototype_similarity_heatmaps,
)
from posebh.prototypes import KeypointPrototypes

REPO = Path(__file__).resolve().parents[1]
CHILD = os.environ.get("POSEBH_TRITON_CHILD") == "1"
EXT = "prototype_similarity"

interp_only = pytest.mark.skipif(
    not CHILD, reason="runs in the TRITON_INTERPRET=1 child of test_triton_interpreter_suite"
)
parent_only = pytest.mark.skipif(CHILD, reason="parent-process test")


@pytest.fixture(scope="module")
def cpp() -> None:
    """Build (or load from the cache) the C++ extension; a failure here is a real failure."""
    st = extensions.load_extension(EXT)
    assert st.status == "loaded", f"{st.reason}\n{st.log[-3000:]}"


def _inputs(b, f, h, w, j, m, *, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(b, f, h, w, generator=gen, dtype=dtype)
    protos = torch.randn(j, m, f, generator=gen, dtype=dtype) * 1.7  # not normalised
    return emb, protos


def _ref_logits(emb, protos, cls):
    sim = prototype_pair_similarity(emb, protos)[:, cls]
    return sim.reshape(sim.shape[0], -1), sim.argmax(dim=2)


# (B, F, H, W, J, M, classes): PoseBH-like, K = 1, J not a multiple of 8/16, odd H/W, F not a
# multiple of 8, a single image (the reference then normalises a strided view).
SHAPES = [
    (2, 64, 8, 6, 214, 3, slice(None)),
    (2, 64, 8, 6, 214, 3, slice(17, 31)),
    (3, 64, 7, 5, 13, 3, slice(4, 5)),
    (1, 64, 9, 11, 37, 3, slice(None)),
    (2, 24, 5, 7, 29, 2, slice(3, 20)),
    (2, 13, 9, 3, 19, 4, slice(None)),
]


# --------------------------------------------------------------------------------------------
# Values: every CPU backend against the reference
# --------------------------------------------------------------------------------------------


@parent_only
@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])))
def test_heatmaps_match_reference(cpp, backend, shape) -> None:
    *dims, cls = shape
    emb, protos = _inputs(*dims, seed=len(dims))
    ref = prototype_similarity_heatmaps(emb, protos, cls)
    out = ops.prototype_similarity(emb, protos, cls, backend=backend)
    assert out.shape == ref.shape and out.dtype == ref.dtype and out.is_contiguous()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # Above MKL's small-matrix sizes the C++ kernel reproduces the reference's rounding.
    assert torch.equal(out, ref), (out - ref).abs().max()


@parent_only
@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_cpp_simd_variants_agree_bitwise(cpp, monkeypatch, isa) -> None:
    emb, protos = _inputs(2, 64, 9, 7, 30, 3, seed=3)
    ref = prototype_similarity_heatmaps(emb, protos)
    monkeypatch.setenv("POSEBH_CPU_ISA", isa)
    out = ops.prototype_similarity(emb, protos, backend="cpp")
    active = torch.ops.posebh.prototype_similarity_cpu_isa()
    assert active == isa or isa == "avx512"  # never above what the CPU supports
    assert torch.equal(out, ref)
    logits, best = ops.prototype_logits(emb[0].flatten(1).t(), protos, slice(3, 20), backend="cpp")
    ref_logits, ref_best = _ref_logits(emb[0].flatten(1).t(), protos, slice(3, 20))
    torch.testing.assert_close(logits, ref_logits, atol=1e-6, rtol=0)
    assert torch.equal(best, ref_best)


@parent_only
def test_cpp_layouts_and_float64(cpp) -> None:
    emb, protos = _inputs(2, 64, 6, 10, 20, 3, seed=4)
    ref = prototype_similarity_heatmaps(emb, protos, slice(2, 9))
    cl = emb.to(memory_format=torch.channels_last)
    assert torch.equal(ops.prototype_similarity(cl, protos, slice(2, 9), backend="cpp"), ref)
    strided = torch.randn(2, 64, 6, 20)[..., ::2]  # needs the copy fallback
    torch.testing.assert_close(
        ops.prototype_similarity(strided, protos, backend="cpp"),
        prototype_similarity_heatmaps(strided, protos),
        atol=1e-6,
        rtol=0,
    )
    e64, p64 = emb.double(), protos.double()
    out = ops.prototype_similarity(e64, p64, backend="cpp")
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, prototype_similarity_heatmaps(e64, p64), atol=1e-12, rtol=0)
    # fp16 embeddings are computed in the prototypes' dtype, as the reference does.
    half = emb.half()
    assert torch.equal(
        ops.prototype_similarity(half, protos, backend="cpp"),
        prototype_similarity_heatmaps(half, protos),
    )


@parent_only
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_logits_match_reference(cpp, backend) -> None:
    gen = torch.Generator().manual_seed(5)
    emb = torch.randn(300, 64, generator=gen)
    protos = torch.randn(214, 3, 64, generator=gen)
    for cls in (slice(0, 17), slice(81, 214), slice(5, 6)):
        out = ops.prototype_logits(emb, protos, cls, backend=backend)
        ref_logits, ref_best = _ref_logits(emb, protos, cls)
        assert out.logits.shape == ref_logits.shape and out.best.dtype == torch.long
        assert torch.equal(out.logits, ref_logits)
        assert torch.equal(out.best, ref_best)
        scores = prototype_pair_similarity(emb, protos)[:, cls].amax(2).clamp(1e-4, 1 - 1e-4)
        assert torch.equal(out.class_scores(), scores)


# --------------------------------------------------------------------------------------------
# Adversarial inputs (documented conventions: see posebh/ops/similarity.py)
# --------------------------------------------------------------------------------------------


@parent_only
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_zero_embeddings_give_the_clamp_floor_and_no_gradient(cpp, backend) -> None:
    emb, protos = _inputs(2, 64, 5, 4, 20, 3, seed=6)
    emb[0, :, 1:3] = 0.0
    emb.requires_grad_(True)
    out = ops.prototype_similarity(emb, protos, backend=backend)
    assert torch.all(out[0, :, 1:3] == 1e-4)
    out.sum().backward()
    assert torch.all(emb.grad[0, :, 1:3] == 0)
    assert emb.grad.abs().sum() > 0


@parent_only
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_ties_between_prototypes_share_the_gradient(cpp, backend) -> None:
    emb, protos = _inputs(2, 64, 4, 5, 20, 3, seed=7)
    protos[:, 2] = protos[:, 0]  # exact ties between prototypes 0 and 2 of every class
    protos[3, 1] = -protos[3, 0]  # |cos| ties with opposite signs
    e1 = emb.clone().requires_grad_(True)
    e2 = emb.clone().requires_grad_(True)
    out = ops.prototype_similarity(e1, protos, backend=backend)
    ref = prototype_similarity_heatmaps(e2, protos)
    assert torch.equal(out, ref)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (out * weight).sum().backward()
    (ref * weight).sum().backward()
    torch.testing.assert_close(e1.grad, e2.grad, atol=1e-6, rtol=1e-5)
    logits = ops.prototype_logits(emb[0].flatten(1).t(), protos, backend=backend)
    assert torch.all(logits.best[:, :] != 2)  # the first of tied maxima


@parent_only
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_empty_inputs(cpp, backend) -> None:
    emb, protos = _inputs(0, 64, 6, 5, 20, 3)
    assert ops.prototype_similarity(emb, protos, backend=backend).shape == (0, 20, 6, 5)
    emb, protos = _inputs(2, 64, 6, 5, 20, 3)
    assert ops.prototype_similarity(emb, protos, slice(4, 4), backend=backend).shape == (
        2,
        0,
        6,
        5,
    )
    out = ops.prototype_logits(torch.randn(0, 64), protos, slice(0, 3), backend=backend)
    assert out.logits.shape == (0, 9) and out.best.shape == (0, 3)


@parent_only
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_nan_propagates(cpp, backend) -> None:
    emb, protos = _inputs(2, 64, 5, 6, 20, 3, seed=8)
    emb[1, 7, 2, 3] = float("nan")
    protos[4, 1, 0] = float("nan")
    out = ops.prototype_similarity(emb, protos, backend=backend)
    ref = prototype_similarity_heatmaps(emb, protos)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    assert torch.isnan(out[1, :, 2, 3]).all() and torch.isnan(out[:, 4]).all()
    assert not torch.isnan(out[0, 3]).any()
    flat = emb[1].flatten(1).t()
    logits = ops.prototype_logits(flat, protos, backend=backend)
    ref_logits, ref_best = _ref_logits(flat, protos, slice(None))
    assert torch.equal(torch.isnan(logits.logits), torch.isnan(ref_logits))
    assert torch.equal(logits.best, ref_best)


@parent_only
def test_rejects_bad_arguments(cpp) -> None:
    emb, protos = _inputs(1, 64, 4, 4, 10, 3)
    with pytest.raises(ValueError, match="step 1"):
        ops.prototype_similarity(emb, protos, slice(0, 10, 2))
    with pytest.raises(ValueError, match=r"\[J, M, F\]"):
        ops.prototype_similarity(emb, protos[..., :8])
    with pytest.raises(ValueError, match=r"\[N, F\]"):
        ops.prototype_logits(emb, protos)
    with pytest.raises(RuntimeError, match="float32 and float64"):
        torch.ops.posebh.prototype_heatmaps(emb.half(), protos.half(), 0, 10)


# --------------------------------------------------------------------------------------------
# Autograd, operator checks, torch.compile
# --------------------------------------------------------------------------------------------


@parent_only
def test_cpp_gradcheck_float64(cpp) -> None:
    gen = torch.Generator().manual_seed(9)
    emb = torch.randn(2, 8, 3, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    protos = torch.randn(6, 3, 8, dtype=torch.float64, generator=gen)
    assert torch.autograd.gradcheck(
        lambda x: ops.prototype_similarity(x, protos, slice(1, 5), backend="cpp"), (emb,)
    )
    pix = torch.randn(20, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: ops.prototype_logits(x, protos, slice(2, 6), backend="cpp").logits, (pix,)
    )


@parent_only
def test_cpp_gradient_matches_reference_autograd(cpp) -> None:
    emb, protos = _inputs(2, 64, 8, 6, 214, 3, seed=10)
    weight = torch.randn(2, 214, 8, 6)
    grads = []
    for backend in ("cpp", "torch"):
        x = emb.clone().requires_grad_(True)
        (ops.prototype_similarity(x, protos, backend=backend) * weight).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    flat = emb[0].flatten(1).t().contiguous()
    wl = torch.randn(48, 14 * 3)
    grads = []
    for backend in ("cpp", "torch"):
        x = flat.clone().requires_grad_(True)
        (
            ops.prototype_logits(x, protos, slice(17, 31), backend=backend).logits * wl
        ).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


@parent_only
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_backward_uses_the_prototypes_of_the_forward(cpp, backend) -> None:
    """Training updates the prototype buffer in place between forward and backward."""
    emb, protos = _inputs(2, 64, 8, 6, 40, 3, seed=16)
    x = emb.clone().requires_grad_(True)
    expected = torch.autograd.grad(prototype_similarity_heatmaps(x, protos).sum(), x)[0]
    out = ops.prototype_similarity(x, protos, backend=backend)
    logits = ops.prototype_logits(x[0].flatten(1).t(), protos, slice(3, 9), backend=backend)
    protos.mul_(-0.5).add_(1.0)  # what KeypointPrototypes.learn does to its buffer
    grad = torch.autograd.grad(out.sum() + 0 * logits.logits.sum(), x)[0]
    torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4)


@parent_only
def test_prototypes_get_no_gradient_from_fused_kernels(cpp) -> None:
    emb, protos = _inputs(2, 64, 8, 8, 40, 3, seed=11)
    protos.requires_grad_(True)
    # auto falls back to the reference, which differentiates the prototypes ...
    out = ops.prototype_similarity(emb, protos)
    out.sum().backward()
    assert protos.grad is not None
    assert "prototypes require grad" in ops.explain(prototypes_require_grad=True)
    # ... and forcing a fused backend is refused rather than silently dropping the gradient.
    with pytest.raises(RuntimeError, match="prototypes require grad"):
        ops.prototype_similarity(emb, protos, backend="cpp")


@parent_only
def test_opcheck_cpp_operators(cpp) -> None:
    gen = torch.Generator().manual_seed(12)
    emb = torch.randn(2, 16, 3, 5, generator=gen, requires_grad=True)
    protos = torch.randn(7, 3, 16, generator=gen)
    torch.library.opcheck(torch.ops.posebh.prototype_heatmaps.default, (emb, protos, 1, 6))
    pix = torch.randn(10, 16, generator=gen, requires_grad=True)
    torch.library.opcheck(torch.ops.posebh.prototype_logits.default, (pix, protos, 0, 7))
    grad = torch.randn(2, 5, 3, 5, generator=gen)
    torch.library.opcheck(
        torch.ops.posebh.prototype_heatmaps_backward.default, (grad, emb.detach(), protos, 1, 6)
    )
    torch.library.opcheck(
        torch.ops.posebh.prototype_logits_backward.default,
        (torch.randn(10, 21, generator=gen), pix.detach(), protos, 0, 7),
    )


@parent_only
def test_torch_compile_traces_the_cpp_op(cpp) -> None:
    emb, protos = _inputs(2, 64, 8, 6, 30, 3, seed=13)

    def heatmaps(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return torch.ops.posebh.prototype_heatmaps(x, p, 2, 9) * 2.0

    compiled = torch.compile(heatmaps, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(emb, protos), heatmaps(emb, protos), atol=0, rtol=0)


# --------------------------------------------------------------------------------------------
# Dispatch: auto choice, override, explain, the model's heatmaps
# --------------------------------------------------------------------------------------------


@parent_only
def test_auto_choice_on_cpu(cpp) -> None:
    op = ops.get_op("prototype_similarity")
    emb, protos = _inputs(2, 64, 16, 12, 214, 3)
    info = ops.similarity._call_info(emb, protos)  # type: ignore[attr-defined]
    assert op.select("auto", info).name == "cpp"
    small = ops.similarity._call_info(emb[:, :, :2, :2], protos[:4])  # type: ignore[attr-defined]
    assert op.select("auto", small).name == "torch"  # too small: the reference's bits
    assert op.select("cpp", small).name == "cpp"  # forcing ignores the size rule
    # Fallbacks: float16 prototypes are not a CPU kernel dtype.
    half = ops.similarity._call_info(emb.half(), protos.half())  # type: ignore[attr-defined]
    assert op.select("auto", half).name == "torch"


@parent_only
def test_backend_override_errors(cpp) -> None:
    emb, protos = _inputs(1, 64, 4, 4, 10, 3)
    with pytest.raises(RuntimeError, match=r"'cuda' cannot run.*tensors are on cpu"):
        ops.prototype_similarity(emb, protos, backend="cuda")
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
            ops.prototype_similarity(emb, protos, backend="triton")
    with pytest.raises(ValueError, match="unknown backend 'mkl'"):
        ops.prototype_similarity(emb, protos, backend="mkl")
    assert torch.equal(
        ops.prototype_similarity(emb, protos, backend="torch"),
        prototype_similarity_heatmaps(emb, protos),
    )


@parent_only
def test_explain_cpu(cpp) -> None:
    text = ops.explain()
    lines = text.splitlines()
    assert lines[0].startswith("posebh.ops.prototype_similarity on cpu (float32): runs 'cpp'")
    assert "auto order on cpu: cpp > torch" in text
    by_name = {line.split()[0]: line for line in lines[3:]}
    assert set(by_name) == {"triton", "cuda", "cpp", "torch"}
    assert "chosen" in by_name["cpp"] and "posebh_prototype_similarity_cpu" in by_name["cpp"]
    assert "micro-kernels" in by_name["cpp"]
    assert "not used" in by_name["cuda"] and "tensors are on cpu" in by_name["cuda"]
    assert "TRITON_INTERPRET" in by_name["triton"]
    assert "after 'cpp'" in by_name["torch"]
    f16 = ops.explain("prototype_logits", "cpu", dtype=torch.float16)
    assert "runs 'torch'" in f16 and "unsupported dtype torch.float16" in f16
    cuda = ops.explain(device="cuda")
    assert "auto order on cuda: triton > cuda > torch" in cuda
    if not torch.cuda.is_available():
        assert "runs 'torch'" in cuda and "torch.cuda.is_available() is False" in cuda


@parent_only
def test_keypoint_prototypes_dispatch(cpp) -> None:
    module = KeypointPrototypes(generator=torch.Generator().manual_seed(14))
    emb = torch.randn(2, 64, 16, 12, generator=torch.Generator().manual_seed(15))
    ref = prototype_similarity_heatmaps(emb, module.prototypes, module.class_slice(5))
    assert torch.equal(module.heatmaps(emb, 5), ref)  # auto: the C++ kernel, same bits
    assert torch.equal(module.heatmaps(emb, 5, backend="torch"), ref)
    module.heatmap_backend = "cpp"
    assert torch.equal(module.heatmaps(emb, 5), ref)
    module.heatmap_backend = "cuda"
    with pytest.raises(RuntimeError, match="cuda"):
        module.heatmaps(emb, 5)


# --------------------------------------------------------------------------------------------
# Build and packaging
# --------------------------------------------------------------------------------------------


@parent_only
def test_import_survives_a_broken_build(tmp_path: Path) -> None:
    broken = tmp_path / "csrc"
    broken.mkdir()
    (broken / "prototype_similarity.cpp").write_text("#include <torch/library.h>\nint x = ;\n")
    script = textwrap.dedent(
        f"""
        import dataclasses, pathlib, torch
        import posebh.ops as ops  # imports without building anything
        from posebh.ops import extensions
        from posebh.ops.similarity_reference import prototype_similarity_heatmaps
        assert extensions.state({EXT!r}).status == "not built"
        old = extensions._SPECS[{EXT!r}]
        extensions.register_extension(dataclasses.replace(old, csrc=pathlib.Path({str(broken)!r})))
        emb, protos = torch.randn(2, 64, 16, 12), torch.randn(214, 3, 64)
        out = ops.prototype_similarity(emb, protos)
        assert torch.equal(out, prototype_similarity_heatmaps(emb, protos))
        st = extensions.state({EXT!r})
        assert st.status == "failed", st
        text = ops.explain()
        assert "runs 'torch'" in text, text
        assert "build failed" in text and "error" in text, text
        print("OK", st.reason)
        """
    )
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "OK build failed" in run.stdout


def test_kernels_package_is_importable_with_its_sources() -> None:
    import posebh_kernels

    assert posebh_kernels.csrc_path("prototype_similarity.cpp").is_file()
    assert posebh_kernels.csrc_path("prototype_similarity_simd.h").is_file()
    assert posebh_kernels.csrc_path("cuda", "prototype_similarity.cu").is_file()
    assert posebh_kernels.csrc_path("cuda", "prototype_similarity_cuda.cpp").is_file()
    assert extensions.kernels_package() is posebh_kernels


def test_pyproject_lists_every_package() -> None:
    text = (REPO / "pyproject.toml").read_text()  # no tomllib: Python 3.10 is supported
    block = re.search(r"\[tool\.setuptools\]\s.*?packages = \[(.*?)\]", text, flags=re.S)
    assert block, "pyproject.toml: [tool.setuptools] packages = [...] not found"
    listed = set(re.findall(r'"([\w.]+)"', block.group(1)))
    # Packages committed to git (in-progress folders of other work are not yet packages);
    # every __init__.py on disk when this is not a git checkout.
    run = subprocess.run(
        ["git", "ls-files", "--", "posebh"], cwd=REPO, capture_output=True, text=True
    )
    if run.returncode == 0 and run.stdout.strip():
        inits = [REPO / line for line in run.stdout.splitlines() if line.endswith("__init__.py")]
    else:
        inits = [p for p in (REPO / "posebh").rglob("__init__.py") if "__pycache__" not in p.parts]
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in inits}
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert re.search(r'posebh_kernels = "kernels"', text)


@parent_only
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_cuda_sources_compile_with_nvcc(tmp_path: Path) -> None:
    src = REPO / "kernels" / "csrc" / "cuda" / "prototype_similarity.cu"
    assert "torch" not in "".join(
        line for line in src.read_text().splitlines() if line.startswith("#include")
    )
    # PTX only (no ptxas): checks the C ABI and every template instantiation in ~25 s.
    cmd = ["nvcc", "-c", "-std=c++17", "-gencode", "arch=compute_90,code=compute_90"]
    run = subprocess.run(
        [*cmd, str(src), "-o", str(tmp_path / "ps.o")], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr


def _cuda_include_dir() -> Path | None:
    nvcc = shutil.which("nvcc")
    candidates = [Path(os.environ.get("CUDA_HOME", "/nonexistent")) / "include"]
    if nvcc:
        real = Path(nvcc).resolve()
        candidates.append(real.parents[1] / "include")
        # A wrapper script (exec /path/to/nvcc) resolves to itself: read the target.
        text = real.read_text(errors="ignore") if real.stat().st_size < 4096 else ""
        for word in text.split():
            if word.endswith("/bin/nvcc"):
                candidates.append(Path(word).parents[1] / "include")
    return next((c for c in candidates if (c / "cuda_runtime_api.h").is_file()), None)


@parent_only
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not on PATH")
def test_cuda_binding_compiles_against_torch_headers(tmp_path: Path) -> None:
    from torch.utils import cpp_extension

    include = _cuda_include_dir()
    if include is None:
        pytest.skip("no CUDA toolkit headers (cuda_runtime_api.h) found")
    # A CPU torch wheel lacks one generated CUDA header; an empty stand-in suffices to parse.
    stub = tmp_path / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n")
    src = REPO / "kernels" / "csrc" / "cuda" / "prototype_similarity_cuda.cpp"
    incs = [f"-I{tmp_path}", *(f"-I{p}" for p in cpp_extension.include_paths()), f"-I{include}"]
    run = subprocess.run(
        ["g++", "-std=c++20", "-fsyntax-only", *incs, str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]


# --------------------------------------------------------------------------------------------
# Triton under the interpreter (child process)
# --------------------------------------------------------------------------------------------


@parent_only
def test_triton_interpreter_suite() -> None:
    pytest.importorskip("triton")
    run_interpreter_tests(__file__, timeout=1200)


@interp_only
@pytest.mark.parametrize("shape", [*SHAPES[2:], (2, 64, 5, 7, 40, 3, slice(3, 37))])
def test_interp_heatmaps_match_reference(shape) -> None:
    *dims, cls = shape
    emb, protos = _inputs(*dims, seed=1)
    out = ops.prototype_similarity(emb, protos, cls, backend="triton")
    ref = prototype_similarity_heatmaps(emb, protos, cls)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@interp_only
def test_interp_adversarial() -> None:
    emb, protos = _inputs(2, 16, 3, 5, 7, 3, seed=2)
    emb[0, :, 1] = 0.0
    emb[1, 3, 2, 4] = float("nan")
    protos[:, 2] = protos[:, 0]
    out = ops.prototype_similarity(emb, protos, backend="triton")
    ref = prototype_similarity_heatmaps(emb, protos)
    assert torch.all(out[0, :, 1] == 1e-4)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    keep = ~torch.isnan(ref)
    torch.testing.assert_close(out[keep], ref[keep], atol=1e-5, rtol=0)
    assert ops.prototype_similarity(emb[:0], protos, backend="triton").shape == (0, 7, 3, 5)
    assert ops.prototype_similarity(emb, protos, slice(2, 2), backend="triton").shape[1] == 0
    flat = emb[1].flatten(1).t()
    logits = ops.prototype_logits(flat, protos, slice(1, 6), backend="triton")
    ref_logits, ref_best = _ref_logits(flat, protos, slice(1, 6))
    assert torch.equal(torch.isnan(logits.logits), torch.isnan(ref_logits))
    assert torch.equal(logits.best, ref_best)  # NaN largest; first of tied maxima


@interp_only
def test_interp_logits_match_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    emb = torch.randn(70, 64, generator=gen)
    protos = torch.randn(40, 3, 64, generator=gen)
    out = ops.prototype_logits(emb, protos, slice(17, 31), backend="triton")
    ref_logits, ref_best = _ref_logits(emb, protos, slice(17, 31))
    torch.testing.assert_close(out.logits, ref_logits, atol=1e-5, rtol=0)
    assert torch.equal(out.best, ref_best)


@interp_only
def test_interp_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(4)
    # F = 8 < 16 also exercises the padded feature block (tl.dot needs 16).
    emb = torch.randn(1, 8, 2, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    protos = torch.randn(6, 3, 8, dtype=torch.float64, generator=gen)
    protos[4, 2] = protos[4, 0]  # a tie: the gradient is shared like torch.amax's
    assert torch.autograd.gradcheck(
        lambda x: ops.prototype_similarity(x, protos, slice(1, 6), backend="triton"), (emb,)
    )
    pix = torch.randn(5, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x: ops.prototype_logits(x, protos, slice(0, 5), backend="triton").logits, (pix,)
    )


@interp_only
def test_interp_gradient_matches_reference_float32() -> None:
    emb, protos = _inputs(2, 64, 5, 7, 40, 3, seed=5)
    weight = torch.randn(2, 40, 5, 7)
    grads = []
    for backend in ("triton", "torch"):
        x = emb.clone().requires_grad_(True)
        (ops.prototype_similarity(x, protos, backend=backend) * weight).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


@interp_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_interp_low_precision_within_twice_torch_error(dtype) -> None:
    """Flash-attention rule: |ours − fp64| ≤ 2 · |torch in that dtype − fp64| + atol."""
    emb, protos = _inputs(2, 64, 6, 5, 30, 3, seed=6)
    exact = prototype_similarity_heatmaps(emb.double(), protos.double())
    low_e, low_p = emb.to(dtype), protos.to(dtype)
    ours = ops.prototype_similarity(low_e, low_p, backend="triton")
    theirs = prototype_similarity_heatmaps(low_e, low_p)
    assert ours.dtype == dtype
    err_ours = (ours.double() - exact).abs().max().item()
    err_torch = (theirs.double() - exact).abs().max().item()
    assert err_ours <= 2 * err_torch + 1e-3, (err_ours, err_torch)


@interp_only
def test_interp_explain_and_auto() -> None:
    text = ops.explain()
    triton_line = next(line for line in text.splitlines() if line.split()[0] == "triton")
    assert "usable if forced" in triton_line
    emb, protos = _inputs(2, 64, 16, 12, 40, 3)
    # The interpreter is a debugging tool: auto never picks it on CPU.
    info = ops.similarity._call_info(emb, protos)  # type: ignore[attr-defined]
    assert ops.get_op("prototype_similarity").select("auto", info).name != "triton"
