"""Class ids as the user gave them, and the one place they map to matrix columns.

Ids need not be contiguous (COMP5329 uses 1-19 without 12); every file a user reads
(submission, OOF logits, reports) speaks ids, and only models see column indices, in
ascending id order. Names come from an optional ``classes.csv`` (``id,name``); they feed
reports and the text-based methods (label prompts, zero-shot).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from capfuse.data.csvio import split_lines
from capfuse.data.problems import DataError


@dataclass(frozen=True)
class ClassSet:
    ids: tuple[int, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if list(self.ids) != sorted(set(self.ids)):
            raise ValueError(f"class ids must be unique and ascending, got {self.ids}")
        if len(self.names) != len(self.ids):
            raise ValueError("one name per class id")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def index(self) -> dict[int, int]:
        return {cid: i for i, cid in enumerate(self.ids)}

    def name_of(self, cid: int) -> str:
        return self.names[self.index[cid]]

    def to_matrix(self, label_lists: Sequence[Iterable[int]]) -> np.ndarray:
        """Multi-hot ``uint8`` matrix ``[N, C]``; an unknown id is an error, never ignored."""
        index = self.index
        Y = np.zeros((len(label_lists), len(self.ids)), dtype=np.uint8)
        for r, labels in enumerate(label_lists):
            for cid in labels:
                if cid not in index:
                    raise KeyError(f"row {r}: class id {cid} is not one of {list(self.ids)}")
                Y[r, index[cid]] = 1
        return Y

    def from_matrix(self, Y: np.ndarray) -> list[list[int]]:
        ids = np.asarray(self.ids)
        return [ids[np.flatnonzero(row)].tolist() for row in np.asarray(Y)]

    @classmethod
    def from_labels(cls, label_lists: Iterable[Iterable[int]], classes_csv: str | Path | None = None) -> ClassSet:
        """Ids seen in training plus any listed in ``classes.csv``; names from that file."""
        ids = {int(c) for labels in label_lists for c in labels}
        names: dict[int, str] = {}
        if classes_csv is not None and Path(classes_csv).is_file():
            names = read_classes_csv(classes_csv)
            ids |= set(names)
        if not ids:
            raise DataError("no class ids: the training file has no usable labelled row")
        ordered = tuple(sorted(ids))
        return cls(ordered, tuple(names.get(c, f"class {c}") for c in ordered))


def read_classes_csv(path: str | Path) -> dict[int, str]:
    """``id,name`` rows; a bad row is an error naming the line, since names drive text methods."""
    path = Path(path)
    lines = split_lines(path.read_bytes().decode("utf-8-sig"))  # a lone \r stays inside its name
    if not lines or [h.strip().lower() for h in lines[0].split(",")] != ["id", "name"]:
        raise DataError(f"{path}:1: bad header {lines[0] if lines else ''!r}; expected 'id,name'")
    out: dict[int, str] = {}
    for i, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        cid, _, name = text.partition(",")
        try:
            key = int(cid.strip())
        except ValueError:
            raise DataError(f"{path}:{i}: class id {cid.strip()!r} is not an integer") from None
        name = name.strip().strip('"').strip()
        if not name:
            raise DataError(f"{path}:{i}: class {key} has no name")
        if key in out:
            raise DataError(f"{path}:{i}: class id {key} is listed twice")
        out[key] = name
    return out
