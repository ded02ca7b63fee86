"""Official checkpoints in and out: mmcv/mmpose PoseBH and ViTPose++ files, their split
single-dataset variants, and the Hugging Face ``transformers`` VitPose naming.

Three namings meet here: **official** (mmcv ``TopDownMoEProto``), **posebh**
(:class:`posebh.models.PoseBH`) and **hf** (``transformers``' ``VitPoseForPoseEstimation``);
:mod:`~posebh.checkpoint.naming` and :mod:`~posebh.checkpoint.hf` spell them out.

The modules, each importing only those above it:

- :mod:`~posebh.checkpoint.io`: every checkpoint file read and written by posebh
  (:func:`read_checkpoint`, :func:`save_atomically`, :func:`read_state_dict`),
  :class:`CheckpointError` and the format markers;
- :mod:`~posebh.checkpoint.naming`: official <-> posebh keys (:func:`official_to_posebh`,
  :func:`to_official`, :func:`is_posebh_naming`);
- :mod:`~posebh.checkpoint.hf`: :func:`to_hf` / :func:`from_hf`;
- :mod:`~posebh.checkpoint.arch`: the architecture read off tensor shapes
  (:func:`infer_arch`, :func:`infer_config`, :func:`is_official_split`);
- :mod:`~posebh.checkpoint.record`: the architecture record of posebh-written files
  (:func:`model_record`, :func:`recorded_config`);
- :mod:`~posebh.checkpoint.split`: the official tools (:func:`split_official`,
  :func:`remove_prototypes`, :data:`DATASET_ORDERS`);
- :mod:`~posebh.checkpoint.hub`: transformers model folders: ``config.json`` both ways
  (:func:`hf_config`, :func:`arch_from_hf_config`) and :func:`official_state_dict`;
- :mod:`~posebh.checkpoint.loader`: :func:`load_model` (the one way every command builds a
  model from a file) and :func:`match_keys`.

Everything here is strict: every checkpoint tensor is consumed and every model tensor filled,
or a :class:`CheckpointError` says which keys and why.  The only tensors ever dropped are
the leftovers of the official split script (see :func:`load_model`) and an unused
``backbone.cls_token``, and each drop is announced with :func:`warnings.warn`.
"""

from posebh.checkpoint.arch import infer_arch, infer_config, is_official_split
from posebh.checkpoint.hf import from_hf, to_hf
from posebh.checkpoint.hub import (
    arch_from_hf_config,
    hf_config,
    hf_folder_tensors,
    is_hf_naming,
    official_state_dict,
)
from posebh.checkpoint.io import (
    HF_CONFIG_KEY,
    MODEL_RECORD_KEY,
    TRAIN_CHECKPOINT_FORMAT,
    CheckpointError,
    read_checkpoint,
    read_state_dict,
    save_atomically,
    save_model_folder,
    save_safetensors,
)
from posebh.checkpoint.loader import KeyMatch, load_model, match_keys
from posebh.checkpoint.naming import is_posebh_naming, official_to_posebh, to_official
from posebh.checkpoint.record import model_record, recorded_config
from posebh.checkpoint.split import DATASET_ORDERS, remove_prototypes, split_official

__all__ = [
    "DATASET_ORDERS",
    "HF_CONFIG_KEY",
    "MODEL_RECORD_KEY",
    "TRAIN_CHECKPOINT_FORMAT",
    "CheckpointError",
    "KeyMatch",
    "arch_from_hf_config",
    "from_hf",
    "hf_config",
    "hf_folder_tensors",
    "infer_arch",
    "infer_config",
    "is_hf_naming",
    "is_official_split",
    "is_posebh_naming",
    "load_model",
    "match_keys",
    "model_record",
    "official_state_dict",
    "official_to_posebh",
    "read_checkpoint",
    "read_state_dict",
    "recorded_config",
    "remove_prototypes",
    "save_atomically",
    "save_model_folder",
    "save_safetensors",
    "split_official",
    "to_hf",
    "to_official",
]
