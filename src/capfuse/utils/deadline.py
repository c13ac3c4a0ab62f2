"""A hard deadline that long loops check between steps, for runs under a time budget.

A run with ``--time-limit`` opens one (``deadline``); the trainer's epoch loop calls ``check``
after every batch, so a fold that would run past the budget stops at the next step boundary with
``OutOfTime``. The caller then drops that model whole (its other folds included): a model either
has out-of-fold logits for every row or does not enter the second level. Without an open
deadline ``check`` costs one context-variable read and never raises: tests, notebooks and runs
without a budget are untouched.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar("capfuse_deadline", default=None)


class OutOfTime(RuntimeError):
    """The budget's hard deadline passed while ``what`` ran."""


@contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """``at``: a ``time.monotonic()`` instant, or None for no deadline."""
    token = _AT.set(at)
    try:
        yield
    finally:
        _AT.reset(token)


def remaining() -> float | None:
    """Seconds left before the open deadline; None when there is none."""
    at = _AT.get()
    return None if at is None else at - time.monotonic()


def check(what: str) -> None:
    at = _AT.get()
    if at is not None and time.monotonic() > at:
        raise OutOfTime(f"{what}: the time budget's deadline passed")
