"""Table 3 — generalisation: COCO test-dev (server submission) and OCHuman.

    python reproduce/table3.py                                  # synthetic default
    python reproduce/table3.py --data-root data --weights weights   # release checkpoints

Same as `posebh reproduce table3` and `nox -s reproduce_table3 -- ...`; --help lists the modes.
"""

import sys

from posebh.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "table3", *sys.argv[1:]], prog="reproduce/table3.py"))
