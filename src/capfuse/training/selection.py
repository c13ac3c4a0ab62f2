"""Which models a config trains: a pipeline's ``models:`` list resolved into model configs.

A pipeline config lists model names; each resolves to ``configs/models/<name>.yaml`` with its
parents, under the pipeline's own settings (seed, data, threshold rules) unless the model sets
them. A model config given directly is a one-model pipeline.
"""

from __future__ import annotations

from pathlib import Path

from capfuse import config as cfglib

# Pipeline keys that do not flow into a model's config: the list itself, and settings of the
# stages after training, which must not change a model's fingerprint (and retrain it).
SECOND_LEVEL_KEYS = ("models", "infer", "inherit", "ensemble", "threshold", "ratios", "ablation")


def model_configs(cfg: dict, config_path: Path) -> dict[str, dict]:
    """The models a pipeline config lists (``models: [name, ...]``), each resolved with its parents.

    A model config given directly (it has a ``kind``) is a one-model pipeline.
    """
    top = cfglib.resolve(cfg)
    if "kind" in cfg:
        name = top.name or config_path.stem
        return {name: {**cfg, "name": name}}
    names = top.models
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
