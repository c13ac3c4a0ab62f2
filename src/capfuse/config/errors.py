"""The config error, and where each key of a merged config came from (its provenance)."""

from __future__ import annotations


class ConfigError(ValueError):
    pass


# Where each key of a merged config came from: the key's path (dict keys, list indices) -> a file
# path or "--set a.b=value". A path without an entry inherits the entry of its nearest parent.
Sources = dict[tuple, str]


def source_of(sources: Sources | None, path: tuple, default: str = "<config>") -> str:
    """The origin of ``path``: its own entry, else that of the nearest parent that has one."""
    for end in range(len(path), 0, -1):
        hit = (sources or {}).get(tuple(path[:end]))
        if hit is not None:
            return hit
    return default
