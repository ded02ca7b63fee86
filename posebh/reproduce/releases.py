"""The released checkpoint files and how posebh makes each: the official training recipe of
``--train`` (and the release it starts from) and the tiny stand-in run of the synthetic
default; plus the torchrun command line that launches a recipe.

One map, read by the table runs (``posebh reproduce``), the ablations and
:mod:`posebh.reproduce.synthetic`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RELEASES", "Release", "standins", "torchrun_command", "train_plan"]


@dataclass(frozen=True)
class Release:
    """How posebh makes one release file."""

    #: The official ``posebh.training`` preset of ``--train``; None: posebh has no recipe
    #: for it (its numbers come from another codebase).
    preset: str | None = None
    #: The release file ``preset`` starts from (None: from scratch).
    init: str | None = None
    #: The :data:`posebh.reproduce.synthetic.RUNS` name of its tiny synthetic stand-in.
    standin: str | None = None


RELEASES: dict[str, Release] = {
    "vitpose+_base.pth": Release("vitpose_plus_vit_base", None, "vitpose_plus"),
    "posebh_base.pth": Release("posebh_vit_base", "vitpose+_base.pth", "posebh"),
    "posebh_huge.pth": Release("posebh_vit_huge", "vitpose+_huge.pth"),
    "vitpose+_base_interhand2d.pth": Release(standin="vitpose_plus_interhand2d"),
    "posebh_base_interhand2d.pth": Release(
        "posebh_interhand2d", "posebh_base.pth", "posebh_interhand2d"
    ),
    "vitpose+_base_pw3d.pth": Release(standin="vitpose_plus_pw3d"),
    "posebh_base_pw3d.pth": Release("posebh_pw3d", "posebh_base.pth", "posebh_pw3d"),
}


def standins() -> dict[str, str]:
    """Release file name → the synthetic run whose model stands in for it."""
    return {f: r.standin for f, r in RELEASES.items() if r.standin}


def torchrun_command(
    preset: str,
    data_root: Path,
    work_dir: Path,
    gpus: int,
    *,
    init: Path | None = None,
    sets: Sequence[str] = (),
) -> list[str]:
    """``torchrun … -m posebh.train --preset …``: one official-recipe training run."""
    cmd = [
        "torchrun", f"--nproc_per_node={gpus}", "-m", "posebh.train",
        "--preset", preset, "--data-root", str(data_root), "--work-dir", str(work_dir),
    ]  # fmt: skip
    if init is not None:
        cmd += ["--init", str(init)]
    for item in sets:
        cmd += ["--set", item]
    return cmd


def train_plan(
    files: Iterable[str],
    data_root: Path,
    work: Path,
    gpus: int,
    *,
    log: Callable[[str], None] = print,
) -> list[list[str]]:
    """The torchrun commands that train ``files`` (release names) with the official recipes,
    each after the run it starts from; each run's folder is ``work/<file stem>``.  A file
    without a recipe is logged and left out (it must come from the weights folder)."""
    plan: list[list[str]] = []
    done: set[str] = set()

    def add(fname: str) -> None:
        if fname in done:
            return
        release = RELEASES.get(fname)
        if release is None or release.preset is None:
            done.add(fname)
            log(
                f"# no training recipe in posebh for {fname} (its numbers come from another "
                "codebase); put the file in the weights folder of a --weights run instead"
            )
            return
        if release.init:
            add(release.init)
        init = work / Path(release.init).stem / "model.pth" if release.init else None
        plan.append(
            torchrun_command(release.preset, data_root, work / Path(fname).stem, gpus, init=init)
        )
        done.add(fname)

    for f in files:
        add(f)
    return plan
