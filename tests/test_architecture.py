"""The code map holds: import contracts kept, modules small or saying why, every command routed.

``make lint`` runs the same import contracts; checking them here too means a plain ``pytest``
run (an IDE, a partial CI) cannot pass while an arrow points the wrong way.
"""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capfuse.cli import COMMANDS, SEQUENCES, build_parser

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "capfuse"
MAX_LINES = 400
# A module over MAX_LINES says why in its docstring, on a line that starts with this.
LONG_REASON = "Why this module is long:"


def _lint_imports() -> str | None:
    exe = Path(sys.executable).with_name("lint-imports")
    return str(exe) if exe.exists() else shutil.which("lint-imports")


@pytest.mark.skipif(_lint_imports() is None, reason="import-linter is not installed")
def test_import_contracts_are_kept():
    done = subprocess.run(
        [_lint_imports(), "--config", str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout and "0 broken" in done.stdout


def test_the_contracts_name_every_package():
    """A new package must take a place in the layers, or the contract would not cover it."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    start = text.index("layers = [")
    layers = text[start : text.index("]", start)]
    named = {name.strip().strip('"') for line in layers.splitlines()[1:] for name in line.strip(' ",').split("|")}
    named.discard("")
    ours = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    ours |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert ours - named == set(), f"packages and modules missing from the layers contract: {sorted(ours - named)}"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_are_small_or_say_why(path):
    text = path.read_text(encoding="utf-8")
    n_lines = text.count("\n")
    doc = ast.get_docstring(ast.parse(text)) or ""
    if path.name != "__init__.py" or n_lines > 5:
        assert doc, f"{path.relative_to(REPO)} has no module docstring saying what it is for"
    if n_lines > MAX_LINES:
        assert any(line.startswith(LONG_REASON) for line in doc.splitlines()), (
            f"{path.relative_to(REPO)} has {n_lines} lines (> {MAX_LINES}): split it by what changes together, "
            f"or give the reason in its docstring on a line starting {LONG_REASON!r}"
        )


def test_every_command_has_a_handler_that_exists():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices) - {"bench"}  # bench parses its own options (capfuse.stages.bench)
    assert commands == set(COMMANDS) | set(SEQUENCES)
    for name, command in COMMANDS.items():
        module, function = command.handler.split(":")
        assert module.startswith("capfuse.stages."), f"{name}: a command runs a stage, got {module}"
        assert callable(getattr(importlib.import_module(module), function)), name
    for name, steps in SEQUENCES.items():
        assert steps and all(COMMANDS[s].dataset for s in steps), name


def test_all_runs_folds_train_infer_in_order(monkeypatch, tmp_path):
    """``capfuse all`` is its sequence, in one process, each step with the same arguments."""
    import capfuse.cli as cli

    calls = []
    monkeypatch.setattr(cli, "_handler", lambda name: lambda *a: calls.append(name) or 0)
    monkeypatch.setattr(cli, "_context", lambda args: (type("P", (), {"runs": tmp_path})(), {}, True))
    assert cli.main(["all", "--data", str(tmp_path / "demo")]) == 0
    assert calls == ["folds", "train", "infer"]
