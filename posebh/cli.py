"""The ``posebh`` command line.

Each sub-command lives in a small ``_cmd_*`` function; ``posebh <command> --help`` explains
its flags with an example.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

EXAMPLES = """\
examples:
  posebh info vitpose+_base.pth
  posebh convert vitpose+_base.pth coco_only.pth --split coco
  posebh convert posebh_base.pth transfer_init.pth --remove-prototypes
  posebh convert vitpose+_base.pth hf_weights.pth --to hf
"""


def save_atomically(obj: object, path: str | os.PathLike) -> None:
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


def _cmd_info(args: argparse.Namespace) -> int:
    from posebh.checkpoint import infer_arch, is_official_split, read_state_dict

    sd = read_state_dict(args.checkpoint)
    arch = infer_arch(sd, **({"num_heads": args.num_heads} if args.num_heads else {}))
    report = {
        "file": str(args.checkpoint),
        "tensors": len(sd),
        "parameters": int(sum(t.numel() for t in sd.values() if t.is_floating_point())),
        "official_split": is_official_split(sd),
        "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()},
    }
    print(json.dumps(report, indent=2))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from posebh.checkpoint import (
        from_hf,
        is_posebh_naming,
        read_state_dict,
        remove_prototypes,
        split_official,
        to_hf,
        to_official,
    )

    sd = read_state_dict(args.src)
    if args.from_hf:
        sd = from_hf(sd)
    if is_posebh_naming(sd):
        sd = to_official(sd)  # the tools below speak the official naming
    notes = [f"source: {args.src}"]
    if args.split is not None:
        sd = split_official(sd, args.split, keep_prototype_head=args.keep_prototype_head)
        notes.append(f"split for dataset {args.split} (expert merged into fc2)")
    if args.remove_prototypes:
        sd = remove_prototypes(sd, clusters=True)
        notes.append("prototype banks removed")
    if args.to == "official":
        out: object = {"state_dict": sd, "meta": {"posebh_convert": notes}}
    elif args.to == "hf":
        out = to_hf(sd)
    else:
        from posebh.checkpoint import official_to_posebh

        out = official_to_posebh(sd)
    save_atomically(out, args.dst)
    print(f"wrote {args.dst} ({args.to} naming; {'; '.join(notes)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posebh",
        description="PoseBH / ViTPose++ without mmcv: checkpoints, evaluation, training, "
        "reproduction of the paper's tables.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    info = sub.add_parser("info", help="describe a checkpoint: architecture read off its shapes")
    info.add_argument("checkpoint", type=Path)
    info.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="attention heads, needed only for a non-preset width",
    )
    info.set_defaults(func=_cmd_info)

    conv = sub.add_parser(
        "convert",
        help="convert between official (mmcv), posebh and Hugging Face namings; split or "
        "strip prototypes",
        description="Read SRC (official, posebh or --from-hf naming), optionally split it for "
        "one dataset (the official tools/model_split.py, without its leftover tensors) and/or "
        "remove the prototype banks (tools/remove_proto.py), and write DST.",
    )
    conv.add_argument("src", type=Path)
    conv.add_argument("dst", type=Path)
    conv.add_argument("--to", choices=("official", "posebh", "hf"), default="official")
    conv.add_argument("--from-hf", action="store_true", help="SRC uses transformers' naming")
    conv.add_argument(
        "--split",
        default=None,
        metavar="DATASET",
        help="coco, aic, mpii, ap10k, apt36k or wholebody",
    )
    conv.add_argument(
        "--keep-prototype-head",
        action="store_true",
        help="with --split: keep proto_head.* (dropped by default)",
    )
    conv.add_argument("--remove-prototypes", action="store_true")
    conv.set_defaults(func=_cmd_convert)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # Our errors carry their own explanation; a traceback adds nothing for a CLI user.
        print(f"posebh {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
