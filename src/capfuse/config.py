"""YAML configs that inherit from each other, plus dotted command-line overrides.

A config may name its parents with ``inherit: <name or path>`` (or a list of them). Parents
are merged first, children override key by key (dicts merge recursively, everything else is
replaced). A bare name such as ``default`` or ``models/fused_lr`` resolves to
``configs/<name>.yaml`` relative to the inheriting file's config root.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

INHERIT_KEY = "inherit"


class ConfigError(ValueError):
    pass


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _config_root(path: Path) -> Path:
    """The nearest ancestor folder called ``configs`` (so models/x.yaml can inherit 'default')."""
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


def load_config(path: str | Path, overrides: list[str] | None = None, _seen: tuple = ()) -> dict:
    """Load ``path`` with its parents merged in, then apply ``key.sub=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    key = str(path.resolve())
    if key in _seen:
        raise ConfigError(f"config inheritance loops through {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(raw).__name__}")
    parents = raw.pop(INHERIT_KEY, None) or []
    if isinstance(parents, str):
        parents = [parents]
    merged: dict = {}
    for parent in parents:
        parent_path = resolve_config_path(parent, relative_to=path)
        merged = deep_merge(merged, load_config(parent_path, _seen=_seen + (key,)))
    merged = deep_merge(merged, raw)
    for item in overrides or []:
        merged = apply_override(merged, item)
    return merged


def apply_override(cfg: dict, item: str) -> dict:
    """``a.b.c=value``; the value is parsed as YAML so numbers, bools and lists work."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    dotted, value = item.split("=", 1)
    out = copy.deepcopy(cfg)
    node = out
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
    node[parts[-1]] = yaml.safe_load(value)
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
