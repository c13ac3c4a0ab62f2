"""The `capfuse` command mirrors the Make targets, and its stage subcommands take --data and --config."""

import re
from pathlib import Path

import pytest

from capfuse.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def _subcommands() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_every_make_target_that_runs_capfuse_is_a_subcommand():
    makefile = (REPO / "Makefile").read_text()
    called = set(re.findall(r"\$\(RUN\) ([a-z-]+)", makefile))
    called |= set(re.findall(r"-m capfuse\.cli ([a-z-]+)", makefile))
    assert {"train", "infer", "folds", "ablate", "bench"} <= called
    missing = called - set(_subcommands())
    assert not missing, f"Make runs capfuse subcommands the CLI lacks: {sorted(missing)}"


@pytest.mark.parametrize(
    "command", ["validate", "folds", "embed", "train", "ratios", "ablate", "stack", "thresholds", "infer", "all"]
)
def test_stage_subcommands_take_data_and_config(command):
    args = build_parser().parse_args([command, "--data", "somewhere/mine", "--config", "my.yaml"])
    assert args.data == "somewhere/mine" and args.config == "my.yaml"


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("data", "folds", "train", "infer", "ablate", "bench"):
        assert re.search(rf"^\s+{command}\s", out, re.M), command


def test_bench_forwards_its_own_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    assert "--rows" in capsys.readouterr().out


def test_a_missing_dataset_is_a_clear_error_not_a_traceback(tmp_path, caplog):
    assert main(["folds", "--data", str(tmp_path / "nope"), "--root", str(tmp_path), "--quiet"]) == 2
    assert "nope" in caplog.text
