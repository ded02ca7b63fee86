"""``posebh export CKPT OUT.onnx --dataset D``: one dataset's model as ONNX
(:mod:`posebh.export`), checked in ONNX Runtime against PyTorch before it is reported."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export one dataset's model to ONNX (dynamic batch), checked in ONNX Runtime",
        description="Write the model for one dataset (a multi-dataset checkpoint is cut for "
        "its expert and head; prototypes dropped) as ONNX: input `images` [B, 3, H, W] "
        "normalised as the pipeline does ((pixel/255 - mean)/std, ImageNet mean/std, RGB), "
        "output `heatmaps` [B, K, h, w]. The file is then run in ONNX Runtime (CPU) on random "
        "inputs of batch 1 and 3; a max |Δ| over 1e-4 against PyTorch "
        "(with --fp16: 1 %% of the peak heatmap, at least 1e-2) fails the command. "
        "Needs the export extra: pip install -e '.[export]'.",
        epilog="example: posebh export vitpose+_base.pth coco.onnx --dataset coco --with-decode",
    )
    p.add_argument("checkpoint", type=Path, help="a .pth checkpoint (official or posebh)")
    p.add_argument("out", type=Path, help="the .onnx file to write")
    p.add_argument("--dataset", required=True, help="coco, aic, mpii, ap10k, apt36k, wholebody…")
    p.add_argument(
        "--num-heads", type=int, default=None,
        help="attention heads, needed only for a non-preset width",
    )  # fmt: skip
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument(
        "--fp16", action="store_true",
        help="export in half precision (self-check vs PyTorch fp16: max |Δ| ≤ 1 %% of "
        "the peak heatmap, at least 1e-2)",
    )  # fmt: skip
    p.add_argument(
        "--with-decode", action="store_true",
        help="also output keypoints [B, K, 2] (heatmap-grid x, y of the arg-max) and scores [B, K]",
    )  # fmt: skip
    p.add_argument(
        "--exporter", choices=("auto", "dynamo", "torchscript"), default="auto",
        help="auto: torch.onnx.export(dynamo=True) where it works, else the TorchScript one",
    )  # fmt: skip
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    for module in ("onnx", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            raise ValueError(f"posebh export needs {module}: pip install -e '.[export]'") from None
    from posebh.export import export_onnx, load_for_export

    model = load_for_export(args.checkpoint, args.dataset, args.num_heads)
    report = export_onnx(
        model, args.out, opset=args.opset, fp16=args.fp16, with_decode=args.with_decode,
        exporter=args.exporter,
    )  # fmt: skip
    print("\n".join(report.lines()))
    return 0
