"""The self-check's driver: which sections run where, with what sizes, in what time."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from posebh.selfcheck.environment import describe_machine
from posebh.selfcheck.report import FAIL, PASS, SKIP, Check, Report, guarded

__all__ = ["SelfcheckOptions", "main", "run_selfcheck"]

#: The toy model of ``--smoke`` runs (two narrow layers).
SMOKE_MODEL = dict(embed_dim=32, depth=2, num_heads=2, part_features=8, head_filters=16,
                   proto_channels=8, proto_dim=8, drop_path_rate=0.0)  # fmt: skip
SECTIONS = ("build", "compile", "ops", "timing", "golden", "eval", "train", "compile_model")


@dataclass(frozen=True)
class SelfcheckOptions:
    """What to run. The GPU defaults are the issue's: base preset, batch 64, 30 bf16 steps."""

    device: str = "cuda"
    out: Path = Path("results/selfcheck")
    shared: Path | None = None  # the shared data folder (default: POSEBH_SHARED or ../shared)
    sections: tuple[str, ...] = SECTIONS
    smoke: bool = False  # toy sizes on the CPU: tests the script itself
    budget_s: float = 450.0  # sections that would start after this are skipped, with a note
    train_preset: str = "posebh_vit_base"
    train_batch: int = 64
    train_steps: int = 30
    train_precision: str = "bf16"
    compile_batch: int = 32
    compile_records: Path | None = None  # a compile check's JSON (--out), reported as it is


def _shared_root(given: Path | None) -> Path:
    if given is not None:
        return given
    env = os.environ.get("POSEBH_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


def _compile_records(targets: Sequence[str], reuse: Path | None) -> list:
    from posebh.ops.compile_check import CompileRecord, run_compile_check

    if reuse is None:
        return run_compile_check(targets=list(targets), include_cuda=True, progress=None)
    saved = json.loads(reuse.read_text())
    records = [CompileRecord(**r) for r in saved]
    return [r for r in records if r.target in targets]


def _compile_section(targets: Sequence[str], reuse: Path | None = None) -> Iterable[Check]:
    records = _compile_records(targets, reuse)
    by_kernel: dict[tuple[str, str], list] = {}
    for r in records:
        by_kernel.setdefault((r.kernel, r.target), []).append(r)
    for (kernel, target), rs in by_kernel.items():
        bad = [r for r in rs if not r.skipped and not r.passed]
        known = [r for r in rs if r.known_spill]
        skipped = all(r.skipped for r in rs)
        status = SKIP if skipped else FAIL if bad else PASS
        figures = {
            "configurations": len(rs),
            "max_registers": max((r.registers or 0) for r in rs),
            "max_shared_bytes": max((r.shared_bytes or 0) for r in rs),
            "spills": sum((r.spills or 0) for r in rs),
        }
        detail = "; ".join(f"{r.config}: {r.error or f'{r.spills} B spilled'}" for r in bad[:5])
        if skipped:
            detail = rs[0].error or "skipped"
        elif known and not bad:
            detail = f"{len(known)} known spill(s), an open finding (compile_check.KNOWN_SPILLS)"
        rule = "compiles, no spills (outside KNOWN_SPILLS)"
        yield Check("compile", f"{kernel} @ {target}", status, rule, figures, detail)


def _build_section() -> Iterable[Check]:
    from posebh.ops import build_extensions

    for name, st in build_extensions(verbose=False).items():
        ok = st.status == "loaded"
        yield Check("build", f"extension {name}", PASS if ok else FAIL, "builds and loads",
                    {"seconds": st.seconds}, st.reason if not ok else "")  # fmt: skip


def run_selfcheck(options: SelfcheckOptions, echo: Callable[[str], None] | None = print) -> Report:
    """Run the sections ``options`` asks for; returns the report (also written to disk)."""
    o = options
    start = time.perf_counter()
    gpu = o.device.startswith("cuda") and torch.cuda.is_available()
    report = Report(machine=describe_machine(o.device))
    shared = _shared_root(o.shared)
    if o.device.startswith("cuda") and not gpu:
        report.notes.append(
            "no GPU found (torch.cuda.is_available() is False): only the compile check ran, "
            "for sm_80 and sm_90"
        )
        sections: tuple[str, ...] = tuple(s for s in o.sections if s == "compile")
    elif not gpu and not o.smoke:
        report.notes.append(f"--device {o.device} without --smoke: only the compile check ran")
        sections = tuple(s for s in o.sections if s == "compile")
    else:
        sections = o.sections
    if gpu:
        major, minor = torch.cuda.get_device_capability(torch.device(o.device))
        targets = [f"cuda:{major * 10 + minor}"]
    else:
        targets = ["cuda:80", "cuda:90"]
    backends = ["triton", "cuda"] if gpu else ["cpp"]
    rates: dict[str, float] = {}

    def timing() -> Iterable[Check]:
        from posebh.selfcheck.timings import rates_check, timing_checks

        measured, check = rates_check(o.device)
        rates.update(measured)
        yield check
        yield from timing_checks(o.device, backends, rates)

    def ops_section() -> Iterable[Check]:
        from posebh.ops.extensions import kernels_module
        from posebh.selfcheck.op_checks import decode_checks, similarity_checks

        limits = kernels_module("limits")
        for b in backends:
            yield from similarity_checks(o.device, b)
            max_kernel = {"cuda": limits.DECODE_CUDA_MAX_KERNEL,
                          "triton": limits.DECODE_TRITON_MAX_KERNEL}.get(
                              b, limits.DECODE_CPP_MAX_KERNEL)  # fmt: skip
            yield from decode_checks(o.device, b, max_kernel)

    def train() -> Iterable[Check]:
        from posebh.selfcheck.model_checks import train_checks

        if o.smoke:
            return train_checks(o.device, "posebh_tiny_synth", 2, 2, o.train_precision, None)
        return train_checks(o.device, o.train_preset, o.train_batch, o.train_steps,
                            o.train_precision, rates.get("matmul_bf16_TFLOPs"))  # fmt: skip

    def compile_model() -> Iterable[Check]:
        from posebh.selfcheck.model_checks import compile_checks

        if o.smoke:
            return compile_checks(o.device, "posebh_vit_base", 2, **SMOKE_MODEL)
        return compile_checks(o.device, o.train_preset, o.compile_batch)

    def golden() -> Iterable[Check]:
        from posebh.selfcheck.model_checks import golden_checks

        return golden_checks(o.device, shared)

    def evaluation() -> Iterable[Check]:
        from posebh.selfcheck.model_checks import eval_checks

        return eval_checks(o.device, shared)

    runners: dict[str, Callable[[], Iterable[Check]]] = {
        "build": _build_section,
        "compile": lambda: _compile_section(targets, o.compile_records),
        "ops": ops_section,
        "timing": timing if gpu else lambda: [Check("timing", "do_bench", SKIP, detail="no GPU")],
        "golden": golden,
        "eval": evaluation,
        "train": train,
        "compile_model": compile_model,
    }
    for section in sections:
        elapsed = time.perf_counter() - start
        if elapsed > o.budget_s:
            report.add([Check(section, section, SKIP, detail=f"out of time budget "
                              f"({elapsed:.0f} s > {o.budget_s:.0f} s)")], echo=echo)  # fmt: skip
            continue
        if echo:
            echo(f"-- {section} ({elapsed:.0f} s)")
        report.add(guarded(section, section, runners[section]), echo=echo)
        report.write(o.out)  # after each section: a timeout still leaves a report
    files = report.write(o.out)
    if echo:
        counts = report.counts()
        echo(f"self-check: {counts} in {time.perf_counter() - start:.0f} s -> {files['md']}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m posebh.selfcheck",
        description="Check posebh on a GPU machine: kernels, ops, timings, evaluation, "
        "training, torch.compile. Writes DIR/report.json and DIR/report.md.",
    )
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument(
        "--shared",
        type=Path,
        default=None,
        help="shared data folder (default: $POSEBH_SHARED or ../shared)",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)}",
    )
    p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (tests the script)")
    p.add_argument(
        "--compile-records",
        type=Path,
        default=None,
        help="the JSON of an earlier `python -m posebh.ops.compile_check --out FILE` run: "
        "reported instead of compiling again",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=450.0,
        help="skip sections that would start after this many seconds",
    )
    args = p.parse_args(argv)
    sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        p.error(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    options = SelfcheckOptions(
        device=args.device,
        out=args.out,
        shared=args.shared,
        sections=sections,
        smoke=args.smoke,
        budget_s=args.budget_s,
        compile_records=args.compile_records,
    )
    report = run_selfcheck(options)
    return 1 if report.failed else 0
