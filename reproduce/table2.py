"""Table 2 — APT-36K on the PoseBH re-split.

    python reproduce/table2.py                                  # synthetic default
    python reproduce/table2.py --data-root data --weights weights   # release checkpoints

Same as `posebh reproduce table2` and `nox -s reproduce_table2 -- ...`; --help lists the modes.
"""

import sys

from posebh.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "table2", *sys.argv[1:]], prog="reproduce/table2.py"))
