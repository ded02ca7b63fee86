"""Run the pytest-benchmark suites in ``benchmarks/`` and turn their JSON into a report.

``posebh bench`` (and ``nox -s bench``) call :func:`run_benchmarks` then :func:`write_report`:

- ``pytest-benchmark.json``: pytest-benchmark's own output, untouched;
- ``pytest-session.json``: every selected test's outcome (skip reasons included) and its
  parameters, recorded by the small pytest plugin at the end of this module, because
  pytest-benchmark leaves skipped tests out of its JSON;
- ``bench.json``: one row per benchmark (times in ms, speed-up vs the reference of the same
  case, peak memory, throughput) plus provenance (commit, CPU, threads, library versions, date,
  command);
- ``bench.md``: the same rows as a GitHub table, headed by where the numbers come from;
- ``bench.png``: speed-up vs reference per case and backend (log axis), with the targets of
  :data:`SPEEDUP_TARGETS` drawn where they apply.

The benchmarks ship with the source tree, not with the wheel, so this works from a clone
(``pip install -e .``) or with an explicit benchmarks folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "MEMORY_TARGETS",
    "REFERENCE_BACKENDS",
    "SPEEDUP_TARGETS",
    "TARGETS_SOURCE",
    "TARGET_SOURCES",
    "BenchReport",
    "BenchRow",
    "build_report",
    "find_benchmarks_dir",
    "markdown_table",
    "run_benchmarks",
    "target_source",
    "write_report",
]

#: Speed-up over the reference that the fused backends must reach, per (suite, case).
SPEEDUP_TARGETS: dict[tuple[str, str], float] = {
    ("similarity", "all"): 2.0,  # prototype similarity, all 214 classes
    ("decode", "wholebody_udp"): 20.0,  # DARK-UDP decode, COCO-WholeBody 64×133×64×48
    # The CPU data path at COCO size (benchmarks/test_bench_scale.py): posebh vs the
    # mmpose-0.x-style OpenCV pipeline / pycocotools, per core.
    ("scale", "train_pipeline"): 1.0,
    ("scale", "eval_pipeline"): 5.0,
    ("readers", "keypoints_train"): 1.0,  # test_bench_readers.py, the 150,000-person file
    # The C++ warp within 2× of cv2.warpAffine, in both OpenCV arithmetics.
    ("warp", "fixed"): 0.5,
    ("warp", "float"): 0.5,
}
#: Peak memory a backend may use, as a multiple of its reference's peak, per (suite, case).
MEMORY_TARGETS: dict[tuple[str, str], float] = {
    ("readers", "keypoints_train"): 1.2,
    # 1,000 paired bootstrap resamples at COCO-val size vs one plain COCOeval (whole path).
    ("bootstrap", "paired_1000"): 1.5,
}
#: Where :data:`SPEEDUP_TARGETS` come from (cases not listed in :data:`TARGET_SOURCES`).
TARGETS_SOURCE = "issue 4"
#: The issue that set each target other than :data:`TARGETS_SOURCE`'s.
TARGET_SOURCES: dict[tuple[str, str], str] = {
    key: "issue 15"
    for key in [*MEMORY_TARGETS, *SPEEDUP_TARGETS]
    if key[0] in ("scale", "warp", "readers")
} | {("bootstrap", "paired_1000"): "issue 17"}


def _target_entry(suite: str, case: str) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if (suite, case) in SPEEDUP_TARGETS:
        entry["speedup"] = SPEEDUP_TARGETS[suite, case]
    if (suite, case) in MEMORY_TARGETS:
        entry["peak_memory_ratio"] = MEMORY_TARGETS[suite, case]
    return entry | {"source": target_source(suite, case)}


def target_source(suite: str, case: str) -> str:
    """The issue that set the targets of (suite, case)."""
    return TARGET_SOURCES.get((suite, case), TARGETS_SOURCE)


#: Backend names (before any ``@device``) that time the reference implementation itself.
REFERENCE_BACKENDS = ("reference", "torch")
#: Backends timed for the record beside the reference (the code a fused backend replaced:
#: the NumPy warp, the per-record reader): they get a ratio but no target.
BASELINE_BACKENDS = ("numpy", "per_record")

BENCHMARK_JSON = "pytest-benchmark.json"
SESSION_JSON = "pytest-session.json"
_SESSION_OPTION = "--posebh-session-json"
_TEST_PREFIX = "test_bench_"

# extra_info keys the benchmark modules use for the same quantity.
_RATIO_KEYS = ("ratio_vs_reference", "speedup_vs_reference")
_PEAK_KEYS = ("peak_extra_mb", "peak_mb")


@dataclass
class BenchRow:
    """One benchmark (one test id): what ran, how long it took, against what."""

    suite: str  # benchmark module without ``test_bench_``: similarity, decode, model, …
    case: str  # the ``case`` parameter, else the test name without ``test_bench_``
    backend: str | None
    name: str  # pytest's test name, e.g. ``test_bench_decode[coco_udp-cpp]``
    nodeid: str = ""  # pytest's full id: benchmarks/test_bench_decode.py::test_bench_decode[…]
    group: str | None = None
    status: str = "timed"  # timed | not timed (benchmarks disabled) | skipped | failed
    reason: str | None = None  # why it was skipped or failed
    min_ms: float | None = None
    median_ms: float | None = None
    rounds: int | None = None
    is_reference: bool = False
    ratio_vs_reference: float | None = None  # reference time / this time (min vs min)
    ratio_source: str | None = None  # "extra_info" (measured by the test) or "computed"
    target: float | None = None  # SPEEDUP_TARGETS entry, for the fused backends
    meets_target: bool | None = None
    peak_mb: float | None = None
    memory_ratio: float | None = None  # this peak / the reference's peak (same suite, case)
    memory_target: float | None = None  # MEMORY_TARGETS entry
    meets_memory_target: bool | None = None
    images_per_s: float | None = None
    instances_per_s: float | None = None

    @property
    def label(self) -> str:
        return f"{self.suite}/{self.case}"


@dataclass
class BenchReport:
    """Rows plus the provenance needed to read them later (what machine, what code)."""

    rows: list[BenchRow]
    machine: dict[str, Any] = field(default_factory=dict)  # cpu, cores, threads, node, system
    commit: dict[str, Any] = field(default_factory=dict)  # id, dirty, branch
    versions: dict[str, str | None] = field(default_factory=dict)
    date: str | None = None
    command: list[str] | None = None
    returncode: int | None = None  # pytest's exit status (None: report built from a file)

    @property
    def timed(self) -> bool:
        """Whether any benchmark carries timings (False for a ``--benchmark-disable`` run)."""
        return any(row.min_ms is not None for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source_line(),
            "machine": self.machine,
            "commit": self.commit,
            "versions": self.versions,
            "date": self.date,
            "command": self.command,
            "pytest_returncode": self.returncode,
            "timed": self.timed,
            "targets": {
                f"{suite}/{case}": _target_entry(suite, case)
                for suite, case in dict.fromkeys([*SPEEDUP_TARGETS, *MEMORY_TARGETS])
            },
            "rows": [dataclasses.asdict(row) for row in self.rows],
        }

    def source_line(self) -> str:
        """ "our measurement on <cpu>, <n> threads, commit <sha>": where the numbers come from."""
        cpu = self.machine.get("cpu") or "an unknown CPU"
        cores = self.machine.get("cores")
        threads = self.machine.get("threads")
        sha = (self.commit.get("id") or "unknown")[:12]
        dirty = " (uncommitted changes)" if self.commit.get("dirty") else ""
        return (
            f"our measurement on {cpu}"
            + (f" ({cores} cores)" if cores else "")
            + f", {threads if threads else '?'} threads, commit {sha}{dirty}"
        )


# ------------------------------------------------------------------------------------------
# Locating and running the benchmarks
# ------------------------------------------------------------------------------------------


def find_benchmarks_dir() -> Path:
    """The ``benchmarks/`` folder of the checkout this ``posebh`` was imported from.

    It is not installed with the package, so only a source or editable checkout has it.
    """
    import posebh

    root = Path(posebh.__file__).resolve().parent.parent
    candidate = root / "benchmarks"
    if candidate.is_dir() and any(candidate.glob(f"{_TEST_PREFIX}*.py")):
        return candidate
    raise FileNotFoundError(
        f"no benchmarks/ folder with {_TEST_PREFIX}*.py next to the posebh package ({root}): "
        "the benchmarks ship with the source tree, not the installed package; run from a clone "
        "(pip install -e .) or pass --benchmarks DIR"
    )


def run_benchmarks(
    out_dir: str | os.PathLike,
    *,
    select: str | None = None,
    benchmarks_dir: str | os.PathLike | None = None,
    disable: bool = False,
    extra_pytest_args: Sequence[str] = (),
) -> BenchReport:
    """Run pytest on the benchmarks in a subprocess (a clean interpreter, so the thread pinning
    of ``benchmarks/conftest.py`` and the extension builds do not leak into the caller) and build
    the report from what it wrote into ``out_dir``.

    ``select`` is a pytest ``-k`` expression; ``disable`` passes ``--benchmark-disable`` (every
    benchmark runs once, untimed: the smoke run). A selection that matches nothing or a pytest
    usage error raises ``ValueError``; failing benchmarks are reported as rows with status
    ``failed`` and in :attr:`BenchReport.returncode`.
    """
    bench_dir = Path(benchmarks_dir) if benchmarks_dir is not None else find_benchmarks_dir()
    bench_dir = bench_dir.resolve()
    if not bench_dir.is_dir():
        raise FileNotFoundError(f"benchmarks folder {bench_dir} does not exist")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    benchmark_json, session_json = out / BENCHMARK_JSON, out / SESSION_JSON
    for stale in (benchmark_json, session_json):
        stale.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(bench_dir),
        "-p",
        __name__,  # this module is also the plugin that records outcomes (see below)
        f"{_SESSION_OPTION}={session_json}",
        f"--benchmark-json={benchmark_json}",
        *(["-k", select] if select else []),
        *(["--benchmark-disable"] if disable else []),
        *extra_pytest_args,
    ]
    # From the checkout's root, so its pytest configuration applies as in `pytest benchmarks`.
    done = subprocess.run(command, cwd=bench_dir.parent, check=False)
    if done.returncode == 5:
        raise ValueError(f"no benchmark in {bench_dir} matches -k {select!r}")
    if done.returncode not in (0, 1):
        raise ValueError(
            f"pytest exited with status {done.returncode} (interrupted, internal or usage "
            f"error; see its output above; the benchmarks need pytest-benchmark from "
            f"pip install -e '.[dev]'): {shlex.join(command)}"
        )
    data = _read_json(benchmark_json)  # empty when the benchmarks were disabled
    session = _read_json(session_json)
    data.setdefault("machine_info", {}).setdefault("node", platform.node())
    data["machine_info"].setdefault("cpu", {"brand_raw": _cpu_name(), "count": os.cpu_count()})
    if not data.get("commit_info"):
        data["commit_info"] = _local_commit(bench_dir.parent)
    data.setdefault("datetime", datetime.now(timezone.utc).isoformat())
    report = build_report(data, session.get("tests", ()), torch_threads=session.get("threads"))
    report.command = ["python", *command[1:]]
    report.returncode = done.returncode
    return report


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file() or not path.read_text().strip():
        return {}
    return json.loads(path.read_text())


def _cpu_name() -> str | None:
    from posebh.evaluation import cpu_name

    return cpu_name()


def _local_commit(repo: Path) -> dict[str, Any]:
    """pytest-benchmark's ``commit_info`` shape, for runs where it wrote no JSON."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "id": git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
    }


# ------------------------------------------------------------------------------------------
# Building the report (pure)
# ------------------------------------------------------------------------------------------


def build_report(
    pytest_benchmark_json: Mapping[str, Any],
    outcomes: Sequence[Mapping[str, Any]] = (),
    *,
    torch_threads: int | None = None,
    versions: Mapping[str, str | None] | None = None,
) -> BenchReport:
    """Rows and provenance from a pytest-benchmark JSON document.

    ``outcomes`` (the ``tests`` of ``pytest-session.json``: ``nodeid``, ``name``, ``outcome``,
    ``reason``, ``params``, ``group``) adds the tests pytest-benchmark leaves out of its JSON:
    skipped backends, failures, and every test of a ``--benchmark-disable`` run. The ratio to
    the reference is the test's own (measured in the same test) when it recorded one, else the
    reference row of the same suite and case divided by this row (min / min). ``versions``
    defaults to :func:`posebh.evaluation.library_versions` of this interpreter.
    """
    rows: list[BenchRow] = []
    seen: set[str] = set()
    outcome_by_id = {o["nodeid"]: o for o in outcomes if "nodeid" in o}
    run_order = {nodeid: i for i, nodeid in enumerate(outcome_by_id)}
    for bench in pytest_benchmark_json.get("benchmarks", ()):
        row = _row_from_benchmark(bench)
        outcome = outcome_by_id.get(bench.get("fullname", ""))
        if outcome is not None and outcome.get("outcome") == "failed":
            row.status, row.reason = "failed", outcome.get("reason")
        rows.append(row)
        seen.add(bench.get("fullname", ""))
    for outcome in outcomes:
        if outcome.get("nodeid") not in seen:
            rows.append(_row_from_outcome(outcome))
    _fill_ratios(rows)
    # Cases in the order they ran (outcomes are in run order), the reference first in each.
    first_seen: dict[tuple[str, str], int] = {}
    for row in sorted(rows, key=lambda r: run_order.get(r.nodeid, len(run_order))):
        first_seen.setdefault((row.suite, row.case), len(first_seen))
    rows.sort(key=lambda r: (first_seen[(r.suite, r.case)], not r.is_reference, r.backend or ""))

    machine_info = pytest_benchmark_json.get("machine_info") or {}
    cpu = machine_info.get("cpu") or {}
    threads = torch_threads or next(
        (
            b["extra_info"]["threads"]
            for b in pytest_benchmark_json.get("benchmarks", ())
            if b.get("extra_info", {}).get("threads")
        ),
        None,
    )
    machine = {
        "cpu": cpu.get("brand_raw") or machine_info.get("processor") or None,
        "cores": cpu.get("count"),
        "threads": threads,
        "arch": cpu.get("arch") or machine_info.get("machine"),
        "node": machine_info.get("node"),
        "system": " ".join(
            str(machine_info[k]) for k in ("system", "release") if machine_info.get(k)
        )
        or None,
        "python": machine_info.get("python_version"),
    }
    commit_info = pytest_benchmark_json.get("commit_info") or {}
    commit = {k: commit_info.get(k) for k in ("id", "dirty", "branch", "time")}
    if versions is None:
        from posebh.evaluation import library_versions

        versions = library_versions("torch", "triton", "pytest-benchmark", "matplotlib")
    return BenchReport(
        rows=rows,
        machine=machine,
        commit=commit,
        versions=dict(versions),
        date=pytest_benchmark_json.get("datetime"),
    )


def _suite_of(nodeid: str) -> str:
    stem = Path(nodeid.split("::", 1)[0]).stem
    return stem.removeprefix(_TEST_PREFIX)


def _function_of(name: str) -> str:
    return name.split("[", 1)[0].removeprefix(_TEST_PREFIX)


def _is_reference(backend: str | None) -> bool:
    return backend is not None and backend.split("@", 1)[0] in REFERENCE_BACKENDS


def _is_baseline(backend: str | None) -> bool:
    return backend is not None and backend.split("@", 1)[0] in BASELINE_BACKENDS


def _first(info: Mapping[str, Any], keys: Sequence[str]) -> Any:
    return next((info[k] for k in keys if info.get(k) is not None), None)


def _row_from_benchmark(bench: Mapping[str, Any]) -> BenchRow:
    params = bench.get("params") or {}
    info = bench.get("extra_info") or {}
    stats = bench.get("stats") or {}
    name = bench.get("name", "")
    backend = info.get("backend") or params.get("backend")
    row = BenchRow(
        suite=_suite_of(bench.get("fullname", name)),
        case=str(params.get("case") or info.get("case") or _function_of(name)),
        backend=str(backend) if backend is not None else None,
        name=name,
        nodeid=bench.get("fullname", ""),
        group=bench.get("group"),
        is_reference=_is_reference(backend),
        peak_mb=_first(info, _PEAK_KEYS),
        images_per_s=info.get("images_per_s"),
        instances_per_s=info.get("instances_per_s"),
    )
    if stats.get("min") is None:
        row.status = "not timed"
        return row
    row.min_ms = stats["min"] * 1e3
    row.median_ms = stats["median"] * 1e3
    row.rounds = stats.get("rounds")
    ratio = _first(info, _RATIO_KEYS)
    if ratio is not None:
        row.ratio_vs_reference, row.ratio_source = float(ratio), "extra_info"
    return row


def _row_from_outcome(outcome: Mapping[str, Any]) -> BenchRow:
    params = outcome.get("params") or {}
    name = outcome.get("name") or outcome["nodeid"].rsplit("::", 1)[-1]
    backend = params.get("backend")
    status = {"passed": "not timed"}.get(outcome.get("outcome", ""), outcome.get("outcome"))
    return BenchRow(
        suite=_suite_of(outcome["nodeid"]),
        case=str(params.get("case") or _function_of(name)),
        backend=str(backend) if backend is not None else None,
        name=name,
        nodeid=outcome["nodeid"],
        group=outcome.get("group"),
        status=status or "unknown",
        reason=outcome.get("reason"),
        is_reference=_is_reference(backend),
    )


def _fill_ratios(rows: list[BenchRow]) -> None:
    references = {
        (row.suite, row.case): row for row in rows if row.is_reference and row.min_ms is not None
    }
    for row in rows:
        if row.backend is None or row.min_ms is None:
            continue
        if row.ratio_vs_reference is None:
            ref = references.get((row.suite, row.case))
            if row.is_reference:
                row.ratio_vs_reference, row.ratio_source = 1.0, "computed"
            elif ref is not None and ref.min_ms is not None and row.min_ms > 0:
                row.ratio_vs_reference = ref.min_ms / row.min_ms
                row.ratio_source = "computed"
        target = SPEEDUP_TARGETS.get((row.suite, row.case))
        if target is not None and not row.is_reference and not _is_baseline(row.backend):
            row.target = target
            if row.ratio_vs_reference is not None:
                row.meets_target = row.ratio_vs_reference >= target
    peaks = {
        (row.suite, row.case): row.peak_mb
        for row in rows
        if row.is_reference and row.peak_mb is not None and row.peak_mb > 0
    }
    for row in rows:
        reference_peak = peaks.get((row.suite, row.case))
        if row.is_reference or row.peak_mb is None or reference_peak is None:
            continue
        row.memory_ratio = row.peak_mb / reference_peak
        limit = MEMORY_TARGETS.get((row.suite, row.case))
        if limit is not None and not _is_baseline(row.backend):
            row.memory_target = limit
            row.meets_memory_target = row.memory_ratio <= limit


# ------------------------------------------------------------------------------------------
# Writing it
# ------------------------------------------------------------------------------------------


def markdown_table(report: BenchReport) -> str:
    """The rows as a GitHub table (what ``posebh bench`` prints)."""
    from tabulate import tabulate

    def num(value: float | None, fmt: str) -> str:
        return "" if value is None else format(value, fmt)

    def ratio(row: BenchRow) -> str:
        if row.ratio_vs_reference is None:
            return ""
        text = f"{row.ratio_vs_reference:.2f}×"
        if row.meets_target is not None:
            text += f" ({'≥' if row.meets_target else '<'} {row.target:g}× target)"
        return text

    def memory(row: BenchRow) -> str:
        if row.memory_ratio is None:
            return ""
        text = f"{row.memory_ratio:.2f}×"
        if row.meets_memory_target is not None:
            ok = "≤" if row.meets_memory_target else ">"
            text += f" ({ok} {row.memory_target:g}× target)"
        return text

    def throughput(row: BenchRow) -> str:
        if row.images_per_s is not None:
            return f"{row.images_per_s:.1f} img/s"
        if row.instances_per_s is not None:
            return f"{row.instances_per_s:.0f} inst/s"
        return ""

    def note(row: BenchRow) -> str:
        if row.status in ("timed", "not timed") and not row.reason:
            return "" if row.status == "timed" else "not timed"
        return f"{row.status}: {row.reason}" if row.reason else row.status

    table = [
        (
            row.suite,
            row.case,
            row.backend or "",
            num(row.min_ms, ".3f"),
            num(row.median_ms, ".3f"),
            "" if row.rounds is None else row.rounds,
            ratio(row),
            num(row.peak_mb, ".2f" if row.peak_mb is not None and row.peak_mb < 1 else ".1f"),
            memory(row),
            throughput(row),
            note(row),
        )
        for row in report.rows
    ]
    headers = [
        "suite",
        "case",
        "backend",
        "min ms",
        "median ms",
        "rounds",
        "vs reference",
        "peak MB",
        "peak vs reference",
        "throughput",
        "note",
    ]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def write_report(report: BenchReport, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``bench.json``, ``bench.md`` and (when something was timed) ``bench.png``.

    Returns the paths written, by kind (``json``, ``md``, ``png``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "bench.json", "md": out / "bench.md"}
    files["json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    png = out / "bench.png"
    png.unlink(missing_ok=True)  # never leave a stale plot beside new numbers
    plotted = _plot_speedups(report, png)

    lines = ["# posebh benchmarks", "", f"Source: {report.source_line()}."]
    if report.date:
        lines.append(f"Date: {report.date}.")
    if report.command:
        lines.append(f"Command: `{shlex.join(report.command)}`.")
    versions = ", ".join(f"{k} {v}" for k, v in report.versions.items() if v)
    if versions:
        lines.append(f"Versions: {versions}.")
    lines.append(
        "Ratios are reference time / backend time (min of the rounds), both measured in the "
        "same run; peak memory ratios are backend peak / reference peak; targets from "
        + ", ".join(sorted({target_source(*key) for key in [*SPEEDUP_TARGETS, *MEMORY_TARGETS]}))
        + " (see bench.json)."
    )
    lines.append("")
    if not report.timed:
        lines += [
            "No benchmark was timed (benchmarks disabled or none selected): the table lists "
            "what ran, without numbers, and no plot was drawn.",
            "",
        ]
    elif not plotted:
        lines += ["No backend was timed against a reference, so there is no speed-up plot.", ""]
    else:
        lines += [f"Plot: [{png.name}]({png.name}).", ""]
    lines += [markdown_table(report), ""]
    files["md"].write_text("\n".join(lines))
    if plotted:
        files["png"] = png
    return files


def _plot_speedups(report: BenchReport, path: Path) -> bool:
    """Horizontal bars of the speed-up vs reference per case and backend, log x axis, with the
    targets drawn on the cases they apply to. False (nothing drawn) when no backend other than
    a reference has a ratio."""
    bars = [
        row
        for row in report.rows
        if not row.is_reference
        and row.ratio_vs_reference is not None
        and row.ratio_vs_reference > 0
    ]
    if not bars:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    def kind(row: BenchRow) -> str:  # one colour per implementation, whatever the device
        return (row.backend or "?").split("@", 1)[0]

    kinds = sorted({kind(row) for row in bars})
    colours = {k: plt.get_cmap("tab10")(i % 10) for i, k in enumerate(kinds)}
    fig, ax = plt.subplots(figsize=(8.0, 1.3 + 0.4 * len(bars)))
    positions = list(range(len(bars)))[::-1]  # first row on top
    ratios = [row.ratio_vs_reference or 1.0 for row in bars]
    # Bars grow from 1× (the reference), rightwards for a speed-up, leftwards for a slow-down.
    widths = [value - 1.0 for value in ratios]
    ax.barh(positions, widths, left=1.0, color=[colours[kind(r)] for r in bars], height=0.7)
    for y, value, row in zip(positions, ratios, bars, strict=True):
        right = max(value, row.target or 1.0, 1.0)  # clear of the bar and of its target mark
        ax.text(right * 1.06, y, f"{value:.1f}×", va="center", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[k], label=k) for k in kinds]
    targets = [(y, row.target) for y, row in zip(positions, bars, strict=True) if row.target]
    for y, target in targets:
        ax.plot([target, target], [y - 0.45, y + 0.45], color="crimson", lw=2.0)
    if targets:
        handles.append(
            plt.Line2D([], [], color="crimson", lw=2.0, label="target (bench.json: source)")
        )
    ax.axvline(1.0, color="grey", ls="--", lw=1.0)
    handles.append(plt.Line2D([], [], color="grey", ls="--", lw=1.0, label="reference (1×)"))
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}×"))
    values = [*ratios, *(target for _y, target in targets), 1.0]
    ax.set_xlim(min(values) / 1.5, max(values) * 2.0)
    ax.set_yticks(positions, [f"{row.label} · {row.backend}" for row in bars], fontsize=8)
    ax.set_xlabel("speed-up vs reference (reference time / backend time, min of rounds)")
    ax.set_title(report.source_line(), fontsize=8)
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------
# pytest plugin (loaded in the benchmark subprocess with ``-p posebh.bench``)
# ------------------------------------------------------------------------------------------

_SESSION: dict[str, Any] = {"tests": {}, "params": {}, "groups": {}}


def pytest_addoption(parser: Any) -> None:
    parser.addoption(
        _SESSION_OPTION,
        default=None,
        help="posebh bench: write every test's outcome, skip reason and parameters here",
    )


def pytest_itemcollected(item: Any) -> None:
    callspec = getattr(item, "callspec", None)
    params = dict(callspec.params) if callspec is not None else {}
    _SESSION["params"][item.nodeid] = {
        k: v if isinstance(v, (str, int, float, bool, type(None))) else repr(v)
        for k, v in params.items()
    }
    marker = item.get_closest_marker("benchmark")
    _SESSION["groups"][item.nodeid] = marker.kwargs.get("group") if marker else None


def pytest_runtest_logreport(report: Any) -> None:
    tests = _SESSION["tests"]
    entry = tests.setdefault(report.nodeid, {"outcome": "passed", "reason": None})
    if entry["outcome"] != "passed" or report.outcome == "passed":
        return  # keep the first skip/failure of setup, call or teardown
    entry["outcome"] = report.outcome
    if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
        entry["reason"] = str(report.longrepr[2]).removeprefix("Skipped: ")
    elif report.longrepr is not None:
        crash = getattr(report.longrepr, "reprcrash", None)
        text = str(crash.message if crash is not None else report.longrepr).strip()
        entry["reason"] = text.splitlines()[0][:300] if text else None


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = session.config.getoption(_SESSION_OPTION)
    if not path:
        return
    torch = sys.modules.get("torch")
    tests = [
        {
            "nodeid": nodeid,
            "name": nodeid.rsplit("::", 1)[-1],
            **entry,
            "params": _SESSION["params"].get(nodeid, {}),
            "group": _SESSION["groups"].get(nodeid),
        }
        for nodeid, entry in _SESSION["tests"].items()
    ]
    document = {
        "tests": tests,
        "threads": torch.get_num_threads() if torch is not None else None,
        "exitstatus": int(exitstatus),
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n")
