"""``python -m posebh.selfcheck``: the GPU self-check, tested where CI runs (no GPU).

- without a GPU, ``--device cuda`` runs the kernel compile check alone, says that no GPU was
  found in the report and exits 0 (the issue's acceptance point);
- ``--smoke --device cpu`` runs every other section at toy sizes, with the C++ backend in the
  GPU backends' place, and every check passes: the script that a GPU machine runs once is
  exercised end to end here first;
- the op suite runs on the Triton backend under the interpreter (a child process) and passes;
- a broken section is recorded as a failed check (traceback kept) and makes the exit code 1,
  and the report files hold every check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posebh.ops import compile_check
from posebh.selfcheck import Check, Report, run
from posebh.selfcheck.report import FAIL, PASS, SKIP, guarded

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path; a GPU is present")
def test_without_a_gpu_only_the_compile_check_runs_and_exit_is_0(
    tmp_path: Path, compile_check_run: tuple[list, Path]
) -> None:
    """The compile check's records come from the session's run (tests/test_compile_check.py
    checks them, and the compiling itself); the self-check reports them (--compile-records)."""
    out = tmp_path / "report"
    argv = ["--device", "cuda", "--out", str(out), "--compile-records", str(compile_check_run[1])]
    done = subprocess.run(
        [sys.executable, "-m", "posebh.selfcheck", *argv],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["machine"]["gpu"] is None
    assert any("no GPU found" in n for n in report["notes"])
    sections = {c["section"] for c in report["checks"]}
    assert sections == {"compile"}
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    # The session's records, reported as they are (no second compile).
    assert set(statuses) == {f"{r.kernel} @ {r.target}" for r in compile_check_run[0]}
    targets = {name.rsplit("@ ", 1)[1] for name in statuses}
    assert targets == {"cuda:80", "cuda:90"}
    assert all(s != FAIL for s in statuses.values()), statuses
    assert sum(s == PASS for s in statuses.values()) >= 2 * 5  # 5 Triton kernels × 2 targets
    known = [c for c in report["checks"] if "known spill" in c["detail"]]
    assert {c["name"] for c in known} == {f"{k} @ {t}" for k, _, t in compile_check.KNOWN_SPILLS}
    assert "none found" in (out / "report.md").read_text()


def test_smoke_run_on_the_cpu_passes_every_section(tmp_path: Path, shared_dir: Path) -> None:
    options = run.SelfcheckOptions(
        device="cpu", out=tmp_path, shared=shared_dir, smoke=True,
        sections=("build", "ops", "golden", "eval", "train", "compile_model"),
    )  # fmt: skip
    report = run.run_selfcheck(options, echo=None)
    failed = [(c.section, c.name, c.detail[:500]) for c in report.failed]
    assert not failed, failed
    by_section: dict[str, list[Check]] = {}
    for c in report.checks:
        by_section.setdefault(c.section, []).append(c)
    assert set(by_section) == set(options.sections)
    names = [c.name for c in by_section["ops"]]
    # The C++ backend stands in for the GPU ones: its bit-exact decode suite and the
    # similarity suite ran (fp16/bf16 are skipped with the dispatcher's reason on the CPU).
    assert sum(n.startswith("decode/cpp/") for n in names) >= 40
    assert sum(n.startswith("similarity/cpp/") for n in names) >= 15
    skips = [c for c in by_section["ops"] if c.status == SKIP]
    assert skips and all("float32/float64 on CPU" in c.detail for c in skips)
    assert all(c.status == PASS for s in ("golden", "eval", "train") for c in by_section[s])
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved["checks"]) == len(report.checks)


def test_op_suite_on_triton_under_the_interpreter() -> None:
    pytest.importorskip("triton")
    code = (
        "from posebh.selfcheck import op_checks as o\n"
        "from posebh_kernels.limits import DECODE_TRITON_MAX_KERNEL as kmax\n"
        "cs = [*o.similarity_checks('cpu', 'triton', shapes=o.SIMILARITY_SHAPES[1:2]),\n"
        "      *o.decode_checks('cpu', 'triton', kmax, small=True)]\n"
        "bad = [(c.name, c.detail) for c in cs if c.status != 'pass']\n"
        "print(len(cs), 'checks', bad)\n"
        "raise SystemExit(1 if bad or len(cs) < 50 else 0)\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900,
        cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_a_broken_section_fails_the_run_and_keeps_its_traceback(tmp_path, monkeypatch) -> None:
    def broken() -> list[Check]:
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(run, "_build_section", broken)
    code = run.main(["--device", "cpu", "--smoke", "--sections", "build", "--out", str(tmp_path)])
    assert code == 1
    saved = json.loads((tmp_path / "report.json").read_text())
    (check,) = saved["checks"]
    assert check["status"] == FAIL and "ZeroDivisionError: planted" in check["detail"]
    assert "in broken" in check["detail"]  # the traceback tail names where it broke
    assert "| build | fail |" in (tmp_path / "report.md").read_text()


def test_report_keeps_non_finite_figures_readable(tmp_path: Path) -> None:
    report = Report(machine={"gpu": None})
    report.add(guarded("x", "y", lambda: [Check("x", "nan", PASS, figures={"v": float("nan")})]))
    report.add([Check("x", "skipped", SKIP, detail="why")])
    files = report.write(tmp_path)
    data = json.loads(files["json"].read_text())  # strict JSON: no bare NaN
    assert data["checks"][0]["figures"]["v"] == "nan"
    assert data["counts"] == {"pass": 1, "fail": 0, "skip": 1}
    assert "| skipped | skip |" in files["md"].read_text()


def test_unknown_section_is_an_error(capsys) -> None:
    with pytest.raises(SystemExit):
        run.main(["--out", "x", "--sections", "ops,gpu_magic"])
    assert "unknown ['gpu_magic']" in capsys.readouterr().err
