"""A results file for a table measured just now, on this machine, by the running command.

The one call the measuring commands make (``ablate``, ``bench``, ``ratios``, ``zeroshot``):
the machine record is read here, the commit is the project's HEAD, and a failure to write is
one warning line, never the failure of the measurement it would have recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from capfuse.results.machine import machine_record
from capfuse.results.tables import Written, command_line, short_commit, write_results, write_safely


def write_measured(
    results: Path,
    table: str,
    frame: pd.DataFrame,
    *,
    root: Path,
    name: str,
    facts: dict | None = None,
    notes: Iterable[str] = (),
) -> Written | None:
    """``results/<table>/<date>_<name>_<machine>_<commit7>.{csv,md}``; ``root``: the project
    whose HEAD the figures belong to. Returns None (after a warning) when it could not be written."""

    def write() -> Written:
        machine = machine_record(root).fields()
        title = f"{table}: {name}, {machine['slug']}, {machine['date'][:10]} ({short_commit(machine['commit'])})"
        return write_results(
            results, table, frame, machine, name=name, command=command_line(), facts=facts, title=title, notes=notes
        )

    return write_safely(results / table, write)
