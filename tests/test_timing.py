"""The stage table and ``timings.csv``: rows in reading order, nesting, folds per model, appends."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from capfuse.utils.log import stage
from capfuse.utils.timing import COLUMNS, recording, timed


def test_rows_are_in_reading_order_with_their_depth(tmp_path):
    csv = tmp_path / "timings.csv"
    with recording("train", csv) as t:
        with stage("train", "demo"):
            with stage("train m1"):
                for fold in range(2):
                    with timed("fold", model="m1", fold=fold):
                        time.sleep(0.01)
        with stage("stack"):
            pass
    assert [(r.stage, r.depth, r.fold) for r in t.rows] == [
        ("train", 0, None),
        ("train m1", 1, None),
        ("fold", 2, 0),
        ("fold", 2, 1),
        ("stack", 0, None),
    ]
    outer, inner = t.rows[0], t.rows[1]
    assert outer.wall_s >= inner.wall_s >= 0.02  # a stage's time includes what is nested in it
    table = t.table()
    assert "2 folds fitted" in table and table.index("train m1") < table.index("2 folds fitted") < table.index("stack")
    df = pd.read_csv(csv)
    assert list(df.columns) == list(COLUMNS) and len(df) == 5
    assert df["fold"].dropna().tolist() == [0, 1]


def test_a_second_command_appends_and_nothing_is_recorded_outside_a_command(tmp_path):
    csv = tmp_path / "timings.csv"
    with stage("folds"):  # no command is recording: a plain log header, no row anywhere
        pass
    assert not csv.exists()
    with recording("folds", csv):
        with stage("folds"):
            pass
    with recording("train", csv):
        with stage("train"):
            pass
    df = pd.read_csv(csv)
    assert df["command"].tolist() == ["folds", "train"] and df["stage"].tolist() == ["folds", "train"]


def test_a_failing_command_still_writes_its_rows(tmp_path):
    csv = tmp_path / "timings.csv"
    # The command's own error must come out unchanged (not swallowed, not replaced by the
    # recording's), and its rows must be on disk all the same.
    with pytest.raises(RuntimeError, match="^boom$"):
        with recording("train", csv):
            with stage("train"):
                raise RuntimeError("boom")
    assert pd.read_csv(csv)["stage"].tolist() == ["train"]
