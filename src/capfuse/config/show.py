"""``capfuse config show``: a config resolved, every value with where it came from.

A model config prints as its kind's settings (``resolve_model``), a pipeline or preset as its
pipeline-level blocks (``resolve``) and then each of its models as that pipeline trains it. Every
value is there, the schema's defaults included, as YAML with a trailing comment naming its
origin: the file that set it, the ``--set`` override, or ``default`` (the typed schema).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from capfuse.config.errors import Sources
from capfuse.config.load import deep_merge, load_config, load_with_sources, resolve_config_path
from capfuse.config.schema import resolve, resolve_model

DEFAULT = "default"
# Blocks of a pipeline that only ``make ablate`` reads: shown only for a config that has them.
_OPTIONAL_BLOCKS = ("ablation",)


def settings_dict(value):
    """Resolved settings as plain data: dataclasses (and pydantic models) as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: settings_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return settings_dict(value.model_dump())
    if isinstance(value, Mapping):
        return {str(k): settings_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [settings_dict(v) for v in value]
    return value


def _display(origin: str) -> str:
    """A file origin relative to the working folder when it lies below it."""
    if origin.startswith("--set") or origin == DEFAULT:
        return origin
    path = Path(origin)
    try:
        return os.path.relpath(path.resolve(), Path.cwd()) if path.is_absolute() else str(path)
    except ValueError:  # another drive
        return origin


def origin_of(sources: Sources, path: tuple) -> str:
    """Where the value at ``path`` of the resolved settings came from.

    A key a file states has an entry of its own. A head's parameters sit under ``options`` in the
    settings but beside ``kind`` in the file. A key under a value a file gave as a whole (such
    as ``label_query: true``) comes from that file; any other key is the schema's default.
    """
    candidates = [path]
    if "options" in path:
        candidates.append(tuple(p for p in path if p != "options"))
    for candidate in candidates:
        if candidate in sources:
            return _display(sources[candidate])
    for end in range(len(path) - 1, 0, -1):
        parent = path[:end]
        if parent in sources and not any(key[: len(parent)] == parent and len(key) > end for key in sources):
            return _display(sources[parent])  # stated as a whole, not key by key
    return DEFAULT


def _scalar(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def render(settings: Mapping, sources: Sources, indent: int = 0, path: tuple = ()) -> list[str]:
    """``settings`` as YAML lines, each value with a ``# from <origin>`` comment."""
    lines = []
    pad = " " * indent
    for key, value in settings.items():
        here = path + (key,)
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{key}:")
            lines += render(value, sources, indent + 2, here)
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            lines.append(f"{pad}{key}:  # from {origin_of(sources, here)}")
            for item in value:
                body = render(item, {}, indent + 4, ())
                body = [line.split("  # from ")[0] for line in body]  # the list's origin covers its rows
                lines.append(f"{pad}  - {body[0].strip()}")
                lines += body[1:]
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}  # from {origin_of(sources, here)}")
    return lines


def _model_keys(kind: str) -> set[str]:
    """The top-level keys a model of ``kind`` reads."""
    return set(settings_dict(resolve_model({"kind": kind})))


def model_view(cfg: dict, sources: Sources) -> list[str]:
    return render(settings_dict(resolve_model(cfg)), sources)


def pipeline_view(cfg: dict, sources: Sources, path: Path) -> list[str]:
    """A pipeline's own blocks, then each of its models as the pipeline trains it: its file
    merged over the pipeline's keys that a model reads (``capfuse.training.selection``)."""
    top = settings_dict(resolve(cfg))
    for block in _OPTIONAL_BLOCKS:
        if block not in cfg:
            top.pop(block, None)
    lines = render(top, sources)
    if not top.get("models"):
        return lines
    lines.append("")
    lines.append("# each model as this pipeline trains it")
    lines.append("model_settings:")
    for name in top["models"]:
        model_path = resolve_config_path(f"models/{name}", relative_to=path)
        load_config(model_path)  # checked as training checks it
        model_cfg, model_sources = load_with_sources(model_path)
        keys = _model_keys(model_cfg.get("kind", ""))
        inherited = {k: v for k, v in cfg.items() if k in keys and k != "name"}
        merged = {**deep_merge(inherited, model_cfg), "name": name}
        merged_sources = {k: v for k, v in sources.items() if k[0] in inherited}
        merged_sources.update(model_sources)
        merged_sources[("name",)] = str(path)
        lines.append(f"  {name}:")
        lines += ["    " + line for line in model_view(merged, merged_sources)]
    return lines


def show(path: str | Path, overrides: list[str] | None = None) -> str:
    """The resolved config of ``path`` (a model, pipeline or preset file), with origins."""
    path = Path(path)
    load_config(path, overrides)  # an unknown key fails here, named with its file
    cfg, sources = load_with_sources(path, overrides)
    head = [f"# {path}, resolved: every value, with the file, --set or schema default it came from"]
    if "kind" in cfg:
        if not cfg.get("name"):  # a model config given directly is named after its file, as training names it
            cfg, sources = {**cfg, "name": path.stem}, {**sources, ("name",): str(path)}
        body = model_view(cfg, sources)
    else:
        body = pipeline_view(cfg, sources, path)
    return "\n".join(head + body) + "\n"
