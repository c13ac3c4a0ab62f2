"""The model catalogue: every model config under ``configs/models/``, what it is and who uses it.

A model's name follows one scheme, ``<inputs>_<classifier>[_<modifier>...]`` (documented in
``configs/models/README.md``; ``NAME_SCHEME`` below is its vocabulary), and its description is
the first comment line of its file. ``catalogue`` lists the models with the presets and
ablation files that train them; ``catalogue_markdown`` renders that as the Markdown table the
documentation site includes, and ``capfuse config list`` prints it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from capfuse.config.load import INHERIT_KEY, load_config, resolve_config_path
from capfuse.config.schema import resolve, resolve_model

INPUTS = ("image", "caption", "fusion")
CLASSIFIERS = ("linear", "mlp", "attention", "crossattention", "logit", "labelquery", "context")
# In the order a name lists them: what the image branch reads, which encoder, which views, the
# loss, how the encoders train, where, and what the run adds after itself.
MODIFIERS = (
    ("topblock",),
    ("multilevel",),
    ("mobilenet", "lite2", "glove"),
    ("origview",),
    ("asl", "bce", "tsig"),
    ("finetune",),
    ("gpu",),
    ("ema",),
    ("seed2",),
    ("pseudo",),
)
NAME_SCHEME = "<inputs>_<classifier>[_<modifier>...]"
PRESET_NAMES = ("fast", "default", "best")


def name_problem(name: str) -> str | None:
    """Why ``name`` does not follow the naming scheme, or None when it does."""
    parts = name.split("_")
    if len(parts) < 2 or parts[0] not in INPUTS or parts[1] not in CLASSIFIERS:
        return f"{name!r} does not start with <inputs>_<classifier> ({'|'.join(INPUTS)} _ {'|'.join(CLASSIFIERS)})"
    rank = {word: i for i, group in enumerate(MODIFIERS) for word in group}
    last = -1
    for word in parts[2:]:
        if word not in rank:
            return f"{name!r}: {word!r} is not a modifier of the scheme ({', '.join(rank)})"
        if rank[word] <= last:
            return f"{name!r}: modifier {word!r} is out of order (the order: {', '.join(rank)})"
        last = rank[word]
    return None


@dataclass(frozen=True)
class ModelEntry:
    """One model config of the catalogue."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    description: str
    used_by: tuple[str, ...]  # "preset fast", "ablation early_stop", ...
    path: Path


def description(path: Path) -> str:
    """A config's first comment line: its one-line description."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def inherit_chain(path: Path) -> list[Path]:
    """``path`` and the files it inherits from, nearest first (first parent of each, as listed)."""
    chain = [Path(path)]
    while True:
        raw = yaml.safe_load(chain[-1].read_text(encoding="utf-8")) or {}
        parents = raw.get(INHERIT_KEY) or []
        parents = [parents] if isinstance(parents, str) else list(parents)
        if not parents:
            return chain
        if len(parents) > 1:
            # Several parents: each is a chain of its own; the longest decides the hops.
            chains = [inherit_chain(resolve_config_path(p, relative_to=chain[-1])) for p in parents]
            return chain + max(chains, key=len)
        chain.append(resolve_config_path(parents[0], relative_to=chain[-1]))


def model_paths(config_root: Path) -> dict[str, Path]:
    """Every model config under ``<config_root>/models``, by name."""
    return {p.stem: p for p in sorted((Path(config_root) / "models").glob("*.yaml"))}


def preset_paths(config_root: Path) -> dict[str, Path]:
    """The presets (``presets/<name>.yaml``) by name."""
    return {p.stem: p for p in sorted((Path(config_root) / "presets").glob("*.yaml"))}


def ablation_paths(config_root: Path) -> dict[str, Path]:
    """The ablation files: top-level configs that state an ``ablation:`` block themselves."""
    out = {}
    for path in sorted(Path(config_root).glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if isinstance(raw, dict) and "ablation" in raw:
            out[path.stem] = path
    return out


def users(config_root: Path) -> dict[str, list[str]]:
    """Model name -> the presets and ablation files that train it (an ablation row's ``base``
    counts, as do the models an ablation file's own pipeline lists)."""
    used: dict[str, list[str]] = {}

    def mark(name: str, who: str) -> None:
        if who not in used.setdefault(name, []):
            used[name].append(who)

    presets = preset_paths(config_root)
    for name in [n for n in PRESET_NAMES if n in presets] + [n for n in presets if n not in PRESET_NAMES]:
        for model in resolve(load_config(presets[name], validate=False)).models:
            mark(model, f"preset {name}")
    for path in ablation_paths(config_root).values():
        top = resolve(load_config(path, validate=False))
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        for model in top.models if "models" in raw else ():
            mark(model, f"ablation {path.name}")
        for row in top.ablation.variants:
            mark(row.base or row.name, f"ablation {path.name}")
    return used


def catalogue(config_root: Path) -> list[ModelEntry]:
    """Every model config, with its kind, inputs, description and users."""
    used = users(config_root)
    out = []
    for name, path in model_paths(config_root).items():
        settings = resolve_model(load_config(path))
        out.append(
            ModelEntry(
                name=name,
                kind=settings.kind,
                inputs=tuple(settings.inputs),
                description=description(path),
                used_by=tuple(used.get(name, ())),
                path=path,
            )
        )
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def catalogue_markdown(config_root: Path) -> str:
    """The catalogue as a Markdown table (name, kind, inputs, description, used by)."""
    lines = ["| model | kind | inputs | what it is | used by |", "|---|---|---|---|---|"]
    for e in catalogue(config_root):
        used = ", ".join(e.used_by) or "tests"
        cells = [f"`{e.name}`", e.kind, " + ".join(e.inputs), _cell(e.description), used]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def catalogue_text(config_root: Path) -> str:
    """The catalogue as a plain table for a terminal."""
    entries = catalogue(config_root)
    name_w = max(len(e.name) for e in entries) if entries else 4
    rows = [f"{'model':<{name_w}}  {'kind':<6}  {'inputs':<15}  what it is / used by"]
    for e in entries:
        rows.append(f"{e.name:<{name_w}}  {e.kind:<6}  {'+'.join(e.inputs):<15}  {e.description}")
        rows.append(f"{'':<{name_w}}  {'':<6}  {'':<15}  used by: {', '.join(e.used_by) or 'tests only'}")
    return "\n".join(rows) + "\n"


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def find_config(name: str | Path, config_root: Path) -> Path:
    """The config ``name`` means: an existing file, else a model, a preset or a top-level
    config of that name (``configs/models/<name>.yaml``, ``presets/``, ``configs/``)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    if _PLAIN_NAME.fullmatch(str(name)):
        root = Path(config_root)
        for candidate in (root / "models" / f"{name}.yaml", root / "presets" / f"{name}.yaml", root / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    known = sorted({*model_paths(config_root), *preset_paths(config_root)})
    raise FileNotFoundError(
        f"no config {str(name)!r}: give a file, or one of the models and presets: {', '.join(known)}"
    )
