"""Provenance recorded with every metric result: library versions and protocol settings."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import numpy as np

__all__ = ["XTCOCOTOOLS_SEMANTICS", "cpu_name", "library_versions", "result_meta"]

#: The xtcocotools release whose ``COCOeval`` semantics :func:`posebh.evaluation.oks_eval`
#: reproduces on top of pycocotools (read from its ``cocoeval.py``; PoseBH pins ``>=1.8``).
XTCOCOTOOLS_SEMANTICS = "1.14.3"


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str | None:
    """The CPU model ("AMD EPYC ..."): /proc/cpuinfo's ``model name`` on Linux, else
    ``platform.processor()``; None when neither says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def library_versions(*extra: str) -> dict[str, str | None]:
    """Versions of python, numpy, pycocotools and posebh, plus the distributions in ``extra``.

    A distribution that is not installed is reported as ``None``.
    """
    from posebh import __version__

    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pycocotools": _dist_version("pycocotools"),
        "posebh": __version__,
    }
    for name in extra:
        versions[name] = _dist_version(name)
    return versions


def result_meta(metric: str, *, extra_libraries: tuple[str, ...] = (), **settings: Any) -> dict:
    """The ``meta`` entry of a metric result: metric name, library versions and settings.

    ``settings`` must be JSON-serialisable (numbers, strings, lists, dicts, None) so that a
    result dict can be written with ``json.dump`` as it is.
    """
    return {"metric": metric, "versions": library_versions(*extra_libraries), **settings}
