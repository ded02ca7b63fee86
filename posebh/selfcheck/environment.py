"""What machine the self-check ran on: GPU, driver, library versions, commit."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import torch

__all__ = ["describe_machine"]

_REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=_REPO)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe_machine(device: str) -> dict[str, Any]:
    """GPU name, capability, memory and driver (None without CUDA), versions and commit."""
    info: dict[str, Any] = {"gpu": None}
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        props = torch.cuda.get_device_properties(dev)
        info.update(
            gpu=props.name,
            capability=f"sm_{props.major}{props.minor}",
            gpu_memory_GiB=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            driver=_run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
            cuda_runtime=torch.version.cuda,
        )
    info.update(
        python=platform.python_version(),
        torch=torch.__version__,
        triton=_version("triton"),
        numpy=_version("numpy"),
        pycocotools=_version("pycocotools"),
        nvcc=next(iter((_run(["nvcc", "--version"]) or "").splitlines()[-1:]), None),
        cpus=os.cpu_count(),
        processor=platform.processor() or platform.machine(),
        commit=_run(["git", "rev-parse", "--short=12", "HEAD"]),
        dirty=bool(_run(["git", "status", "--porcelain", "--untracked-files=no"])),
    )
    return info
