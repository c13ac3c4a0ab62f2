"""Logging with levels, a visible header per stage, and progress bars that CI can silence."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
LOGGER_NAME = "capfuse"
log = logging.getLogger(LOGGER_NAME)


def quiet_default() -> bool:
    """Progress bars are noise in CI logs; CI=true or CAPFUSE_QUIET=1 turns them off."""
    return os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("CAPFUSE_QUIET") == "1"


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger(LOGGER_NAME)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level.upper())


def progress(items: Iterable[T], desc: str, total: int | None = None, quiet: bool | None = None) -> Iterator[T]:
    disable = quiet_default() if quiet is None else quiet
    return iter(tqdm(items, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True))


@contextmanager
def stage(name: str, detail: str = "") -> Iterator[None]:
    """Print a header, time the stage, and say how long it took."""
    bar = "=" * 8
    log.info("%s %s %s%s", bar, name, bar, f" ({detail})" if detail else "")
    start = time.perf_counter()
    yield
    log.info("%s done in %.1f s", name, time.perf_counter() - start)
