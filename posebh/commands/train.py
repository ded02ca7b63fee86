"""``posebh train``: train a preset recipe, alone or under ``torchrun``.

    posebh train --preset vitpose_plus_tiny_synth --data-root data --work-dir work/vitpose
    posebh train --preset posebh_tiny_synth --data-root data --work-dir work/posebh \\
        --init work/vitpose/final.pth
    torchrun --nproc_per_node 8 -m posebh.train --preset posebh_vit_base \\
        --data-root data --work-dir work/posebh_b --init vitpose+_base.pth

The recipes are in :mod:`posebh.training.config`; ``--set key=value`` changes one field
(``--set batch_size=64 --set optim.lr=5e-4 --set model.depth=2``).  ``--list`` prints the
presets, ``--plan`` the schedule without training.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # posebh.training loads torch and the trainer: only when a run starts
    from posebh.training import TrainConfig

__all__ = ["add_parser"]

EXAMPLES = """\
examples:
  posebh synth --out data --preset mini
  posebh train --preset vitpose_plus_tiny_synth --data-root data --work-dir work/vitpose
  posebh train --preset posebh_tiny_synth --data-root data --work-dir work/posebh \\
      --init work/vitpose/final.pth
  posebh train --preset posebh_tiny_synth --data-root data --work-dir work/posebh --resume
  torchrun --nproc_per_node 8 -m posebh.train --preset posebh_vit_base --data-root data \\
      --work-dir work/posebh_b --init weights/vitpose+_base.pth
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a recipe (PoseBH, ViTPose++, transfer, tiny synthetic) on one process "
        "or under torchrun",
        description="Train a preset recipe: mixed multi-dataset batches, the staged PoseBH "
        "schedule (printed at start), resumable checkpoints, log.jsonl, evaluation. The same "
        "flags work with `torchrun --nproc_per_node N -m posebh.train`.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", help="recipe name (--list shows them)")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="official data/ tree")
    p.add_argument("--work-dir", type=Path, help="checkpoints, log.jsonl, eval results")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this global step")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this long")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --work-dir (latest.pth)"
    )
    p.add_argument("--seed", type=int, default=None, help="override the recipe's seed (0)")
    p.add_argument(
        "--init",
        default=None,
        metavar="CKPT",
        help="starting weights (official or posebh checkpoint, or a final.pth of this "
        "trainer); 'scratch' for random weights",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    p.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="evaluate every N steps (0: every 10 epochs, <0: never)",
    )
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument(
        "--datasets",
        default=None,
        help="comma-separated subset of the recipe's training datasets",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (JSON value), e.g. batch_size=16, optim.lr=5e-4",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--list", action="store_true", help="list the presets and exit")
    p.add_argument("--plan", action="store_true", help="print the schedule and exit")
    p.set_defaults(func=_cmd_train)


def _with_datasets(config: TrainConfig, names: str) -> TrainConfig:
    """``--datasets a,b``: the recipe restricted to those of its datasets (their ratios and
    heads kept)."""
    wanted = tuple(n.strip() for n in names.split(",") if n.strip())
    unknown = [n for n in wanted if n not in config.data.datasets]
    if unknown:
        raise ValueError(
            f"--datasets {unknown} not among the recipe's datasets {config.data.datasets}"
        )
    keep = [config.data.datasets.index(n) for n in wanted]
    data = dataclasses.replace(
        config.data,
        datasets=wanted,
        ratios=None if config.data.ratios is None else tuple(config.data.ratios[i] for i in keep),
        heads=None if config.data.heads is None else tuple(config.data.heads[i] for i in keep),
    )
    return dataclasses.replace(config, data=data)


def _config(args: argparse.Namespace) -> TrainConfig:
    from posebh.training import apply_overrides, get_preset

    if not args.preset:
        raise ValueError("--preset is required (--list shows the presets)")
    config = get_preset(args.preset)
    if args.datasets:
        config = _with_datasets(config, args.datasets)
    config = apply_overrides(config, args.overrides)
    extra = {}
    if args.seed is not None:
        extra["seed"] = args.seed
    if args.eval_every is not None:
        extra["eval_every"] = args.eval_every
    if args.no_eval:
        extra["eval_at_end"] = False
    return dataclasses.replace(config, **extra) if extra else config


def _cmd_train(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from posebh.training import PRESETS, RunOptions, Trainer, headline_metric, plan_table

    if args.list:
        rows = [
            (c.preset, c.model, f"{c.length} {c.unit}s", c.batch_size, c.description)
            for c in PRESETS.values()
        ]
        print(tabulate(rows, headers=["preset", "model", "length", "batch", "recipe"]))
        return 0
    config = _config(args)
    if args.plan:
        print(f"{config.preset}: {config.description}")
        print(plan_table(config, None, None))
        return 0
    if args.work_dir is None:
        raise ValueError("--work-dir is required")
    options = RunOptions(
        data_root=args.data_root,
        work_dir=args.work_dir,
        init=args.init,
        resume=args.resume,
        max_steps=args.max_steps,
        max_minutes=args.max_minutes,
        device=args.device,
        progress=not args.no_progress,
    )
    trainer = Trainer(config, options)
    try:
        result = trainer.train()
    finally:
        trainer.close()
    if trainer.is_main and result.metrics:
        rows = []
        for name, m in result.metrics.items():
            head = headline_metric(m)
            rows.append((name, head[0] if head else "-", f"{head[1]:.4f}" if head else "-"))
        print(tabulate(rows, headers=["dataset", "metric", "value"], tablefmt="github"))
    return 0
