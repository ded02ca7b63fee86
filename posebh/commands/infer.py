"""``posebh infer IMAGES --checkpoint CKPT --dataset D``: keypoints on one's own images
(:mod:`posebh.evaluation.infer`); writes ``OUT/keypoints.json`` and, with ``--draw``,
``OUT/overlays/``."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "infer",
        help="keypoints on your own images (file, folder or glob), boxes from a detection file",
        description="Top-down inference under the dataset's official evaluation protocol "
        "(flip test, decode): each box of --boxes (a COCO detection-results file; persons, "
        "score >= --det-bbox-thr), or the whole image without it, is cropped as posebh eval "
        "crops it. Writes OUT/keypoints.json (COCO keypoint results with file_name and bbox; "
        "score = box score x mean keypoint score above 0.2, as eval rescoring).",
        epilog="A detection's image_id is matched to an input image through --images-json "
        "(id -> file_name), else by file stem (000000000785.jpg is image_id 785). "
        "example: posebh infer photos/ --checkpoint vitpose-b.pth --dataset coco --draw",
    )
    p.add_argument("images", help="an image file, a folder of images or a glob ('a/*.png')")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--dataset", required=True, help="the skeleton to predict: coco, aic, mpii, …")
    p.add_argument("--boxes", type=Path, default=None, help="COCO detection-results JSON")
    p.add_argument(
        "--images-json",
        type=Path,
        default=None,
        help="COCO file with an 'images' list mapping the detections' image_id to file_name",
    )
    p.add_argument("--det-bbox-thr", type=float, default=0.0)
    p.add_argument("--nms", action="store_true", help="apply the dataset's OKS-NMS (as eval)")
    p.add_argument("--out", type=Path, default=Path("results") / "infer")
    p.add_argument("--draw", action="store_true", help="write OUT/overlays/<image>.png")
    p.add_argument("--score-thr", type=float, default=0.3, help="with --draw: points shown")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (0: in-process)")
    p.add_argument(
        "--num-heads", type=int, default=None, help="attention heads, for a non-preset width"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_infer)


def _cmd_infer(args: argparse.Namespace) -> int:
    from posebh.checkpoint import load_model
    from posebh.evaluation.infer import infer

    arch = {"num_heads": args.num_heads} if args.num_heads else {}
    model = load_model(args.checkpoint, **arch)
    result = infer(
        model, args.images, args.dataset, args.out, boxes=args.boxes,
        images_json=args.images_json, det_bbox_thr=args.det_bbox_thr, nms=args.nms,
        draw=args.draw, score_thr=args.score_thr, device=args.device,
        batch_size=args.batch_size, num_workers=args.workers, progress=not args.no_progress,
    )  # fmt: skip
    print(f"{result.instances} boxes on {result.images} images → {len(result.records)} results")
    drawn = f" and {len(result.files) - 1} overlays" if args.draw else ""
    print(f"wrote {result.files[0]}{drawn}")
    return 0
