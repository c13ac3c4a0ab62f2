"""How near each estimate of a run came to its test score, from the ``runs`` results files.

A run on a dataset that ships its test answers (the demo, its competition-sized copy, the
shifted development sets) holds up to four figures of its submission: the nested CV over all
training rows, under a shift warning the nested score on the training rows most like the test,
the estimate from the models' confidence on the test rows (``expected_test``), and the
held-out score that the other three try to foretell. This table sets them side by side, one
row per run, with each one's distance to the held-out score, and sums the distances up per
estimate, apart for runs with and without a shift warning. Which figure to read under a shift
is then settled by every measured run, not argued from one.

Reads CSVs only (no torch), like the presets table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from capfuse.results.tables import markdown_table

# (column, the row kind that holds it in a runs file, what the column header says)
ESTIMATES = (
    ("nested", "second_level", "nested CV, all rows"),
    ("test_like", "test_like", "nested CV, test-like rows"),
    ("expected", "expected_test", "expected from confidence"),
)
HELD_OUT = "held_out"


def _score(df: pd.DataFrame, kind: str, column: str) -> float | None:
    hit = df.loc[df["kind"] == kind, column] if column in df.columns else pd.Series(dtype=float)
    hit = hit.dropna()
    return float(hit.iloc[0]) if len(hit) else None


def read_estimates(results_root: Path) -> pd.DataFrame:
    """One row per scored run, oldest first: every ``runs`` file with a held-out score and the
    confidence estimate, a repeated run's figures once."""
    rows = []
    for csv in sorted((Path(results_root) / "runs").glob("*.csv")):
        try:
            df = pd.read_csv(csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"{csv}: not a results table ({exc})") from exc
        if df.empty or not {"kind", "dataset", "slug", "date"} <= set(df.columns):
            continue
        truth = _score(df, HELD_OUT, "mean_f1")
        if truth is None:
            continue
        first = df.iloc[0]
        raw = first.get("overrides")
        overrides = str(raw).strip() if raw is not None and pd.notna(raw) else ""
        row = {
            "file": csv.with_suffix(".md"),
            "date": str(first["date"]),
            "dataset": str(first["dataset"]),
            "preset": str(first.get("preset", "")) + (f" {overrides}" if overrides else ""),
            "slug": str(first["slug"]),
            # The test-like row is written only under a shift warning (and only where the second
            # level scored the test-like rows: a warned run with `ensemble.shift.use: never` reads
            # as unwarned here).
            "warned": _score(df, "test_like", "nested_mean_f1") is not None,
            "held_out": truth,
        }
        for column, kind, _ in ESTIMATES:
            value = _score(df, kind, "nested_mean_f1")
            row[column] = value
            row[f"{column}_gap"] = None if value is None else value - truth
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    # Only files that hold the confidence estimate: older files predate it, and the test-like
    # row with it, so whether their run was warned cannot be read from them, and every estimate
    # is compared on the same runs.
    frame = frame[frame["expected"].notna()]
    # A deterministic run repeated on one machine (or collected again at a later commit) gives
    # the same figures: one run's evidence, counted once, from its newest file.
    same = ["dataset", "slug", "held_out", *(c for c, _, _ in ESTIMATES)]
    frame = frame.sort_values(["date", "file"])
    frame = frame[~frame[same].round(5).astype(str).duplicated(keep="last")]
    return frame.reset_index(drop=True)


def _with_gap(value, gap) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{value:.4f} ({gap:+.4f})"


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per estimate, over the runs with and without a shift warning: how many runs hold it, the
    mean and the largest distance to the held-out score, and the mean signed distance (above
    zero: the estimate promised more than the test gave)."""
    rows = []
    for warned in (True, False):
        part = frame[frame["warned"] == warned]
        for column, _, label in ESTIMATES:
            gaps = part[f"{column}_gap"].dropna().astype(float)
            if gaps.empty:
                continue
            rows.append(
                {
                    "runs": "shift warned" if warned else "no shift warning",
                    "estimate": label,
                    "n": len(gaps),
                    "mean distance": round(float(gaps.abs().mean()), 4),
                    "largest distance": round(float(gaps.abs().max()), 4),
                    "mean signed": round(float(gaps.mean()), 4),
                }
            )
    return pd.DataFrame(rows, columns=["runs", "estimate", "n", "mean distance", "largest distance", "mean signed"])


def estimates_markdown(results_root: Path) -> str:
    """Both tables as Markdown; each run is named by its results file under ``results/runs/``
    (named, not linked: the site publishes docs/ alone)."""
    frame = read_estimates(results_root)
    if frame.empty:
        return (
            f"No results file under `{Path(results_root) / 'runs'}` holds a held-out score yet: "
            "`make all` on a dataset with `test_labels.csv` (the demo, `data/shifted`) writes one.\n"
        )
    table = pd.DataFrame(
        {
            "results file": [f"`{Path(f).stem}`" for f in frame["file"]],
            "dataset": frame["dataset"],
            "preset": frame["preset"],
            "shift warned": ["yes" if w else "no" for w in frame["warned"]],
            "held-out": [f"{v:.4f}" for v in frame["held_out"]],
            **{
                label: [_with_gap(v, g) for v, g in zip(frame[c], frame[f"{c}_gap"], strict=True)]
                for c, _, label in ESTIMATES
            },
        }
    )
    return markdown_table(table) + "\n" + markdown_table(summary(frame))
