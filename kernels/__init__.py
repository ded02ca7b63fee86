"""posebh's fused kernels, installed as the package ``posebh_kernels``.

The folder is ``kernels/`` in the repository; ``pyproject.toml`` maps it to ``posebh_kernels``
(the generic top-level name ``kernels`` belongs to an unrelated PyPI package). Contents:

- ``prototype_similarity.py``: Triton kernels, their launchers and ``torch.autograd.Function``
  wrappers (Liger-Kernel style). Importing it imports Triton, so it is not imported here; set
  ``TRITON_INTERPRET=1`` *before* importing it to run the kernels on CPU tensors.
- ``csrc/``: C++ sources of the CPU operators (``torch.library``, namespace ``posebh``) and, in
  ``csrc/cuda/``, CUDA kernels behind a plain C ABI (``*.cu``, no torch headers) with their
  torch binding (``*_cuda.cpp``). They are shipped as package data and compiled on first use by
  :mod:`posebh.ops.extensions`; nothing is compiled at ``pip install`` time.

Users call the operators through :mod:`posebh.ops`, which picks a backend.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CSRC_DIR", "csrc_path"]

#: Directory of the C++/CUDA sources (inside the installed package, or the checkout).
CSRC_DIR: Path = Path(__file__).resolve().parent / "csrc"


def csrc_path(*parts: str) -> Path:
    """Absolute path of a source below ``csrc/``, e.g. ``csrc_path("cuda", "x.cu")``."""
    return CSRC_DIR.joinpath(*parts)
