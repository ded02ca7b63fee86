"""The ``posebh`` command line: one parser (:func:`build_parser`) for every sub-command and
one rule for errors (:func:`main`: a ValueError, FileNotFoundError or KeyError is printed as
``posebh <command>: error: …`` with exit status 2, no traceback).

The small sub-commands live here in ``_cmd_*`` functions; train, reproduce (the tables and
the ablations) and regression in :mod:`posebh.commands`.  ``python -m posebh.train`` and the
``reproduce/*.py`` scripts run this same parser.  ``posebh <command> --help`` explains the
flags with an example.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from posebh.checkpoint import save_atomically
from posebh.commands import compare, export, infer, regression, reproduce, train
from posebh.commands.bootstrap_flags import add_bootstrap_arguments
from posebh.keyvalue import parse_pairs

EXAMPLES = """\
examples:
  posebh eval --dataset coco --data-root data --checkpoint vitpose+_base.pth
  posebh eval --dataset coco --ann-file test_coco.json --img-prefix coco/ --gt-as-prediction
  posebh info vitpose+_base.pth
  posebh convert vitpose+_base.pth coco_only.pth --split coco
  posebh convert posebh_base.pth transfer_init.pth --remove-prototypes
  posebh convert vitpose+_base.pth hf_weights.pth --to hf
  posebh convert vitpose+_base.pth vitpose_hf/ --to hf
  posebh convert vitpose+_base.pth vitpose+_base.safetensors --to safetensors
  posebh train --preset vitpose_plus_tiny_synth --data-root data --work-dir work/vitpose
  posebh synth --out data_synth --preset mini --seed 0
  posebh crosstype --checkpoint work/posebh/final.pth --data-root data_synth --out results/ct
  posebh reproduce table1
  posebh reproduce table1 --data-root data --weights weights
  posebh visualize --dataset coco --data-root data --checkpoint work/posebh/final.pth
  posebh visualize --dataset aic --data-root data_synth --gt --num-images 4
  posebh bench -k "decode or similarity"
  posebh regression --sections protocol
"""


def _cmd_info(args: argparse.Namespace) -> int:
    from posebh.checkpoint import (
        infer_arch,
        is_official_split,
        official_state_dict,
        read_checkpoint,
    )

    sd, known = official_state_dict(read_checkpoint(args.checkpoint), str(args.checkpoint))
    arch = infer_arch(sd, **{**known, **({"num_heads": args.num_heads} if args.num_heads else {})})
    report = {
        "file": str(args.checkpoint),
        "tensors": len(sd),
        "parameters": int(sum(t.numel() for t in sd.values() if t.is_floating_point())),
        "official_split": is_official_split(sd),
        "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()},
    }
    print(json.dumps(report, indent=2))
    return 0


_TORCH_SUFFIXES = (".pth", ".pt", ".bin")


def _cmd_convert(args: argparse.Namespace) -> int:
    from posebh.checkpoint import (
        hf_config,
        hf_folder_tensors,
        infer_config,
        official_state_dict,
        official_to_posebh,
        read_checkpoint,
        remove_prototypes,
        save_model_folder,
        save_safetensors,
        split_official,
        to_hf,
    )
    from posebh.checkpoint.record import _find_record

    raw = read_checkpoint(args.src)
    # The naming (official, posebh, transformers) is detected; --from-hf is kept for scripts.
    sd, known = official_state_dict(raw, str(args.src))
    record = _find_record(raw)
    notes = [f"source: {args.src}"]
    if args.split is not None:
        sd = split_official(sd, args.split, keep_prototype_head=args.keep_prototype_head)
        notes.append(f"split for dataset {args.split} (expert merged into fc2)")
        record = None  # it describes the multi-dataset model
    if args.remove_prototypes:
        sd = remove_prototypes(sd, clusters=True)
        notes.append("prototype banks removed")
        record = None
    dst = str(args.dst)
    if args.to == "hf" and not dst.endswith((*_TORCH_SUFFIXES, ".safetensors")):
        heads = {"num_heads": args.num_heads} if args.num_heads else {}
        config = infer_config(sd, **{**known, **heads})
        main, extra = hf_folder_tensors(sd)
        save_model_folder(args.dst, main, hf_config(config), extra=extra)
        print(
            f"wrote {dst}/ (transformers model folder: config.json, model.safetensors"
            f"{', posebh extra heads' if extra else ''}; {'; '.join(notes)})"
        )
        return 0
    if args.to == "hf":
        tensors = to_hf(sd)
    elif args.to == "posebh":
        tensors = official_to_posebh(sd)
    else:  # official, or safetensors (official naming)
        tensors = sd
    if args.to == "safetensors" or dst.endswith(".safetensors"):
        save_safetensors(tensors, args.dst, record=record if args.to != "hf" else None)
    elif args.to == "official":
        meta: dict[str, object] = {"posebh_convert": notes}
        save_atomically({"state_dict": tensors, "meta": meta}, args.dst)
    else:
        save_atomically(tensors, args.dst)
    naming = "official" if args.to == "safetensors" else args.to
    print(f"wrote {dst} ({naming} naming; {'; '.join(notes)})")
    return 0


def _parse_overrides(items: Sequence[str]) -> dict[str, object]:
    """``--override key=value`` pairs as a dict (values parsed as ``--set``'s)."""
    return dict(parse_pairs(items, flag="--override", example="depth=2"))


def _cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    from posebh.datasets import DatasetSpec, default_spec
    from posebh.evaluate import default_protocol, evaluate
    from posebh.evaluation.distributed import (
        close_eval_process_group,
        eval_world,
        init_eval_process_group,
    )
    from posebh.skeletons import get_skeleton

    name = get_skeleton(args.dataset).name
    if args.ann_file:
        spec = DatasetSpec(
            name=name,
            ann_file=str(args.ann_file),
            img_prefix=str(args.img_prefix or Path(args.ann_file).parent),
            det_file=str(args.det_file) if args.det_file else None,
            use_gt_bbox=args.det_file is None,
            det_bbox_thr=args.det_bbox_thr,
            camera_file=str(args.camera_file) if args.camera_file else None,
            joint_file=str(args.joint_file) if args.joint_file else None,
            gt_file=str(args.gt_file) if args.gt_file else None,
            split=args.split,
            source="command line",
        )
    else:
        spec = default_spec(name, args.split, args.data_root, use_gt_bbox=args.gt_bbox)
    overrides = {}
    if args.no_flip:
        overrides["flip_test"] = False
    if args.post_process is not None:
        overrides["post_process"] = None if args.post_process == "none" else args.post_process
    if args.udp is not None:
        overrides["use_udp"] = args.udp
    if args.shift is not None:
        overrides["shift_heatmap"] = args.shift
    protocol = default_protocol(name, **overrides)
    model, checkpoint = None, None
    floor: str | DatasetSpec | None = args.mean_pose_floor
    if floor is not None and Path(floor).is_file():
        floor = DatasetSpec(name, floor, spec.img_prefix, use_gt_bbox=True, source="command line")
    if args.gt_as_prediction and floor is not None:
        raise ValueError("pass --gt-as-prediction or --mean-pose-floor, not both")
    if floor is not None:
        checkpoint = f"none: mean pose of {args.mean_pose_floor}"
    elif not args.gt_as_prediction:
        arch = _parse_overrides(args.override)
        if args.checkpoint:
            if args.num_heads:
                arch["num_heads"] = args.num_heads
            model, checkpoint = _load_eval_model(args.checkpoint, args.as_single_dataset, arch)
        elif args.preset:
            from posebh.models import build_model

            torch.manual_seed(args.seed)
            model = build_model(args.preset, **arch)
            checkpoint = f"random init of {args.preset} (seed {args.seed}, overrides {arch})"
        else:
            raise ValueError(
                "pass --checkpoint (or --preset for a random model, or --gt-as-prediction)"
            )
    out_dir = args.out or Path("results") / "eval" / f"{name}_{spec.split or args.split}"
    # Under torchrun (WORLD_SIZE > 1) every rank predicts a shard; rank 0 scores and writes.
    device = init_eval_process_group(args.device)
    rank = eval_world()[0]
    try:
        result = evaluate(
            model,
            spec,
            protocol=protocol,
            head=args.head,
            expert=args.expert,
            batch_size=args.batch_size,
            device=device,
            num_workers=args.workers,
            gt_as_prediction=args.gt_as_prediction,
            mean_pose_from=floor,
            data_root=args.data_root,
            decode_backend=args.decode_backend,
            out_dir=out_dir,
            checkpoint=checkpoint,
            precision=args.precision,
            bootstrap=args.bootstrap,
            bootstrap_seed=args.bootstrap_seed,
            max_instances=args.max_instances,
            submission_only=args.submission_only,
            progress=not args.no_progress and rank == 0,
            log=print if rank == 0 else None,
        )
    finally:
        close_eval_process_group()
    if rank != 0:
        return 0
    print(f"wrote {', '.join(result.files.values())}")
    print(f"protocol: {dataclasses.asdict(protocol)}")
    return 0


def _load_eval_model(
    path: Path, single_dataset: str | None, arch: dict[str, object]
) -> tuple[torch.nn.Module, str]:
    """``--checkpoint`` (with ``--as-single-dataset``: a multi-dataset file split for that
    dataset's expert, as the reproduce harness evaluates release files) and its label."""
    from posebh.checkpoint import load_model, read_checkpoint

    if single_dataset is None:
        return load_model(path, **arch), str(path)
    state = read_checkpoint(path)
    keys = state.get("state_dict", state)
    multi = any(".mlp.experts." in k for k in keys)
    model = load_model(state, dataset=single_dataset if multi else None, **arch)
    return model, str(path)


def _cmd_synth(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from posebh.synth import MANIFEST, generate

    manifest = generate(
        args.out, args.preset, args.seed, progress=True, force=args.force, workers=args.workers
    )
    rows = [
        (d, split, c["images"], c["annotations"], c["instances"])
        for d, per_split in manifest.counts.items()
        for split, c in per_split.items()
    ]
    print(tabulate(rows, headers=["dataset", "split", "images", "annotations", "instances"]))
    state = "cached" if manifest.cached else f"generated in {manifest.wall_time_s:.1f} s"
    print(
        f"SynthPose {manifest.preset} (seed {manifest.seed}, v{manifest.version}) {state}: "
        f"{len(manifest.files)} files under {args.out}; manifest {Path(args.out) / MANIFEST}"
    )
    return 0


def _add_synth(sub: argparse._SubParsersAction) -> None:
    syn = sub.add_parser(
        "synth",
        help="generate SynthPose, the embedded synthetic multi-dataset world",
        description="Render the SynthPose datasets (COCO, COCO-WholeBody, AIC, MPII, OCHuman, "
        "3DPW, AP-10K, APT-36K, InterHand2.6M look-alikes) in their real formats under the "
        "official data/ layout of OUT, with the cross-type ground truth in "
        "OUT/synthpose/cross_gt and a manifest (sha256 of every file). Cached: re-running with "
        "the same preset, seed and generator version returns at once.",
        epilog="example: posebh synth --out data_synth --preset mini && "
        "posebh eval --dataset aic --data-root data_synth --gt-as-prediction",
    )
    syn.add_argument("--out", type=Path, required=True, help="output root (the data/ folder)")
    syn.add_argument(
        "--preset",
        choices=("tiny", "mini", "small", "full"),
        default="mini",
        help="mini: ~1.2k images, < 1 min on 2 cores; small ×5; full ×50; tiny: tests",
    )
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--force", action="store_true", help="regenerate even if cached")
    syn.add_argument("--workers", type=int, default=1, help="processes (same bytes for any number)")
    syn.set_defaults(func=_cmd_synth)


def _cmd_crosstype(args: argparse.Namespace) -> int:
    from posebh.checkpoint import load_model
    from posebh.crosstype import cross_type_eval

    arch = {"num_heads": args.num_heads} if args.num_heads else {}
    model = load_model(args.checkpoint, **arch)

    def names(text: str | None) -> list[str] | None:
        return [x.strip() for x in text.split(",") if x.strip()] if text else None

    result = cross_type_eval(
        model,
        args.data_root,
        heads=names(args.heads),
        datasets=names(args.datasets),
        split=args.split,
        batch_size=args.batch_size,
        route=args.route,
        device=args.device,
        progress=not args.no_progress,
        bootstrap=args.bootstrap,
        bootstrap_seed=args.bootstrap_seed,
    )
    result.meta["checkpoint"] = str(args.checkpoint)
    out = args.out or Path("results") / "crosstype"
    out.mkdir(parents=True, exist_ok=True)
    (out / "crosstype.json").write_text(json.dumps(result.to_dict(), indent=2))
    md = f"# Cross-type matrix — {args.checkpoint} ({args.split}, route {args.route})\n\n"
    (out / "crosstype.md").write_text(md + result.to_markdown())
    print(result.to_markdown())
    print(f"wrote {out / 'crosstype.json'} and {out / 'crosstype.md'}")
    return 0


def _add_crosstype(sub: argparse._SubParsersAction) -> None:
    ct = sub.add_parser(
        "crosstype",
        help="cross-type matrix on SynthPose: each head's keypoints on every dataset's images",
        description="For every head d and image set e whose SynthPose cross-type ground truth "
        "exists (human skeletons on human images, quadruped on animal), run head d on e's val "
        "instances (GT boxes) and score d's keypoints under d's official protocol (OKS AP "
        "with d's sigmas, WholeBody AP, MPII PCKh). Writes crosstype.json and crosstype.md.",
        epilog="example: posebh crosstype --checkpoint work/posebh/final.pth --data-root "
        "data_synth --out results/crosstype",
    )
    ct.add_argument("--checkpoint", type=Path, required=True, help="final.pth or model.pth")
    ct.add_argument("--data-root", type=Path, required=True, help="a `posebh synth` tree")
    ct.add_argument("--out", type=Path, default=None, help="default results/crosstype")
    ct.add_argument("--heads", default=None, help="comma-separated head datasets (rows)")
    ct.add_argument("--datasets", default=None, help="comma-separated image sets (columns)")
    ct.add_argument("--split", default="val", choices=("train", "val", "test"))
    ct.add_argument(
        "--route",
        default="head",
        choices=("head", "image"),
        help="backbone expert: the head's dataset (default) or the image's",
    )
    ct.add_argument("--num-heads", type=int, default=None, help="attention heads (odd widths)")
    ct.add_argument("--batch-size", type=int, default=64)
    ct.add_argument("--device", default="cpu")
    ct.add_argument("--no-progress", action="store_true")
    add_bootstrap_arguments(ct, "each cell's 95 %% interval")
    ct.set_defaults(func=_cmd_crosstype)


def _cmd_bench(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from posebh.bench import markdown_table, run_benchmarks, write_report

    out = args.out or Path("results") / "bench" / datetime.now(timezone.utc).strftime(
        "%Y%m%dT%H%M%SZ"
    )
    report = run_benchmarks(
        out, select=args.k, benchmarks_dir=args.benchmarks, disable=args.disable
    )
    files = write_report(report, out)
    print(f"\n{report.source_line()}\n")
    print(markdown_table(report))
    print(f"\nwrote {', '.join(str(path) for path in files.values())}")
    return 0 if report.returncode in (0, None) else int(report.returncode)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="run the benchmarks in benchmarks/ and write a report (JSON, Markdown, plot)",
        description="Run the pytest-benchmark suites of the checkout's benchmarks/ folder in a "
        "subprocess, then write OUT/bench.json (rows + commit, CPU, threads, versions), "
        "OUT/bench.md (the table printed here) and OUT/bench.png (speed-up vs the reference "
        "per case and backend, with the issue's targets), beside pytest-benchmark's own JSON.",
        epilog='example: posebh bench -k "decode or similarity" --out results/bench/today',
    )
    bench.add_argument(
        "--out", type=Path, default=None, help="default results/bench/<UTC timestamp>"
    )
    bench.add_argument("-k", default=None, metavar="EXPR", help="pytest -k selection")
    bench.add_argument(
        "--benchmarks",
        type=Path,
        default=None,
        metavar="DIR",
        help="the benchmarks folder (default: benchmarks/ of the checkout posebh runs from)",
    )
    bench.add_argument(
        "--disable",
        action="store_true",
        help="--benchmark-disable: run each benchmark once, untimed (smoke)",
    )
    bench.set_defaults(func=_cmd_bench)


def _cmd_visualize(args: argparse.Namespace) -> int:
    from posebh.checkpoint import load_model
    from posebh.skeletons import get_skeleton
    from posebh.visualize import visualize_predictions, visualize_prototypes

    if args.checkpoint is None and not args.gt:
        raise ValueError(
            "pass --checkpoint CKPT to draw a model's predictions, or --gt to draw the "
            "annotations (no checkpoint needed)"
        )
    name = get_skeleton(args.dataset).name
    dataset: object = name
    if args.ann_file:
        from posebh.datasets import DatasetSpec

        dataset = DatasetSpec(
            name=name,
            ann_file=str(args.ann_file),
            img_prefix=str(args.img_prefix or Path(args.ann_file).parent),
            split=args.split,
            source="command line",
        )
    out = args.out or Path("results") / "visualize" / f"{name}_{args.split}"
    arch = {"num_heads": args.num_heads} if args.num_heads is not None else {}
    model = load_model(args.checkpoint, **arch) if args.checkpoint else None
    written = [
        visualize_predictions(
            dataset,
            out,
            model=model,
            data_root=args.data_root,
            split=args.split,
            num_images=args.num_images,
            gt=args.gt,
            device=args.device,
            score_thr=args.score_thr,
            log=print,
        )
    ]
    if model is not None:
        if getattr(model, "keypoint_prototypes", None) is not None:
            written += visualize_prototypes(model, out, source=str(args.checkpoint))
        else:
            print(f"{args.checkpoint} has no keypoint prototypes: no prototype_similarity.*")
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


def _add_visualize(sub: argparse._SubParsersAction) -> None:
    vis = sub.add_parser(
        "visualize",
        help="draw predicted (or ground-truth) keypoints on images; prototype similarity",
        description="Draw keypoints on the first N images of a split: a checkpoint's "
        "predictions (ground-truth boxes, the dataset's official evaluation protocol, as "
        "posebh eval) or, with --gt, the annotations. Writes OUT/overlays_<dataset>.png and, "
        "when the checkpoint has keypoint prototypes, OUT/prototype_similarity.png and "
        "OUT/prototype_similarity.json (class-to-class max |cos| and its per-dataset summary).",
        epilog="example: posebh visualize --dataset coco --data-root data_synth "
        "--checkpoint work/posebh/final.pth --num-images 6",
    )
    vis.add_argument(
        "--dataset",
        required=True,
        help="coco, aic, mpii, ap10k, apt36k, coco_wholebody, ochuman, interhand2d or pw3d",
    )
    vis.add_argument("--split", default="val", choices=("train", "val", "test"))
    vis.add_argument("--data-root", type=Path, default=Path("data"))
    vis.add_argument("--ann-file", type=Path, default=None, help="instead of the layout")
    vis.add_argument("--img-prefix", type=Path, default=None)
    vis.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="posebh train final.pth / model.pth, or an official checkpoint",
    )
    vis.add_argument("--num-heads", type=int, default=None, help="for a non-preset width")
    vis.add_argument("--gt", action="store_true", help="draw the ground truth instead")
    vis.add_argument("--num-images", type=int, default=6)
    vis.add_argument("--score-thr", type=float, default=0.3, help="hide keypoints scoring below")
    vis.add_argument("--device", default="cpu")
    vis.add_argument(
        "--out", type=Path, default=None, help="default results/visualize/<dataset>_<split>"
    )
    vis.set_defaults(func=_cmd_visualize)


def build_parser(progs: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The ``posebh`` parser with every sub-command.  ``progs`` renames sub-commands' usage
    lines for the scripts that run them (``{"reproduce table1": "reproduce/table1.py"}``)."""
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

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on one dataset under the official protocol",
        description="Top-down evaluation: boxes → crops → model (flip test) → decode → "
        "rescoring + OKS-NMS → metric (OKS AP, WholeBody per part, MPII PCKh, InterHand "
        "PCK/AUC/EPE). Decode and flip settings default to the dataset's official evaluation "
        "config (PROTOCOL.md §6). Writes metrics.json, metrics.md and predictions.json.",
        epilog="The dataset layout under --data-root follows the official data/ tree "
        "(e.g. data/coco/annotations/person_keypoints_val2017.json); --ann-file and "
        "--img-prefix point at any other file.",
    )
    ev.add_argument(
        "--dataset",
        required=True,
        help="coco, aic, mpii, ap10k, apt36k, coco_wholebody, ochuman, interhand2d or pw3d",
    )
    ev.add_argument("--split", default="val", choices=("train", "val", "test", "test-dev"))
    ev.add_argument("--data-root", type=Path, default=Path("data"))
    ev.add_argument("--ann-file", type=Path, default=None, help="instead of the layout")
    ev.add_argument("--img-prefix", type=Path, default=None)
    ev.add_argument(
        "--det-file",
        type=Path,
        default=None,
        help="person detections (COCO results format); default: GT boxes",
    )
    ev.add_argument("--det-bbox-thr", type=float, default=0.0)
    ev.add_argument(
        "--gt-bbox",
        dest="gt_bbox",
        action="store_true",
        default=None,
        help="GT boxes instead of detections",
    )
    ev.add_argument(
        "--det-bbox",
        dest="gt_bbox",
        action="store_false",
        help="the layout's detection boxes (the default where the official config has them)",
    )
    ev.add_argument("--camera-file", type=Path, default=None, help="InterHand2.6M")
    ev.add_argument("--joint-file", type=Path, default=None, help="InterHand2.6M")
    ev.add_argument("--gt-file", type=Path, default=None, help="MPII mpii_gt_val.mat")
    ev.add_argument("--checkpoint", type=Path, default=None)
    ev.add_argument("--preset", default=None, help="a random model of this preset (testing)")
    ev.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model config override (with --preset or --checkpoint)",
    )
    ev.add_argument("--num-heads", type=int, default=None)
    ev.add_argument(
        "--as-single-dataset",
        metavar="DATASET",
        default=None,
        help="load a multi-dataset --checkpoint as DATASET's single-head model (its expert "
        "merged, as posebh reproduce does); a single-dataset checkpoint loads as it is",
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--head", type=int, default=None, help="heatmap head (default: dataset's)")
    ev.add_argument("--expert", type=int, default=None, help="backbone expert (default: head)")
    ev.add_argument("--no-flip", action="store_true", help="disable the flip test")
    ev.add_argument(
        "--post-process", choices=("default", "unbiased", "megvii", "none"), default=None
    )
    ev.add_argument("--udp", dest="udp", action="store_true", default=None)
    ev.add_argument("--no-udp", dest="udp", action="store_false")
    ev.add_argument("--shift", dest="shift", action="store_true", default=None)
    ev.add_argument("--no-shift", dest="shift", action="store_false")
    ev.add_argument(
        "--decode-backend",
        default="auto",
        choices=("auto", "cpp", "cuda", "triton", "torch"),
        help="heatmap decoding implementation; torch = the NumPy reference (debugging)",
    )
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda; under torchrun --nproc_per_node N each rank takes cuda:LOCAL_RANK "
        "(NCCL; gloo on cpu), predicts a shard and rank 0 writes the results",
    )
    ev.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="forward pass under torch.autocast in bf16/fp16 (decode stays fp32); default "
        "fp32, the exact path",
    )
    add_bootstrap_arguments(ev, "every metric's 95 %% interval (metrics.json's ci95)")
    ev.add_argument(
        "--max-instances",
        type=int,
        default=None,
        metavar="N",
        help="evaluate the first N instances (file order) against their images' GT only",
    )
    ev.add_argument(
        "--submission-only",
        action="store_true",
        help="no metrics: predictions.json is the server submission (COCO test-dev)",
    )
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader worker processes (default: one per core, at most 8; 0 = in-process)",
    )
    ev.add_argument(
        "--gt-as-prediction",
        action="store_true",
        help="feed the ground truth back as predictions (checks readers + metrics)",
    )
    ev.add_argument(
        "--mean-pose-floor",
        metavar="SPLIT_OR_JSON",
        default=None,
        help="no model: predict the mean pose of this split (e.g. train) or annotation file "
        "in every box; the floor a trained model must clear",
    )
    ev.add_argument("--out", type=Path, default=None, help="default results/eval/<dataset>_<split>")
    ev.set_defaults(func=_cmd_eval)

    conv = sub.add_parser(
        "convert",
        help="convert between official (mmcv), posebh and Hugging Face namings; split or "
        "strip prototypes",
        description="Read SRC (a .pth, a .safetensors file or a transformers model folder, in "
        "official, posebh or transformers naming), optionally split it for "
        "one dataset (the official tools/model_split.py, without its leftover tensors) and/or "
        "remove the prototype banks (tools/remove_proto.py), and write DST.",
    )
    conv.add_argument("src", type=Path)
    conv.add_argument("dst", type=Path)
    conv.add_argument(
        "--to",
        choices=("official", "posebh", "hf", "safetensors"),
        default="official",
        help="naming of DST; hf with a DST folder writes a transformers model folder "
        "(config.json + model.safetensors, loadable by VitPoseForPoseEstimation."
        "from_pretrained); safetensors: official naming in a .safetensors file (any DST "
        "ending in .safetensors is written as safetensors)",
    )
    conv.add_argument(
        "--from-hf",
        action="store_true",
        help="SRC uses transformers' naming (detected anyway; kept for old scripts)",
    )
    conv.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="attention heads, needed only for --to hf from a non-preset width",
    )
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
    train.add_parser(sub)
    _add_synth(sub)
    _add_crosstype(sub)
    _add_visualize(sub)
    _add_bench(sub)
    reproduce.add_parser(sub, progs or {})
    regression.add_parser(sub)
    compare.add_parser(sub)
    export.add_parser(sub)
    infer.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run ``posebh ARGV``; the exit status.  ``prog``: the script name that runs the
    sub-command ``argv`` starts with (``reproduce/table1.py`` for ``reproduce table1``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    progs = {" ".join(argv[:2]): prog} if prog else None
    args = build_parser(progs).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # Our errors carry their own explanation; a traceback adds nothing for a CLI user.
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"posebh {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
