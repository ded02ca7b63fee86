"""``python -m posebh.selfcheck --device cuda --out DIR``: one run that checks a GPU machine.

Sections, in order (each check is a :class:`~posebh.selfcheck.report.Check`):

1. ``build``: the C++/CUDA extensions compiled on this machine;
2. ``compile``: every Triton kernel configuration compiled for the GPU's architecture (on a
   machine without CUDA: for sm_80 and sm_90), and the ``.cu`` sources with nvcc
   (:mod:`posebh.ops.compile_check`);
3. ``ops``: every op × GPU backend (triton, cuda) against the reference on the adversarial
   suite, fp16/bf16 rule, gradcheck, opcheck (:mod:`~posebh.selfcheck.op_checks`);
4. ``timing``: ``do_bench`` timings against torch eager and the roofline
   (:mod:`~posebh.selfcheck.timings`);
5. ``golden`` and ``eval``: the official tiny model on the device, the COCO fixture
   evaluated in fp32 and bf16 against the CPU;
6. ``train``: training steps with the fused and the reference prototype path;
7. ``compile_model``: ``torch.compile`` of the model forward against eager.

It writes ``DIR/report.json`` and ``DIR/report.md`` and exits 1 if any check failed. Without a
GPU it runs the compile section alone, says that no GPU was found, and exits 0 when that
passes. ``--smoke`` runs every section at toy sizes on the CPU (the C++ backend stands in for
the GPU ones), which is how the script itself is tested in CI.
"""

from posebh.selfcheck.report import Check, Report
from posebh.selfcheck.run import main, run_selfcheck

__all__ = ["Check", "Report", "main", "run_selfcheck"]
