"""``capfuse config show NAME`` and ``capfuse config list``: the catalogue and resolved configs.

The components a config names by kind (losses, heads, the TF-IDF vectoriser, the stacker)
register their parameters with the config check when their modules are imported; they are
imported here so that ``show`` checks a config as completely as training would."""

from __future__ import annotations

from pathlib import Path

import capfuse.ensemble.second_level  # noqa: F401 (registers the stacker's parameters)
import capfuse.features.tfidf  # noqa: F401 (registers the TF-IDF parameters)
import capfuse.nn.heads  # noqa: F401 (registers the heads)
import capfuse.nn.losses  # noqa: F401 (registers the losses)
from capfuse.config.catalogue import catalogue_markdown, catalogue_text, find_config
from capfuse.config.show import show


def cli(args) -> int:
    root = Path(args.configs)
    if args.action == "list":
        print(catalogue_markdown(root) if args.markdown else catalogue_text(root), end="")
    else:
        print(show(find_config(args.name, root), args.overrides), end="")
    return 0
