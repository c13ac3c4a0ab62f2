"""Logging with levels, a visible header per stage, progress bars that CI can silence, and
``mask_url``: the one way a URL that may carry a password is shown or recorded."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm.auto import tqdm

from capfuse.utils.timing import timed

T = TypeVar("T")
LOGGER_NAME = "capfuse"
log = logging.getLogger(LOGGER_NAME)


# Redirected to a file or a CI log, every redraw of a bar is one more line; this many seconds
# between redraws keeps a long loop's log readable while still showing that it is alive.
FILE_BAR_INTERVAL = 30.0

# ``scheme://user:password@host``: the password runs to the last ``@``, since SQLAlchemy (and
# so Optuna) takes a raw ``@`` or ``/`` in it; masking too much is harmless, too little is not.
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^:/@?#]*:)(.*)(@)", re.DOTALL)
_QUERY_SECRET = re.compile(r"([?&;](?:password|passwd|pwd|pass|secret|token|api_key|apikey)=)[^&;#]*", re.IGNORECASE)


def mask_url(url: str, within: str | None = None) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) shown as ``***``;
    with ``within``, that text with the URL and its password masked wherever they appear (for a
    driver's error message that quotes them).

    Every place that logs, prints or writes a storage URL goes through this; only the library
    that connects (Optuna) ever gets the URL itself.
    """
    masked = _QUERY_SECRET.sub(r"\1***", _URL_PASSWORD.sub(r"\1***\3", url))
    if within is None:
        return masked
    text = within.replace(url, masked)
    found = _URL_PASSWORD.match(url)
    secrets = [found.group(2)] if found else []
    secrets += [m.group(0).split("=", 1)[1] for m in _QUERY_SECRET.finditer(url)]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def interactive() -> bool:
    """Whether bars are seen live: standard error is a terminal, or tqdm draws notebook widgets."""
    if any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__):  # tqdm.auto chose widgets
        return True
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


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
    # tqdm redraws every 0.1 s; in a file each redraw is kept, so there it draws every 30 s.
    interval = {} if interactive() else {"mininterval": FILE_BAR_INTERVAL, "maxinterval": FILE_BAR_INTERVAL}
    return iter(tqdm(items, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True, **interval))


@contextmanager
def stage(name: str, detail: str = "") -> Iterator[None]:
    """Print a header, time the stage, and say how long it took (a row of the command's timings)."""
    bar = "=" * 8
    log.info("%s %s %s%s", bar, name, bar, f" ({detail})" if detail else "")
    start = time.perf_counter()
    with timed(name):
        yield
    log.info("%s done in %.1f s", name, time.perf_counter() - start)
