"""Where a command's time and memory went: one row per stage and per (model, fold).

The CLI opens a ``Timings`` for each command (``recording``); every ``stage`` header of
``capfuse.utils.log`` and every fold the trainer fits add a row to it while it is open, and the
command ends by printing the stage table and appending the rows to ``runs/<dataset>/timings.csv``.
The recorder is held in a context variable for the command's lifetime only: library code that
runs outside a command (tests, notebooks) records nothing.

Peak RSS is the process's high-water mark when the row ends (``getrusage``; worker processes'
peak counted too), so the first row that reaches a new peak shows it and later rows repeat it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from capfuse.utils.io import write_csv

COLUMNS = ("command", "started", "stage", "model", "fold", "depth", "wall_s", "cpu_s", "peak_rss_mb", "invocation")
_ACTIVE: contextvars.ContextVar[Timings | None] = contextvars.ContextVar("capfuse_timings", default=None)


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_rss_mb() -> float:
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    return peak / (2**20 if sys.platform == "darwin" else 2**10)  # bytes on macOS, KiB on Linux


@dataclass
class Row:
    command: str
    started: str
    stage: str
    model: str
    fold: int | None
    depth: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    # When the command began: two runs of one command in a row are two invocations, not one.
    invocation: str = ""


@dataclass
class Timings:
    command: str
    rows: list[Row] = field(default_factory=list)
    depth: int = 0
    invocation: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S") + f".{os.getpid()}")

    @contextmanager
    def timed(self, stage: str, *, model: str = "", fold: int | None = None) -> Iterator[None]:
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        wall, cpu = time.perf_counter(), _cpu_seconds()
        at = len(self.rows)  # the row takes its place before the rows nested in it
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            row = Row(
                self.command,
                started,
                stage,
                model,
                fold,
                self.depth,
                round(time.perf_counter() - wall, 2),
                round(_cpu_seconds() - cpu, 2),
                round(_peak_rss_mb(), 1),
                self.invocation,
            )
            self.rows.insert(at, row)

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame([asdict(r) for r in self.rows], columns=list(COLUMNS))
        df["fold"] = df["fold"].astype("Int64")  # blank for stage rows, an integer for fold rows
        return df

    def table(self) -> str:
        """The stage table a long command prints at its end: nested rows indented, folds summed
        per model so that a five-fold model is one line."""
        lines = [f"{'stage':<44} {'wall s':>9} {'CPU s':>9} {'CPU/wall':>8} {'peak RSS MB':>12}"]
        folds: dict[str, list[Row]] = {}
        for r in self.rows:
            if r.fold is not None:
                folds.setdefault(r.model, []).append(r)
        for r in self.rows:
            if r.fold is not None:
                continue
            lines.append(_line("  " * r.depth + r.stage, r.wall_s, r.cpu_s, r.peak_rss_mb))
            model = r.stage.removeprefix("train ") if r.stage.startswith("train ") else None
            if model in folds:
                rows = folds.pop(model)
                lines.append(
                    _line(
                        "  " * (r.depth + 1) + f"{len(rows)} folds fitted",
                        sum(x.wall_s for x in rows),
                        sum(x.cpu_s for x in rows),
                        max(x.peak_rss_mb for x in rows),
                    )
                )
        return "\n".join(lines)


def _line(name: str, wall: float, cpu: float, rss: float) -> str:
    ratio = f"{cpu / wall:8.2f}" if wall > 0 else f"{'':>8}"
    return f"{name[:44]:<44} {wall:9.1f} {cpu:9.1f} {ratio} {rss:12.0f}"


@contextmanager
def timed(stage: str, *, model: str = "", fold: int | None = None) -> Iterator[None]:
    """A row in the open command's timings; nothing when no command is recording."""
    timings = _ACTIVE.get()
    if timings is None:
        yield
        return
    with timings.timed(stage, model=model, fold=fold):
        yield


@contextmanager
def recording(command: str, csv_path: Path | None = None) -> Iterator[Timings]:
    """Record the command's rows; at its end (also when it fails) append them to ``csv_path``."""
    timings = Timings(command)
    token = _ACTIVE.set(timings)
    try:
        yield timings
    finally:
        _ACTIVE.reset(token)
        if csv_path is not None and timings.rows:
            old = pd.read_csv(csv_path) if csv_path.exists() else None
            new = timings.frame()
            try:
                write_csv(csv_path, new if old is None else pd.concat([old, new], ignore_index=True))
            except OSError as exc:  # a full disk: the command's own error is the one to report
                logging.getLogger("capfuse").warning("timings not written to %s: %s", csv_path, exc)
