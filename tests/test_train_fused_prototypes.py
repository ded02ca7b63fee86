"""Training's prototype learning on the fused op (``KeypointPrototypes.learn`` with
``logits_backend`` "auto" / "cpp" / "triton") against the reference path.

The references are independent of the fused code: ``logits_backend="torch"`` (the reference
similarity :func:`prototype_pair_similarity`, unchanged) for everything ``learn`` returns and
writes, the reference functions themselves for the logits, class scores and their gradient,
and the release's golden vectors. Tolerances: bit for bit wherever the C++ kernel is
documented to be (float32, F a multiple of 8, above MKL's small-matrix sizes: the forward);
its backward is a different summation order, compared as in ``test_ops_similarity.py``
(atol 1e-5, rtol 1e-4). The Triton kernels run under the interpreter in a child process
(``TRITON_INTERPRET=1`` must be set before they are defined).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch
from triton_child import run_interpreter_tests

from posebh.losses import PixelPrototypeLoss
from posebh.ops import extensions
from posebh.ops.similarity_reference import prototype_class_scores, prototype_pair_similarity
from posebh.prototypes import KeypointPrototypes, use_similarity_backend

REPO = Path(__file__).resolve().parents[1]
CHILD = os.environ.get("POSEBH_TRITON_CHILD") == "1"
interp_only = pytest.mark.skipif(
    not CHILD, reason="runs in the TRITON_INTERPRET=1 child of test_triton_interpreter_learn"
)
parent_only = pytest.mark.skipif(CHILD, reason="parent-process test")
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-4}  # the fused backward vs autograd (test_ops_similarity)


@pytest.fixture(scope="module")
def cpp() -> None:
    st = extensions.load_extension("prototype_similarity")
    assert st.status == "loaded", f"{st.reason}\n{st.log[-3000:]}"


def _module(compat: str, backend: str, seed: int = 0, **kw) -> KeypointPrototypes:
    module = KeypointPrototypes(compat=compat, generator=torch.Generator().manual_seed(seed), **kw)
    module.logits_backend = backend
    return module


def _adversarial(module: KeypointPrototypes) -> None:
    """Ties in the prototype buffer: prototype 2 = prototype 0 of every class (|cos| ties
    inside a class), an opposite-sign tie, and two identical classes in most datasets'
    blocks (ties between classes: the arg-max takes the first)."""
    with torch.no_grad():
        p = module.prototypes
        p[:, 2] = p[:, 0]
        p[5, 1] = -p[5, 0]
        for start in module.starts:
            p[start + 1] = p[start]


def _pixels(module: KeypointPrototypes, d: int, n: int, seed: int):
    """Pixels near their class's prototypes (most pass the mask), a few zero rows, a few
    exact copies of a prototype (|cos| = 1) and the confidences."""
    gen = torch.Generator().manual_seed(seed)
    start, num_k = module.starts[d], module.num_keypoints[d]
    labels = torch.randint(0, num_k, (n,), generator=gen)
    noise = torch.randn(n, module.dim, generator=gen)
    emb = 2.0 * module.prototypes[start + labels, 0] + 0.6 * noise
    emb[3:6] = 0.0  # zero embeddings: every similarity 0, the clamp floor as class score
    emb[7] = module.prototypes[start + labels[7], 1] * 3.0
    conf = torch.rand(n, generator=gen) * 0.8 + 0.2
    return emb, labels, conf


def _learn(module, emb, labels, conf, d, seed, *, autocast=None):
    """One learn call (under ``autocast`` if given; the backward outside it, as in the
    trainer) with a gradient: (output, d loss / d embeddings)."""
    x = emb.clone().requires_grad_(True)
    if module.compat == "official":
        torch.manual_seed(seed)
        gen = None
    else:
        gen = torch.Generator().manual_seed(seed)
    with autocast or contextlib.nullcontext():
        out = module.learn(x, labels, conf, d, generator=gen)
    loss, _ = PixelPrototypeLoss(num_prototypes=module.num_prototypes)(out.logits, out.target)
    weight = torch.linspace(-1.0, 2.0, out.class_scores.numel()).reshape(out.class_scores.shape)
    (loss * 1e3 + (out.class_scores * weight).sum()).backward()
    return out, x.grad


def _assert_same_learning(fused, ref, *, exact: bool) -> None:
    (out_f, grad_f), (out_r, grad_r) = fused, ref
    if exact:
        assert torch.equal(out_f.logits, out_r.logits)
        assert torch.equal(out_f.class_scores, out_r.class_scores)
    else:
        torch.testing.assert_close(out_f.logits, out_r.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(out_f.class_scores, out_r.class_scores, atol=1e-5, rtol=0)
    assert torch.equal(out_f.target, out_r.target)
    assert torch.equal(out_f.weights, out_r.weights)
    torch.testing.assert_close(grad_f, grad_r, **GRAD_TOL)


# --------------------------------------------------------------------------------------------
# The C++ kernels (auto on CPU) against the reference path
# --------------------------------------------------------------------------------------------


@parent_only
@pytest.mark.parametrize("backend", ["auto", "cpp"])
@pytest.mark.parametrize("compat", ["paper", "official"])
def test_learn_matches_the_reference_path(cpp, compat: str, backend: str) -> None:
    """Three datasets in turn (each call sees the previous update), on the PoseBH skeletons
    (J = 214, M = 3, F = 64): every output and the prototype buffer bit for bit, the
    gradient to the rounding of the fused backward."""
    fused, ref = _module(compat, backend), _module(compat, "torch")
    _adversarial(fused)
    _adversarial(ref)
    assert torch.equal(fused.prototypes, ref.prototypes)
    masked = 0
    for call, d in enumerate((5, 1, 0)):
        emb, labels, conf = _pixels(ref, d, 300, seed=call)
        out_f = _learn(fused, emb, labels, conf.clone(), d, seed=10 + call)
        out_r = _learn(ref, emb, labels, conf.clone(), d, seed=10 + call)
        _assert_same_learning(out_f, out_r, exact=True)
        assert torch.equal(fused.prototypes, ref.prototypes)
        masked += int((out_r[0].weights == 0).sum())
        assert (out_r[0].class_scores[3:6] == 1e-4).all()  # the zero rows
    assert masked > 10  # the correctness mask is exercised (ties between classes, zero rows)


@parent_only
@pytest.mark.parametrize("compat", ["paper", "official"])
def test_learn_logits_equal_the_reference_functions(cpp, compat: str) -> None:
    """The fused learn's logits, class scores and their gradient against the reference
    similarity itself (deviation 1: official logits start at flat column start_d)."""
    module = _module(compat, "cpp", seed=3)
    d = 2
    start, num_k, m = module.starts[d], module.num_keypoints[d], module.num_prototypes
    emb, labels, conf = _pixels(module, d, 200, seed=4)
    protos = module.prototypes.clone()
    x = emb.clone().requires_grad_(True)
    torch.manual_seed(0)
    out = module.learn(x, labels, conf, d, update=False)
    y = emb.clone().requires_grad_(True)
    flat = prototype_pair_similarity(y, protos).reshape(200, -1)
    first = start if compat == "official" else start * m
    ref_logits = flat[:, first : first + num_k * m]
    ref_scores = prototype_class_scores(y, protos)[:, start : start + num_k]
    assert torch.equal(out.logits, ref_logits)
    assert torch.equal(out.class_scores, ref_scores)
    w = torch.randn(out.logits.shape, generator=torch.Generator().manual_seed(5))
    (out.logits * w).sum().add(out.class_scores.sum()).backward()
    (ref_logits * w).sum().add(ref_scores.sum()).backward()
    torch.testing.assert_close(x.grad, y.grad, **GRAD_TOL)


@parent_only
def test_fused_learn_reproduces_the_release_golden_vectors(cpp, golden_dir, shared_file) -> None:
    """The official golden calls of test_prototypes, with the C++ kernels forced (N = 60,
    F = 16, all 214 classes)."""
    golden = torch.load(shared_file(golden_dir / "suite" / "losses.pt"), weights_only=True)
    g = golden["kpt_prototype_train"]
    module = KeypointPrototypes(num_prototypes=3, dim=16, gamma=0.999, compat="official")
    module.logits_backend = "cpp"
    module.prototypes.copy_(g[0]["prototypes_before"])
    for call in (0, 1):
        gc = g[call]
        conf = gc["conf_in"].clone()
        torch.manual_seed(gc["seed"])
        out = module.learn(gc["feats"], gc["gt"], conf, call)
        assert (out.logits - gc["logits"]).abs().max() <= 1e-6
        assert torch.equal(out.target, gc["target"])
        assert (out.class_scores - gc["kpt_class"]).abs().max() <= 1e-6
        assert torch.equal(conf, gc["conf_after_call"])
        assert (module.prototypes - gc["prototypes_after"]).abs().max() <= 1e-6


@parent_only
@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.parametrize("compat", ["paper", "official"])
def test_learn_under_cpu_bf16_autocast(cpp, compat: str, backend: str) -> None:
    """bf16 embeddings under CPU autocast: learn converts them to the prototypes' float32
    and turns autocast off, so everything equals learn on the converted embeddings without
    autocast, bit for bit, and the gradient comes back in bf16 (the conversion's)."""
    a, b = _module(compat, backend, seed=6), _module(compat, backend, seed=6)
    emb, labels, conf = _pixels(a, 4, 300, seed=7)
    low = emb.bfloat16()
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    out_a, grad_a = _learn(a, low, labels, conf.clone(), 4, seed=8, autocast=bf16)
    out_b, grad_b = _learn(b, low.float(), labels, conf.clone(), 4, seed=8)
    assert out_a.logits.dtype == torch.float32 and grad_a.dtype == torch.bfloat16
    assert torch.equal(out_a.logits, out_b.logits)
    assert torch.equal(out_a.target, out_b.target)
    assert torch.equal(out_a.weights, out_b.weights)
    assert torch.equal(a.prototypes, b.prototypes)
    assert torch.equal(grad_a, grad_b.bfloat16())


@parent_only
def test_learn_backend_switch_and_empty_input(cpp) -> None:
    module = _module("paper", "auto")
    use_similarity_backend(module, "torch")
    assert module.logits_backend == "torch" and module.heatmap_backend == "torch"
    use_similarity_backend(module, "cpp")
    out = module.learn(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long), torch.zeros(0), 2)
    assert out.logits.shape == (0, 16 * 3) and out.class_scores.shape == (0, 16)
    module.logits_backend = "cuda"
    with pytest.raises(RuntimeError, match="'cuda' cannot run"):
        module.learn(torch.randn(20, 64), torch.zeros(20, dtype=torch.long), torch.ones(20), 0)


# --------------------------------------------------------------------------------------------
# Triton under the interpreter (child process)
# --------------------------------------------------------------------------------------------


@parent_only
def test_triton_interpreter_learn() -> None:
    pytest.importorskip("triton")
    run_interpreter_tests(__file__, timeout=900)


@interp_only
@pytest.mark.parametrize("compat", ["paper", "official"])
def test_interp_learn_matches_the_reference_path(compat: str) -> None:
    """A small skeleton set (J = 9, M = 3, F = 16) keeps the interpreter quick; Triton
    accumulates in another order, so the logits agree to 1e-5 and the assignment is equal."""
    kw = {"num_keypoints": (3, 2, 4), "dim": 16, "gamma": 0.9}
    fused, ref = _module(compat, "triton", **kw), _module(compat, "torch", **kw)
    _adversarial(fused)
    _adversarial(ref)
    for call, d in enumerate((2, 1)):
        emb, labels, conf = _pixels(ref, d, 40, seed=call)
        out_f = _learn(fused, emb, labels, conf.clone(), d, seed=20 + call)
        out_r = _learn(ref, emb, labels, conf.clone(), d, seed=20 + call)
        _assert_same_learning(out_f, out_r, exact=False)
        torch.testing.assert_close(fused.prototypes, ref.prototypes, atol=1e-6, rtol=0)
