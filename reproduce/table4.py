"""Table 4 — transfer to InterHand2.6M (PCK / AUC / EPE).

    python reproduce/table4.py                                  # synthetic default
    python reproduce/table4.py --data-root data --weights weights   # release checkpoints

Same as `posebh reproduce table4` and `nox -s reproduce_table4 -- ...`; --help lists the modes.
"""

import sys

from posebh.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "table4", *sys.argv[1:]], prog="reproduce/table4.py"))
