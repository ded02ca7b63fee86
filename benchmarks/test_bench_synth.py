"""SynthPose cache hit against generation: ``posebh.synth.generate`` on an intact world of
the same preset, seed and version returns at once (reads the manifest and stats every file;
renders nothing).  The generation of the same split group, timed in the same run, is the
reference, so the ratio holds on any machine; ``extra_info`` records both times and the
ratio.  Under ``--benchmark-disable`` (the CI smoke run) each runs once and only the cache
behaviour is checked (tests/test_synth.py checks the same without time)."""

from __future__ import annotations

import time
from pathlib import Path

from posebh.synth import generate

#: A cache hit must take less than this fraction of a generation (measured: ~1/500 for the
#: tiny AP-10K group on 2 cores; 1/20 leaves room for a loaded machine).
MAX_HIT_FRACTION = 1 / 20


def test_bench_synth_cache_hit_vs_generation(benchmark, tmp_path: Path) -> None:
    out = tmp_path / "world"
    start = time.perf_counter()
    made = generate(out, "tiny", seed=0, progress=False, groups=["ap10k"])
    generation_s = time.perf_counter() - start
    assert not made.cached

    def hit():
        return generate(out, "tiny", seed=0, progress=False, groups=["ap10k"])

    again = benchmark.pedantic(hit, rounds=1 if benchmark.disabled else 20, iterations=1)
    assert again.cached and again.files == made.files
    if benchmark.disabled:
        return
    hit_s = benchmark.stats.stats.min
    benchmark.extra_info.update(
        generation_s=round(generation_s, 4),
        hit_s=round(hit_s, 6),
        hit_fraction=round(hit_s / generation_s, 6),
    )
    assert hit_s < MAX_HIT_FRACTION * generation_s, (hit_s, generation_s)
