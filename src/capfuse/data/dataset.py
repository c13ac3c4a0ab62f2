"""What every stage needs first: the validated dataset, its label matrix and its folds."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.config.schema import resolve
from capfuse.data.classes import ClassSet
from capfuse.data.folds import read_folds
from capfuse.data.names import DISCOVERED_FILE, ClassNames, choose_names, names_frame, names_table
from capfuse.data.unlabelled import load_unlabelled
from capfuse.data.validate import ValidationResult, load_validated
from capfuse.paths import Paths
from capfuse.utils.io import write_csv
from capfuse.utils.log import log


@dataclass
class Dataset:
    paths: Paths
    val: ValidationResult
    Y: np.ndarray  # [n_train, C] uint8, columns in class-id order
    # ``data.unlabelled``: usable rows of an extra unlabelled folder (ImageID, Caption), or None.
    extra: pd.DataFrame | None = None
    extra_dir: Path | None = None
    # Where ``val.classes.names`` came from (capfuse.data.names); None: classes.csv or "class N"
    # as the validator read them, before ``data.class_names`` existed.
    names: ClassNames | None = None

    # Read from the tables once: iterating a table's column costs milliseconds, and loops index
    # these per row (10,000 test rows read once each would take minutes). The tables never change
    # after loading; no caller changes the lists.
    @cached_property
    def train_ids(self) -> list[str]:
        return list(self.val.train["ImageID"])

    @cached_property
    def test_ids(self) -> list[str]:
        return list(self.val.test["ImageID"])

    @property
    def image_ok(self) -> np.ndarray:
        """One flag per feature row (train rows, then test rows): does it have a usable image?

        Quarantine keeps unusable train rows out, so only test rows can be False.
        """
        return np.concatenate([np.ones(len(self.val.train), bool), self.val.test["image_ok"].to_numpy(bool)])

    @property
    def class_ids(self) -> list[int]:
        return list(self.val.classes.ids)

    def folds(self) -> np.ndarray:
        if not self.paths.folds_file.exists():
            raise FileNotFoundError(
                f"{self.paths.folds_file} does not exist: run `make folds DATA={self.paths.data_dir}` first"
            )
        return read_folds(self.paths.folds_file, self.train_ids)


def load_dataset(paths: Paths, cfg: dict, *, quiet: bool | None = None) -> Dataset:
    data = resolve(cfg).data
    val = load_validated(
        paths.data_dir,
        paths.runs,
        strict=data.strict,
        workers=data.workers,
        progress=not quiet if quiet is not None else False,
        max_pixels=data.max_pixels,
    )
    Y = val.classes.to_matrix(list(val.train["labels"]))
    start = time.perf_counter()
    names = choose_names(
        data.class_names,
        (paths.data_dir / "classes.csv").is_file(),
        val.classes.names,
        list(val.train["Caption"]),
        Y,
        val.classes.ids,
    )
    if names.source != "file":
        val = replace(val, classes=ClassSet(val.classes.ids, names.names))
    if names.discovered:
        log.info("class names discovered from %d training rows in %.2f s", len(Y), time.perf_counter() - start)
        write_discovered(paths.runs / DISCOVERED_FILE, names)
    extra, extra_dir = None, None
    if data.unlabelled:
        extra_dir = Path(data.unlabelled)
        known = set(val.train["ImageID"]) | set(val.test["ImageID"])
        extra = load_unlabelled(extra_dir, known, workers=data.workers, max_pixels=data.max_pixels)
    return Dataset(paths=paths, val=val, Y=Y, extra=extra, extra_dir=extra_dir, names=names)


def write_discovered(path: Path, names: ClassNames) -> None:
    """``classes_discovered.csv`` (atomically), and the table in the log when it is new or changed:
    a user reviews it, and may copy it to the dataset's classes.csv and edit it."""
    frame = names_frame(names.found)
    text = frame.to_csv(index=False)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    write_csv(path, frame)
    log.info(
        "class names discovered from the training captions (%s; copy it to classes.csv to fix them):\n%s",
        path,
        names_table(names.found),
    )
