"""The folds stage: multilabel-stratified K folds, written once to ``folds/<dataset>.csv``.

Every model reads this one file, so OOF predictions of different models line up and the
stacker and thresholds can be fitted on them without leaking.
"""

from __future__ import annotations

import pandas as pd

from capfuse.config.schema import resolve
from capfuse.data.dataset import load_dataset
from capfuse.data.folds import fold_class_counts, make_folds, rare_classes, read_folds, write_folds
from capfuse.utils.io import write_csv
from capfuse.utils.log import log, stage


def run_folds(paths, cfg: dict, *, force: bool = False, quiet: bool | None = None) -> pd.DataFrame:
    folds_cfg = resolve(cfg).folds
    k, seed = folds_cfg.k, folds_cfg.seed
    with stage("folds", f"{paths.dataset}, k={k}, seed={seed}"):
        ds = load_dataset(paths, cfg, quiet=quiet)
        target = paths.folds_file
        if target.exists() and not force:
            # Written once: an existing file is kept as long as it matches the data.
            folds = read_folds(target, ds.train_ids)
            if int(folds.max()) + 1 != k:
                log.warning("%s has %d folds, config asks for %d: kept (FORCE=1 rewrites)", target, folds.max() + 1, k)
            log.info("kept existing %s (FORCE=1 rewrites it)", target)
            df = pd.DataFrame({"ImageID": ds.train_ids, "fold": folds})
        else:
            df = make_folds(ds.train_ids, ds.Y, k=k, seed=seed)
            write_folds(df, target)
            log.info("wrote %s (%d rows)", target, len(df))
        counts = fold_class_counts(df, ds.Y, ds.class_ids)
        write_csv(paths.runs / "fold_counts.csv", counts, index=True)
        log.info("per-fold class counts (also in %s):\n%s", paths.runs / "fold_counts.csv", counts.to_string())
        rare = rare_classes(ds.Y, ds.class_ids, int(df["fold"].max()) + 1)
        if rare:
            log.warning("classes rarer than K=%d: %s; some folds have no positive for them", k, rare)
        return df


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    run_folds(paths, cfg, force=getattr(args, "force", False), quiet=quiet)
    return 0
