"""Table 1 — multi-dataset training: COCO, AIC, MPII, AP-10K, APT-36K, COCO-WholeBody.

    python reproduce/table1.py                                  # synthetic default
    python reproduce/table1.py --data-root data --weights weights   # release checkpoints

Same as `posebh reproduce table1` and `nox -s reproduce_table1 -- ...`; --help lists the modes.
"""

import sys

from posebh.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "table1", *sys.argv[1:]], prog="reproduce/table1.py"))
