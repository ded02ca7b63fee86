"""One table cell's evaluation as a ``torchrun`` launch (``posebh reproduce ... --gpus N``).

With N > 1 evaluation ranks on CUDA, the harness evaluates each (model, dataset row) as

    python -m torch.distributed.run --standalone --nproc_per_node N -m posebh.cli eval \\
        --dataset D --split S --data-root ROOT (--gt-bbox | --det-bbox) --checkpoint W \\
        --as-single-dataset E --device cuda --out EVAL_DIR ...

which loads the release file exactly as the in-process path does (a multi-dataset file split
for the row's evaluation expert ``E``), shards the boxes over the ranks and has rank 0 write
``metrics.json`` and ``predictions.json`` into the cell's folder
(:mod:`posebh.evaluation.distributed`); :func:`evaluate_with_torchrun` runs it and reads the
result back.  :func:`eval_plan` lists the commands of a table (``--dry-run``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posebh.evaluation.bootstrap import DEFAULT_RESAMPLES
from posebh.protocol import get_protocol
from posebh.reproduce.tables import Table, TableRow

__all__ = ["eval_command", "eval_plan", "evaluate_with_torchrun"]


def eval_command(
    row: TableRow,
    checkpoint: Path,
    data_root: Path,
    out_dir: Path,
    *,
    ranks: int,
    device: str = "cuda",
    batch_size: int = 32,
    decode_backend: str = "auto",
    max_instances: int | None = None,
    progress: bool = True,
    bootstrap: int = DEFAULT_RESAMPLES,
    bootstrap_seed: int = 0,
) -> list[str]:
    """The ``torchrun ... posebh.cli eval`` command of one cell (see the module)."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", str(ranks), "-m", "posebh.cli", "eval",
        "--dataset", row.dataset, "--split", row.split, "--data-root", str(data_root),
        "--gt-bbox" if row.use_gt_bbox else "--det-bbox",
        "--checkpoint", str(checkpoint),
        "--as-single-dataset", get_protocol(row.dataset).eval_expert,
        "--device", device, "--batch-size", str(batch_size),
        "--decode-backend", decode_backend, "--out", str(out_dir),
        "--bootstrap", str(bootstrap), "--bootstrap-seed", str(bootstrap_seed),
    ]  # fmt: skip
    if max_instances is not None:
        cmd += ["--max-instances", str(max_instances)]
    if row.submission_only:
        cmd.append("--submission-only")
    if not progress:
        cmd.append("--no-progress")
    return cmd


def eval_plan(
    table: Table,
    data_root: Path,
    weights: Path,
    out_dir: Path,
    *,
    models: Sequence[str] | None = None,
    **settings: Any,
) -> list[list[str]]:
    """The :func:`eval_command` of every (model, row) of ``table`` whose release file is in
    ``weights``, in the harness's order; each cell's folder is
    ``out_dir/eval/<model>/<dataset>_<split>/`` (``settings``: :func:`eval_command`'s)."""
    plan = []
    for column in table.models:
        path = weights / column.checkpoint
        if (models is not None and column.id not in models) or not path.is_file():
            continue
        for row in table.rows:
            cell_dir = out_dir / "eval" / column.id / f"{row.dataset}_{row.split}"
            plan.append(eval_command(row, path, data_root, cell_dir, **settings))
    return plan


def evaluate_with_torchrun(cmd: list[str]) -> Any:
    """Run one cell's :func:`eval_command` and return its result as an
    :class:`~posebh.evaluate.EvalResult` read from the files rank 0 wrote.  A failed launch
    raises ValueError with the end of its output (the harness marks the cell "not run")."""
    from posebh.evaluate import EvalResult

    out = Path(cmd[cmd.index("--out") + 1])
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        tail = (run.stderr.strip() or run.stdout.strip()).splitlines()[-3:]
        raise ValueError(f"torchrun evaluation exited {run.returncode}: {' | '.join(tail)}")
    saved = json.loads((out / "metrics.json").read_text())
    files = {
        "metrics_json": out / "metrics.json",
        "metrics_md": out / "metrics.md",
        "predictions": out / "predictions.json",
    }
    return EvalResult(
        dataset=saved["dataset"],
        metrics=saved["metrics"],
        meta=saved["meta"],
        files={k: str(v) for k, v in files.items()},
    )
