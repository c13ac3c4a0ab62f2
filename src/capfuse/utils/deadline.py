"""The clock of a run under a time budget: a hard deadline, and each model's allowance.

- **Deadline.** A run with ``--time-limit`` opens one (``deadline``); the trainer's epoch loop
  calls ``check`` after every batch, so a fold that would run past the budget stops at the next
  step boundary with ``OutOfTime``. The caller then drops that model whole (its other folds
  included): a model either has out-of-fold logits for every row or does not enter the second
  level.
- **Allowance.** Before the deadline, each model gets the time the plan leaves it
  (``allowance``), shared equally by the folds it still has to train (``fold_share``). A fold
  whose next epoch would end past its share stops after the epoch it finished, as early
  stopping does, and keeps its best epoch: a clean stop, so the model keeps every fold. The
  epochs each such fold ran are recorded, and a replayed plan stops the same folds at the same
  epochs (``stops``) without a clock.

Without an open deadline, allowance or replay, every function here costs a context-variable read
and changes nothing: tests, notebooks and runs without a budget are untouched.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar("capfuse_deadline", default=None)


@dataclass
class _Allowance:
    at: float  # time.monotonic() by which the model should have finished
    folds_left: int  # folds (of every round) it still has to train


_ALLOWANCE: contextvars.ContextVar[_Allowance | None] = contextvars.ContextVar("capfuse_allowance", default=None)
_FOLD_END: contextvars.ContextVar[float | None] = contextvars.ContextVar("capfuse_fold_end", default=None)
_STOPS: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar("capfuse_stops", default=None)


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


@contextmanager
def allowance(at: float | None, folds: int) -> Iterator[None]:
    """The model trained inside should end by ``at`` (monotonic), over ``folds`` folds; None: no allowance."""
    token = _ALLOWANCE.set(None if at is None else _Allowance(at, max(1, folds)))
    try:
        yield
    finally:
        _ALLOWANCE.reset(token)


@contextmanager
def fold_share() -> Iterator[None]:
    """One fold's equal share of what its model's allowance has left (nothing without one)."""
    share = _ALLOWANCE.get()
    end = None
    if share is not None:
        now = time.monotonic()
        end = now + max(0.0, share.at - now) / max(1, share.folds_left)
    token = _FOLD_END.set(end)
    try:
        yield
    finally:
        _FOLD_END.reset(token)
        if share is not None:
            share.folds_left = max(1, share.folds_left - 1)


def fold_end() -> float | None:
    """The instant (monotonic) the fold being trained should end by; None without an allowance."""
    return _FOLD_END.get()


@contextmanager
def stops(epochs: dict[str, int] | None) -> Iterator[None]:
    """A replayed plan's clean stops: ``{"<model folder>/fold<k>": epochs run}``."""
    token = _STOPS.set(dict(epochs) if epochs else None)
    try:
        yield
    finally:
        _STOPS.reset(token)


def replayed_stop(key: str) -> int | None:
    """The epochs a replayed plan lets the fold ``key`` ("<model folder>/fold<k>") run; None: its own."""
    table = _STOPS.get()
    return None if table is None else table.get(key)


def stop_key(fold_dir) -> str:
    return f"{fold_dir.parent.name}/{fold_dir.name}"


def stop_suffix(epochs: int) -> str:
    """Appended to a fold's fingerprint when its allowance stopped it: a run without the same
    stop does not take the fold as its own."""
    return f"+stop{int(epochs)}"
