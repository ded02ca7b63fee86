"""``python -m posebh.train``: the ``posebh train`` command as a module, which ``torchrun``
launches (``torchrun --nproc_per_node 8 -m posebh.train --preset …``).  Its flags and their
meaning are ``posebh train --help``'s; no posebh module imports it."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from posebh.cli import main as cli_main

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
