"""The check of a config: every key must exist and every value must be one its field allows;
each problem is one line that names the file or ``--set`` override it came from.

``validate`` walks a merged config along the blocks of ``capfuse.config.schema``. An unknown key
at any depth (a misspelling, a key at the wrong level, a parameter the chosen loss or head does
not take) is named with its dotted key and the closest valid key. A bad value (the wrong type,
a name that is not among the allowed ones, a number out of range, a rule of its block broken)
is named with its dotted key, the value as given and what is allowed (``capfuse.config.values``
validates it against the schema's types; a component's parameters are typed by its signature).
Every problem of a config is listed at once, in one ``ConfigError``. ``load_config`` runs it on
every config it returns; ``resolve_checked`` runs it on a model config built in code before
resolving it.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from typing import Any

from capfuse.config.errors import ConfigError, Sources, source_of
from capfuse.config.schema import (
    HEAD_OWN_KEYS,
    MODEL_KINDS,
    ZEROSHOT_GROUPS,
    ZEROSHOT_KEYS,
    AblationVariant,
    CaptionEncoderSettings,
    HeadSettings,
    ImageEncoderSettings,
    LabelQuerySettings,
    LinearModelSettings,
    LossSettings,
    ModelSettings,
    NetModelSettings,
    PipelineSettings,
    PseudoSettings,
    ZeroShotBlock,
    resolve_model,
)
from capfuse.config.values import dotted as _dotted
from capfuse.config.values import line, parameter_types, problems

# -- components chosen by name (registry-driven blocks) -------------------------------------------
# Losses and heads are chosen by name, the TF-IDF vectoriser and the stacker take parameters; all
# of them are defined in layers above this one. Each of those modules registers its catalogue
# here when it is imported, so the check reads the chosen component's parameters without the
# config layer importing the layers above it. Until a catalogue is registered (a command that
# never loads that layer, such as `capfuse folds`), the parameters of that block go unchecked;
# every command that builds the component has loaded its module before it reads the config.
_REGISTRIES: dict[str, Any] = {}  # "loss", "head" -> a capfuse.utils.registry.Registry
_PARAMETERS: dict[str, list[str]] = {}  # "tfidf", "ensemble.stack" -> parameter names
_PARAMETER_TYPES: dict[str, Any] = {}  # the same blocks -> their values' types, where a signature gives them


def register_components(kind: str, registry) -> None:
    """Components of ``kind`` ("loss", "head") chosen by name from ``registry``; a config may give
    the keyword arguments of the chosen one's factory (``component_params``)."""
    _REGISTRIES[kind] = registry


def register_parameters(block: str, names: Iterable[str] | Callable) -> None:
    """The parameters a config may give under ``block`` ("tfidf", "ensemble.stack"): their names,
    or the function that takes them, whose signature also types their values."""
    if callable(names):
        _PARAMETER_TYPES[block] = parameter_types(names)
        names = component_params(names)
    _PARAMETERS[block] = list(names)


def component_params(factory: Callable) -> list[str]:
    """A component's config parameters: its keyword arguments that have a default. Arguments
    without one (a head's ``in_dim``, ``weighted_bce``'s ``class_freq``) are supplied by the code."""
    out = []
    for name, p in inspect.signature(factory).parameters.items():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty:
            out.append(name)
    return out


# The zeroshot block's keys and values (ZEROSHOT_KEYS, ZEROSHOT_GROUPS) are listed in the schema.
_ZEROSHOT_NESTED = {"image_encoder": ImageEncoderSettings, "caption_encoder": CaptionEncoderSettings}


# -- the check -------------------------------------------------------------------------------------

# Names people reach for, and the key that means it (offered when one of them is misspelt).
ALIASES = {
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "max_epochs": "epochs",
    "max_length": "max_len",
    "num_heads": "heads",
    "n_heads": "heads",
    "n_folds": "k",
    "num_folds": "k",
    "hidden_dim": "hidden",
}


def closest(key: str, valid: list[str]) -> str | None:
    """The valid key nearest to ``key`` (difflib), a common synonym mapped to its key included."""
    candidates = {v: v for v in valid}
    candidates.update({alias: target for alias, target in ALIASES.items() if target in candidates})
    best = difflib.get_close_matches(str(key), list(candidates), n=1, cutoff=0.0)
    return candidates[best[0]] if best else None


class _Checker:
    def __init__(self, sources: Sources | None, default: str) -> None:
        self.sources, self.default = sources, default
        self.errors: list[str] = []
        self.shapeless: list[tuple] = []  # blocks that are no mapping: already named, values unread

    def where(self, path: tuple) -> str:
        return source_of(self.sources, path, self.default)

    def error(self, path: tuple, message: str) -> None:
        self.errors.append(f"{self.where(path)}: {message}")

    def mapping(self, value, path: tuple) -> bool:
        if value is None:
            return False  # an empty block: its defaults
        if not isinstance(value, Mapping):
            self.error(path, f"'{_dotted(path)}' must be a mapping, got {type(value).__name__} {value!r}")
            self.shapeless.append(path)
            return False
        return True

    def values(self, tp, value, path: tuple) -> None:
        """Every bad value of ``value`` (validated as ``tp``), one line each, blamed on its file."""
        for p in problems(tp, value)[1]:
            full = path + p.path
            if any(full[: len(bad)] == bad for bad in self.shapeless):
                continue
            text = line(self.where(full), full, p.value, p.allowed)
            if text not in self.errors:  # a key both the pipeline and its models read (seed, pseudo)
                self.errors.append(text)

    def choice(self, value, valid: list[str], path: tuple, what: str) -> bool:
        if value in valid:
            return True
        self.error(
            path,
            f"unknown {what} {value!r} at '{_dotted(path)}': did you mean {closest(value, valid)!r}? "
            f"(known: {', '.join(valid)})",
        )
        return False

    def keys(
        self,
        value: Mapping,
        path: tuple,
        valid: list[str],
        *,
        what: str = "key",
        hints: Mapping[str, str] | None = None,
    ) -> None:
        for key in value:
            if key in valid:
                continue
            if hints and key in hints:
                best = hints[key]
            else:
                best = closest(key, valid)
            mean = f"did you mean '{_dotted(path + (best,))}'?" if best else "nothing is valid there"
            self.error(
                path + (key,),
                f"unknown {what} '{_dotted(path + (key,))}': {mean} "
                f"(valid under '{_dotted(path) or 'the top level'}': {', '.join(sorted(valid))})",
            )

    def block(self, value, cls: type, path: tuple) -> None:
        if not self.mapping(value, path):
            return
        by_name = {f.name: f for f in fields(cls)}
        hints = {}
        for f in by_name.values():
            if "block" in f.metadata:
                hints.update({sub.name: f"{f.name}.{sub.name}" for sub in fields(f.metadata["block"])})
        self.keys(value, path, list(by_name), hints=hints)
        for key, sub in value.items():
            f = by_name.get(key)
            if f is None:
                continue
            if "check" in f.metadata:
                CHECKS[f.metadata["check"]](self, sub, path + (key,))
            elif "block" in f.metadata:
                self.block(sub, f.metadata["block"], path + (key,))


def _check_component(
    ck: _Checker, value, path: tuple, kind: str, key: str, default: str, own: tuple[str, ...] = ()
) -> None:
    """A block ``{<key>: <name>, <its parameters>}`` whose name picks a component of ``kind``;
    ``own``: keys the schema types itself (a head's ``hidden``), whose values it checks."""
    registry = _REGISTRIES.get(kind)
    if not ck.mapping(value, path) or registry is None:
        return
    name = value.get(key, default)
    if ck.choice(name, registry.names(), path + (key,), kind):
        factory = registry.get(name)
        ck.keys(value, path, [key, *component_params(factory)], what=f"parameter of the {name!r} {kind}")
        typed = parameter_types(factory)  # the values, by the types of the factory's signature
        if typed is not None:
            ck.values(typed, {k: v for k, v in value.items() if k not in own}, path)


def _check_parameters(ck: _Checker, value, path: tuple, block: str, what: str) -> None:
    if ck.mapping(value, path) and block in _PARAMETERS:
        ck.keys(value, path, _PARAMETERS[block], what=what)
        if _PARAMETER_TYPES.get(block) is not None:
            ck.values(_PARAMETER_TYPES[block], value, path)


def _check_stack(ck: _Checker, value, path: tuple) -> None:
    _check_parameters(ck, value, path, "ensemble.stack", "stacker parameter")


def _check_head(ck: _Checker, value, path: tuple) -> None:
    _check_component(ck, value, path, "head", "kind", HeadSettings.kind, own=HEAD_OWN_KEYS)


def _check_loss(ck: _Checker, value, path: tuple) -> None:
    _check_component(ck, value, path, "loss", "name", LossSettings.name, own=("name",))


def _check_label_query(ck: _Checker, value, path: tuple) -> None:
    if isinstance(value, Mapping):  # true, false and anything else: the value check says
        ck.block(value, LabelQuerySettings, path)


def _check_pseudo_partial(ck: _Checker, value, path: tuple) -> None:
    if value is not None and ck.mapping(value, path):
        ck.block(value, PseudoSettings, path)
        ck.values(PseudoSettings, value, path)


def _check_tfidf(ck: _Checker, value, path: tuple) -> None:
    _check_parameters(ck, value, path, "tfidf", "TF-IDF parameter")


def _check_variants(ck: _Checker, value, path: tuple) -> None:
    if not isinstance(value, (list, tuple)):
        ck.error(path, f"'{_dotted(path)}' must be a list of variants, got {type(value).__name__}")
        return
    for i, v in enumerate(value):
        if ck.mapping(v, path + (i,)):
            ck.block(v, AblationVariant, path + (i,))


def _check_partial_config(ck: _Checker, value, path: tuple) -> None:
    if ck.mapping(value, path):
        _check_config(ck, value, path)


def _check_zeroshot(ck: _Checker, value, path: tuple) -> None:
    if not ck.mapping(value, path):
        return
    hints = {name: f"{group}.{name}" for group, names in ZEROSHOT_GROUPS.items() for name in names}
    ck.keys(value, path, [*ZEROSHOT_KEYS, *ZEROSHOT_GROUPS], hints=hints)
    for key, sub in value.items():
        if key in _ZEROSHOT_NESTED:
            ck.block(sub, _ZEROSHOT_NESTED[key], path + (key,))
        elif key in ZEROSHOT_GROUPS and ck.mapping(sub, path + (key,)):
            ck.keys(sub, path + (key,), list(ZEROSHOT_GROUPS[key]))
            if key == "loss" and "label_loss" in sub:
                _check_loss(ck, sub["label_loss"], path + (key, "label_loss"))
    ck.values(ZeroShotBlock, value, path)


# The checks that fields of the schema name in their metadata ("check").
CHECKS: dict[str, Callable] = {
    "stack": _check_stack,
    "head": _check_head,
    "loss": _check_loss,
    "label_query": _check_label_query,
    "pseudo_partial": _check_pseudo_partial,
    "tfidf": _check_tfidf,
    "variants": _check_variants,
    "partial_config": _check_partial_config,
}


def _model_fields(kind: str | None) -> dict[str, dataclasses.Field]:
    classes = [MODEL_KINDS[kind]] if kind in MODEL_KINDS else list(MODEL_KINDS.values())
    return {f.name: f for cls in classes for f in fields(cls)}


def _check_config(ck: _Checker, cfg: Mapping, path: tuple) -> None:
    """A whole config (or a partial one merged into a model, such as a variant's ``set``).

    With ``kind``, the model keys are that kind's; without it (a pipeline), any kind's model keys
    are allowed: they flow down to the pipeline's models as their defaults.
    """
    kind = cfg.get("kind")
    if kind is not None and not ck.choice(kind, list(MODEL_KINDS), path + ("kind",), "model kind"):
        kind = None
    top = {f.name: f for f in fields(PipelineSettings)}
    model = _model_fields(kind)
    valid = {**model, **top, "zeroshot": None}
    hints = {}
    for f in (*top.values(), *model.values()):
        if "block" in f.metadata:
            hints.update({sub.name: f"{f.name}.{sub.name}" for sub in fields(f.metadata["block"])})
    hints.pop("kind", None)
    other_kinds = {
        name: k for k, cls in MODEL_KINDS.items() for name in (f.name for f in fields(cls)) if name not in valid
    }
    for key in cfg:
        if key in other_kinds:
            ck.error(
                path + (key,), f"'{_dotted(path + (key,))}' is a key of {other_kinds[key]} models, not of kind {kind!r}"
            )
    ck.keys(
        {k: v for k, v in cfg.items() if k not in other_kinds},
        path,
        list(valid),
        hints={k: v for k, v in hints.items() if k not in valid},
    )
    for key, sub in cfg.items():
        f = valid.get(key, False)
        if key == "zeroshot":
            _check_zeroshot(ck, sub, path + (key,))
        elif f:
            if "check" in f.metadata:
                CHECKS[f.metadata["check"]](ck, sub, path + (key,))
            elif "block" in f.metadata:
                ck.block(sub, f.metadata["block"], path + (key,))
    # The values: the pipeline's blocks, and the model keys as the kind's (a pipeline without a
    # kind gives its models defaults: each key as the kind that has it).
    ck.values(PipelineSettings, cfg, path)
    if kind is not None:
        ck.values(MODEL_KINDS[kind], cfg, path)
    elif "kind" not in cfg:
        seen = set(top)
        for cls in MODEL_KINDS.values():
            own = {k: v for k, v in cfg.items() if k in {f.name for f in fields(cls)} - seen - {"kind"}}
            seen |= set(own)
            ck.values(cls, own, path)


def validate(cfg: Mapping, sources: Sources | None = None, *, source: str = "<config>") -> None:
    """Raise ``ConfigError`` listing every unknown key of ``cfg`` (at any depth), each with the
    file or ``--set`` override that brought it (``sources``, else ``source``) and the closest
    valid key. Registry-driven blocks are checked against the chosen component's parameters."""
    ck = _Checker(sources, source)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{source}: a config must be a mapping, got {type(cfg).__name__}")
    _check_config(ck, cfg, ())
    if ck.errors:
        raise ConfigError("\n".join(ck.errors))


def resolve_checked(cfg: Mapping | ModelSettings, *, kind: str | None = None) -> LinearModelSettings | NetModelSettings:
    """``resolve_model`` for a model config built in code, checked first (a loaded one was checked
    as it loaded); settings pass through."""
    if isinstance(cfg, ModelSettings):
        return cfg
    if kind is not None and "kind" not in cfg:
        cfg = {"kind": kind, **cfg}
    validate(cfg, source="model config")
    return resolve_model(cfg)
