"""The estimates table: each scored run's nested CV, test-like score and confidence estimate
beside its held-out score, and their distances summed up per estimate.

Every results file here is synthetic, with known figures, so each distance in the table can be
checked against the value it must hold.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from capfuse.results.estimates import estimates_markdown, read_estimates, summary

REPO = Path(__file__).resolve().parents[1]


def write_run(
    results: Path,
    stem: str,
    *,
    held_out: float | None,
    nested: float,
    expected: float | None,
    test_like: float | None = None,
    date: str = "2026-12-01T10:00:00Z",
    dataset: str = "shifted",
    slug: str = "cpu-2t",
) -> Path:
    """A runs results file in the format `capfuse infer` writes, holding only the rows read here."""
    head = {"slug": slug, "commit": "0123456789abcdef", "date": date, "dataset": dataset, "preset": "default"}
    rows = [{"kind": "model", "name": "caption_linear", "mean_f1": 0.7}]
    rows.append({"kind": "second_level", "name": "weighted_blend", "mean_f1": nested + 0.01, "nested_mean_f1": nested})
    if test_like is not None:
        rows.append({"kind": "test_like", "name": "weighted_blend", "nested_mean_f1": test_like})
    if expected is not None:
        rows.append({"kind": "expected_test", "name": "weighted_blend", "nested_mean_f1": expected})
    if held_out is not None:
        rows.append({"kind": "held_out", "name": "submission", "mean_f1": held_out})
    folder = results / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / f"{stem}.csv"
    pd.DataFrame([{**head, **r} for r in rows]).to_csv(csv, index=False)
    csv.with_suffix(".md").write_text(f"### {stem}\n")
    return csv


def test_each_estimate_sits_beside_its_distance_to_the_held_out_score(tmp_path):
    write_run(
        tmp_path,
        "2026-12-01_shifted-default_cpu-2t_aaaaaaa",
        held_out=0.85,
        nested=0.87,
        test_like=0.86,
        expected=0.845,
    )
    frame = read_estimates(tmp_path)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["warned"]  # a test-like row is written only under a warning
    assert row["nested_gap"] == pytest.approx(0.02)
    assert row["test_like_gap"] == pytest.approx(0.01)
    assert row["expected_gap"] == pytest.approx(-0.005)
    md = estimates_markdown(tmp_path)
    assert "| 0.8500 | 0.8700 (+0.0200) | 0.8600 (+0.0100) | 0.8450 (-0.0050) |" in md
    assert "`2026-12-01_shifted-default_cpu-2t_aaaaaaa`" in md


def test_runs_without_a_held_out_score_or_the_confidence_estimate_are_left_out(tmp_path):
    write_run(
        tmp_path, "2026-12-01_demo-default_cpu-2t_aaaaaaa", held_out=None, nested=0.85, expected=0.85, dataset="demo"
    )
    write_run(tmp_path, "2026-12-01_shifted-default_cpu-2t_bbbbbbb", held_out=0.84, nested=0.86, expected=None)
    assert read_estimates(tmp_path).empty
    assert "No results file" in estimates_markdown(tmp_path)


def test_a_repeated_run_counts_once_and_a_new_figure_counts_again(tmp_path):
    figures = {"held_out": 0.85, "nested": 0.87, "expected": 0.846}
    write_run(tmp_path, "2026-12-01_shifted-default_cpu-2t_aaaaaaa", **figures, date="2026-12-01T10:00:00Z")
    write_run(tmp_path, "2026-12-02_shifted-default_cpu-2t_bbbbbbb", **figures, date="2026-12-02T10:00:00Z")
    frame = read_estimates(tmp_path)
    assert list(frame["file"].map(lambda p: Path(p).stem)) == ["2026-12-02_shifted-default_cpu-2t_bbbbbbb"]
    # Another machine's run of the same set is another measurement.
    write_run(tmp_path, "2026-12-03_shifted-default_gpu_ccccccc", **figures, date="2026-12-03T10:00:00Z", slug="gpu")
    assert len(read_estimates(tmp_path)) == 2


def test_the_summary_sums_the_distances_apart_for_warned_runs(tmp_path):
    write_run(
        tmp_path, "2026-12-01_shifted-default_cpu-2t_aaaaaaa", held_out=0.80, nested=0.83, test_like=0.82, expected=0.81
    )
    write_run(
        tmp_path, "2026-12-02_shifted-default_cpu-2t_bbbbbbb", held_out=0.80, nested=0.81, test_like=0.81, expected=0.79
    )
    write_run(
        tmp_path, "2026-12-03_demo-default_cpu-2t_ccccccc", held_out=0.90, nested=0.89, expected=0.905, dataset="demo"
    )
    table = summary(read_estimates(tmp_path)).set_index(["runs", "estimate"])
    warned_nested = table.loc[("shift warned", "nested CV, all rows")]
    assert warned_nested["n"] == 2
    assert warned_nested["mean distance"] == pytest.approx(0.02)
    assert warned_nested["largest distance"] == pytest.approx(0.03)
    warned_expected = table.loc[("shift warned", "expected from confidence")]
    assert warned_expected["mean distance"] == pytest.approx(0.01)
    assert warned_expected["mean signed"] == pytest.approx(0.0)  # +0.01 and -0.01
    quiet = table.loc[("no shift warning", "nested CV, all rows")]
    assert quiet["n"] == 1 and quiet["mean signed"] == pytest.approx(-0.01)
    # No warned run without a test-like figure, no unwarned run with one.
    assert ("no shift warning", "nested CV, test-like rows") not in table.index


def test_a_file_that_is_not_a_table_is_named_in_the_error(tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "2026-12-01_demo-default_cpu-2t_aaaaaaa.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="2026-12-01_demo-default_cpu-2t_aaaaaaa.csv: not a results table"):
        read_estimates(tmp_path)
