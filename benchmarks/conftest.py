"""Benchmarks run under pytest-benchmark; CI runs them with --benchmark-disable (smoke)."""

from __future__ import annotations

import torch

# Benchmarks measure this 2-core machine; pin threads so numbers are comparable run to run.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
