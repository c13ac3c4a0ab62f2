"""Where every artefact of a dataset lives, resolved once from the CLI's arguments.

The dataset's name is the last component of its folder (``data/demo`` → ``demo``); it keys
the fold file, the run folder and the submission names, so several datasets never mix. It and
every model name must be plain names (``capfuse.utils.runs``): they become folder names that
stages write into and, on a config change, remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from capfuse.utils.runs import check_name, child_dir


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    root: Path  # the project folder holding folds/, runs/, submissions/

    @property
    def dataset(self) -> str:
        name = self.data_dir.resolve().name
        return check_name(name, f"the dataset name of {self.data_dir} (its folder's last part),")

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
        """``runs/<dataset>/<model>``; a clear error for a name that is not plain or a folder
        that a symlink puts outside ``runs/<dataset>/``."""
        return child_dir(self.runs, model, "model name")
