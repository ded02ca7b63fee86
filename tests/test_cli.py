"""The ``posebh`` command line on real (golden) checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posebh.checkpoint import load_model, read_state_dict
from posebh.cli import main, save_atomically


@pytest.fixture(scope="module")
def suite_file(golden_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    sd = torch.load(golden_dir / "suite" / "backbone_heads.pt", weights_only=True)["state_dict"]
    path = tmp_path_factory.mktemp("ckpt") / "posebh_tiny.pth"
    torch.save({"state_dict": sd, "meta": {"epoch": 3}}, path)
    return path


def test_info_reports_inferred_architecture(suite_file: Path, capsys) -> None:
    assert main(["info", str(suite_file), "--num-heads", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tensors"] == 179
    assert report["architecture"]["embed_dim"] == 64
    assert report["architecture"]["num_keypoints"] == [17, 14, 16, 17, 17, 133]
    assert report["official_split"] is False


def test_convert_split_then_load_matches_routed_model(suite_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "mpii.pth"
    assert main(["convert", str(suite_file), str(out), "--split", "mpii"]) == 0
    split_sd = read_state_dict(out)
    assert not any(".experts." in k or k.startswith("associate_") for k in split_sd)
    single = load_model(out, num_heads=4)
    full = load_model(suite_file, num_heads=4)
    assert single.config.num_keypoints == (16,) and single.config.num_experts == 0
    images = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        a = single(images).heatmaps[0]
        b = full(images, torch.tensor([2, 2]), heads=[2]).heatmaps[2]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_convert_round_trips_through_hf_and_posebh(suite_file: Path, tmp_path: Path) -> None:
    original = read_state_dict(suite_file)
    assert main(["convert", str(suite_file), str(tmp_path / "hf.pth"), "--to", "hf"]) == 0
    assert main(["convert", str(tmp_path / "hf.pth"), str(tmp_path / "back.pth"), "--from-hf"]) == 0
    back = read_state_dict(tmp_path / "back.pth")
    assert back.keys() == original.keys()
    assert all(torch.equal(back[k], original[k]) for k in original)
    assert main(["convert", str(suite_file), str(tmp_path / "ours.pth"), "--to", "posebh"]) == 0
    assert "keypoint_prototypes.prototypes" in read_state_dict(tmp_path / "ours.pth")


def test_remove_prototypes(suite_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "noproto.pth"
    assert main(["convert", str(suite_file), str(out), "--remove-prototypes"]) == 0
    sd = read_state_dict(out)
    assert "proto_head.kpt_prototype.prototypes" not in sd
    assert "proto_head.head.3.weight" in sd


def test_errors_are_reported_without_traceback(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.pth" in err and "Traceback" not in err


def test_save_atomically_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "x.pth"

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_atomically({"a": Unpicklable()}, target)
    assert list(tmp_path.iterdir()) == []


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "posebh.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "convert" in out and "examples:" in out


# ------------------------------------------------------------------------------------------
# One command line: every sub-command on one parser, the scripts on the same functions
# ------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("info", "convert", "eval", "train", "synth", "crosstype", "bench", "visualize",
            "reproduce", "regression", "compare", "infer", "export")  # fmt: skip


def _subcommands(parser) -> dict:
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return action.choices


def test_one_parser_builds_every_command() -> None:
    from posebh.cli import build_parser

    commands = _subcommands(build_parser())
    assert set(commands) == set(COMMANDS)
    assert set(_subcommands(commands["reproduce"])) == {
        "table1", "table2", "table3", "table4", "table5", "ablations", "scale-root"
    }  # fmt: skip
    # Flags that moved from their own parsers keep their names and defaults.
    args = build_parser().parse_args(["regression"])
    assert (args.sections, args.refresh, args.out) == (
        "protocol,training", False, Path("results") / "regression"
    )  # fmt: skip
    args = build_parser().parse_args(["reproduce", "ablations"])
    assert (args.steps, args.init, args.gpus) == (200, Path("weights/vitpose+_base.pth"), 8)
    args = build_parser().parse_args(["reproduce", "table2", "--models", "a,b"])
    assert (args.table, args.models, args.world, args.batch_size) == ("table2", "a,b", "mini", 32)


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["reproduce/table3.py"], "usage: reproduce/table3.py [-h] [--data-root DATA_ROOT]"),
        (["reproduce/ablations.py"], "usage: reproduce/ablations.py [-h] [--out OUT]"),
        (["-m", "posebh.train"], "usage: posebh train [-h] [--preset PRESET]"),
        (["-m", "posebh.cli", "regression"], "usage: posebh regression [-h] [--sections"),
    ],
)
def test_scripts_run_the_same_command_line(argv: list[str], usage: str) -> None:
    out = subprocess.run(
        [sys.executable, *argv, "--help"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.startswith(usage)


def test_no_library_module_imports_the_command_line() -> None:
    """Imports run one way: the command line (posebh.cli, posebh.commands, the
    ``python -m posebh.train`` entry) imports the library, never the reverse."""
    import re

    cli_side = {"posebh/cli.py", "posebh/train.py"}
    offenders = []
    for path in sorted((REPO / "posebh").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel in cli_side or rel.startswith("posebh/commands/"):
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*(from|import) posebh\.(cli|commands|train)\b", text, re.M):
            offenders.append(rel)
    assert offenders == []


# ------------------------------------------------------------------------------------------
# Bad inputs: the error names the flag, the key, the expected type and an example
# ------------------------------------------------------------------------------------------


def test_set_of_the_wrong_type_is_refused_with_the_type_and_an_example(capsys) -> None:
    argv = ["train", "--preset", "posebh_tiny_synth", "--plan"]
    assert main([*argv, "--set", "optim.lr=abc"]) == 2
    err = capsys.readouterr().err
    assert "--set optim.lr=abc: optim.lr expects a number, got the text 'abc'" in err
    assert "e.g. --set optim.lr=0.002" in err and "Traceback" not in err
    assert main([*argv, "--set", "length=1.5"]) == 2
    err = capsys.readouterr().err
    assert "length expects an integer, got 1.5; e.g. --set length=320" in err
    assert main([*argv, "--set", 'optim.milestones=[10, "x"]']) == 2
    assert "optim.milestones expects a list of integers" in capsys.readouterr().err
    assert main([*argv, "--set", "optim.lr"]) == 2
    assert "--set takes key=value, got 'optim.lr'" in capsys.readouterr().err
    # Right types still pass (an integer is a fine float; null where None is allowed).
    assert main([*argv, "--set", "optim.lr=1", "--set", "data.ratios=null"]) == 0


def test_override_is_parsed_like_set(capsys) -> None:
    """--override (shallow, model config) parses values as --set does; a pair without '='
    names the flag."""
    from posebh.cli import _parse_overrides

    assert _parse_overrides(["depth=2", "img_size=[128, 96]", "compat=official"]) == {
        "depth": 2, "img_size": (128, 96), "compat": "official"
    }  # fmt: skip
    assert main(["eval", "--dataset", "coco", "--preset", "posebh_vit_small",
                 "--override", "depth"]) == 2  # fmt: skip
    assert "--override takes key=value, got 'depth'" in capsys.readouterr().err
