"""The embed stage: run every frozen encoder once and cache what the models of a config read.

The caches and their keys are ``capfuse.features.store``'s; this stage only fills them, so that
``make train`` finds every array ready (``make train`` fills them too when they are missing).
"""

from __future__ import annotations

from pathlib import Path

from capfuse.data.dataset import load_dataset
from capfuse.features.store import FeatureStore, cache_listing, uses_cache
from capfuse.training.selection import select_models
from capfuse.utils.log import log, stage


def run_embed(
    paths, cfg: dict, config_path: Path, *, only: list[str] | None = None, quiet: bool | None = None
) -> list[dict]:
    """Cache the features of every model of ``cfg``; returns one row per cache file."""
    models = select_models(cfg, config_path, only)
    with stage("embed", f"{paths.dataset}: {', '.join(models)}"):
        ds = load_dataset(paths, cfg, quiet=quiet)
        store = FeatureStore(ds, quiet, models)
        for name, model_cfg in models.items():
            if uses_cache(model_cfg):
                store.for_model(model_cfg)
            else:
                log.info("%s fine-tunes end to end: nothing to cache", name)
        rows = cache_listing(paths.cache)
        for row in rows:
            log.info("  %-60s %-22s %8.1f MB", row["file"], row["shape"], row["mb"])
        return rows


def cli(args, paths, cfg: dict, quiet: bool) -> int:
    rows = run_embed(paths, cfg, Path(args.config), only=args.only, quiet=quiet)
    print(f"{len(rows)} cached arrays in {paths.cache}, {sum(r['mb'] for r in rows):.1f} MB")
    return 0
