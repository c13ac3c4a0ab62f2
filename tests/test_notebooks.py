"""Every notebook runs headless on a real tiny run, shows its figures, and holds no logic.

05-fit trains with ``capfuse.fit``, which writes into its run, so it runs on a private copy of the
tiny run (its images shared, so the feature cache serves them) with the tiny run's overrides,
resuming its finished models; never on the shared run."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import TINY_RUN_ARGS

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
FIT = "05-fit"


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_six_notebooks_exist():
    names = [
        "01-eda.ipynb",
        "02-oof-analysis.ipynb",
        "03-ablation.ipynb",
        "04-predict.ipynb",
        f"{FIT}.ipynb",
        "06-shift.ipynb",
    ]
    assert [p.name for p in NOTEBOOKS] == names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_holds_no_logic(path):
    """Cells call the package and show the result: no functions, classes, loops or branches."""
    for source in _code(nbformat.read(path, as_version=4)):
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.startswith("%")))
        banned = (
            ast.FunctionDef,
            ast.ClassDef,
            ast.Lambda,
            ast.For,
            ast.While,
            ast.If,
            ast.ListComp,
            ast.DictComp,
            ast.GeneratorExp,
        )
        found = [type(node).__name__ for node in ast.walk(tree) if isinstance(node, banned)]
        assert not found, f"{path.name}: {found} in a cell; move it to capfuse.report\n{source}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_tiny_run(path, tiny_run_full, tiny_bundle, monkeypatch, tmp_path):
    run = tiny_run_full.copy(tmp_path / "project", share_data=True) if path.stem == FIT else tiny_run_full
    monkeypatch.setenv("CAPFUSE_DATA", str(run.data))
    monkeypatch.setenv("CAPFUSE_BUNDLE", str(tiny_bundle))
    monkeypatch.setenv("CAPFUSE_ROOT", str(run.root))
    monkeypatch.setenv("CAPFUSE_CONFIG", str(run.config))
    monkeypatch.setenv("CAPFUSE_SET", " ".join(TINY_RUN_ARGS[1::2]))
    monkeypatch.setenv("CAPFUSE_QUIET", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    # Run from notebooks/, as Jupyter does; a failing cell raises CellExecutionError with its traceback.
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()

    # A figure of capfuse.report, or the image a notebook labelled (04-predict).
    figure_cells = [
        c for c in nb.cells if c.cell_type == "code" and ("_figure(" in c.source or "Image.open(" in c.source)
    ]
    assert figure_cells, f"{path.name} shows no figure"
    for cell in figure_cells:
        kinds = [o.get("data", {}) for o in cell.outputs if o.output_type in ("execute_result", "display_data")]
        assert any("image/png" in d for d in kinds), f"{path.name}: no image from\n{cell.source}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    if path.stem == FIT:
        # Its checks came out true: the Predictor replays the submission, the saved bundle the Predictor.
        checks = [
            c
            for c in nb.cells
            if c.cell_type == "code" and c.source.splitlines()[-1].endswith(("equals(submitted)", "== few.labels"))
        ]
        assert len(checks) == 2
        for cell in checks:
            assert [o["data"]["text/plain"] for o in cell.outputs if o.output_type == "execute_result"] == ["True"]
        assert (run.root / "bundles" / "tiny-fit" / "bundle.json").is_file()
