"""Kaggle submission files: build them, check them against test.csv, write them with a manifest.

A submission is ``ImageID,Labels``: one row per test image in test.csv's order, labels the
user's class ids, space-separated, never empty. Kaggle rejects (or silently mis-scores) a file
that breaks any of this, after a daily submission has been spent, so ``write_submission``
refuses to write one that fails ``check_submission``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.utils.io import atomic_path, sha256_file, write_csv, write_json

HEADER = ["ImageID", "Labels"]
MAX_PER_KIND = 20  # messages listed per kind of problem; the rest are counted in one line
_INT = re.compile(r"^[+-]?\d+$")
_TIMESTAMP = re.compile(r"^\d{8}-\d{6}$")


class SubmissionError(ValueError):
    """A submission that fails the checks; ``problems`` lists every one found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"{len(problems)} problem(s) in the submission:\n" + "\n".join(f"  - {p}" for p in problems))


def format_labels(label_ids: Sequence[int]) -> str:
    """Space-separated ids in ascending order, e.g. ``[19, 1] -> "1 19"``."""
    ids = []
    for x in label_ids:
        if isinstance(x, bool) or int(x) != x:
            raise ValueError(f"label ids must be integers, got {x!r}")
        ids.append(int(x))
    return " ".join(str(i) for i in sorted(set(ids)))


def predictions_to_frame(image_ids: Sequence[str], binary: np.ndarray, class_ids: Sequence[int]) -> pd.DataFrame:
    """``ImageID, Labels`` from a binary ``[N, C]`` matrix whose columns are ``class_ids``."""
    b = np.asarray(binary)
    if b.ndim != 2 or b.shape != (len(image_ids), len(class_ids)):
        raise ValueError(f"binary must have shape ({len(image_ids)} ids, {len(class_ids)} classes), got {b.shape}")
    if b.size and not np.isin(b, (0, 1)).all():
        raise ValueError("binary must hold only 0/1")
    ids = np.asarray([int(c) for c in class_ids])
    labels = [format_labels(ids[row.astype(bool)]) for row in b]
    return pd.DataFrame({"ImageID": [str(i) for i in image_ids], "Labels": labels})


def _cell(v) -> str:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    return str(v)


def _capped(kind: str, messages: list[str]) -> list[str]:
    if len(messages) <= MAX_PER_KIND:
        return messages
    return messages[:MAX_PER_KIND] + [f"... and {len(messages) - MAX_PER_KIND} more rows with {kind}"]


def check_submission(sub: pd.DataFrame, test_ids: Sequence[str], class_ids: Sequence[int]) -> list[str]:
    """Every problem of ``sub`` as a submission for ``test_ids``; empty when it is valid.

    Rows are named ``row i`` counting data rows from 1 (the header is not a row; in the file,
    row i is line i + 1), with the row's ImageID. At most ``MAX_PER_KIND`` messages are listed
    per kind of problem, the rest counted in one line. An id may repeat only as often as it
    repeats in test.csv.
    """
    problems: list[str] = []
    columns = [str(c) for c in sub.columns]
    if columns != HEADER:
        problems.append(f"header is {','.join(columns)!r}, must be exactly 'ImageID,Labels'")
        if not set(HEADER) <= set(columns):
            return problems  # without both columns no row can be checked

    test = [str(i) for i in test_ids]
    ids = [_cell(v) for v in sub["ImageID"]]
    labels = [_cell(v) for v in sub["Labels"]]
    classes = {int(c) for c in class_ids}
    if len(ids) != len(test):
        problems.append(f"{len(ids)} rows, test.csv has {len(test)}")

    # Ids: unknown, repeated beyond test.csv's count, missing. Occurrence j of an id maps to the
    # j-th position of that id in test.csv, which also gives the order check its target.
    positions: dict[str, list[int]] = defaultdict(list)
    for pos, i in enumerate(test):
        positions[i].append(pos)
    seen: Counter[str] = Counter()
    rows_of: dict[str, list[int]] = defaultdict(list)
    unknown, duplicate, order = [], [], []
    target: list[tuple[int, int]] = []  # (row, position in test.csv)
    for r, i in enumerate(ids, start=1):
        rows_of[i].append(r)
        if i not in positions:
            unknown.append(f"row {r} (ImageID {i!r}): id not in test.csv")
            continue
        seen[i] += 1
        if seen[i] > len(positions[i]):
            times = len(positions[i])
            duplicate.append(
                f"row {r} (ImageID {i!r}): duplicate id, also on row(s) "
                f"{', '.join(map(str, rows_of[i][:-1]))}; test.csv has it {times} time(s)"
            )
            continue
        target.append((r, positions[i][seen[i] - 1]))
    missing = [
        f"ImageID {i!r} (test.csv position {positions[i][seen[i]] + 1}): missing"
        + (f", appears {seen[i]} of {len(positions[i])} times" if seen[i] else "")
        for i in positions
        if seen[i] < len(positions[i])
    ]
    # Order: the rows whose test.csv position comes before that of a row above them.
    furthest = -1
    for r, pos in target:
        if pos < furthest:
            order.append(
                f"row {r} (ImageID {ids[r - 1]!r}): out of order, test.csv has it at position {pos + 1}, "
                f"before a row above it"
            )
        furthest = max(furthest, pos)
    problems += _capped("unknown ids", unknown)
    problems += _capped("duplicate ids", duplicate)
    problems += _capped("missing ids", missing)
    problems += _capped("rows out of order", order)

    # Labels.
    empty, not_int, not_class, repeated = [], [], [], []
    class_list = " ".join(str(c) for c in sorted(classes))
    for r, (i, text) in enumerate(zip(ids, labels), start=1):
        tokens = text.split()
        where = f"row {r} (ImageID {i!r})"
        if not tokens:
            empty.append(f"{where}: empty label set")
            continue
        bad = [t for t in tokens if not _INT.match(t)]
        if bad:
            not_int.append(f"{where}: labels that are not integers: {', '.join(map(repr, bad))}")
        values = [int(t) for t in tokens if _INT.match(t)]
        outside = [v for v in values if v not in classes]
        if outside:
            not_class.append(f"{where}: labels not in the class set ({class_list}): {', '.join(map(str, outside))}")
        twice = sorted(v for v, n in Counter(values).items() if n > 1)
        if twice:
            repeated.append(f"{where}: labels repeated: {', '.join(map(str, twice))}")
    problems += _capped("empty label sets", empty)
    problems += _capped("non-integer labels", not_int)
    problems += _capped("labels outside the class set", not_class)
    problems += _capped("repeated labels", repeated)
    return problems


def read_submission(path: str | os.PathLike) -> pd.DataFrame:
    """A submission CSV as strings, exactly as written (no NaN conversion, no int parsing)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _copy(src: Path, dst: Path) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def write_submission(
    sub: pd.DataFrame,
    test_ids: Sequence[str],
    class_ids: Sequence[int],
    out_dir: str | os.PathLike,
    dataset: str,
    manifest: dict,
    timestamp: str | None = None,
) -> dict[str, Path]:
    """Check ``sub``, then write ``<dataset>-<timestamp>.csv``, ``<dataset>-latest.csv`` and a JSON
    manifest beside each; returns their paths (keys ``csv``, ``manifest``, ``latest_csv``,
    ``latest_manifest``).

    Raises ``SubmissionError`` listing every problem and writes nothing when the check fails.
    ``timestamp`` defaults to now in UTC (``YYYYMMDD-HHMMSS``). Each manifest is ``manifest``
    plus the file it describes, its sha256, row count and timestamp. Every write is atomic.
    """
    problems = check_submission(sub, test_ids, class_ids)
    if problems:
        raise SubmissionError(problems)
    if not dataset or any(ch in dataset for ch in "/\\") or dataset in (".", ".."):
        raise ValueError(f"dataset name {dataset!r} cannot name a file")
    if timestamp is None:
        timestamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    elif not _TIMESTAMP.match(timestamp):
        raise ValueError(f"timestamp must look like 20261122-143015, got {timestamp!r}")

    out_dir = Path(out_dir)
    csv = out_dir / f"{dataset}-{timestamp}.csv"
    latest = out_dir / f"{dataset}-latest.csv"
    write_csv(csv, sub[HEADER])
    facts = {"sha256": sha256_file(csv), "rows": int(len(sub)), "timestamp": timestamp}
    meta = csv.with_suffix(".json")
    write_json(meta, {**manifest, "file": csv.name, **facts})
    _copy(csv, latest)
    latest_meta = latest.with_suffix(".json")
    write_json(latest_meta, {**manifest, "file": latest.name, "copy_of": csv.name, **facts})
    return {"csv": csv, "manifest": meta, "latest_csv": latest, "latest_manifest": latest_meta}
