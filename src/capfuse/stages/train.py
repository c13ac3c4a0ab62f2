"""The train stage: every configured model over every fold, on features the embed stage cached."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from capfuse.config.schema import resolve_model
from capfuse.data.dataset import load_dataset
from capfuse.features.store import FeatureStore
from capfuse.training.cv import model_inputs, train_model
from capfuse.training.leaderboard import update_leaderboard
from capfuse.training.rounds import pseudo_rounds
from capfuse.training.selection import select_models
from capfuse.utils.dist import init_distributed
from capfuse.utils.log import log, stage


def run_train(
    paths, cfg: dict, config_path: Path, *, only: list[str] | None = None, quiet: bool | None = None
) -> pd.DataFrame:
    models = select_models(cfg, config_path, only)
    with stage("train", f"{paths.dataset}: {', '.join(models)}"):
        ds = load_dataset(paths, cfg, quiet=quiet)
        folds = ds.folds()
        store = FeatureStore(ds, quiet, models)
        board = None
        for name, model_cfg in models.items():
            with stage(f"train {name}", model_cfg["kind"]):
                settings = resolve_model(model_cfg).pseudo
                # The unlabelled folder's rows join only models with rounds: the others never use them.
                feats = store.for_model(model_cfg, with_extra=settings.rounds > 0)
                common = model_inputs(ds, folds, feats)
                # Round 0 is the plain model: its pseudo settings concern later rounds only and
                # must not change its fingerprint.
                plain = {k: v for k, v in model_cfg.items() if k != "pseudo"}
                metrics = train_model(name, plain, out_dir=paths.model_dir(name), **common)
                if not metrics:
                    continue  # a non-zero torchrun rank: rank 0 writes the artefacts
                board = update_leaderboard(paths.runs / "leaderboard.csv", metrics)
                log.info(
                    "%s: CV mean F1 %.4f (threshold %.2f), mAP %.4f",
                    name,
                    metrics["cv_mean_f1"],
                    metrics["threshold"],
                    metrics["cv_map"],
                )
                if settings.rounds:
                    rounds_board, _ = pseudo_rounds(paths, ds, name, model_cfg, metrics, settings, common)
                    board = rounds_board if rounds_board is not None else board
        if board is not None:
            log.info("leaderboard (%s):\n%s", paths.runs / "leaderboard.csv", board.to_string(index=False))
        return board


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    init_distributed()  # a no-op unless launched by torchrun with several processes
    run_train(paths, cfg, Path(args.config), only=getattr(args, "only", None), quiet=quiet)
    return 0
