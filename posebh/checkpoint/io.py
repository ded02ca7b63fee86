"""Checkpoint files in and out: the only module of posebh that reads or writes a checkpoint
file (``torch.load`` / ``torch.save``, safetensors, a transformers model folder).

:func:`read_checkpoint` reads a ``.pth`` with ``weights_only=True``, a ``.safetensors`` file
or a transformers model folder (``config.json`` + ``model.safetensors``, sharded or not, or
``pytorch_model.bin``) and turns their failures into :class:`CheckpointError` messages that
say how to fix the input; :func:`save_atomically`, :func:`save_safetensors` and
:func:`save_model_folder` write through temporary files, so an interrupted write leaves no
truncated checkpoint;
:func:`read_state_dict` finds the flat tensor dict in a path, an mmcv wrapper, a trainer
checkpoint or a bare dict.  Also here: the format markers of posebh-written files
(:data:`TRAIN_CHECKPOINT_FORMAT`, :data:`MODEL_RECORD_KEY`), the ``StateDict`` / ``Source``
types and the key listing every error message of :mod:`posebh.checkpoint` uses.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import Tensor

__all__ = [
    "HF_CONFIG_KEY",
    "MODEL_RECORD_KEY",
    "TRAIN_CHECKPOINT_FORMAT",
    "CheckpointError",
    "read_checkpoint",
    "read_state_dict",
    "save_atomically",
    "save_model_folder",
    "save_safetensors",
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
#: Where :func:`read_checkpoint` puts the ``config.json`` of a transformers model folder.
HF_CONFIG_KEY = "hf_config"
#: The tensors of a model folder written by posebh that ``VitPoseForPoseEstimation`` has no
#: module for (other datasets' heads, the prototype head); transformers ignores this file.
HF_EXTRA_WEIGHTS = "posebh_extra.safetensors"
# The safetensors metadata entries holding the architecture record and the key order (JSON;
# safetensors itself stores tensors sorted by name).
_SAFETENSORS_RECORD = "posebh_" + MODEL_RECORD_KEY
_SAFETENSORS_ORDER = "posebh_key_order"
_FOLDER_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_MAX_LISTED = 12  # keys listed per category in an error message before "... and N more"


def _list_keys(keys: Iterable[str], limit: int = _MAX_LISTED) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


def read_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> Any:
    """What a checkpoint holds: a ``.pth`` read with ``torch.load(weights_only=True)`` (no
    code from the file runs); a ``.safetensors`` file as ``{"state_dict": tensors}``; a
    transformers model folder as ``{"state_dict": tensors, HF_CONFIG_KEY: config.json}``
    (tensors in transformers naming).  A posebh architecture record stored in safetensors
    metadata comes back under :data:`MODEL_RECORD_KEY`.  Failures become
    :class:`CheckpointError` messages that say what is wrong and how to fix it.  The only
    place posebh reads a checkpoint."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _read_model_folder(path, map_location)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no such file (a posebh train final.pth / model.pth, an official .pth, "
            "a .safetensors file or a transformers model folder)"
        )
    if path.endswith(".safetensors"):
        return _read_safetensors(path, map_location)
    return _torch_load(path, map_location)


def _device(map_location: Any) -> str:
    return str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"


def _read_safetensors(path: str, map_location: Any = "cpu") -> dict[str, Any]:
    try:
        tensors = safetensors.torch.load_file(path, device=_device(map_location))
        with safetensors.safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{path}: not a readable safetensors file: the file is truncated or corrupt "
            f"({type(err).__name__}: {str(err)[:200]})"
        ) from None
    try:
        order = json.loads(metadata.get(_SAFETENSORS_ORDER, "[]"))
    except json.JSONDecodeError:
        order = []
    if isinstance(order, list) and sorted(order) == sorted(tensors):
        tensors = {k: tensors[k] for k in order}
    out: dict[str, Any] = {"state_dict": tensors}
    if _SAFETENSORS_RECORD in metadata:
        try:
            out[MODEL_RECORD_KEY] = json.loads(metadata[_SAFETENSORS_RECORD])
        except json.JSONDecodeError as err:
            raise CheckpointError(
                f"{path}: metadata '{_SAFETENSORS_RECORD}' is not JSON ({err}); rewrite the "
                "file without it (posebh then reads the architecture off the tensor shapes)"
            ) from None
    return out


def _read_json(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot read the {what} ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: the {what} is a {type(data).__name__}, not an object")
    return data


def _read_sharded(folder: str, map_location: Any) -> dict[str, Any]:
    index_path = os.path.join(folder, "model.safetensors.index.json")
    weight_map = _read_json(index_path, "shard index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(
            f"{index_path}: no 'weight_map' (tensor name -> shard file); re-save the model "
            "with save_pretrained, or replace the index by a single model.safetensors"
        )
    tensors: dict[str, Tensor] = {}
    out: dict[str, Any] = {}
    for shard in dict.fromkeys(weight_map.values()):
        shard_path = os.path.join(folder, str(shard))
        if not os.path.isfile(shard_path):
            raise CheckpointError(
                f"{shard_path}: missing shard named by {index_path}; download every file "
                "the index lists (e.g. huggingface-cli download REPO --local-dir DIR) or "
                "re-save the model with save_pretrained"
            )
        part = _read_safetensors(shard_path, map_location)
        tensors.update(part["state_dict"])
        if MODEL_RECORD_KEY in part:
            out[MODEL_RECORD_KEY] = part[MODEL_RECORD_KEY]
    absent = [k for k in weight_map if k not in tensors]
    if absent:
        raise CheckpointError(
            f"{index_path}: tensors listed in the index but absent from their shards: "
            f"{_list_keys(absent)}; re-download the shards or re-save the model"
        )
    out["state_dict"] = tensors
    return out


def _read_model_folder(folder: str, map_location: Any) -> dict[str, Any]:
    """A transformers model folder: config.json and its weights, in transformers naming."""
    files = sorted(os.listdir(folder))
    config_path = os.path.join(folder, "config.json")
    present = [f for f in _FOLDER_WEIGHTS if f in files]
    if not present:
        raise CheckpointError(
            f"{folder}: a folder without weights: none of {', '.join(_FOLDER_WEIGHTS)} in it "
            f"(files: {_list_keys(files) or 'none'}); download the model's weights into the "
            "folder, or pass the checkpoint file itself"
        )
    if not os.path.isfile(config_path):
        raise CheckpointError(
            f"{folder}: no config.json next to {present[0]}; a transformers model folder "
            "needs both (download config.json from the same Hub repository)"
        )
    if present[0] == "model.safetensors":
        out = _read_safetensors(os.path.join(folder, present[0]), map_location)
    elif present[0] == "model.safetensors.index.json":
        out = _read_sharded(folder, map_location)
    else:
        loaded = _torch_load(os.path.join(folder, present[0]), map_location)
        if not isinstance(loaded, Mapping):
            raise CheckpointError(f"{folder}/{present[0]}: not a state dict")
        out = {"state_dict": dict(loaded)}
    if HF_EXTRA_WEIGHTS in files:
        extra = _read_safetensors(os.path.join(folder, HF_EXTRA_WEIGHTS), map_location)
        out["state_dict"] = {**out["state_dict"], **extra["state_dict"]}
    out[HF_CONFIG_KEY] = _read_json(config_path, "model config")
    return out


def _torch_load(path: str, map_location: Any) -> Any:
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
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _atomic_write(path: str | os.PathLike[str], write: Any) -> None:
    """``write(tmp)`` to a temporary file in the same folder, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_safetensors(
    state_dict: Mapping[str, Tensor],
    path: str | os.PathLike[str],
    *,
    record: Mapping[str, Any] | None = None,
) -> None:
    """Write ``state_dict`` as a safetensors file (atomically), with posebh's architecture
    ``record`` (:func:`~posebh.checkpoint.record.model_record`) as JSON metadata.  Tensors
    are copied into storage of their own: safetensors refuses views sharing memory (the
    q/k/v of :func:`~posebh.checkpoint.hf.to_hf`).  The key order is kept in the metadata
    too (safetensors sorts the tensors by name)."""
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in state_dict.items()}
    metadata = {"format": "pt", _SAFETENSORS_ORDER: json.dumps(list(tensors))}
    if record is not None:
        metadata[_SAFETENSORS_RECORD] = json.dumps(record)
    _atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, tmp, metadata=metadata))


def save_model_folder(
    folder: str | os.PathLike[str],
    state_dict: Mapping[str, Tensor],
    config: Mapping[str, Any],
    *,
    extra: Mapping[str, Tensor] | None = None,
    record: Mapping[str, Any] | None = None,
) -> None:
    """A transformers model folder: ``config.json``, ``model.safetensors`` and, when
    ``extra`` holds tensors transformers has no module for, :data:`HF_EXTRA_WEIGHTS`."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder}: exists and is not a folder; name a folder to write")
    text = json.dumps(dict(config), indent=2, sort_keys=True) + "\n"

    def write_config(tmp: str) -> None:
        Path(tmp).write_text(text, encoding="utf-8")

    _atomic_write(folder / "config.json", write_config)
    save_safetensors(state_dict, folder / "model.safetensors", record=record)
    if extra:
        save_safetensors(extra, folder / HF_EXTRA_WEIGHTS)
    else:
        (folder / HF_EXTRA_WEIGHTS).unlink(missing_ok=True)


def read_state_dict(source: Source) -> StateDict:
    """The flat tensor dict of a checkpoint: ``source`` is a path (``.pth``,
    ``.safetensors``, a transformers model folder: its tensors keep transformers naming), a
    ``{"state_dict": ..., "meta": ...}`` wrapper or a bare state dict.  A DDP ``module.``
    prefix on every key is removed.  Raises :class:`CheckpointError` on unreadable files,
    pickles that need code, and non-tensor entries.
    """
    name = "state dict"
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
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
