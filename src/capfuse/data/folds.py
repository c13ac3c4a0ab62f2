"""Multilabel-stratified K folds: made once, written to a file, read back by every model.

One fold file shared by all models is what lets their out-of-fold predictions line up, so that
thresholds and the stacker are fitted on predictions no model made for its own training rows.
Iterative stratification (Sechidis et al., 2011, via ``iterative-stratification``) keeps each
class's share close to equal across folds, which plain K-fold does not for rare classes. With
groups of near-duplicate rows (``capfuse.data.groups``), ``make_group_folds`` keeps each group
in one fold, and the file gains a ``group`` column that records it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from capfuse.data.groups import group_folds
from capfuse.utils.io import write_csv

GROUP = "group"  # the fold file's column of group ids, present when the folds were grouped


class FoldsError(ValueError):
    """A fold file that does not match the data it is meant to split."""


def _label_matrix(Y: np.ndarray, n_rows: int) -> np.ndarray:
    Y = np.asarray(Y)
    if Y.ndim != 2 or Y.shape[0] != n_rows:
        raise ValueError(f"Y must have shape [{n_rows}, classes] (one row per image id), got {Y.shape}")
    if Y.size and not np.isin(Y, (0, 1)).all():
        raise ValueError("Y must be a binary (0/1) label matrix")
    return Y.astype(bool)


def _duplicates(ids: Sequence[str]) -> list[str]:
    return [i for i, n in Counter(ids).items() if n > 1]


def _preview(items: Sequence, n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _checked(image_ids: Sequence[str], Y: np.ndarray, k: int) -> tuple[list[str], np.ndarray, int]:
    ids = [str(i) for i in image_ids]
    if isinstance(k, bool) or int(k) != k or k < 2:
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    k = int(k)
    if len(ids) < k:
        raise ValueError(f"{len(ids)} rows cannot fill {k} folds")
    dup = _duplicates(ids)
    if dup:
        raise ValueError(f"duplicate image ids: {_preview(dup)}")
    return ids, _label_matrix(Y, len(ids)), k


def make_folds(image_ids: Sequence[str], Y: np.ndarray, k: int = 5, seed: int = 42) -> pd.DataFrame:
    """Assign each image to one of ``k`` folds; columns ``ImageID, fold`` in input order.

    Deterministic for a given ``seed``: the splitter shuffles with it (``shuffle=True`` is what
    makes ``random_state`` take effect) and also breaks its internal ties with it.
    """

    ids, Y, k = _checked(image_ids, Y, k)
    if Y.shape[1] == 1:
        # The splitter wants a multilabel indicator (>= 2 columns); with one class, stratifying on
        # (positive, negative) is the same thing.
        Y = np.hstack([Y, ~Y])
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=int(seed))
    fold = np.full(len(ids), -1, dtype=np.int64)
    for f, (_, val) in enumerate(splitter.split(np.zeros((len(ids), 1)), Y)):
        fold[val] = f
    assert (fold >= 0).all(), "every row is held out exactly once"
    return pd.DataFrame({"ImageID": ids, "fold": fold})


def make_group_folds(
    image_ids: Sequence[str], Y: np.ndarray, groups: np.ndarray, k: int = 5, seed: int = 42
) -> pd.DataFrame:
    """Folds that keep each group of rows in one fold; columns ``ImageID, fold, group``.

    ``groups``: a group id per row (integers from 0, see ``capfuse.data.groups``). With every
    group a single row, the folds are ``make_folds``' own, row for row, so grouping costs data
    without near-duplicates nothing. Each group must hold at most 1/k of the rows
    (``groups.split_large`` dissolves larger ones) or some fold could not be filled.
    """
    ids, Y, k = _checked(image_ids, Y, k)
    groups = np.asarray(groups)
    if groups.shape != (len(ids),) or not np.issubdtype(groups.dtype, np.integer) or (groups < 0).any():
        raise ValueError(f"groups must be one non-negative integer per row ({len(ids)}), got shape {groups.shape}")
    sizes = np.bincount(groups)
    if (sizes <= 1).all():
        return make_folds(ids, Y, k=k, seed=seed).assign(**{GROUP: groups.astype(np.int64)})
    if sizes.max() * k > len(ids):
        raise ValueError(
            f"a group of {sizes.max()} rows is more than 1/{k} of the {len(ids)} rows: it cannot fit a fold"
        )
    fold = group_folds(Y, groups, k, int(seed))
    empty = sorted(set(range(k)) - set(fold.tolist()))
    if empty:
        raise ValueError(f"grouping left folds {empty} empty: {len(np.unique(groups))} groups for {k} folds")
    return pd.DataFrame({"ImageID": ids, "fold": fold, GROUP: groups.astype(np.int64)})


def fold_class_counts(folds: pd.DataFrame, Y: np.ndarray, class_ids: Sequence[int]) -> pd.DataFrame:
    """Positives of each class in each fold: rows are folds 0..k-1 then ``total``, columns class ids."""
    fold = folds["fold"].to_numpy()
    Y = _label_matrix(Y, len(fold))
    if len(class_ids) != Y.shape[1]:
        raise ValueError(f"{len(class_ids)} class ids for {Y.shape[1]} label columns")
    ks = sorted(int(f) for f in np.unique(fold))
    counts = np.array([Y[fold == f].sum(0) for f in ks] + [Y.sum(0)], dtype=np.int64).reshape(len(ks) + 1, -1)
    table = pd.DataFrame(
        counts, index=pd.Index([*ks, "total"], name="fold", dtype=object), columns=[int(c) for c in class_ids]
    )
    return table


def rare_classes(Y: np.ndarray, class_ids: Sequence[int], k: int) -> list[int]:
    """Class ids with fewer than ``k`` positives: some fold must then hold none of them."""
    Y = np.asarray(Y)
    if Y.ndim != 2 or len(class_ids) != Y.shape[1]:
        raise ValueError(f"{len(class_ids)} class ids for label matrix of shape {Y.shape}")
    positives = Y.astype(bool).sum(0)
    return [int(c) for c, n in zip(class_ids, positives) if n < k]


_INT = re.compile(r"^\s*[+-]?\d+\s*$")


def read_folds(path: str | os.PathLike, image_ids: Sequence[str], k: int | None = None) -> np.ndarray:
    """The fold of each id in ``image_ids`` (in that order) from a fold file.

    The file must cover exactly these ids, once each, with integer folds in ``0..k-1``. Without
    ``k``, k is taken as the largest fold + 1 and every fold in between must hold a row, since a
    gap means the file was made for other data. Every error names the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"fold file {path} does not exist")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing_cols = [c for c in ("ImageID", "fold") if c not in df.columns]
    if missing_cols:
        raise FoldsError(f"{path}: missing column(s) {missing_cols}; found {list(df.columns)}")
    ids = [str(i) for i in image_ids]
    dup = _duplicates(ids)
    if dup:
        raise ValueError(f"image ids to look up in {path} repeat: {_preview(dup)}")

    file_ids = df["ImageID"].tolist()
    dup = _duplicates(file_ids)
    if dup:
        raise FoldsError(f"{path}: image ids listed more than once: {_preview(dup)}")
    known = set(ids)
    extra = [i for i in file_ids if i not in known]
    if extra:
        raise FoldsError(
            f"{path}: {len(extra)} id(s) not in the data (unknown or extra): {_preview(extra)}; "
            "the fold file was made for other data, rebuild it"
        )
    listed = set(file_ids)
    missing = [i for i in ids if i not in listed]
    if missing:
        raise FoldsError(
            f"{path}: {len(missing)} id(s) of the data have no fold: {_preview(missing)}; "
            "the fold file was made for other data, rebuild it"
        )

    raw = df["fold"].tolist()
    bad = [(r + 2, v) for r, v in enumerate(raw) if not _INT.match(v)]  # +2: header is line 1
    if bad:
        raise FoldsError(f"{path}: fold values that are not integers at lines {_preview(bad)}")
    values = np.array([int(v) for v in raw], dtype=np.int64)
    if k is not None and (isinstance(k, bool) or int(k) != k or k < 2):
        raise ValueError(f"k must be an integer >= 2, got {k!r}")
    n_folds = int(k) if k is not None else int(values.max()) + 1 if values.size else 0
    out_of_range = [(r + 2, int(v)) for r, v in enumerate(values) if not 0 <= v < n_folds]
    if out_of_range:
        raise FoldsError(f"{path}: fold values outside 0..{n_folds - 1} at lines {_preview(out_of_range)}")
    if k is None:
        empty = sorted(set(range(n_folds)) - set(values.tolist()))
        if empty:
            raise FoldsError(f"{path}: folds {empty} hold no rows, so these are not folds 0..{n_folds - 1}")
    fold_of = dict(zip(file_ids, values.tolist()))
    return np.array([fold_of[i] for i in ids], dtype=np.int64)


def read_groups(path: str | os.PathLike) -> pd.Series | None:
    """The fold file's group of each id (a Series indexed by ImageID), or None for ungrouped folds."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if GROUP not in df.columns:
        return None
    bad = [(r + 2, v) for r, v in enumerate(df[GROUP]) if not _INT.match(v)]  # +2: header is line 1
    if bad:
        raise FoldsError(f"{path}: group values that are not integers at lines {_preview(bad)}")
    return pd.Series(df[GROUP].astype(np.int64).to_numpy(), index=df["ImageID"], name=GROUP)


def write_folds(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``ImageID, fold`` (and ``group`` when present) atomically; other columns are dropped."""
    missing = [c for c in ("ImageID", "fold") if c not in df.columns]
    if missing:
        raise ValueError(f"folds frame lacks column(s) {missing}")
    dup = _duplicates(df["ImageID"].astype(str).tolist())
    if dup:
        raise ValueError(f"folds frame lists ids more than once: {_preview(dup)}")
    out = pd.DataFrame({"ImageID": df["ImageID"].astype(str), "fold": df["fold"].astype(np.int64)})
    if GROUP in df.columns:
        out[GROUP] = df[GROUP].astype(np.int64)
        spans = out.groupby(GROUP)["fold"].nunique()
        if (spans > 1).any():
            raise ValueError(f"groups {_preview(spans.index[spans > 1].tolist())} span more than one fold")
    return write_csv(path, out)
