"""YAML configs that inherit from each other, plus dotted command-line overrides.

A config may name its parents with ``inherit: <name or path>`` (or a list of them). Parents
are merged first, children override key by key (dicts merge recursively, everything else is
replaced). A bare name such as ``pipeline`` or ``models/caption_linear`` resolves to
``configs/<name>.yaml`` relative to the inheriting file's config root.

The loader remembers which file (or which ``--set`` override) gave each key its value, so that
the check (``capfuse.config.check.validate``) can name where an unknown key or a bad value came
from. The merged dict itself is returned exactly as the files say: no default is added to it
(the defaults are the schema's, ``capfuse.config.schema``).

A file that is not valid YAML, and an override that is not ``key.sub=value`` with a YAML value,
are one-line ``ConfigError``s naming the file's line and column, or the override.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from capfuse.config.check import validate as check_config
from capfuse.config.errors import ConfigError, Sources, source_of  # noqa: F401 (re-exported)

INHERIT_KEY = "inherit"


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def record_sources(value: Any, path: tuple, origin: str, sources: Sources) -> None:
    """Mark ``path`` and every key below it (in ``value``) as coming from ``origin``."""
    sources[path] = origin
    if isinstance(value, dict):
        for key, sub in value.items():
            record_sources(sub, path + (key,), origin, sources)


def _config_root(path: Path) -> Path:
    """The nearest ancestor folder called ``configs`` (so models/x.yaml can inherit 'pipeline')."""
    for parent in path.resolve().parents:
        if parent.name == "configs":
            return parent
    return path.resolve().parent


def resolve_config_path(name: str | Path, relative_to: Path | None = None) -> Path:
    candidate = Path(name)
    search = []
    if candidate.suffix in (".yaml", ".yml"):
        search.append(candidate)
        if relative_to is not None:
            search.append(relative_to.parent / candidate)
    else:
        if relative_to is not None:
            search.append(_config_root(relative_to) / f"{name}.yaml")
        search.append(Path("configs") / f"{name}.yaml")
    for path in search:
        if path.is_file():
            return path
    raise ConfigError(f"config {name!r} not found (looked in: {', '.join(map(str, search))})")


def _load(path: Path, seen: tuple) -> tuple[dict, Sources]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    key = str(path.resolve())
    if key in seen:
        raise ConfigError(f"config inheritance loops through {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{_where(path, exc)}: invalid YAML: {_yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(raw).__name__}")
    parents = raw.pop(INHERIT_KEY, None) or []
    if isinstance(parents, str):
        parents = [parents]
    merged: dict = {}
    sources: Sources = {}
    for parent in parents:
        parent_cfg, parent_sources = _load(resolve_config_path(parent, relative_to=path), seen + (key,))
        merged = deep_merge(merged, parent_cfg)
        sources.update(parent_sources)
    merged = deep_merge(merged, raw)
    for name, value in raw.items():
        record_sources(value, (name,), str(path), sources)
    return merged, sources


def _where(path: Path, exc: yaml.YAMLError) -> str:
    """``path:line:column`` of a YAML error (1-based, as editors count), or the path alone."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: what it found, and the construct it was reading."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    return f"{problem} ({context})" if context else problem


def load_with_sources(path: str | Path, overrides: list[str] | None = None) -> tuple[dict, Sources]:
    """``load_config`` without the check: the merged config and where each of its keys came from."""
    merged, sources = _load(Path(path), ())
    for item in overrides or []:
        merged = apply_override(merged, item)
        dotted = _override_key(item)
        node: Any = merged
        for end, part in enumerate(dotted, 1):
            node = node[part]
            if dotted[:end] not in sources:  # a block the override created
                sources[dotted[:end]] = f"--set {item}"
        record_sources(node, dotted, f"--set {item}", sources)
    return merged, sources


def load_config(path: str | Path, overrides: list[str] | None = None, *, validate: bool = True) -> dict:
    """Load ``path`` with its parents merged in, then apply ``key.sub=value`` overrides.

    ``validate`` (the default) checks the result against the schema: an unknown key anywhere
    is a ``ConfigError`` naming the key, the file or override that brought it and the closest
    valid key. ``validate=False`` loads any YAML tree (the inheritance rules alone).
    """
    cfg, sources = load_with_sources(path, overrides)
    if validate:
        check_config(cfg, sources, source=str(path))
    return cfg


def _override_key(item: str) -> tuple[str, ...]:
    """The dotted key of ``key.sub=value``; an override of another shape is a ``ConfigError``."""
    if "=" not in item:
        raise ConfigError(f"--set {item}: an override must look like key.sub=value")
    parts = tuple(part.strip() for part in item.split("=", 1)[0].split("."))
    if not all(parts):
        raise ConfigError(f"--set {item}: the key must be names joined by dots, like train.lr")
    return parts


def apply_override(cfg: dict, item: str) -> dict:
    """``a.b.c=value``; the value is parsed as YAML so numbers, bools and lists work."""
    parts = _override_key(item)
    text = item.split("=", 1)[1]
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item}: the value {text!r} is not valid YAML: {_yaml_problem(exc)}") from None
    out = copy.deepcopy(cfg)
    node = out
    for end, part in enumerate(parts[:-1], 1):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item}: '{'.'.join(parts[:end])}' is not a mapping, it holds {node!r}")
    node[parts[-1]] = value
    return out


def get(cfg: dict, dotted: str, default: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
