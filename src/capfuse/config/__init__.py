"""Configs: YAML files that inherit from each other (``load``), the typed blocks they resolve into
with every default (``schema``), and the check that names an unknown key, its file and the key
meant (``check``). ``load_config`` loads and checks a config; ``resolve`` and ``resolve_model``
turn it into frozen dataclasses."""

from capfuse.config.check import register_components, register_parameters, resolve_checked, validate
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
    resolve,
    resolve_model,
)

__all__ = [
    "INHERIT_KEY", "ConfigError", "apply_override", "deep_merge", "dump", "get", "load_config",
    "load_with_sources", "record_sources", "resolve_config_path",
    "register_components", "register_parameters", "resolve_checked", "validate",
    "AblationSettings", "AblationVariant", "AuxSettings", "CaptionEncoderSettings", "DataSettings",
    "EnsembleSettings", "FinetuneOptions", "FoldsSettings", "FusionSettings", "HeadSettings",
    "ImageEncoderSettings", "ImageEncoderSpec", "LabelQuerySettings", "LinearModelSettings", "LossSettings",
    "ModelSettings", "NetModelSettings", "PipelineSettings", "PseudoSettings", "RatiosSettings",
    "TextEncoderSpec", "ThresholdSettings", "TrainSettings", "resolve", "resolve_model",
]
