"""Table 5 — transfer to 3DPW (2-D SMPL joints, OKS AP).

    python reproduce/table5.py                                  # synthetic default
    python reproduce/table5.py --data-root data --weights weights   # release checkpoints

Same as `posebh reproduce table5` and `nox -s reproduce_table5 -- ...`; --help lists the modes.
"""

import sys

from posebh.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "table5", *sys.argv[1:]], prog="reproduce/table5.py"))
