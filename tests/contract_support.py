"""The bench behind ``test_contract.py``: every model config trained in-process on the tiny data.

One project per session holds the tiny dataset's features for every encoder any config reads
(the shared ``tiny_run``'s cache is copied in first, so what it embedded is not embedded again).
Each config's runs are trained on first use and kept for every check that reads them.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import capfuse.models.net as net_mod
import capfuse.training.cv as trainer_mod
from capfuse import config as cfglib
from capfuse.data.dataset import Dataset, load_dataset
from capfuse.data.folds import make_folds
from capfuse.encoders.registry import build_caption as _build_caption
from capfuse.features.store import FeatureStore
from capfuse.paths import Paths
from capfuse.training.cv import model_inputs, train_model
from capfuse.training.selection import model_configs
from capfuse.utils.io import read_json

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "configs" / "models"
PIPELINE = REPO / "configs" / "pipeline.yaml"

K = 2  # folds: the fewest that hold a fold out, so every contract run trains as few as it can
# Applied to every net: the contract is about behaviour, so a fold trains two epochs, in small
# batches, so that they still take enough steps to learn the tiny data's labels.
NET_SETS = ("train.epochs=2", "train.batch_size=16")
# End-to-end fine-tuning decodes images and trains the whole backbone: at the tiny data's own
# image size (64 px) rather than 224 px, a fold costs about as much as a cached net's.
FINETUNE_SETS = ("image_encoder.size=64",)


def discovered() -> list[str]:
    """Every model config, by file stem: a new file is a new parameter of every check."""
    return sorted(p.stem for p in MODEL_DIR.glob("*.yaml"))


def load_model(name: str, sets: tuple[str, ...] = ()) -> dict:
    """``configs/models/<name>.yaml`` as the train stage resolves a model config given directly."""
    path = MODEL_DIR / f"{name}.yaml"
    return model_configs(cfglib.load_config(path, list(sets)), path)[name]


def contract_sets(name: str) -> tuple[str, ...]:
    """The uniform overrides the battery trains ``name`` under."""
    settings = cfglib.resolve_model(load_model(name))
    if settings.kind != "net":
        return ()
    return NET_SETS + (FINETUNE_SETS if settings.finetune else ())


def plain(model_cfg: dict) -> dict:
    """Round 0 of a model, as the train stage trains it: its pseudo settings concern later rounds."""
    return {k: v for k, v in model_cfg.items() if k != "pseudo"}


def kind_group(name: str) -> str:
    """A model kind as export and training tell it apart: linear, net, net with a pseudo-label
    round, end-to-end fine-tuning. A config of a new group gets its own bundle replay."""
    s = cfglib.resolve_model(load_model(name))
    if s.kind != "net":
        return s.kind
    return "net+finetune" if s.finetune else ("net+pseudo" if s.pseudo.rounds else "net")


def class_prior_map(Y: np.ndarray) -> float:
    """The mean per-class AP of the class prior: one score for every row of a class, so its ranking
    is the order the ties fall in. Over random orders, a class of P positives among N rows has
    expected AP (H_N + (P - 1) / (N - 1) * (N - H_N)) / N, H_N the N-th harmonic number; it is
    well above P / N when P is small, as the tiny data's rare classes are."""
    n = len(Y)
    harmonic = float(np.sum(1.0 / np.arange(1, n + 1)))
    pos = Y.sum(0)
    pos = pos[pos > 0].astype(np.float64)
    return float(np.mean((harmonic + (pos - 1) / (n - 1) * (n - harmonic)) / n))


def shuffled_in_fold(Y: np.ndarray, folds: np.ndarray, fold: int = 0, seed: int = 1) -> np.ndarray:
    """Fold ``fold``'s label sets shuffled among its own rows; every other row keeps its labels."""
    rows = np.flatnonzero(folds == fold)
    out = Y.copy()
    out[rows] = Y[np.random.default_rng(seed).permutation(rows)]
    assert (out != Y).any(), "the shuffle must move some label"
    return out


@functools.cache
def _shared_encoder(name: str, *, weights: str = "auto"):
    return _build_caption(name, weights=weights)


class Interrupted(Exception):
    """Stands for a kill: raised as the trainer starts the fold it is told to stop at."""


@dataclass
class Runs:
    """One config's contract runs; ``trained`` lists the folds each trainer call started."""

    name: str
    full: Path  # uninterrupted
    resumed: Path  # interrupted at fold 1's start, then run again
    shuffled: Path  # fold 0's labels shuffled among fold 0's rows; fold 0 only
    trained: dict[str, list[int]]
    metrics: dict  # the uninterrupted run's
    after_kill: list[str]  # the JSON files the interrupted run left, relative to its folder


class Bench:
    """The tiny dataset, its two folds and one feature store, shared by every config's runs."""

    def __init__(self, root: Path, ds: Dataset, folds: np.ndarray, store: FeatureStore) -> None:
        self.root, self.ds, self.folds, self.store = root, ds, folds, store
        self._runs: dict[str, Runs] = {}
        self._feats: dict[str, dict] = {}

    def config(self, name: str) -> dict:
        return plain(load_model(name, contract_sets(name)))

    def features(self, name: str) -> dict:
        if name not in self._feats:
            self._feats[name] = self.store.for_model(self.config(name))
        return self._feats[name]

    def train(self, name: str, out_dir: Path, *, Y=None, stop_at: int | None = None) -> list[int]:
        """Train ``name`` into ``out_dir``; the folds the trainer started, in order."""
        started: list[int] = []
        real_fit = trainer_mod._fit_fold

        def fit(run, fold, **kw):
            started.append(fold)
            if fold == stop_at:
                raise Interrupted(f"{name} stopped at fold {fold}")
            return real_fit(run, fold, **kw)

        inputs = model_inputs(self.ds, self.folds, self.features(name))
        if Y is not None:
            inputs["Y"] = Y
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(trainer_mod, "_fit_fold", fit)
            # The cost report builds full backbones to count them; the contract reads logits only.
            mp.setattr(trainer_mod, "light_report", lambda cfg, params, ms=0.0: {})
            # Label-query nets load a sentence encoder for their class prompts once per model
            # object; the trainer makes one per run, and the contract makes four runs per config.
            mp.setattr(net_mod, "build_caption", _shared_encoder)
            try:
                train_model(name, self.config(name), out_dir=out_dir, **inputs)
            except Interrupted:
                pass
        return started

    def runs(self, name: str) -> Runs:
        """The contract runs of ``name``, trained on first use. A config whose round 0 is another
        config's to the letter (``x_pseudo`` is ``x`` plus a round) shares that config's runs."""
        same = cfglib.dump({k: v for k, v in self.config(name).items() if k != "name"})
        if same not in self._runs:
            base = self.root / "contract" / name
            trained = {"full": self.train(name, base / "full")}
            trained["killed"] = self.train(name, base / "resumed", stop_at=1)
            # What the kill left: the finished folds' records, and no assembled run.
            left = sorted(p.relative_to(base / "resumed").as_posix() for p in (base / "resumed").rglob("*.json"))
            trained["rerun"] = self.train(name, base / "resumed")
            Y = shuffled_in_fold(self.ds.Y, self.folds)
            trained["shuffled"] = self.train(name, base / "shuffled", Y=Y, stop_at=1)
            metrics = read_json(base / "full" / "metrics.json")
            self._runs[same] = Runs(name, base / "full", base / "resumed", base / "shuffled", trained, metrics, left)
        return self._runs[same]


def make_bench(tiny_run, root: Path, names: list[str]) -> Bench:
    """A project over ``tiny_run``'s dataset whose feature store serves every config in ``names``."""
    paths = Paths(data_dir=tiny_run.data, root=root)
    shared = tiny_run.root / "runs" / tiny_run.data.name
    paths.runs.mkdir(parents=True)
    # Features and image verdicts are keyed by the inputs' checksums: the shared run's are valid here.
    shutil.copytree(shared / "cache", paths.cache, symlinks=True)
    for extra in ("image_checks.json",):
        if (shared / extra).is_file():
            shutil.copy2(shared / extra, paths.runs / extra)
    ds = load_dataset(paths, cfglib.load_config(PIPELINE, []), quiet=True)
    folds = make_folds(ds.train_ids, ds.Y, k=K, seed=0)["fold"].to_numpy()
    configs = {name: plain(load_model(name, contract_sets(name))) for name in names}
    return Bench(root, ds, folds, FeatureStore(ds, True, configs))
