"""The compile check (posebh.ops.compile_check): every Triton kernel specialisation compiles for
sm_80 and sm_90 without a GPU, with registers ≤ 255, shared memory within the target's limit
and no spills outside the known finding (``KNOWN_SPILLS``, which must still spill: the list can
only shrink); the CUDA sources likewise with nvcc where it exists.

The whole matrix runs once per session (the ``compile_check_run`` fixture of the repository's
conftest, shared with tests/test_selfcheck.py): about 320 Triton compiles and 4 nvcc compiles,
a few minutes on two cores.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

pytest.importorskip("triton")

from posebh.ops import compile_check as cc
from posebh.ops import extensions

REPO = Path(__file__).resolve().parents[1]
SIMILARITY = extensions.kernels_module("prototype_similarity")
DECODE = extensions.kernels_module("decode_heatmaps")
MODEL_DIM = 64  # PoseBHConfig.proto_dim, checked below


@pytest.fixture(scope="module")
def records(compile_check_run: tuple[list, Path]) -> list[cc.CompileRecord]:
    return compile_check_run[0]


def test_presets_are_covered() -> None:
    """FEATURE_DIMS / UDP_KERNELS are constants in posebh.ops (no model import there): every
    model and training preset's prototype dim, and every protocol kernel size, is covered."""
    from posebh.models.posebh import PRESETS, PoseBHConfig
    from posebh.protocol import DecodeSettings
    from posebh.training import PRESETS as TRAIN_PRESETS

    dims = {PoseBHConfig().proto_dim} | {p.get("proto_dim", 64) for p in PRESETS.values()}
    dims |= {t.model_overrides.get("proto_dim", 64) for t in TRAIN_PRESETS.values()}
    assert PoseBHConfig().proto_dim == MODEL_DIM
    covered = {SIMILARITY.block_f(f) for f in cc.FEATURE_DIMS}
    assert {SIMILARITY.block_f(f) for f in dims} <= covered, dims
    assert DecodeSettings(use_udp=True, source="x").kernel in cc.UDP_KERNELS
    assert set(cc.UDP_KERNELS) <= set(DECODE.udp_kernel_sizes(cc.UDP_KERNELS))


def test_enumeration_follows_the_launchers() -> None:
    """The job list is the launchers' own specialisation list: every autotune config of each
    similarity kernel, every dtype pair, every BLOCK_F; every decode mode, BLOCK and kernel."""
    jobs = cc.triton_jobs(["cuda:90"])
    sim = [j for j in jobs if j.module == "prototype_similarity"]
    kernels = {j.kernel for j in sim}
    assert kernels == {
        "_heatmaps_fwd_kernel",
        "_heatmaps_bwd_kernel",
        "_logits_fwd_kernel",
        "_logits_bwd_kernel",
    }
    block_fs = {SIMILARITY.block_f(f) for f in cc.FEATURE_DIMS}
    for name in kernels:
        for compute in ("fp32", "fp64"):
            tuned = {
                (cfg.kwargs["BLOCK_P"], cfg.kwargs["BLOCK_K"], cfg.num_warps)
                for cfg in SIMILARITY.autotune_configs(name, compute)
            }
            mine = [j for j in sim if j.kernel == name and j.config["compute"] == compute]
            seen = {(j.config["BLOCK_P"], j.config["BLOCK_K"], j.config["num_warps"]) for j in mine}
            assert seen == tuned, (name, compute)
            dtypes = [
                d for d in SIMILARITY.LAUNCH_DTYPES if (d[1] == "fp64") == (compute == "fp64")
            ]
            assert len(mine) == len(tuned) * len(dtypes) * len(block_fs)
    dec = [j.config for j in jobs if j.module == "decode_heatmaps"]
    for mode in ("none", "default", "udp"):
        blocks = {c["BLOCK"] for c in dec if c["mode"] == mode}
        assert blocks == set(DECODE.BLOCKS), mode  # every BLOCK the launcher can pick
    assert DECODE.BLOCKS[-1] == DECODE.MAX_BLOCK and DECODE.BLOCKS[0] == DECODE.MIN_BLOCK
    assert {c["KS"] for c in dec if c["mode"] == "udp"} == set(DECODE.udp_kernel_sizes())
    assert max(DECODE.udp_kernel_sizes()) == DECODE.MAX_KERNEL
    assert len({(j.kernel, str(j.config)) for j in jobs}) == len(jobs)  # no duplicates


def test_every_configuration_compiles(records: list[cc.CompileRecord]) -> None:
    triton_records = [r for r in records if r.compiler == "triton"]
    expected = {(j.kernel, str(j.config), j.target) for j in cc.triton_jobs(cc.TARGETS)}
    assert {(r.kernel, str(r.config), r.target) for r in triton_records} == expected
    assert len(triton_records) == len(expected)
    bad = [cc._describe(r) for r in triton_records if not r.ok]
    assert not bad, "\n".join(bad)
    for r in triton_records:
        assert r.registers is not None and 0 < r.registers <= cc.MAX_REGISTERS, r
        assert r.spills is not None, r
        limit = {"cuda:80": 163 * 1024, "cuda:90": 227 * 1024}[r.target]
        assert r.shared_bytes is not None and r.shared_bytes <= limit, r
        assert r.registers_from, r


def test_no_configuration_spills_outside_the_known_finding(
    records: list[cc.CompileRecord],
) -> None:
    spilling = [cc._describe(r) for r in records if r.spills and not r.known_spill]
    assert not spilling, f"{len(spilling)} spilling:\n" + "\n".join(spilling)


def test_known_spills_still_spill(records: list[cc.CompileRecord]) -> None:
    """Each KNOWN_SPILLS entry still names a spilling compile: once one is fixed, the entry
    must go (the allowance can only shrink)."""
    for kernel, compute, target in cc.KNOWN_SPILLS:
        mine = [
            r for r in records
            if (r.kernel, r.config.get("compute"), r.target) == (kernel, compute, target)
        ]  # fmt: skip
        assert mine and any(r.spills for r in mine), (kernel, compute, target)
        assert all(r.spills <= 64 for r in mine), [cc._describe(r) for r in mine]


def test_cuda_sources_compile_without_spills(records: list[cc.CompileRecord]) -> None:
    nvcc = [r for r in records if r.compiler == "nvcc"]
    assert nvcc, "no nvcc records"
    if shutil.which("nvcc") is None:
        assert all(r.skipped and "nvcc" in r.error for r in nvcc)
        pytest.skip("nvcc not on PATH: the .cu sources were not compiled")
    bad = [cc._describe(r) for r in nvcc if not r.ok]
    assert not bad, "\n".join(bad)
    for target in cc.TARGETS:
        for source in cc.CUDA_SOURCES:
            mine = [r for r in nvcc if r.target == target and r.config["source"].endswith(source)]
            assert mine, (target, source)  # at least one kernel function per source
            for r in mine:
                assert r.registers is not None and r.registers <= cc.MAX_REGISTERS, r
                assert r.spills is not None and not r.skipped, r


def _one_decode_job(**config: object) -> cc.CompileJob:
    jobs = [j for j in cc.triton_jobs(["cuda:90"]) if j.kernel == "_decode_kernel"]
    return next(j for j in jobs if all(j.config[k] == v for k, v in config.items()))


def test_cli_exits_1_on_a_spill(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A real spill: DARK-UDP at kernel 31 with the flip test (≈100 registers) capped at 32."""
    argv = ["--target", "cuda:90", "--no-cuda", "--quiet", "--kernel", "_decode_kernel"]
    argv += ["--where", "mode=udp", "--where", "flip=True", "--where", "KS=31"]
    argv += ["--where", "BLOCK=4096"]
    out = tmp_path / "r.json"
    assert cc.main([*argv, "--out", str(out)]) == 0
    assert cc.main([*argv, "--maxnreg", "32", "--json"]) == 1
    printed = capsys.readouterr()
    assert '"spills"' in printed.out and "1 spilling" in printed.err
    assert out.read_text().startswith("[")


def test_cli_exits_1_on_a_failed_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real compile failure: tl.arange needs a power-of-two pixel block."""
    job = next(j for j in cc.triton_jobs(["cuda:90"]) if j.kernel == "_logits_fwd_kernel")
    broken = dataclasses.replace(
        job,
        constexprs={**job.constexprs, "BLOCK_P": 48},
        config={**job.config, "BLOCK_P": 48},
    )
    record = cc.run_compile_check(["cuda:90"], include_cuda=False, jobs=[broken], workers=1)[0]
    assert not record.ok and record.error, record
    monkeypatch.setattr(cc, "triton_jobs", lambda targets: [broken])
    assert cc.main(["--target", "cuda:90", "--no-cuda", "--quiet"]) == 1


def test_bad_target_is_refused() -> None:
    with pytest.raises(SystemExit):
        cc.main(["--target", "sm_90"])
    with pytest.raises(ValueError, match="cuda:90"):
        cc.parse_target("rocm:90")


def test_runs_from_an_interpreter_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers drop TRITON_INTERPRET, so the check works where the interpreter is on."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    job = _one_decode_job(mode="none", flip=False, BLOCK=DECODE.MIN_BLOCK)
    record = cc.run_compile_check(["cuda:80"], include_cuda=False, jobs=[job], workers=1)[0]
    assert record.ok and record.registers, record
