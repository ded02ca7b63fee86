"""The affine-warp op (posebh.ops.warp_affine) against its NumPy reference and OpenCV.

Reference: :func:`posebh.ops.warp_reference.warp_affine_reference`, the NumPy emulation of
``cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT 0)`` in OpenCV's two arithmetics (itself checked
against the OpenCV 4.10 golden suite and the OpenCV ≥ 4.11 golden crops in
tests/test_transforms.py). Contract: the C++ backend returns the reference's bytes, for every
matrix, image size, channel count and method, on both the AVX2 and the scalar code
(``POSEBH_CPU_ISA=generic``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from posebh import transforms
from posebh.ops import extensions
from posebh.ops import warp as ops_warp
from posebh.ops.warp import warp_affine
from posebh.ops.warp_reference import warp_affine_reference

REPO = Path(__file__).resolve().parents[1]
METHODS = ("fixed", "float")
IMAGE_SIZE = (192, 256)


@pytest.fixture(scope="module")
def cpp() -> None:
    """Build (or load from the cache) the C++ extension; a failure here is a real failure."""
    st = extensions.load_extension("warp")
    assert st.status == "loaded", f"{st.reason}\n{st.log[-3000:]}"


def _reference(image: np.ndarray, matrix: Any, size: tuple[int, int], method: str) -> np.ndarray:
    with warnings.catch_warnings():  # NaN / huge coordinates warn in NumPy's casts
        warnings.simplefilter("ignore", RuntimeWarning)
        return warp_affine_reference(image, matrix, size, method)  # type: ignore[arg-type]


def _similarity(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def _random_cases(seed: int, n: int) -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple]]:
    """(label, image, matrix, out_size): rotations, scales from 1/1000 to 1000, shears, shifts
    that put the crop partly or wholly outside, float32 matrices, odd sizes, C = 1..5."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        ch = int(rng.choice([1, 2, 3, 3, 4, 4, 5]))
        image = rng.integers(0, 256, (h, w, ch), dtype=np.uint8)
        kind = i % 6
        if kind == 0:  # a crop like the pipeline's: zoom in, rotate, centre inside
            m = _similarity(rng.uniform(-np.pi, np.pi), rng.uniform(0.5, 3), 0, 0)
            m[:, 2] = [rng.uniform(-w, w), rng.uniform(-h, h)]
        elif kind == 1:  # tiny or huge scale
            scale = float(np.exp(rng.uniform(-7, 7)))
            m = _similarity(rng.uniform(-np.pi, np.pi), scale, *rng.uniform(-200, 200, 2))
        elif kind == 2:  # general affine (shear, anisotropic, mirrored)
            m = np.concatenate([rng.normal(0, 1.5, (2, 2)), rng.uniform(-60, 60, (2, 1))], 1)
        elif kind == 3:  # far outside: every sample misses the image
            m = _similarity(rng.uniform(-3, 3), rng.uniform(0.5, 2), *rng.uniform(300, 3000, 2))
        elif kind == 4:  # pure shifts by sub-pixel amounts (1/32 and 1/1024 grid edges)
            m = np.array([[1.0, 0.0, rng.integers(-64, 64) / 64], [0.0, 1.0, rng.uniform(-3, 3)]])
        else:  # the UDP matrix is float32
            m = _similarity(rng.uniform(-1, 1), rng.uniform(0.3, 4), *rng.uniform(-40, 40, 2))
            m = m.astype(np.float32)
        out = (int(rng.integers(0, 70)), int(rng.integers(0, 70)))
        yield f"case{i}-k{kind}-{h}x{w}x{ch}", image, m, out


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_cpp_equals_reference_on_random_inputs(cpp, monkeypatch, isa: str) -> None:
    monkeypatch.setenv("POSEBH_CPU_ISA", isa)
    got_isa = str(torch.ops.posebh.warp_affine_cpu_isa())
    assert got_isa in (("generic",) if isa == "generic" else ("avx2", "generic"))
    for label, image, m, out in _random_cases(seed=1, n=180):
        for method in METHODS:
            want = _reference(image, m, out, method)
            got = warp_affine(image, m, out, method, backend="cpp")
            assert got.dtype == np.uint8 and got.shape == want.shape, label
            assert np.array_equal(got, want), f"{label} {method}: {(got != want).sum()} differ"


@pytest.mark.parametrize("isa", ["avx2", "generic"])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_cpp_equals_reference_on_pipeline_crops(cpp, monkeypatch, isa: str, channels: int) -> None:
    """Crops of a 425×640 image at the training size, the box inside, across the border and
    outside; the AVX2 blocks run here (wide rows, interior pixels)."""
    monkeypatch.setenv("POSEBH_CPU_ISA", isa)
    rng = np.random.default_rng(channels)
    image = rng.integers(0, 256, (425, 640, channels), dtype=np.uint8)
    boxes = [((320.0, 212.0), (1.6, 2.1), 30.0), ((20.0, 410.0), (1.2, 1.6), -70.0)]
    boxes.append(((700.0, -90.0), (0.9, 1.2), 10.0))
    for center, scale, rot in boxes:
        for udp in (False, True):
            c, s = np.array(center, np.float32), np.array(scale, np.float32)
            if udp:
                size = np.asarray(IMAGE_SIZE, np.float64)
                m = transforms.get_warp_matrix(rot, c * 2.0, size - 1.0, s * 200.0)
            else:
                m = transforms.get_affine_transform(c, s, rot, IMAGE_SIZE)
            for method in METHODS:
                want = _reference(image, m, IMAGE_SIZE, method)
                got = warp_affine(image, m, IMAGE_SIZE, method, backend="cpp")
                assert np.array_equal(got, want), (center, udp, method)


def test_cpp_edge_cases_equal_reference(cpp) -> None:
    """Singular, NaN and infinite matrices, 1-pixel images and outputs, near-integer
    coordinates (the float fractions below 2^-21 take the scalar path)."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    matrices = [
        np.zeros((2, 3)),
        np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]),  # singular: the inverse is 0
        np.array([[np.nan, 0, 0], [0, 1, 0]]),
        np.array([[1, 0, np.inf], [0, 1, 0]]),
        np.array([[1e-300, 0, 0], [0, 1, 0]]),
        np.array([[1e300, 0, 0], [0, 1e300, 0]]),
        np.array([[1.0, 0.0, -1e-7], [0.0, 1.0, 3e-8]]),  # fractions just below 1 / above 0
        np.array([[1.0, 1e-9, 0.5], [-1e-9, 1.0, 0.25]]),
    ]
    for m in matrices:
        for image in (img, img[:1, :1], img[:1], img[:, :1], img[:2, :2]):
            for size in ((40, 30), (1, 1), (9, 2)):
                for method in METHODS:
                    want = _reference(image, m, size, method)
                    got = warp_affine(image, m, size, method, backend="cpp")
                    assert np.array_equal(got, want), (m.tolist(), image.shape, size, method)


@pytest.mark.parametrize("isa", ["avx2", "generic"])
def test_float_double_rounding_of_tiny_fractions(cpp, monkeypatch, isa: str) -> None:
    """The reference rounds a·d + p twice (float64, then float32); for a fraction a < 2^-21 that
    can differ from one rounding (a true FMA), and a rounding tie downstream shows it. Here
    a = 6.465588597848182e-08, p00 = 115, p01 = 174: the reference's top lerp is 115.0 (an FMA:
    115.0000076); with the bottom row at 1 and ay = 0.25 the pixel is 86 (FMA: 87). The C++
    vector path uses FMAs only where a = 0 or a ≥ 2^-21 and must give 86."""
    monkeypatch.setenv("POSEBH_CPU_ISA", isa)
    a = float(np.float32(6.465588597848182e-08))
    img = np.ones((6, 16, 3), np.uint8)
    img[2, 0], img[2, 1] = 115, 174
    m = np.array([[1.0, 0.0, -a], [0.0, 1.0, -2.25]])  # inverse: sx = x + a, sy = y + 2.25
    want = _reference(img, m, (12, 2), "float")
    assert want[0, 0, 0] == 86
    assert np.array_equal(warp_affine(img, m, (12, 2), "float", backend="cpp"), want)


def test_grey_non_contiguous_and_empty_outputs(cpp) -> None:
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (31, 45), dtype=np.uint8)
    m = _similarity(0.3, 1.3, -5.0, 4.0)
    for method in METHODS:
        got = warp_affine(grey, m, (20, 17), method, backend="cpp")
        assert got.shape == (17, 20)
        assert np.array_equal(got, _reference(grey, m, (20, 17), method))
        flipped = np.random.default_rng(4).integers(0, 256, (31, 45, 3), dtype=np.uint8)[:, ::-1]
        want = _reference(np.ascontiguousarray(flipped), m, (20, 17), method)
        assert np.array_equal(warp_affine(flipped, m, (20, 17), method, backend="cpp"), want)
        read_only = np.array(flipped)
        read_only.flags.writeable = False
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch warns about non-writable arrays
            assert np.array_equal(warp_affine(read_only, m, (20, 17), method), want)
        assert warp_affine(grey, m, (0, 5), method, backend="cpp").shape == (5, 0)
        assert warp_affine(flipped, m, (3, 0), method, backend="cpp").shape == (0, 3, 3)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_bad_input_raises_the_same_errors(cpp, backend: str) -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        warp_affine(np.zeros((4, 4, 3), np.float32), np.eye(2, 3), (4, 4), backend=backend)
    with pytest.raises(ValueError, match="uint8"):
        warp_affine(np.zeros((4, 4, 3, 1), np.uint8), np.eye(2, 3), (4, 4), backend=backend)
    with pytest.raises(ValueError, match="method must be"):
        warp_affine(img, np.eye(2, 3), (4, 4), "cubic", backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        warp_affine(np.zeros((0, 4, 3), np.uint8), np.eye(2, 3), (4, 4), backend=backend)
    with pytest.raises(ValueError, match=r"matrix must be \[2, 3\]"):
        warp_affine(img, np.eye(3), (4, 4), backend=backend)
    with pytest.raises(ValueError, match="must not be negative"):
        warp_affine(img, np.eye(2, 3), (-1, 4), backend=backend)
    with pytest.raises(ValueError, match="unknown backend"):
        warp_affine(img, np.eye(2, 3), (4, 4), backend="cuda")


def test_the_op_checks_its_arguments(cpp) -> None:
    op = torch.ops.posebh.warp_affine.default
    img = torch.zeros(4, 4, 3, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="uint8"):
        op(img.float(), [1.0, 0, 0, 0, 1, 0], 4, 4, "fixed")
    with pytest.raises(RuntimeError, match="6 entries"):
        op(img, [1.0, 0, 0], 4, 4, "fixed")
    with pytest.raises(RuntimeError, match="method"):
        op(img, [1.0, 0, 0, 0, 1, 0], 4, 4, "cubic")
    with pytest.raises(RuntimeError, match=">= 0"):
        op(img, [1.0, 0, 0, 0, 1, 0], -4, 4, "fixed")


def test_opcheck_and_torch_compile(cpp) -> None:
    op = torch.ops.posebh.warp_affine.default
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (23, 31, 3), dtype=np.uint8))
    m = _similarity(0.4, 1.7, -3.0, 6.0).reshape(6).tolist()
    for method in METHODS:
        torch.library.opcheck(op, (img, m, 19, 13, method))
        torch.library.opcheck(op, (img[..., :1].contiguous(), m, 8, 5, method))
    compiled = torch.compile(
        lambda x: op(x, m, 19, 13, "fixed").float().mean(), backend="aot_eager", fullgraph=True
    )
    torch.testing.assert_close(compiled(img), op(img, m, 19, 13, "fixed").float().mean())


def test_transforms_warp_goes_through_the_cpp_op(cpp, monkeypatch, golden_dir: Path) -> None:
    """transforms.warp_affine / top_down_affine (and so the golden crop tests of
    tests/test_transforms.py) run the C++ backend by default; on the OpenCV 4.10 golden suite it
    gives the official crops exactly."""
    calls: list[str] = []
    real = ops_warp.WARP.backends["cpp"]

    def spy(*args: Any) -> np.ndarray:
        calls.append(args[-1])
        return real.fn(*args)

    monkeypatch.setitem(ops_warp.WARP.backends, "cpp", dataclasses.replace(real, fn=spy))
    with np.load(golden_dir / "suite" / "transforms.npz") as d:
        suite = {k: d[k] for k in d.files}
    for i in range(4):
        for tag in ("std", "udp"):
            official = transforms.warp_affine(
                suite["affine_src_img"], suite[f"affine_{tag}_matrix"][i], IMAGE_SIZE
            )
            np.testing.assert_array_equal(official, suite[f"affine_{tag}_img_out"][i])
            c, s = suite["affine_centers"][i], suite["affine_scales"][i]
            r = suite["affine_rotations"][i]
            joints, vis = suite["affine_joints_in"][i], suite["affine_joints_visible"][i]
            crop, _, m = transforms.top_down_affine(
                suite["affine_src_img"], joints, vis, c, s, r, IMAGE_SIZE, use_udp=tag == "udp"
            )
            want = _reference(suite["affine_src_img"], m, IMAGE_SIZE, "fixed")
            np.testing.assert_array_equal(crop, want)
    assert calls == ["fixed"] * 16
    assert ops_warp._auto_backend().name == "cpp"


def test_golden_float_crops_equal_reference(cpp, golden_dir: Path) -> None:
    """The OpenCV ≥ 4.11 golden crops' inputs (transforms.npz): the op's "float" crops are the
    reference's bytes."""
    with np.load(golden_dir / "transforms.npz") as d:
        top = {k: d[k] for k in d.files}
    for i in range(len(top["center"])):
        for udp in (False, True):
            c, s, r = top["center"][i], top["scale"][i], float(top["rotation"][i])
            if udp:
                size = np.asarray(IMAGE_SIZE, np.float64)
                m = transforms.get_warp_matrix(r, c * 2.0, size - 1.0, s * 200.0)
            else:
                m = transforms.get_affine_transform(c, s, r, IMAGE_SIZE)
            got = warp_affine(top["image"], m, IMAGE_SIZE, "float", backend="cpp")
            assert np.array_equal(got, _reference(top["image"], m, IMAGE_SIZE, "float"))


def _cv2_at_least_4_11() -> Any:
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (dev extra) is not installed")
    major, minor = (int(v) for v in cv2.__version__.split(".")[:2])
    if (major, minor) < (4, 11):
        pytest.skip(f"cv2 {cv2.__version__} uses the fixed-point warp (the 'float' one is ≥ 4.11)")
    return cv2


def test_float_method_matches_opencv(cpp) -> None:
    """The "float" method against cv2.warpAffine (≥ 4.11) on random crops: at most one grey
    level apart, on at most 0.1 % of the values (the reference's documented tie effect;
    measured here at ≤ 0.04 % per crop, 0.002 % overall)."""
    cv2 = _cv2_at_least_4_11()
    rng = np.random.default_rng(5)
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(20, 300, 2))
        ch = int(rng.choice([1, 3, 4]))
        image = rng.integers(0, 256, (h, w, ch), dtype=np.uint8)
        m = _similarity(rng.uniform(-np.pi, np.pi), np.exp(rng.uniform(-1.5, 1.5)), 0, 0)
        m[:, 2] = rng.uniform(-50, 50, 2)
        size = (int(rng.integers(1, 200)), int(rng.integers(1, 200)))
        got = warp_affine(image, m, size, "float", backend="cpp")
        want = cv2.warpAffine(image, m, size, flags=cv2.INTER_LINEAR)
        diff = np.abs(got.astype(np.int16) - want.reshape(got.shape).astype(np.int16))
        assert int(diff.max()) <= 1
        assert float((diff > 0).mean()) <= 1e-3


def test_explain_names_the_backends(cpp) -> None:
    from posebh import ops

    text = ops.explain("warp_affine")
    assert "posebh.ops.warp_affine on cpu" in text and "runs 'cpp'" in text
    assert "torch" in text


def test_disabled_extensions_fall_back_to_the_reference(tmp_path: Path) -> None:
    """POSEBH_DISABLE_EXTENSIONS=1: nothing is built, "auto" runs the NumPy reference, and
    transforms.warp_affine still gives its bytes."""
    script = (
        "import json, numpy as np\n"
        "from posebh import ops, transforms\n"
        "from posebh.ops import warp\n"
        "from posebh.ops.warp_reference import warp_affine_reference as ref\n"
        "img = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)\n"
        "m = np.array([[1.2, 0.3, -4.0], [-0.3, 1.2, 2.0]])\n"
        "same = all(np.array_equal(transforms.warp_affine(img, m, (30, 20), k),"
        " ref(img, m, (30, 20), k)) for k in ('fixed', 'float'))\n"
        "print(json.dumps({'backend': warp._auto_backend().name, 'same': same,"
        " 'explain': ops.explain('warp_affine')}))\n"
    )
    env = {**os.environ, "POSEBH_DISABLE_EXTENSIONS": "1", "TORCH_EXTENSIONS_DIR": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["backend"] == "torch" and out["same"]
    assert "runs 'torch'" in out["explain"] and "POSEBH_DISABLE_EXTENSIONS" in out["explain"]
    assert not any(tmp_path.iterdir())  # nothing was compiled


@pytest.mark.parametrize("shape", [(256, 192, 3), (7, 5, 1), (3, 9, 4), (1, 1, 2), (0, 4, 3)])
def test_normalize_image_op_equals_the_plain_formula(cpp, shape) -> None:
    # Every grey level appears (for the non-empty shapes), with random mean/std per channel:
    # the op's table must hold the formula's float32 bits for all 256 values.
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    if image.size >= 256:
        image.reshape(-1)[:256] = np.arange(256, dtype=np.uint8)
    mean = tuple(float(v) for v in rng.random(shape[2]))
    std = tuple(float(v) for v in rng.random(shape[2]) + 0.05)
    got = ops_warp.normalize_image(image, mean, std)
    plain = np.empty((shape[2], shape[0], shape[1]), dtype=np.float32)
    for c in range(shape[2]):
        for y in range(shape[0]):
            for x in range(shape[1]):
                v = np.float32(image[y, x, c]) / np.float32(255.0)
                plain[c, y, x] = (v - np.float32(mean[c])) / np.float32(std[c])
    assert got.dtype == torch.float32 and got.shape == plain.shape
    np.testing.assert_array_equal(got.numpy(), plain)
    assert torch.equal(ops_warp.normalize_image_reference(image, mean, std), got)


def test_normalize_image_opcheck_and_errors(cpp) -> None:
    img = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8))
    torch.library.opcheck(
        torch.ops.posebh.normalize_image.default, (img, [0.1, 0.2, 0.3], [1.0, 2.0, 3.0])
    )
    with pytest.raises(ValueError, match="C = len"):
        ops_warp.normalize_image(img.numpy(), (0.1, 0.2), (1.0, 1.0))
    with pytest.raises(RuntimeError, match="mean and std need 3"):
        torch.ops.posebh.normalize_image.default(img, [0.1], [1.0])


@pytest.mark.parametrize("method", METHODS)
def test_warp_normalize_batch_is_warp_then_normalize(cpp, method: str, monkeypatch) -> None:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    matrices = [_similarity(rng.uniform(-1, 1), rng.uniform(0.3, 3), *rng.uniform(-40, 40, 2))
                for _ in range(5)]  # fmt: skip
    matrices.append(matrices[0].astype(np.float32))  # the UDP matrix is float32
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    want = [
        ops_warp.normalize_image_reference(_reference(image, m, (19, 23), method), mean, std)
        for m in matrices
    ]
    got = ops_warp.warp_normalize_batch(image, matrices, (19, 23), method, mean, std)
    assert got.shape == (6, 3, 23, 19)
    for i, w in enumerate(want):
        assert torch.equal(got[i], w), f"crop {i}"
    # Without the extension: the references, crop by crop; no boxes: an empty batch.
    monkeypatch.setattr(ops_warp, "_auto_backend", lambda: ops_warp.WARP.backends["torch"])
    assert torch.equal(
        ops_warp.warp_normalize_batch(image, matrices, (19, 23), method, mean, std), got
    )
    empty = ops_warp.warp_normalize_batch(image, [], (19, 23), method, mean, std)
    assert empty.shape == (0, 3, 23, 19)
    op = torch.ops.posebh.warp_normalize_batch.default
    flat = [v for m in matrices[:2] for v in np.asarray(m, np.float64).reshape(6).tolist()]
    torch.library.opcheck(
        op, (torch.from_numpy(image), flat, 19, 23, method, list(mean), list(std))
    )
