"""Results files: a measured table as ``results/<table>/<date>_<name>_<machine>_<commit>.{csv,md}``.

The CSV holds the table with the machine record (``capfuse.results.machine``) and the run's own
facts repeated as leading columns on every row, so each row says where it was measured even
when copied out of its file. The Markdown file renders the same: a header block with every
machine field and the command that wrote it, then the table. A new measurement is a new file;
an older one stays beside it under its own date, so a table's history is its folder.

Nothing here imports torch: the documentation build calls ``markdown_for`` on a machine that
may have only the docs requirements.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from capfuse.utils.io import write_csv, write_text
from capfuse.utils.runs import check_name

RESULTS_ENV = "CAPFUSE_RESULTS"  # where results files go when a command has no --results
MAKE_ENV = "CAPFUSE_MAKE"  # the make command line that ran the command (the Makefile exports it)

log = logging.getLogger("capfuse")

# How each machine field is labelled in the Markdown header block.
MACHINE_LABELS = {
    "commit": "commit",
    "date": "date (UTC)",
    "cpu": "CPU",
    "isa": "instruction set",
    "torch_isa": "torch CPU capability",
    "isa_cap": "instruction-set cap",
    "bf16_native": "bf16 autocast native",
    "threads": "torch threads",
    "cores": "logical cores",
    "ram_gb": "RAM (GiB)",
    "load_avg": "load average (1 / 5 / 15 min) when written",
    "gpu": "GPU",
    "gpu_memory_gb": "GPU memory (GiB)",
    "gpu_driver": "GPU driver",
    "python": "Python",
    "torch": "torch",
    "capfuse": "capfuse",
    "slug": "machine",
    "command": "written by",
}
_STEM = re.compile(r"^(?P<date>\d{4}-\d{2}-\d{2})_(?P<series>.+)_(?P<commit>[^_]+)$")


@dataclass(frozen=True)
class Written:
    csv: Path
    md: Path


def results_dir(option: str | None) -> Path | None:
    """Where a command writes results files: its ``--results`` option, else ``$CAPFUSE_RESULTS``,
    else nowhere. Off by default so that test runs and tiny datasets never write into the
    project's ``results/``; the Makefile passes ``--results results`` for real measurements."""
    value = option if option is not None else os.environ.get(RESULTS_ENV)
    return Path(value) if value else None


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed, e.g. ``capfuse infer --data data/large ...``, and the make
    command that ran it when there was one."""
    argv = sys.argv if argv is None else argv
    text = shlex.join([Path(argv[0]).name, *argv[1:]]) if argv else ""
    make = os.environ.get(MAKE_ENV, "").strip()
    return f"{text} (from `{make}`)" if make else text


def short_commit(commit: str) -> str:
    """``cda5eb9`` for a clean tree, ``cda5eb9-dirty`` when the figures came from uncommitted code."""
    head = re.split(r"[+-]dirty$", commit)[0]
    return head[:7] + ("-dirty" if head != commit else "")


def file_stem(date: str, name: str | None, slug: str, commit: str) -> str:
    """``<YYYY-MM-DD>[_<name>]_<slug>_<commit7>``."""
    parts = [date[:10], *([name] if name else []), slug, short_commit(commit)]
    return "_".join(check_name(p, "a results file name part") for p in parts)


def write_results(
    results_root: Path,
    table: str,
    frame: pd.DataFrame,
    machine: dict,
    *,
    name: str | None = None,
    command: str,
    facts: dict | None = None,
    title: str | None = None,
    notes: Iterable[str] = (),
) -> Written:
    """Write ``results_root/<table>/<stem>.csv`` and ``.md`` atomically; returns their paths.

    ``machine``: a ``Machine``'s fields and its ``slug``; ``facts``: what the table is about
    (dataset, rows, preset...), shown in the header and repeated as columns like the machine's.
    """
    facts = dict(facts or {})
    context = {**machine, "command": command, **facts}
    clash = set(context) & set(frame.columns)
    if clash:
        raise ValueError(f"results table {table!r}: columns {sorted(clash)} clash with the machine and run fields")
    stem = file_stem(machine["date"], name, machine["slug"], machine["commit"])
    folder = results_root / check_name(table, "a results table name")
    out = frame.copy()
    for i, (key, value) in enumerate(context.items()):
        out.insert(i, key, [value] * len(out))
    csv = write_csv(folder / f"{stem}.csv", out)
    md = write_text(folder / f"{stem}.md", render_markdown(table, stem, context, frame, title=title, notes=notes))
    return Written(csv, md)


def write_safely(where: Path, write: Callable[[], Written]) -> Written | None:
    """``write()``, or one warning line when anything in it fails: a measurement must never fail
    because its results file could not be written (a read-only ``results/``, a missing file)."""
    try:
        written = write()
    except Exception as exc:  # any failure here is reported, never raised
        log.warning("results file not written under %s: %s: %s", where, type(exc).__name__, exc)
        return None
    log.info("results file: %s (and .md)", written.csv)
    return written


# -- Markdown ---------------------------------------------------------------------------------


def cell(value) -> str:
    """One Markdown table cell: a number as stored, to 5 decimals at most (the CSV keeps every
    digit), whole numbers without a decimal point, blanks for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return f"{value:.5f}".rstrip("0").rstrip(".")
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.astype(object).itertuples(index=False, name=None):
        lines.append("| " + " | ".join(cell(v.item() if hasattr(v, "item") else v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(
    table: str, stem: str, context: dict, frame: pd.DataFrame, *, title: str | None = None, notes: Iterable[str] = ()
) -> str:
    """The Markdown file: a heading, every machine and run field, the notes, then the table."""
    heading = title or f"{table}: {stem}"
    rows = []
    for key, value in context.items():
        label = MACHINE_LABELS.get(key, key.replace("_", " "))
        if key == "isa_cap" and not value:
            value = "none"
        if key in ("commit", "command") and value:
            value = f"`{value}`"
        rows.append({"field": label, "value": value})
    parts = [f"### {heading}\n", markdown_table(pd.DataFrame(rows, columns=["field", "value"]))]
    parts += [f"{note}\n" for note in notes]
    parts.append(markdown_table(frame))
    return "\n".join(parts)


def _sort_key(md: Path) -> tuple[str, str]:
    """Newest first: the full UTC time of the CSV beside it, else the date of the file name."""
    date = md.stem[:10]
    csv = md.with_suffix(".csv")
    if csv.exists():
        try:
            first = pd.read_csv(csv, usecols=["date"], nrows=1)
            if len(first):
                date = str(first["date"].iloc[0])
        except (ValueError, OSError, pd.errors.ParserError):
            pass
    return date, md.name


def series(stem: str) -> str:
    """What a file measures, less when and at which commit: ``large-default_epyc-avx512bf16-2t``."""
    found = _STEM.match(stem)
    return found["series"] if found else stem


def results_files(table: str, results_root: Path) -> list[Path]:
    """The Markdown files of ``table``, newest first."""
    folder = Path(results_root) / table
    files = [p for p in folder.glob("*.md") if _STEM.match(p.stem)] if folder.is_dir() else []
    return sorted(files, key=_sort_key, reverse=True)


def markdown_for(table: str, results_root: Path, newest_only: bool = False) -> str:
    """The Markdown of every results file of ``table`` (a folder under ``results_root``), newest
    first; ``newest_only``: only the newest file of each series (same name and machine, any date
    and commit). What the documentation site shows under each table."""
    files = results_files(table, results_root)
    if newest_only:
        seen: set[str] = set()
        files = [p for p in files if not (series(p.stem) in seen or seen.add(series(p.stem)))]
    if not files:
        return f"No results file under `{Path(results_root) / table}` yet.\n"
    return "\n".join(p.read_text(encoding="utf-8").rstrip("\n") + "\n" for p in files)
