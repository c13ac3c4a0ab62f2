"""The train stage: every configured model over every fold, on features the embed stage cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from capfuse import config as cfglib
from capfuse.stages.common import load_dataset
from capfuse.stages.embed import FeatureStore
from capfuse.trainer import train_model, update_leaderboard
from capfuse.utils.log import log, stage


# Pipeline keys that do not flow into a model's config: the list itself, and settings of the
# stages after training, which must not change a model's fingerprint (and retrain it).
SECOND_LEVEL_KEYS = ("models", "infer", "inherit", "ensemble", "threshold")


def model_configs(cfg: dict, config_path: Path) -> dict[str, dict]:
    """The models a pipeline config lists (``models: [name, ...]``), each resolved with its parents.

    A model config given directly (it has a ``kind``) is a one-model pipeline.
    """
    if "kind" in cfg:
        name = cfg.get("name") or config_path.stem
        return {name: {**cfg, "name": name}}
    names = cfg.get("models") or []
    if not names:
        raise ValueError(f"{config_path}: lists no models (expected `models: [name, ...]`)")
    out = {}
    for name in names:
        path = cfglib.resolve_config_path(f"models/{name}", relative_to=config_path)
        model_cfg = cfglib.load_config(path)
        # Pipeline-wide settings (seed, data, threshold rules) flow down unless the model overrides them.
        inherited = {k: v for k, v in cfg.items() if k not in SECOND_LEVEL_KEYS}
        out[name] = {**cfglib.deep_merge(inherited, model_cfg), "name": name}
    return out


def select_models(cfg: dict, config_path: Path, only: list[str] | None = None) -> dict[str, dict]:
    """The config's models, or the ``only`` ones among them (an unknown name is an error)."""
    models = model_configs(cfg, config_path)
    if only:
        unknown = sorted(set(only) - set(models))
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; this config trains {sorted(models)}")
        models = {k: v for k, v in models.items() if k in only}
    return models


def run_train(paths, cfg: dict, config_path: Path, *, only: list[str] | None = None, quiet: bool | None = None) -> pd.DataFrame:
    models = select_models(cfg, config_path, only)
    with stage("train", f"{paths.dataset}: {', '.join(models)}"):
        ds = load_dataset(paths, cfg, quiet=quiet)
        folds = ds.folds()
        store = FeatureStore(ds, quiet, models)
        board = None
        for name, model_cfg in models.items():
            with stage(f"train {name}", model_cfg["kind"]):
                feats = store.for_model(model_cfg)
                metrics = train_model(
                    name, model_cfg, out_dir=paths.model_dir(name), train_ids=ds.train_ids,
                    test_ids=ds.test_ids, Y=ds.Y, folds=folds, class_ids=ds.class_ids,
                    feats=feats, data_fingerprint=feats["fingerprint"],
                )
                if not metrics:
                    continue  # a non-zero torchrun rank: rank 0 writes the artefacts
                board = update_leaderboard(paths.runs / "leaderboard.csv", metrics)
                log.info("%s: CV mean F1 %.4f (threshold %.2f), mAP %.4f", name, metrics["cv_mean_f1"],
                         metrics["threshold"], metrics["cv_map"])
        if board is not None:
            log.info("leaderboard (%s):\n%s", paths.runs / "leaderboard.csv", board.to_string(index=False))
        return board
