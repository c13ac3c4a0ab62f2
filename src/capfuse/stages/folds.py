"""The folds stage: multilabel-stratified K folds, written once to ``folds/<dataset>.csv``.

Every model reads this one file, so OOF predictions of different models line up and the
stacker and thresholds can be fitted on them without leaking. With ``folds.groups: auto`` the
near-duplicate training images, found from the vectors of the config's first cached image
model, stay in one fold, and the file's ``group`` column records the groups.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.config.schema import FoldsSettings, resolve, resolve_model
from capfuse.data.dataset import Dataset, load_dataset
from capfuse.data.folds import (
    fold_class_counts,
    make_folds,
    make_group_folds,
    rare_classes,
    read_folds,
    read_groups,
    write_folds,
)
from capfuse.data.groups import find_groups, split_large
from capfuse.training.selection import select_models
from capfuse.utils.io import write_csv
from capfuse.utils.log import log, stage


def image_vectors(
    paths, cfg: dict, ds: Dataset, models: dict[str, dict], quiet: bool | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The training rows' image vectors that the shift report measures (the config's first
    cached-image model's pooled vector), and those of the mirrored images (None with
    ``folds.group_mirror: false``), embedded now when the cache lacks them. The store knows every
    model of the config, so that one pass over the images caches what they all read."""
    # Imported here: the feature store brings torch and timm (seconds to import), which row folds,
    # the default, never need.
    from capfuse.features.store import FeatureStore, pooled_output  # noqa: PLC0415
    from capfuse.shift.run import image_model  # noqa: PLC0415

    name, model_cfg = image_model(paths, cfg, models)
    m = resolve_model(model_cfg)
    output = pooled_output(m)
    mirror = resolve(cfg).folds.group_mirror
    views = ("orig", "hflip") if mirror else ("orig",)
    log.info(
        "folds: grouping near-duplicates by the %s %s vector (%s)%s",
        m.image_encoder.name,
        output,
        name,
        ", each image also against the others' mirror images" if mirror else "",
    )
    got = FeatureStore(ds, quiet, models).image_views(m.image_encoder.cache_spec(), (output,), views)
    n = len(ds.train_ids)
    return got["orig"][output][:n], got["hflip"][output][:n] if mirror else None


def grouped_folds(settings: FoldsSettings, ds: Dataset, vectors: np.ndarray, mirrored: np.ndarray | None = None):
    """Folds over the near-duplicate groups of ``vectors`` (and ``mirrored``, the mirror images'
    vectors); groups too large for a fold are dissolved into single rows, with one warning line."""
    n, k = len(ds.train_ids), settings.k
    found = find_groups(vectors, ds.image_ok[:n], ratio=settings.group_ratio, seed=settings.seed, mirrored=mirrored)
    log.info("folds: %s", found.summary())
    labels, dissolved = split_large(found.labels, n // k)
    if dissolved:
        log.warning(
            "folds: %d group(s) of %s rows hold more than 1/%d of the %d training rows, a chain of similar images "
            "rather than copies of one: their rows are folded one by one (a lower folds.group_ratio links fewer)",
            len(dissolved),
            ", ".join(map(str, dissolved)),
            k,
            n,
        )
    return make_group_folds(ds.train_ids, ds.Y, labels, k=k, seed=settings.seed)


def _check_kept(target: Path, folds: np.ndarray, settings: FoldsSettings) -> None:
    """Warn where a kept fold file differs from what the config asks (its k, its grouping)."""
    if int(folds.max()) + 1 != settings.k:
        log.warning("%s has %d folds, config asks for %d: kept (FORCE=1 rewrites)", target, folds.max() + 1, settings.k)
    groups = read_groups(target)
    grouped = groups is not None and bool((groups.value_counts() > 1).any())
    if settings.groups == "none" and grouped:
        log.warning(
            "%s keeps near-duplicate groups in one fold, config asks for folds.groups: none: kept (FORCE=1 rewrites)",
            target,
        )
    if settings.groups == "auto" and groups is None:
        log.warning(
            "%s was written without groups, config asks for folds.groups: auto: kept (FORCE=1 rewrites)", target
        )


def run_folds(
    paths, cfg: dict, *, force: bool = False, quiet: bool | None = None, models: dict[str, dict] | None = None
) -> pd.DataFrame:
    """``models``: the config's models, resolved; ``folds.groups: auto`` embeds for them."""
    settings = resolve(cfg).folds
    k, seed = settings.k, settings.seed
    with stage("folds", f"{paths.dataset}, k={k}, seed={seed}, groups={settings.groups}"):
        ds = load_dataset(paths, cfg, quiet=quiet)
        target = paths.folds_file
        if target.exists() and not force:
            # Written once: an existing file is kept as long as it matches the data.
            folds = read_folds(target, ds.train_ids)
            _check_kept(target, folds, settings)
            log.info("kept existing %s (FORCE=1 rewrites it)", target)
            df = pd.DataFrame({"ImageID": ds.train_ids, "fold": folds})
        else:
            if settings.groups == "auto":
                df = grouped_folds(settings, ds, *image_vectors(paths, cfg, ds, models or {}, quiet))
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
    # Only grouped folds read images, so only they need the config's models.
    models = select_models(cfg, Path(args.config)) if resolve(cfg).folds.groups == "auto" else None
    run_folds(paths, cfg, force=getattr(args, "force", False), quiet=quiet, models=models)
    return 0
