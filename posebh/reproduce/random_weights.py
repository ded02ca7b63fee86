"""Release files with seeded random weights: the official format and architecture of a
release (``vitpose+_base.pth``, ``posebh_base.pth`` …), not its values.

They let real mode (``posebh reproduce TABLE --data-root D --weights W``) run on the real code
path without the released files: the harness reads them with
:func:`posebh.checkpoint.read_checkpoint`, recognises them as multi-dataset checkpoints and
:func:`posebh.checkpoint.load_model` builds them from their tensor shapes exactly as it builds
a downloaded release.  Their numbers are chance level: every cell fails its tolerance.

Each file is ``{"state_dict": <official (mmcv) key names>, "meta": {...}}`` as mmcv's
``save_checkpoint`` wrote the releases, with no posebh architecture record, so the loader
reads the architecture off the shapes as for a real release.  The architecture is the
release's: ViT-B/16 at 256×192 with 6 experts, the six Table 1 heads (COCO, AIC, MPII,
AP-10K, APT-36K, COCO-WholeBody) and, for PoseBH, the prototype head with 3 prototypes per
keypoint and the 96 cluster prototypes of the released config (``cp_size=96``).

Values: a ``torch.Generator`` seeded with ``seed`` fills the state dict in key order, as the
golden suite's official model was filled: linear/conv weights N(0, 1/fan_in), transposed
convs N(0, 4/(in·k²)), norm weights 1 + 0.1·N, biases 0.1·N, BatchNorm statistics
(mean 0.2·N, var U(0.5, 2)), ``pos_embed`` 0.02·N, prototypes L2-normalised N.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["RANDOM_RELEASES", "random_release", "write_random_releases"]

#: Release file → (posebh.models preset, config overrides) of its architecture.
RANDOM_RELEASES: dict[str, tuple[str, dict[str, Any]]] = {
    "vitpose+_base.pth": ("vitpose_plus_base", {}),
    "posebh_base.pth": ("posebh_vit_base", {"num_clusters": 96}),
    "vitpose+_huge.pth": ("vitpose_plus_huge", {}),
    "posebh_huge.pth": ("posebh_vit_huge", {"num_clusters": 96}),
}
#: What ``write_random_releases`` writes by default: the base columns of Table 1 (a huge file
#: is 2.5 GB and its CPU evaluation slow; name it explicitly to get it).
DEFAULT_FILES = ("vitpose+_base.pth", "posebh_base.pth")


def _fill(name: str, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Seeded random values for tensor ``name`` of shape ``t.shape`` (module docstring)."""

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    shape = tuple(t.shape)
    if name.endswith("num_batches_tracked"):
        return torch.randint(1, 10_000, shape, generator=gen, dtype=t.dtype)
    if name.endswith("running_mean"):
        return 0.2 * normal(*shape)
    if name.endswith("running_var"):
        return 0.5 + 1.5 * torch.rand(shape, generator=gen)
    if name.endswith("prototypes"):
        p = normal(*shape)
        return p / p.norm(dim=-1, keepdim=True)
    if name.endswith("pos_embed"):
        return 0.02 * normal(*shape)
    if t.ndim == 1:
        return (1.0 + 0.1 * normal(*shape)) if name.endswith("weight") else 0.1 * normal(*shape)
    if "deconv_layers" in name and t.ndim == 4:  # ConvTranspose2d: [in, out, k, k]
        fan_in = shape[0] * shape[2] * shape[3] / 4
    else:
        fan_in = math.prod(shape[1:])
    return normal(*shape) / math.sqrt(fan_in)


def random_release(file: str, seed: int = 0) -> dict[str, Any]:
    """The contents of release ``file`` (a :data:`RANDOM_RELEASES` name) with seeded random
    weights: ``{"state_dict": official naming, "meta": ...}``."""
    from posebh.checkpoint import to_official
    from posebh.models import build_model

    if file not in RANDOM_RELEASES:
        raise ValueError(f"no random release {file!r}; choose from {sorted(RANDOM_RELEASES)}")
    preset, overrides = RANDOM_RELEASES[file]
    model = build_model(preset, **overrides)
    gen = torch.Generator().manual_seed(seed)
    state = {k: _fill(k, v, gen) for k, v in model.state_dict().items()}
    meta = {
        "posebh_random_weights": {
            "file": file,
            "architecture": preset,
            "seed": seed,
            "note": "seeded random weights in the official format: not a trained release",
        }
    }
    return {"state_dict": to_official(state), "meta": meta}


def write_random_releases(
    out: Path, files: Sequence[str] = DEFAULT_FILES, seed: int = 0
) -> dict[str, Path]:
    """Write each of ``files`` into ``out`` (skipping one already written with this seed);
    returns file name → path."""
    from posebh.checkpoint import read_checkpoint, save_atomically

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for file in files:
        path = out / file
        if path.is_file():
            meta = read_checkpoint(path).get("meta", {}).get("posebh_random_weights", {})
            if meta.get("seed") == seed and meta.get("file") == file:
                written[file] = path
                continue
        save_atomically(random_release(file, seed), path)
        written[file] = path
    return written
