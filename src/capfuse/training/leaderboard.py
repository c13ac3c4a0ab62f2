"""The leaderboard: one row per trained model, rewritten atomically after every model."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from capfuse.utils.io import write_csv


def update_leaderboard(path: Path, metrics: dict) -> pd.DataFrame:
    """One row per model, replaced when the model is retrained."""
    cols = [
        "model",
        "cv_mean_f1",
        "cv_map",
        "cv_gap_at_10",
        "cv_gap",
        "threshold",
        "params",
        "file_mb",
        "ms_per_image",
        "train_minutes",
    ]
    row = {c: metrics.get(c) for c in cols}
    board = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=cols)
    board = board[board["model"] != metrics["model"]]
    board = pd.concat([board, pd.DataFrame([row])], ignore_index=True) if len(board) else pd.DataFrame([row])
    board = board.sort_values("cv_mean_f1", ascending=False).reset_index(drop=True)
    write_csv(path, board)
    return board
