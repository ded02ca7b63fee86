"""The self-check's records and its report files (``report.json`` and ``report.md``).

A :class:`Check` is one verdict: ``pass``, ``fail`` or ``skip`` (with the reason), the figures
behind it and the rule it was held to. A :class:`Report` collects them with the machine's
description and writes both files; ``failed`` says whether any check failed.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Check", "Report", "guarded"]

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass
class Check:
    """One verdict of the self-check.

    Attributes:
        section: ``compile``, ``ops``, ``timing``, ``eval``, ``train`` or ``compile_model``.
        name: what was checked, e.g. ``similarity/triton/ties``.
        status: ``pass``, ``fail`` or ``skip``.
        rule: the criterion, in words (``max |ours − reference| ≤ 1e-5``).
        figures: the measured numbers (JSON-able).
        detail: why it failed or was skipped, or a note.
        seconds: wall time of the check.
    """

    section: str
    name: str
    status: str
    rule: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    seconds: float = 0.0


def guarded(section: str, name: str, fn: Callable[[], Iterable[Check]]) -> Iterator[Check]:
    """Run ``fn``'s checks; an exception becomes one failed check with its traceback tail, so
    one broken part never hides the others."""
    start = time.perf_counter()
    try:
        yield from fn()
    except Exception as exc:  # recorded as a failed check, not swallowed
        tail = traceback.format_exc().strip().splitlines()[-6:]
        yield Check(
            section, name, FAIL, detail=f"{type(exc).__name__}: {exc}\n" + "\n".join(tail),
            seconds=time.perf_counter() - start,
        )  # fmt: skip


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return _jsonable(value.item())
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


@dataclass
class Report:
    """Everything the self-check found: ``machine`` (GPU, driver, versions) and the checks."""

    machine: dict[str, Any]
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, checks: Iterable[Check], *, echo: Callable[[str], None] | None = None) -> None:
        for check in checks:
            self.checks.append(check)
            if echo:
                echo(f"[{check.status:4}] {check.section}/{check.name}  {check.detail[:160]}")

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in (PASS, FAIL, SKIP)}

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "machine": self.machine,
                "counts": self.counts(),
                "wall_time_s": round(time.time() - self.started, 1),
                "notes": self.notes,
                "checks": [asdict(c) for c in self.checks],
            }
        )

    def markdown(self) -> str:
        data = self.as_dict()
        m = data["machine"]
        lines = [
            "# posebh GPU self-check",
            "",
            f"- GPU: {m.get('gpu') or 'none found'}",
            *(f"- {k}: {_fmt(v)}" for k, v in m.items() if k != "gpu"),
            f"- checks: {_fmt(data['counts'])}; wall time {data['wall_time_s']} s",
            *(f"- note: {n}" for n in self.notes),
        ]
        for section in dict.fromkeys(c.section for c in self.checks):
            lines += ["", f"## {section}", "", "| check | status | figures | rule | detail |"]
            lines.append("|---|---|---|---|---|")
            for c in self.checks:
                if c.section == section:
                    detail = c.detail.replace("\n", " ").replace("|", "/")[:300]
                    lines.append(
                        f"| {c.name} | {c.status} | {_fmt(_jsonable(c.figures))} | {c.rule} "
                        f"| {detail} |"
                    )
        return "\n".join(lines) + "\n"

    def write(self, out: str | Path) -> dict[str, Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        files = {"json": out / "report.json", "md": out / "report.md"}
        files["json"].write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        files["md"].write_text(self.markdown())
        return files
