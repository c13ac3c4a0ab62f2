"""Every config block as a frozen dataclass whose fields' types say what they accept: the one home
of the defaults and of the allowed values.

Where the defaults live
-----------------------
Every default is a dataclass field here (the pipeline's blocks in ``pipeline_blocks``, the
models' in ``model_blocks``; ``ZeroShotSettings``, which lives with the zeroshot package, holds
its own), and nowhere else. A YAML file states only what differs from them: a config passes
through whatever files it inherits, a model config given directly inherits nothing, and tests
and notebooks build configs in code, so a default written in a YAML file would hold for some
configs and not others. Run folders fingerprint the resolved,
typed settings (``dataclasses.asdict`` of what ``resolve``/``resolve_model`` return), so a
value stated or left to its default is the same run.

The parameters of a *component* chosen by name (a loss under ``train.loss``, a head under
``image_head``/``caption_head``, the TF-IDF vectoriser under ``tfidf``, the LightGBM stacker
under ``ensemble.stack``) are that component's own keyword arguments: their defaults and types
stay in its signature.

What a value may be
-------------------
Each field is annotated with a type of ``capfuse.config.types`` (``Count``: an integer >= 1,
``Probability``, a ``Literal`` of the allowed names, ...) or a rule of its own, and pydantic
checks the values against them (``capfuse.config.values``): strictly, so "false" is no bool, 2.9
no integer and "abc" no number. A rule that joins two fields (``train.calibrate`` needs
``early_stop: inner``) is the block's ``__post_init__``. ``capfuse.config.check`` runs both
checks, unknown keys and bad values, on every config ``load_config`` returns and every model
config built in code (``resolve_checked``); each problem is one line naming the key, the file or
``--set`` that gave it and what is allowed. ``resolve`` and ``resolve_model`` below turn a config
into these classes, never writing into the dict. Settings built directly in code
(``TrainSettings(epochs=3)``) are plain dataclasses and are not checked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import fields
from typing import Annotated, Literal

from annotated_types import Ge
from pydantic import Strict
from typing_extensions import TypedDict  # pydantic reads TypedDicts from here on Python < 3.12

from capfuse.config.errors import ConfigError
from capfuse.config.model_blocks import (
    EARLY_STOP,
    HEAD_OWN_KEYS,
    IMAGE_MODEL_KEYS,
    LINEAR_SOLVERS,
    MODEL_KINDS,
    POOLINGS,
    AuxSettings,
    CaptionEncoderSettings,
    FinetuneOptions,
    FusionSettings,
    HeadSettings,
    ImageEncoderSettings,
    ImageEncoderSpec,
    LabelQuerySettings,
    LinearModelSettings,
    LossSettings,
    ModelSettings,
    NetModelSettings,
    TextEncoderSpec,
    TrainSettings,
)
from capfuse.config.pipeline_blocks import (
    CANDIDATES,
    ENSEMBLE_ROUNDS,
    AblationSettings,
    AblationVariant,
    DataSettings,
    EnsembleSettings,
    FoldsSettings,
    PipelineSettings,
    PseudoSettings,
    RatiosSettings,
    ThresholdSettings,
    block,
)
from capfuse.config.types import (
    Bool,
    Count,
    CountOrOff,
    Dropout,
    Name,
    NonNegative,
    Positive,
    Template,
)
from capfuse.config.values import validated

# -- the zeroshot block ----------------------------------------------------------------------------
# ``zeroshot:`` is ``ZeroShotSettings`` (capfuse.zeroshot, the home of its defaults), one flat
# dataclass whose fields the config groups as below. The config layer cannot import the zeroshot
# package above it, so the keys and their allowed values are listed here;
# tests/test_config_schema.py asserts that they are exactly ZeroShotSettings' fields.
PROJECTOR_KINDS = ("linear", "mlp")
ZEROSHOT_KEYS = {
    "image_encoder": ImageEncoderSettings,  # the models' backbone: its cached features are reused
    "caption_encoder": CaptionEncoderSettings,
    "unseen": Count | tuple[Name, ...],  # how many classes are held out as unseen, or their names
    "min_positives": CountOrOff,
    "prompts": tuple[Template, ...],
}
ZEROSHOT_GROUPS = {
    "projector": {"kind": Literal[PROJECTOR_KINDS], "hidden": Count, "dropout": Dropout, "tokens": Bool},
    "loss": {"temperature": Positive, "learn_temperature": Bool, "label_weight": NonNegative, "label_loss": Mapping},
    "train": {
        "epochs": Count,
        "batch_size": Annotated[int, Strict(), Ge(2)],  # InfoNCE contrasts each row with the others in its batch
        "lr": Positive,
        "weight_decay": NonNegative,
        "flip": Bool,
        "tta": Bool,
    },
    "eval": {"eval_folds": Literal["all"] | tuple[CountOrOff, ...], "random_seeds": Count},
}
ZeroShotBlock = TypedDict(
    "ZeroShotBlock",
    {
        **ZEROSHOT_KEYS,
        **{group: TypedDict(f"ZeroShot_{group}", keys, total=False) for group, keys in ZEROSHOT_GROUPS.items()},
    },
    total=False,
)


# -- resolving -----------------------------------------------------------------------------------


def resolve(cfg: Mapping) -> PipelineSettings:
    """The pipeline-level blocks of ``cfg`` (data, folds, threshold, ensemble, pseudo, ratios,
    ablation), validated; a bad value is a ``ConfigError`` naming it."""
    return validated(PipelineSettings, cfg)


def resolve_model(cfg: Mapping | ModelSettings, *, kind: str | None = None) -> LinearModelSettings | NetModelSettings:
    """A model config (``kind: linear`` or ``net``) as its kind's settings, validated; settings
    pass through. ``kind`` is the kind of a config that does not say (a net built in code)."""
    if isinstance(cfg, ModelSettings):
        return cfg
    if kind is not None and "kind" not in cfg:
        cfg = {"kind": kind, **cfg}
    if cfg.get("kind") not in MODEL_KINDS:
        raise ConfigError(f"model kind must be one of {list(MODEL_KINDS)}, got {cfg.get('kind')!r}")
    return validated(MODEL_KINDS[cfg["kind"]], cfg)


def defaults(cls: type) -> dict:
    """A block's defaults as a plain mapping (nested blocks included)."""
    out = {}
    for f in fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            v = f.default_factory()
            out[f.name] = defaults(type(v)) if dataclasses.is_dataclass(v) else v
    return out


__all__ = [
    "CANDIDATES",
    "EARLY_STOP",
    "ENSEMBLE_ROUNDS",
    "HEAD_OWN_KEYS",
    "IMAGE_MODEL_KEYS",
    "LINEAR_SOLVERS",
    "MODEL_KINDS",
    "POOLINGS",
    "PROJECTOR_KINDS",
    "ZEROSHOT_GROUPS",
    "ZEROSHOT_KEYS",
    "AblationSettings",
    "AblationVariant",
    "AuxSettings",
    "CaptionEncoderSettings",
    "DataSettings",
    "EnsembleSettings",
    "FinetuneOptions",
    "FoldsSettings",
    "FusionSettings",
    "HeadSettings",
    "ImageEncoderSettings",
    "ImageEncoderSpec",
    "LabelQuerySettings",
    "LinearModelSettings",
    "LossSettings",
    "ModelSettings",
    "NetModelSettings",
    "PipelineSettings",
    "PseudoSettings",
    "RatiosSettings",
    "TextEncoderSpec",
    "ThresholdSettings",
    "TrainSettings",
    "ZeroShotBlock",
    "block",
    "defaults",
    "resolve",
    "resolve_model",
]
