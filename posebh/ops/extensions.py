"""Just-in-time C++/CUDA extensions of posebh's operators: built on first use, cached, never
fatal.

Nothing is compiled at ``pip install`` time: a torch build dependency in pip's isolated build
environment would pull the CUDA torch wheel from PyPI. Instead each extension is compiled by
``torch.utils.cpp_extension.load`` (ninja) the first time one of its operators is needed —
about 15–30 s on two cores — into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions/<py>_<cpu|cuXXX>/``), where later processes find it in well under a
second. The compile flags carry a hash of every file under ``csrc/`` (headers included), and
torch rebuilds when sources or flags change, so an edited header is rebuilt too and a stale
binary is never loaded. Builds of one library are serialised by an ``flock`` that dies with
its process, so a build killed half way (whose torch ``lock`` file would otherwise make every
later process wait forever) is cleaned up by the next one.

Variants: the CPU sources only, unless ``torch.cuda.is_available()`` and a CUDA toolkit is
found (``CUDA_HOME`` or ``nvcc``), in which case the CUDA sources are added to the same library
(one ``.so`` per op holding the schemas, the CPU and the CUDA kernels).

A failed build never raises at import or dispatch: the state records why (the compiler's
first error line, the full log in :attr:`ExtensionState.log`) and the backend reports it as
unavailable (see :func:`posebh.ops.explain`). ``POSEBH_DISABLE_EXTENSIONS=1`` disables all
builds (the PyTorch reference then runs).

Registering an extension (done by the op module that owns it)::

    register_extension(ExtensionSpec(
        name="decode",                     # library posebh_decode_<variant>
        sources=("decode.cpp",),           # relative to posebh_kernels/csrc
        cuda_sources=("cuda/decode.cu", "cuda/decode_cuda.cpp"),
        on_load=_register_fakes_and_autograd,  # Python-side torch.library registrations
    ))
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch

__all__ = [
    "ExtensionSpec",
    "ExtensionState",
    "build_directory",
    "build_extensions",
    "cuda_build_support",
    "kernels_module",
    "kernels_package",
    "load_extension",
    "register_extension",
    "state",
    "unavailable",
]

Status = Literal["not built", "loaded", "failed", "disabled"]

#: Flags for every C++ source. -O3 without -march=native keeps the cached binary portable (the
#: CPU kernels pick AVX-512/AVX2 at run time); -ffp-contract=off stops the compiler from fusing
#: multiply-adds that the reference does not fuse (bit-exactness, see the .cpp).
CXX_FLAGS: tuple[str, ...] = ("-O3", "-ffp-contract=off")
#: nvcc flags (no fast math: the kernels must stay within 1e-5 of the reference in fp32).
CUDA_FLAGS: tuple[str, ...] = ("-O3",)


def kernels_package() -> ModuleType:
    """The ``posebh_kernels`` package: the installed one, else ``kernels/`` of this checkout."""
    try:
        return importlib.import_module("posebh_kernels")
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[2] / "kernels"
    spec = importlib.util.spec_from_file_location(
        "posebh_kernels", root / "__init__.py", submodule_search_locations=[str(root)]
    )
    if spec is None or spec.loader is None or not (root / "__init__.py").is_file():
        raise ImportError("posebh_kernels is not installed and no kernels/ folder was found")
    module = importlib.util.module_from_spec(spec)
    sys.modules["posebh_kernels"] = module
    spec.loader.exec_module(module)
    return module


def kernels_module(name: str) -> ModuleType:
    """``posebh_kernels.<name>`` (e.g. ``"limits"``), found as :func:`kernels_package` does."""
    kernels_package()
    return importlib.import_module(f"posebh_kernels.{name}")


@dataclass
class ExtensionSpec:
    """The sources of one op's extension.

    Attributes:
        name: short name; the library is ``posebh_<name>_<cpu|cuda>``.
        sources: C++ sources (CPU kernels and the schemas), relative to ``csrc``.
        cuda_sources: ``.cu`` kernels and their torch binding, added for the CUDA variant.
        on_load: called once after the library is loaded (``register_fake``,
            ``register_autograd``); an exception there marks the extension failed.
        csrc: the source directory; None means ``posebh_kernels.CSRC_DIR`` (tests point it
            elsewhere to simulate a broken build).
    """

    name: str
    sources: tuple[str, ...]
    cuda_sources: tuple[str, ...] = ()
    on_load: Callable[[], None] | None = None
    csrc: Path | None = None

    def source_dir(self) -> Path:
        return self.csrc if self.csrc is not None else Path(kernels_package().CSRC_DIR)


@dataclass
class ExtensionState:
    """What happened to one extension in this process.

    Attributes:
        status: "not built" (not attempted yet), "loaded", "failed" or "disabled".
        variant: "cpu" or "cuda" (what was, or would be, built).
        reason: one line: why it is not loaded, or what was loaded.
        log: the full error text of a failed build.
        seconds: time spent in build + load (a cached build loads in well under a second).
        library: path of the loaded shared library.
    """

    status: Status = "not built"
    variant: str = "cpu"
    reason: str = "not built yet (compiled on first use)"
    log: str = ""
    seconds: float = 0.0
    library: str = ""
    extra: dict[str, str] = field(default_factory=dict)


_FINAL = ("loaded", "failed", "disabled")  # a failed build is not retried in this process
_SPECS: dict[str, ExtensionSpec] = {}
_STATES: dict[str, ExtensionState] = {}
_LOCK = threading.RLock()


def register_extension(spec: ExtensionSpec) -> ExtensionSpec:
    """Declare an op's sources (not built until first use)."""
    with _LOCK:
        _SPECS[spec.name] = spec
        _STATES.setdefault(spec.name, ExtensionState(variant=_variant()[0]))
    return spec


def cuda_build_support() -> tuple[bool, str]:
    """Whether the CUDA sources can be built here, and why (not)."""
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU build (torch.version.cuda is None)"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False (no GPU or driver)"
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME or os.environ.get("CUDA_HOME")
    if home is None and shutil.which("nvcc") is None:
        return False, "no CUDA toolkit (CUDA_HOME unset and nvcc not on PATH)"
    return True, f"CUDA {torch.version.cuda}, toolkit at {home or shutil.which('nvcc')}"


def _variant() -> tuple[str, str]:
    ok, why = cuda_build_support()
    return ("cuda", why) if ok else ("cpu", why)


def _sources_hash(root: Path) -> str:
    """Hash of every file below ``root``: headers change the build name too."""
    digest = hashlib.sha256()
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _first_error(text: str) -> str:
    """The first compiler diagnostic (``file:line: error: ...``) of a build log, else its
    first line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for pattern in (r":\d+:(\d+:)? (fatal )?error:", r"\berror\b:", r"\berror\b"):
        for line in lines:
            if re.search(pattern, line, flags=re.IGNORECASE):
                return line[:300]
    return lines[0][:300] if lines else "unknown error"


def build_directory(library_name: str) -> Path:
    """Where torch's ``cpp_extension.load`` builds ``library_name``: torch's own layout
    (``$TORCH_EXTENSIONS_DIR/<name>``, else ``~/.cache/torch_extensions/py311_cpu/<name>``),
    computed here because we pass it explicitly and lock it ourselves."""
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        if torch.version.hip is not None:
            accelerator = "rocm" + torch.version.hip.replace(".", "")
        elif torch.version.cuda is not None:
            accelerator = "cu" + torch.version.cuda.replace(".", "")
        else:
            accelerator = "cpu"
        py = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
        root = os.path.join(cpp_extension.get_default_build_root(), f"{py}_{accelerator}")
    path = Path(root) / library_name
    path.mkdir(parents=True, exist_ok=True)
    return path


#: How long a process waits for another one's build of the same library before giving up
#: (the extension is then reported unavailable and the PyTorch reference runs).
BUILD_LOCK_TIMEOUT_S = 1800.0


@contextlib.contextmanager
def _exclusive_build(build_dir: Path) -> Iterator[str]:
    """Hold an ``flock`` on ``<build_dir>.posebh-lock`` for the build; yields the path of a
    stale torch ``lock`` file it removed ("" if none).

    torch's own baton is a plain ``lock`` file in the build directory that a killed build
    leaves behind, and every later ``cpp_extension.load`` then waits on it forever (a CI run
    hung on exactly that). An ``flock`` dies with its process, so under ours no posebh build
    is running and any torch ``lock`` left in the directory is stale.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's baton alone
        yield ""
        return
    with open(f"{build_dir}.posebh-lock", "a+") as handle:
        deadline = time.monotonic() + BUILD_LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except BlockingIOError:  # another live build of this library
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another process has been building {build_dir} for more than "
                        f"{BUILD_LOCK_TIMEOUT_S:.0f} s (lock {build_dir}.posebh-lock)"
                    ) from None
                time.sleep(0.2)
            except OSError:  # no flock on this filesystem (some NFS mounts)
                locked = False
                break
        if not locked:  # torch's baton alone, as before
            yield ""
            return
        try:
            stale = build_dir / "lock"
            removed = ""
            if stale.exists():
                stale.unlink()
                removed = str(stale)
            yield removed
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def state(name: str) -> ExtensionState:
    """The current state of extension ``name`` (never builds)."""
    # Lock-free: a dict read is atomic, and torch.compile cannot trace through a lock.
    if name not in _SPECS:
        raise KeyError(f"unknown extension {name!r}; registered: {sorted(_SPECS)}")
    return _STATES[name]


def load_extension(name: str, *, build: bool = True, verbose: bool = False) -> ExtensionState:
    """Load extension ``name``, compiling it first if needed; never raises for build errors.

    Args:
        name: a registered :class:`ExtensionSpec` name.
        build: False only reports the state (no compilation, no loading).
        verbose: print the compiler's output.

    Returns:
        The :class:`ExtensionState` (``status == "loaded"`` on success).
    """
    current = state(name)
    if current.status in _FINAL or not build:  # the common case, without the lock
        return current
    with _LOCK:
        current = state(name)
        if current.status in _FINAL:  # another thread finished it meanwhile
            return current
        if os.environ.get("POSEBH_DISABLE_EXTENSIONS", "") not in ("", "0"):
            current.status, current.reason = "disabled", "POSEBH_DISABLE_EXTENSIONS is set"
            return current
        spec = _SPECS[name]
        variant, why = _variant()
        current.variant = variant
        t0 = time.perf_counter()
        try:
            root = spec.source_dir()
            sources = [str(root / s) for s in spec.sources]
            if variant == "cuda":
                sources += [str(root / s) for s in spec.cuda_sources]
            missing = [s for s in sources if not Path(s).is_file()]
            if missing:
                raise FileNotFoundError(f"missing sources: {', '.join(missing)}")
            from torch.utils import cpp_extension

            library_name = f"posebh_{spec.name}_{variant}"
            build_dir = build_directory(library_name)
            with _exclusive_build(build_dir) as removed:
                if removed:
                    current.extra["stale_lock"] = removed
                library = cpp_extension.load(
                    name=library_name,
                    sources=sources,
                    extra_cflags=[*CXX_FLAGS, f"-DPOSEBH_SOURCES_HASH={_sources_hash(root)}"],
                    extra_cuda_cflags=list(CUDA_FLAGS),
                    with_cuda=variant == "cuda",
                    is_python_module=False,
                    build_directory=str(build_dir),
                    verbose=verbose,
                )
            if spec.on_load is not None:
                spec.on_load()
        except Exception as exc:  # a build must never break the caller: record and go on
            text = f"{type(exc).__name__}: {exc}"
            current.status = "failed"
            current.reason = f"build failed ({variant} variant): {_first_error(text)}"
            current.log = text
            current.seconds = time.perf_counter() - t0
            return current
        current.status = "loaded"
        current.library = str(library)
        current.seconds = time.perf_counter() - t0
        current.reason = f"loaded {Path(str(library)).name} ({variant} variant; {why})"
        if current.extra.get("stale_lock"):
            current.reason += f"; removed a stale build lock {current.extra['stale_lock']}"
        return current


def unavailable(name: str, *, build: bool = True) -> str | None:
    """None if extension ``name`` is loaded (building it if needed), else why not."""
    st = load_extension(name, build=build)
    return None if st.status == "loaded" else st.reason


def build_extensions(verbose: bool = True) -> dict[str, ExtensionState]:
    """Build (or load from the cache) every registered extension; returns their states."""
    with _LOCK:
        names = list(_SPECS)
    out = {}
    for name in names:
        st = load_extension(name, verbose=verbose)
        if verbose:
            print(f"{name}: {st.status} in {st.seconds:.1f} s: {st.reason}")
        out[name] = st
    return out


@functools.cache
def triton_kernels(module: str) -> tuple[Any | None, str]:
    """The Triton kernel module ``posebh_kernels.<module>`` (or None) and why not; imported
    once per process, so a broken Triton install costs one attempt."""
    try:
        import triton  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install
        return None, f"triton cannot be imported ({type(exc).__name__}: {exc})"
    try:
        kernels_package()
        loaded = importlib.import_module(f"posebh_kernels.{module}")
    except Exception as exc:
        return None, f"the Triton kernels cannot be imported ({type(exc).__name__}: {exc})"
    return loaded, ""


def triton_interpret() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for the Triton interpreter (CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
