"""Configs: YAML files that inherit from each other (``load``) and the typed blocks they resolve
into (``schema``). ``from capfuse.config import load_config`` loads and checks a config; the
``resolve*`` functions turn it into frozen dataclasses with the documented defaults."""

from capfuse.config.load import (
    INHERIT_KEY,
    ConfigError,
    apply_override,
    deep_merge,
    dump,
    get,
    load_config,
    load_with_sources,
    record_sources,
    resolve_config_path,
)
from capfuse.config.schema import (
    AblationSettings,
    AblationVariant,
    AuxSettings,
    CaptionEncoderSettings,
    DataSettings,
    EnsembleSettings,
    FinetuneOptions,
    FoldsSettings,
    FusionSettings,
    HeadSettings,
    ImageEncoderSettings,
    ImageEncoderSpec,
    LabelQuerySettings,
    LinearModelSettings,
    LossSettings,
    ModelSettings,
    NetModelSettings,
    PipelineSettings,
    PseudoSettings,
    RatiosSettings,
    TextEncoderSpec,
    ThresholdSettings,
    TrainSettings,
    register_components,
    register_parameters,
    resolve,
    resolve_model,
    validate,
)

__all__ = [
    "INHERIT_KEY", "ConfigError", "apply_override", "deep_merge", "dump", "get", "load_config", "load_with_sources", "record_sources",
    "resolve_config_path", "AblationSettings", "AblationVariant", "AuxSettings", "CaptionEncoderSettings",
    "DataSettings", "EnsembleSettings", "FinetuneOptions", "FoldsSettings", "FusionSettings", "HeadSettings",
    "ImageEncoderSettings", "ImageEncoderSpec", "LabelQuerySettings", "LinearModelSettings", "LossSettings", "ModelSettings",
    "NetModelSettings", "PipelineSettings", "PseudoSettings", "RatiosSettings", "TextEncoderSpec", "ThresholdSettings", "TrainSettings", "resolve",
    "resolve_model", "register_components", "register_parameters", "validate",
]
