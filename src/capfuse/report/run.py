"""A finished run's artefacts, read once, for the HTML report and the notebooks.

``Run`` reads only what the stages wrote (``runs/<dataset>/...``, ``folds/``, ``submissions/``)
plus the validated dataset; it never trains or refits anything the pipeline fitted. Artefacts a
report cannot do without raise ``MissingArtefact`` naming the file and the command that writes
it; optional ones come back as ``None`` so that a report can say "not run yet".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.config import load_config
from capfuse.data.dataset import Dataset, load_dataset
from capfuse.data.images import resolve_image_path
from capfuse.data.logits import read_aligned
from capfuse.ensemble.decision import apply_threshold
from capfuse.ensemble.second_level import (
    ensemble_dir,
    read_probs,
    threshold_rule,
    thresholds_vector,
)
from capfuse.paths import Paths
from capfuse.shift import REPORT_FILE as SHIFT_REPORT
from capfuse.submission import read_submission
from capfuse.utils.io import read_json
from capfuse.utils.numeric import sigmoid

DEFAULT_CONFIG = "configs/pipeline.yaml"


class MissingArtefact(FileNotFoundError):
    """A required artefact is absent; the message names the file and the command that writes it."""

    def __init__(self, path: Path, command: str, what: str):
        self.path, self.command = path, command
        super().__init__(f"{path} does not exist ({what}): run `{command}` first")


@dataclass
class KeptOOF:
    """The out-of-fold probabilities a report analyses, and the decision the pipeline applies to them."""

    probs: np.ndarray  # [n_train, C], train-row order of the dataset
    pred: np.ndarray  # [n_train, C] 0/1 after the threshold and the never-empty rule
    threshold: float | np.ndarray  # global value or one per class
    source: str  # what the probabilities are, in words


@dataclass
class Run:
    paths: Paths
    cfg: dict
    ds: Dataset
    _cache: dict = field(default_factory=dict, repr=False)

    # -- the dataset -------------------------------------------------------------------------
    @property
    def dataset(self) -> str:
        return self.paths.dataset

    @property
    def class_ids(self) -> list[int]:
        return self.ds.class_ids

    @property
    def class_names(self) -> list[str]:
        return list(self.ds.val.classes.names)

    @property
    def Y(self) -> np.ndarray:
        return self.ds.Y

    @property
    def train(self) -> pd.DataFrame:
        return self.ds.val.train

    @property
    def test(self) -> pd.DataFrame:
        return self.ds.val.test

    @property
    def rule(self) -> dict:
        return threshold_rule(self.cfg)

    def image_path(self, image_id: str) -> Path:
        return resolve_image_path(self.paths.data_dir, image_id)

    def label_names(self, row: np.ndarray) -> list[str]:
        """Names of the classes set in one 0/1 row."""
        return [self.class_names[j] for j in np.flatnonzero(row)]

    # -- required artefacts ------------------------------------------------------------------
    def folds(self) -> pd.DataFrame:
        """``ImageID, fold`` in the dataset's train order."""
        if not self.paths.folds_file.exists():
            raise MissingArtefact(self.paths.folds_file, self._make("folds"), "the fold file")
        return pd.DataFrame({"ImageID": self.ds.train_ids, "fold": self.ds.folds()})

    def leaderboard(self) -> pd.DataFrame:
        path = self.paths.runs / "leaderboard.csv"
        if not path.exists():
            raise MissingArtefact(path, self._make("all"), "no model is trained for this dataset")
        return pd.read_csv(path)

    def model_oof(self, model: str) -> np.ndarray:
        """One base model's OOF probabilities, aligned to the train rows."""
        path = self.paths.model_dir(model) / "oof_logits.csv"
        if not path.exists():
            raise MissingArtefact(path, self._make("train"), f"OOF logits of {model}")
        return sigmoid(read_aligned(path, self.ds.train_ids, [str(c) for c in self.class_ids]).to_numpy(np.float64))

    def kept_oof(self) -> KeptOOF:
        """The kept second level's OOF probabilities with the thresholds ``make thresholds`` chose.

        Before ``make stack`` has run, the best model of the leaderboard stands in, at the
        global threshold its training fitted, and ``source`` says so.
        """
        if "kept" in self._cache:
            return self._cache["kept"]
        out = ensemble_dir(self.paths)
        stack, cut = self.stack_summary(), self.thresholds()
        if (out / "oof_probs.csv").exists() and stack is not None:
            probs = read_probs(out / "oof_probs.csv", self.ds.train_ids, self.class_ids)
            if cut is not None:
                threshold = thresholds_vector(cut, self.class_ids)
                source = f"kept second level ({stack['chosen']}), {cut['kind'].replace('_', '-')} thresholds"
            else:
                threshold = float(stack["candidates"][stack["chosen"]]["threshold"])
                source = f"kept second level ({stack['chosen']}), its global threshold (`make thresholds` not run yet)"
        else:
            board = self.leaderboard().sort_values("cv_mean_f1", ascending=False)
            best = str(board["model"].iloc[0])
            probs = self.model_oof(best)
            threshold = float(board["threshold"].iloc[0])
            source = f"best single model ({best}) at its global threshold (`make stack` not run yet)"
        pred = apply_threshold(probs, threshold, **self.rule)
        self._cache["kept"] = KeptOOF(probs, pred, threshold, source)
        return self._cache["kept"]

    def oof(self, model: str | None = None) -> KeptOOF:
        """``kept_oof()`` for ``None``; else one base model's OOF at the global threshold its
        training fitted (``metrics.json``)."""
        if model is None:
            return self.kept_oof()
        metrics = self.paths.model_dir(model) / "metrics.json"
        if not metrics.exists():
            raise MissingArtefact(metrics, self._make("train"), f"model {model} is not trained")
        threshold = float(read_json(metrics)["threshold"])
        probs = self.model_oof(model)
        return KeptOOF(
            probs, apply_threshold(probs, threshold, **self.rule), threshold, f"{model} at its global threshold"
        )

    # -- optional artefacts ------------------------------------------------------------------
    def stack_summary(self) -> dict | None:
        path = self.paths.runs / "ensemble" / "stack.json"
        return read_json(path) if path.exists() else None

    def thresholds(self) -> dict | None:
        path = self.paths.runs / "ensemble" / "thresholds.json"
        return read_json(path) if path.exists() else None

    def shift_report(self) -> dict | None:
        """``runs/<dataset>/shift.json``, or None before ``make infer`` (or ``capfuse shift``)."""
        path = self.paths.runs / SHIFT_REPORT
        return read_json(path) if path.exists() else None

    def table(self, name: str, make_target: str | None = None) -> pd.DataFrame | None:
        """``runs/<dataset>/<name>.csv`` (pseudo_rounds, label_ratios, ablation); None when absent,
        or, given ``make_target``, an error naming the file and ``make <make_target>``."""
        path = self.paths.runs / f"{name}.csv"
        if path.exists():
            return pd.read_csv(path)
        if make_target is not None:
            raise MissingArtefact(path, self._make(make_target), f"the {name.replace('_', ' ')} table")
        return None

    def submission(self) -> tuple[pd.DataFrame, dict] | None:
        """``submissions/<dataset>-latest.csv`` and its manifest, or None before ``make infer``."""
        csv = self.paths.submissions / f"{self.dataset}-latest.csv"
        meta = csv.with_suffix(".json")
        if not csv.exists():
            return None
        return read_submission(csv), (read_json(meta) if meta.exists() else {})

    def test_truth(self) -> np.ndarray | None:
        """The demo's ``test_labels.csv`` as a 0/1 matrix in test order (reports only; never trained on)."""
        path = self.paths.data_dir / "test_labels.csv"
        if not path.exists():
            return None
        labels = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("ImageID")["Labels"]
        ids = self.ds.test_ids
        missing = [i for i in ids if i not in labels.index]
        if missing:
            return None  # a partial answer key scores nothing honestly
        return self.ds.val.classes.to_matrix([[int(x) for x in labels[i].split()] for i in ids])

    def make_hint(self, target: str) -> str:
        """``make <target>`` with this run's DATA, for "not run yet" lines."""
        return self._make(target)

    def _make(self, target: str) -> str:
        # The command a user would type: DATA only when it is not the Makefile's default.
        data, root = self.paths.data_dir.resolve(), self.paths.root.resolve()
        if data == root / "data" / "demo":
            return f"make {target}"
        return f"make {target} DATA={data.relative_to(root) if data.is_relative_to(root) else data}"


def open_run(
    data: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    config: str | os.PathLike | None = None,
    *,
    cfg: dict | None = None,
) -> Run:
    """Open the run of the dataset in ``data`` under the project folder ``root``.

    Relative ``data`` and ``config`` paths are taken from ``root`` (a config missing there from
    the project folder); ``root`` defaults to the project folder that holds the current
    directory (a notebook runs in ``notebooks/``).
    Arguments left out fall back to ``CAPFUSE_DATA``, ``CAPFUSE_ROOT`` and ``CAPFUSE_CONFIG``,
    then to ``data/demo``, the project folder and ``configs/pipeline.yaml``.
    """
    root = Path(root or os.environ.get("CAPFUSE_ROOT") or project_root(Path.cwd())).resolve()
    data = Path(data or os.environ.get("CAPFUSE_DATA") or "data/demo")
    data = data if data.is_absolute() else root / data
    if cfg is None:
        config = Path(config or os.environ.get("CAPFUSE_CONFIG") or DEFAULT_CONFIG)
        if not config.is_absolute():
            # A run folder elsewhere (a scratch --root) has no configs/: use this project's.
            config = next((c for c in (root / config, project_root(Path.cwd()) / config) if c.is_file()), root / config)
        cfg = load_config(config)
    paths = Paths(data_dir=data, root=root)
    return Run(paths=paths, cfg=cfg, ds=load_dataset(paths, cfg, quiet=True))


def project_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding ``configs/pipeline.yaml``; ``start`` if none."""
    for folder in (start, *start.parents):
        if (folder / DEFAULT_CONFIG).is_file():
            return folder
    return start
