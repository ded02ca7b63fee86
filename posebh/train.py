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
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["add_arguments", "build_parser", "main", "run"]

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``train`` flags (shared by ``posebh train`` and ``python -m posebh.train``)."""
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posebh train",
        description="Train a PoseBH / ViTPose++ recipe (single process or torchrun).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def _config(args: argparse.Namespace):
    import dataclasses

    from posebh.training import apply_overrides, get_preset

    if not args.preset:
        raise ValueError("--preset is required (--list shows the presets)")
    config = get_preset(args.preset)
    if args.datasets:
        wanted = tuple(n.strip() for n in args.datasets.split(",") if n.strip())
        unknown = [n for n in wanted if n not in config.data.datasets]
        if unknown:
            raise ValueError(
                f"--datasets {unknown} not among the recipe's datasets {config.data.datasets}"
            )
        keep = [config.data.datasets.index(n) for n in wanted]
        data = dataclasses.replace(
            config.data,
            datasets=wanted,
            ratios=None
            if config.data.ratios is None
            else tuple(config.data.ratios[i] for i in keep),
            heads=None if config.data.heads is None else tuple(config.data.heads[i] for i in keep),
        )
        config = dataclasses.replace(config, data=data)
    config = apply_overrides(config, args.overrides)
    extra = {}
    if args.seed is not None:
        extra["seed"] = args.seed
    if args.eval_every is not None:
        extra["eval_every"] = args.eval_every
    if args.no_eval:
        extra["eval_at_end"] = False
    return dataclasses.replace(config, **extra) if extra else config


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``train`` command; returns the exit status."""
    from tabulate import tabulate

    from posebh.training import PRESETS, RunOptions, Trainer, plan_table

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
        from posebh.training import headline_metric

        rows = []
        for name, m in result.metrics.items():
            head = headline_metric(m)
            rows.append((name, head[0] if head else "-", f"{head[1]:.4f}" if head else "-"))
        print(tabulate(rows, headers=["dataset", "metric", "value"], tablefmt="github"))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"posebh train: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
