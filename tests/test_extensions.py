"""The JIT build of the C++ extensions survives a build that was killed half way.

torch's ``cpp_extension.load`` guards a build directory with a plain ``lock`` file; a killed
build leaves it, and every later process used to wait on it forever (a CI run timed out that
way). posebh serialises its builds with an ``flock`` instead and removes such a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from posebh.ops import extensions

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def test_a_stale_torch_lock_is_removed_under_our_lock(tmp_path: Path) -> None:
    build = tmp_path / "posebh_x_cpu"
    build.mkdir()
    (build / "lock").write_text("")
    with extensions._exclusive_build(build) as removed:
        assert removed == str(build / "lock")
        assert not (build / "lock").exists()
    with extensions._exclusive_build(build) as removed:
        assert removed == ""


def test_a_live_build_in_another_process_is_waited_for_then_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build = tmp_path / "posebh_x_cpu"
    build.mkdir()
    (build / "lock").write_text("")  # belongs to the live build: must stay
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, sys, time
                with open({str(build) + ".posebh-lock"!r}, "a+") as f:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                    print("held", flush=True)
                    sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(extensions, "BUILD_LOCK_TIMEOUT_S", 0.5)
        blocked = extensions._exclusive_build(build)
        with pytest.raises(TimeoutError, match="another process"):
            blocked.__enter__()
        assert (build / "lock").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    # The holder is gone, its flock with it: the next build gets in and clears the file.
    with extensions._exclusive_build(build) as removed:
        assert removed == str(build / "lock")


def test_a_filesystem_without_flock_falls_back_to_torchs_baton(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import fcntl

    def no_locks(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    build = tmp_path / "posebh_x_cpu"
    build.mkdir()
    (build / "lock").write_text("")
    with extensions._exclusive_build(build) as removed:
        assert removed == ""  # without our lock, torch's file cannot be judged stale
    assert (build / "lock").exists()


def test_build_directory_follows_torch_extensions_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    assert extensions.build_directory("posebh_y_cpu") == tmp_path / "ext" / "posebh_y_cpu"
    assert (tmp_path / "ext" / "posebh_y_cpu").is_dir()


def test_an_extension_builds_past_a_killed_builds_lock(tmp_path: Path) -> None:
    """The real thing: a fresh extension cache holding only a killed build's ``lock`` file;
    the op's extension still builds and loads (before, this waited forever)."""
    ext = tmp_path / "ext"
    (ext / "posebh_decode_cpu").mkdir(parents=True)
    (ext / "posebh_decode_cpu" / "lock").write_text("")
    script = textwrap.dedent(
        """
        import posebh.ops  # registers the extensions
        from posebh.ops import extensions
        st = extensions.load_extension("decode")
        print(st.status, "|", st.reason)
        """
    )
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(ext)}
    env.pop("POSEBH_DISABLE_EXTENSIONS", None)
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
    status, reason = run.stdout.strip().splitlines()[-1].split(" | ")
    assert status == "loaded", run.stdout + run.stderr
    assert "removed a stale build lock" in reason
    assert not (ext / "posebh_decode_cpu" / "lock").exists()
