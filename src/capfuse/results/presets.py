"""The README's presets table, rendered from the ``runs`` results files and nothing else.

One row per preset: the time of ``make all`` on the competition-sized copy (dataset ``large``,
one column per machine found), and the nested CV of the submitted pipeline on the demo and on
that copy (on the copy, each machine's). Then one row per (preset, ``TIME_LIMIT``) measured: the whole command's time under
that budget on each machine, and the nested CV of what the budget kept. Each cell is the newest file of its (preset, dataset, machine), and a footnote under
the table links every file a cell came from; a cell with no file says ``not measured``. The
README holds the table between two markers, and a test checks that it equals what this module
renders, so the README cannot drift from the files.

Reads CSVs only (no torch): the check runs in any test session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

BEGIN = "<!-- results:presets -->"
END = "<!-- /results:presets -->"
PRESETS = ("fast", "default", "best")
TIMED = "large"  # the competition-sized copy that `make bench-scale` makes
SCORED = {"demo": "nested CV, demo", "large": "nested CV, 30k copy"}
NOT_MEASURED = "not measured"


def read_runs(results_root: Path) -> pd.DataFrame:
    """One row per ``runs`` results file: its path, when, what and where, total minutes, peak
    RSS and the nested CV of the kept second level."""
    rows = []
    for csv in sorted((Path(results_root) / "runs").glob("*.csv")):
        df = pd.read_csv(csv)
        if df.empty or not {"kind", "preset", "dataset", "slug", "date"} <= set(df.columns):
            continue
        first = df.iloc[0]
        # A budgeted run's time is its whole command (what the budget counts), where recorded.
        limit = first.get("time_limit_s", None)
        command = df[(df["kind"] == "total") & (df["name"] == "command")]
        total = command if pd.notna(limit) and len(command) else df[(df["kind"] == "total") & (df["name"] != "command")]
        second = df[df["kind"] == "second_level"]
        rows.append(
            {
                "file": csv.with_suffix(".md"),
                "date": str(first["date"]),
                "preset": str(first["preset"]),
                "dataset": str(first["dataset"]),
                "slug": str(first["slug"]),
                "cpu": str(first.get("cpu", "")),
                "isa": str(first.get("isa", "")),
                "threads": first.get("threads"),
                "gpu": str(first.get("gpu", "none")),
                "train_rows": first.get("train_rows"),
                "test_rows": first.get("test_rows"),
                "minutes": float(total["minutes"].iloc[0]) if len(total) else None,
                "peak_rss_mb": float(total["peak_rss_mb"].iloc[0]) if len(total) else None,
                "nested": float(second["nested_mean_f1"].iloc[0]) if len(second) else None,
                "time_limit_s": float(limit) if pd.notna(limit) else None,
                "stages_only": pd.notna(limit) and not len(command),
                # A run with --set values is a variant of its preset, not the preset.
                "variant": pd.notna(first.get("overrides", None)) and str(first.get("overrides", "")).strip() != "",
            }
        )
    return pd.DataFrame(rows)


def _newest(runs: pd.DataFrame, **where) -> pd.Series | None:
    hit = runs
    for key, value in where.items():
        hit = hit[hit[key].isna()] if value is None else hit[hit[key] == value]
    if hit.empty:
        return None
    return hit.sort_values(["date", "file"]).iloc[-1]


def _duration(minutes: float) -> str:
    seconds = round(minutes * 60)
    return f"{seconds // 60} min {seconds % 60:02d} s"


def _limit(seconds: float) -> str:
    """A budget as ``TIME_LIMIT=`` takes it: 20m, 1h, 1h30m, 90s."""
    s = int(round(seconds))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec or not (h or m) else "")


def _rows_text(runs: pd.DataFrame) -> str:
    """``30,000 / 10,000 rows`` when every timed file agrees on its sizes."""
    sizes = {(r.train_rows, r.test_rows) for r in runs.itertuples() if r.dataset == TIMED}
    if len(sizes) != 1:
        return ""
    train, test = next(iter(sizes))
    if pd.isna(train) or pd.isna(test):
        return ""
    return f", {int(train):,} / {int(test):,} rows"


def presets_table(results_root: Path, link_from: Path) -> str:
    """The table, its footnotes and the machines' legend, as Markdown; links are relative to
    the folder ``link_from`` (the README's)."""
    runs = read_runs(results_root)
    if not runs.empty:
        # A run of another config, or with --set values, is not a preset's figure.
        runs = runs[runs["preset"].isin(PRESETS) & ~runs["variant"]]
    empty = runs.empty
    slugs = [] if empty else sorted(set(runs.loc[runs["dataset"] == TIMED, "slug"]))
    sources: list[Path] = []

    def cite(row: pd.Series, text: str) -> str:
        if row["file"] not in sources:
            sources.append(row["file"])
        return f"{text} ({sources.index(row['file']) + 1})"

    rows_text = "" if empty else _rows_text(runs)
    header = ["preset"]
    header += [f"`make all` on `{TIMED}`{rows_text}, {s}" for s in slugs] or [f"`make all` on `{TIMED}`"]
    header += list(SCORED.values())
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    budgets = (
        []
        if empty
        else sorted(
            {(p, t) for p, t in zip(runs["preset"], runs["time_limit_s"], strict=True) if pd.notna(t)},
            key=lambda pt: (PRESETS.index(pt[0]), pt[1]),
        )
    )
    for preset, limit in [(p, None) for p in PRESETS] + budgets:
        cells = [f"`{preset}`" + ("" if limit is None else f", `TIME_LIMIT={_limit(limit)}`")]
        for slug in slugs or [None]:
            row = (
                None
                if empty or slug is None
                else _newest(runs, preset=preset, dataset=TIMED, slug=slug, time_limit_s=limit)
            )
            if row is None or row["minutes"] is None or pd.isna(row["minutes"]):
                cells.append(NOT_MEASURED)
            else:
                memory = "" if pd.isna(row["peak_rss_mb"]) else f", {row['peak_rss_mb'] / 1024:.1f} GB"
                # A budgeted run from before the whole command was recorded: its stages' sum only.
                partial = " (stages only)" if bool(row["stages_only"]) else ""
                cells.append(cite(row, _duration(row["minutes"]) + partial + memory))
        for dataset in SCORED:
            # On the timed copy, each machine's own figure: a budget keeps different models on
            # different machines, so their nested CVs differ (the footnote names the machine).
            found = []
            for slug in slugs if dataset == TIMED and slugs else [None]:
                where = {"preset": preset, "dataset": dataset, "time_limit_s": limit} | ({"slug": slug} if slug else {})
                row = None if empty else _newest(runs, **where)
                if row is not None and row["nested"] is not None and not pd.isna(row["nested"]):
                    found.append(cite(row, f"{row['nested']:.4f}"))
            cells.append(", ".join(found) if found else NOT_MEASURED)
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n"
    if sources:
        links = [
            f"({i}) [{p.stem}]({Path(os.path.relpath(p, link_from)).as_posix()})" for i, p in enumerate(sources, 1)
        ]
        out += "\nSources: " + "; ".join(links) + ".\n"
    machines = [] if empty else runs.drop_duplicates("slug").sort_values("slug")
    legend = [
        f"`{r.slug}`: {r.cpu}, {r.isa}"
        + ("" if pd.isna(r.threads) else f", {int(r.threads)} threads")
        + ("" if r.gpu == "none" else f", {r.gpu}")
        for r in (machines.itertuples() if len(machines) else [])
        if r.slug in slugs
    ]
    if legend:
        out += "\nMachines: " + "; ".join(legend) + ".\n"
    return out


def presets_block(results_root: Path, link_from: Path) -> str:
    """The README block, markers included."""
    return f"{BEGIN}\n{presets_table(results_root, link_from)}{END}"


def replace_block(text: str, block: str) -> str:
    """``text`` with the part from BEGIN to END replaced by ``block``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} ... {END} block")
    return text[:start] + block + text[end + len(END) :]


def current_block(text: str) -> str | None:
    """The block as it stands in ``text``; None without markers."""
    start, end = text.find(BEGIN), text.find(END)
    return None if start < 0 or end < start else text[start : end + len(END)]
