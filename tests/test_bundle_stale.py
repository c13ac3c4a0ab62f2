"""A bundle never pairs base models with a second level fitted on other logits.

The second level and the thresholds are fitted on the base models' OOF outputs; a model
retrained after ``make infer`` leaves them fitted on logits that no longer exist, while every
file still names the same candidate. ``make export`` must refuse that, naming the model, and
succeed again once ``make infer`` has refitted them."""

from __future__ import annotations

import pandas as pd
import pytest

from capfuse.cli import main
from conftest import TINY_RUN_ARGS


def _args(run, *extra: str) -> list[str]:
    return [
        "--data",
        str(run.data),
        "--root",
        str(run.root),
        "--config",
        str(run.config),
        "--quiet",
        *TINY_RUN_ARGS,
        *extra,
    ]


def _nudge(csv, column: str) -> None:
    """What a retrained model leaves: the same rows and columns, other numbers."""
    frame = pd.read_csv(csv, dtype={"ImageID": str})
    frame[column] = frame[column] + 0.25
    frame.to_csv(csv, index=False)


@pytest.mark.slow
def test_export_refuses_a_second_level_fitted_on_logits_a_model_no_longer_has(tiny_run, tmp_path, caplog):
    run = tiny_run.copy(tmp_path / "project")
    assert main(["export", *_args(run, "--out", str(tmp_path / "fresh"))]) == 0

    oof = run.root / "runs" / "tiny" / "image_linear" / "oof_logits.csv"
    _nudge(oof, pd.read_csv(oof, nrows=0).columns[-1])
    caplog.clear()
    assert main(["export", *_args(run, "--out", str(tmp_path / "stale"))]) == 2
    assert "image_linear changed since the second level was fitted" in caplog.text and "make infer" in caplog.text
    assert not (tmp_path / "stale").exists()

    assert main(["infer", *_args(run)]) == 0  # refits the second level and the thresholds
    assert main(["export", *_args(run, "--out", str(tmp_path / "refitted"))]) == 0


@pytest.mark.slow
def test_export_refuses_thresholds_tuned_on_other_probabilities(tiny_run, tmp_path, caplog):
    run = tiny_run.copy(tmp_path / "project")
    probs = run.root / "runs" / "tiny" / "ensemble" / "oof_probs.csv"
    _nudge(probs, pd.read_csv(probs, nrows=0).columns[-1])
    assert main(["export", *_args(run, "--out", str(tmp_path / "stale"))]) == 2
    assert "thresholds.json was tuned on other probabilities" in caplog.text


@pytest.mark.slow
def test_export_of_a_model_whose_metrics_are_gone_is_one_line_naming_it(tiny_run, tmp_path, caplog):
    run = tiny_run.copy(tmp_path / "project")
    (run.root / "runs" / "tiny" / "caption_linear" / "metrics.json").unlink()
    assert main(["export", *_args(run, "--out", str(tmp_path / "out"))]) == 2
    assert "caption_linear's training did not finish" in caplog.text and "Traceback" not in caplog.text
