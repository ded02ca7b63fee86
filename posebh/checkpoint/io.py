"""Checkpoint files in and out: the only module of posebh that calls ``torch.load`` or
``torch.save`` on a checkpoint.

:func:`read_checkpoint` reads a file with ``weights_only=True`` and turns its failures into
:class:`CheckpointError` messages that say how to fix the file; :func:`save_atomically`
writes through a temporary file, so an interrupted write leaves no truncated checkpoint;
:func:`read_state_dict` finds the flat tensor dict in a path, an mmcv wrapper, a trainer
checkpoint or a bare dict.  Also here: the format markers of posebh-written files
(:data:`TRAIN_CHECKPOINT_FORMAT`, :data:`MODEL_RECORD_KEY`), the ``StateDict`` / ``Source``
types and the key listing every error message of :mod:`posebh.checkpoint` uses.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "MODEL_RECORD_KEY",
    "TRAIN_CHECKPOINT_FORMAT",
    "CheckpointError",
    "read_checkpoint",
    "read_state_dict",
    "save_atomically",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says why."""


StateDict = dict[str, Tensor]
Source = str | os.PathLike | Mapping[str, Any]


#: The ``format`` marker of the trainer's own checkpoints (weights under ``model``).
TRAIN_CHECKPOINT_FORMAT = "posebh-train-v1"
#: Where posebh-written files keep their architecture record
#: (:func:`~posebh.checkpoint.record.model_record`): at the top level of a trainer
#: checkpoint, under ``meta`` of an official-naming ``model.pth``.
MODEL_RECORD_KEY = "model_config"
_MAX_LISTED = 12  # keys listed per category in an error message before "... and N more"


def _list_keys(keys: Iterable[str], limit: int = _MAX_LISTED) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


def read_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> Any:
    """What a checkpoint file holds, read with ``torch.load(weights_only=True)`` (no code
    from the file runs); its failures become :class:`CheckpointError` messages that say
    what is wrong with the file and how to fix it.  The only place posebh reads a
    checkpoint file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no such file (a posebh train final.pth / model.pth, or an official .pth)"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (IsADirectoryError, PermissionError):
        raise
    except pickle.UnpicklingError as err:
        text = str(err)
        # torch names the offending global ("Unsupported global: GLOBAL mmcv...ConfigDict")
        # or type ("Can only build Tensor, ... but got <class ...>"); anything else is a
        # damaged pickle stream.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(
            r"but got (<class [^>]+>)", text
        )
        if found:
            raise CheckpointError(
                f"{path}: refusing to load: the file pickles a Python object that is not a "
                f"tensor or a plain container ({found.group(1)}), and unpickling it would run "
                "code from the file; posebh loads checkpoints only with "
                "torch.load(weights_only=True).  Official mmcv checkpoints can carry such "
                "objects in 'meta' (an mmcv ConfigDict, numpy scalars).  If you trust the "
                "file, re-save its weights once, in an environment that can unpickle it:\n"
                "    import torch\n"
                "    ckpt = torch.load('in.pth', map_location='cpu', weights_only=False)\n"
                "    torch.save({'state_dict': ckpt['state_dict']}, 'in_weights.pth')\n"
                "and load 'in_weights.pth' instead."
            ) from None
        # torch wraps the unpickler's own complaint in advice about weights_only; keep
        # only the complaint ("Unsupported operand 103").
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        raise CheckpointError(
            f"{path}: not a readable checkpoint: the file is truncated or corrupt, or not a "
            f"torch.save file (unpickler: {detail[0][:200] if detail else text[:200]})"
        ) from None
    except Exception as err:  # zip/EOF/index errors of a truncated or foreign file
        first = str(err).strip().split(". ")[0][:200]
        raise CheckpointError(
            f"{path}: not a readable checkpoint: the file is truncated or corrupt "
            f"({type(err).__name__}: {first})"
        ) from None


def save_atomically(obj: object, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``, so
    an interrupted write never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_state_dict(source: Source) -> StateDict:
    """The flat tensor dict of a checkpoint: ``source`` is a path (``.pth``), a
    ``{"state_dict": ..., "meta": ...}`` wrapper or a bare state dict.  A DDP ``module.``
    prefix on every key is removed.  Raises :class:`CheckpointError` on unreadable files,
    pickles that need code, and non-tensor entries.
    """
    name = "state dict"
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        if name.endswith(".safetensors"):
            raise CheckpointError(
                f"{name}: a safetensors file; read it with safetensors.torch.load_file() and "
                "pass the dict (posebh does not depend on safetensors)"
            )
        source = read_checkpoint(name)
    if not isinstance(source, Mapping):
        raise CheckpointError(f"{name}: expected a dict of tensors, got {type(source).__name__}")
    if source.get("format") == TRAIN_CHECKPOINT_FORMAT and isinstance(source.get("model"), Mapping):
        # a trainer checkpoint (latest.pth, step_N.pth, final.pth): its weights are 'model'
        source = {"state_dict": source["model"]}
    sd = source.get("state_dict", source)
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{name}: 'state_dict' is a {type(sd).__name__}, not a dict")
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{name}: entries that are not tensors: {_list_keys(bad)} (expected a state dict, "
            f"or a dict with the state dict under 'state_dict'; top-level keys: "
            f"{_list_keys(map(str, source))})"
        )
    if not sd:
        raise CheckpointError(f"{name}: the state dict is empty")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)
