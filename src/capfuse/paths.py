"""Where every artefact of a dataset lives, resolved once from the CLI's arguments.

The dataset's name is the last component of its folder (``data/demo`` → ``demo``); it keys
the fold file, the run folder and the submission names, so several datasets never mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    root: Path  # the project folder holding folds/, runs/, submissions/

    @property
    def dataset(self) -> str:
        name = self.data_dir.resolve().name
        if not name:
            raise ValueError(f"cannot name a dataset after {self.data_dir}")
        return name

    @property
    def folds_file(self) -> Path:
        return self.root / "folds" / f"{self.dataset}.csv"

    @property
    def runs(self) -> Path:
        return self.root / "runs" / self.dataset

    @property
    def cache(self) -> Path:
        return self.runs / "cache"

    @property
    def submissions(self) -> Path:
        return self.root / "submissions"

    def model_dir(self, model: str) -> Path:
        return self.runs / model
