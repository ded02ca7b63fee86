"""The embedded default: SynthPose plus tiny models trained on it, as a data root and a
weights folder that the ordinary (real-data) harness path evaluates unchanged.

Each table column stands in by a tiny model trained with the matching recipe:

============================  =======================================  =================
release file                  tiny recipe (``posebh.training`` preset)   starts from
============================  =======================================  =================
``vitpose+_base.pth``          ``vitpose_plus_tiny_synth``               scratch
``posebh_base.pth``            ``posebh_tiny_synth``                     the tiny ViTPose++
``*_interhand2d.pth``          ``{vitpose_plus,posebh}_interhand2d_…``    its multi-dataset model
``*_pw3d.pth``                 ``{vitpose_plus,posebh}_pw3d_…``           its multi-dataset model
============================  =======================================  =================

(:data:`posebh.reproduce.releases.RELEASES` holds the map.)  The huge columns have no
stand-in (one tiny size exists); their cells say so.  Training runs
are cached under ``cache_dir/runs/<name>-<key>`` where the key hashes the recipe, the world's
manifest, the starting weights and the posebh version; a finished run is reused, an
interrupted one resumed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posebh.reproduce.releases import standins

__all__ = [
    "RUNS",
    "STANDINS",
    "SyntheticSetup",
    "default_cache_dir",
    "ensure_run",
    "ensure_world",
    "prepare",
    "shortened",
]

#: The cache folder when neither ``--cache-dir`` nor ``POSEBH_CACHE`` says otherwise.
DEFAULT_CACHE = Path("results") / "cache"


@dataclass(frozen=True)
class RunPlan:
    """One tiny training run: its recipe, what it starts from, config overrides."""

    preset: str
    init: str | None = None  # another RUNS name, or None for scratch
    overrides: tuple[tuple[str, Any], ...] = ()


#: The tiny training runs the synthetic default may need.
RUNS: dict[str, RunPlan] = {
    "vitpose_plus": RunPlan("vitpose_plus_tiny_synth"),
    "posebh": RunPlan("posebh_tiny_synth", init="vitpose_plus"),
    "vitpose_plus_interhand2d": RunPlan("vitpose_plus_interhand2d_tiny_synth", init="vitpose_plus"),
    "posebh_interhand2d": RunPlan("posebh_interhand2d_tiny_synth", init="posebh"),
    "vitpose_plus_pw3d": RunPlan("vitpose_plus_pw3d_tiny_synth", init="vitpose_plus"),
    "posebh_pw3d": RunPlan("posebh_pw3d_tiny_synth", init="posebh"),
}

#: Release file name → the run whose model stands in for it.
STANDINS: dict[str, str] = standins()


def default_cache_dir() -> Path:
    return Path(os.environ.get("POSEBH_CACHE", DEFAULT_CACHE))


def ensure_world(
    cache_dir: Path, preset: str = "mini", seed: int = 0, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """The SynthPose world (generated once per preset/seed/version) and its manifest."""
    from posebh.synth import generate

    root = cache_dir / "synthpose" / f"{preset}-seed{seed}"
    manifest = generate(root, preset=preset, seed=seed, progress=progress)
    info = dataclasses.asdict(manifest) if dataclasses.is_dataclass(manifest) else {}
    return root, info


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def _world_digest(root: Path) -> str:
    from posebh.synth import MANIFEST

    return _file_digest(root / MANIFEST)


def run_config(name: str, seed: int = 0, extra: Sequence[tuple[str, Any]] = ()):
    """The :class:`~posebh.training.TrainConfig` of run ``name`` (with its overrides)."""
    from posebh.training import apply_overrides, get_preset

    plan = RUNS[name]
    config = get_preset(plan.preset)
    items = {k: v for k, v in (*plan.overrides, *extra)}
    if items:
        config = apply_overrides(config, items)
    return dataclasses.replace(config, seed=seed, eval_at_end=False, eval_every=-1)


def shortened(config, length: int):
    """``config`` compressed to ``length`` steps: events, lr milestones and warm-up scale."""
    f = length / config.length
    events = tuple(dataclasses.replace(e, at=min(length, round(e.at * f))) for e in config.events)
    optim = dataclasses.replace(
        config.optim,
        milestones=tuple(max(1, round(m * f)) for m in config.optim.milestones),
        warmup_iters=max(1, round(config.optim.warmup_iters * f)),
    )
    return dataclasses.replace(
        config,
        length=length,
        events=events,
        optim=optim,
        ckpt_every=length,
        keep_every=0,
        log_every=max(1, length // 5),
    )


def ensure_run(
    name: str,
    world: Path,
    cache_dir: Path,
    *,
    seed: int = 0,
    init: Path | None = None,
    config=None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Train run ``name`` on ``world`` unless a finished identical run is cached; returns the
    run's ``model.pth`` (official naming)."""
    import posebh
    from posebh.training import RunOptions, Trainer

    config = config or run_config(name, seed)
    key = _digest(
        {
            "config": config.to_dict(),
            "world": _world_digest(world),
            "init": _file_digest(init) if init else None,
            "posebh": posebh.__version__,
        }
    )[:12]
    work = cache_dir / "runs" / f"{name}-{key}"
    done = work / "reproduce_done.json"
    model = work / "model.pth"
    if done.is_file() and model.is_file():
        if log:
            log(f"[synthetic] {name}: cached run {work}")
        return model
    resume = (work / "latest.pth").is_file()
    if log:
        what = "resuming" if resume else "training"
        log(
            f"[synthetic] {name}: {what} {config.preset} ({config.length} {config.unit}s) in {work}"
        )
    start = time.perf_counter()
    trainer = Trainer(
        config,
        RunOptions(
            data_root=world,
            work_dir=work,
            init=str(init) if init else "scratch",
            resume=resume,
            progress=progress,
            log=log,
        ),
    )
    try:
        result = trainer.train()
    finally:
        trainer.close()
    if not result.completed or not model.is_file():
        raise RuntimeError(f"{name}: training stopped at step {result.step} without model.pth")
    done.write_text(
        json.dumps(
            {
                "run": name,
                "preset": config.preset,
                "steps": result.step,
                "seconds": round(time.perf_counter() - start, 1),
                "images_per_s": round(result.images_per_s, 1),
                "init": str(init) if init else "scratch",
                "key": key,
            },
            indent=2,
        )
    )
    return model


@dataclass
class SyntheticSetup:
    """What the synthetic default hands to the harness."""

    data_root: Path
    weights: Path
    runs: dict[str, dict[str, Any]]
    world: dict[str, Any]
    absent: dict[str, str]


def _needed_runs(names: Sequence[str]) -> list[str]:
    order: list[str] = []

    def visit(n: str) -> None:
        init = RUNS[n].init
        if init:
            visit(init)
        if n not in order:
            order.append(n)

    for n in names:
        visit(n)
    return order


def prepare(
    checkpoint_names: Mapping[str, str],
    out_dir: Path,
    *,
    cache_dir: Path | None = None,
    world_preset: str = "mini",
    seed: int = 0,
    train_steps: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> SyntheticSetup:
    """Generate the world, train (or reuse) the stand-in of every model column and link the
    models into ``out_dir/weights`` under the release file names.

    ``checkpoint_names``: model id → release file name (a table's columns).
    ``train_steps`` compresses every run to that many steps (schedule proportions kept; a
    quick look, or a test), else each tiny recipe runs its full length.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    world, manifest = ensure_world(cache_dir, world_preset, seed, progress)
    absent = {
        mid: f"no synthetic stand-in for {fname} (the synthetic default trains one tiny size)"
        for mid, fname in checkpoint_names.items()
        if fname not in STANDINS
    }
    wanted = sorted({STANDINS[f] for f in checkpoint_names.values() if f in STANDINS})
    models: dict[str, Path] = {}
    runs: dict[str, dict[str, Any]] = {}
    for name in _needed_runs(wanted):
        init = models.get(RUNS[name].init) if RUNS[name].init else None
        config = run_config(name, seed)
        if train_steps is not None:
            config = shortened(config, train_steps)
        models[name] = ensure_run(
            name, world, cache_dir, seed=seed, init=init, config=config, progress=progress,
            log=log,
        )  # fmt: skip
        info = json.loads((models[name].parent / "reproduce_done.json").read_text())
        runs[name] = {**info, "model": str(models[name])}
    weights = out_dir / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    for fname in sorted(set(checkpoint_names.values())):
        if fname in STANDINS:
            target = weights / fname
            target.unlink(missing_ok=True)
            shutil.copyfile(models[STANDINS[fname]], target)
    return SyntheticSetup(
        data_root=world,
        weights=weights,
        runs=runs,
        world={"root": str(world), "preset": world_preset, "seed": seed, **_brief(manifest)},
        absent=absent,
    )


def _brief(manifest: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("version", "generator_version", "images", "bytes", "cached", "splits")
    return {k: manifest[k] for k in keep if k in manifest}
