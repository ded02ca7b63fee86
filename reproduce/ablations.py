"""Ablations: multi-head baseline → + prototypes → + CPS → + CSS; M ∈ {1, 3, 5}; compat.

    python reproduce/ablations.py                 # synthetic default (SynthPose, tiny models)
    python reproduce/ablations.py --data-root data --train --dry-run   # official recipes

Same as `posebh reproduce ablations` and `nox -s reproduce_ablations -- ...`; --help explains
the variants.
"""

import sys

from posebh.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "ablations", *sys.argv[1:]], prog="reproduce/ablations.py"))
