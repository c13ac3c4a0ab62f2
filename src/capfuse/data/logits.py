"""Per-image tables that every stage writes and reads: logits and probabilities by ImageID.

Columns are named by the user's class ids (as strings) so the files read on their own; readers
align rows to the ids they expect and fail with the file's name when a column or an id is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def logits_frame(ids, logits: np.ndarray, class_ids, extra: dict | None = None) -> pd.DataFrame:
    """Class-named columns (the user's ids, as strings) so the files read on their own."""
    df = pd.DataFrame({"ImageID": list(ids)})
    for key, values in (extra or {}).items():
        df[key] = values
    cols = pd.DataFrame(logits.astype(np.float32), columns=[str(c) for c in class_ids])
    return pd.concat([df, cols], axis=1)


def read_aligned(path: Path, ids, columns: list[str]) -> pd.DataFrame:
    """``columns`` of a per-image CSV, one row per id of ``ids`` in that order; a clear error if
    the file lacks a column or does not cover the ids exactly."""
    df = pd.read_csv(path, dtype={"ImageID": str}, keep_default_na=False)
    missing_cols = [c for c in columns if c not in df.columns]
    if missing_cols:
        raise ValueError(f"{path}: missing columns {missing_cols}")
    if df["ImageID"].duplicated().any() and len(df) != len(ids):
        raise ValueError(f"{path}: duplicate ImageIDs")
    if len(df) == len(ids) and list(df["ImageID"]) == list(ids):
        return df[columns].reset_index(drop=True)
    indexed = df.drop_duplicates("ImageID").set_index("ImageID")
    absent = [i for i in ids if i not in indexed.index]
    if absent:
        raise ValueError(f"{path}: {len(absent)} ids missing, e.g. {absent[:5]}")
    return indexed.loc[list(ids), columns].reset_index(drop=True)


def read_logits(path: Path, ids, class_ids) -> np.ndarray:
    """Logits (class-named columns) aligned to ``ids``."""
    return read_aligned(path, ids, [str(c) for c in class_ids]).to_numpy(np.float32)
