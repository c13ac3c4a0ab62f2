"""What the ``net`` loop is told: its settings, its learning-rate schedule, its stopping split and score.

Kept apart from the loop so that the rules a fold trains by (how many epochs, which rows judge
them, how the learning rate moves) read on one page. The settings themselves (``TrainSettings``,
the ``train:`` block) live with every other config block in ``capfuse.config.schema``, the one
home of their defaults; they are re-exported here.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

from capfuse.config.schema import EARLY_STOP, TrainSettings  # noqa: F401 (re-exported)
from capfuse.ensemble.decision import fit_global_threshold
from capfuse.utils.numeric import sigmoid


def inner_split(Y: np.ndarray, tr: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, stopping rows) of ``tr``: a multilabel-stratified ``frac`` judges the epochs.

    Only ``Y[tr]`` is read, so the held-out fold's labels cannot move the split; rows keep
    their order so that the epoch permutations stay reproducible.
    """

    tr = np.asarray(tr)
    if len(tr) < 2:
        raise ValueError(f"train.inner_frac {frac}: {len(tr)} training rows leave no rows to fit or to stop on")
    n_stop = max(1, int(round(frac * len(tr))))
    split = MultilabelStratifiedShuffleSplit(
        n_splits=1, test_size=n_stop, train_size=len(tr) - n_stop, random_state=seed
    )
    fit, stop = next(split.split(np.zeros(len(tr)), Y[tr]))
    if not len(stop) or not len(fit):
        # iterstrat can return an empty side for a handful of rows (and a few rows more or less
        # than asked otherwise, which is fine): a seeded plain draw then.
        stop = np.random.default_rng(seed).choice(len(tr), n_stop, replace=False)
        fit = np.setdiff1d(np.arange(len(tr)), stop)
    return tr[np.sort(fit)], tr[np.sort(stop)]


def for_rows(settings: TrainSettings, n_rows: int) -> TrainSettings:
    """The settings a fold with ``n_rows`` training rows trains by.

    Below twice ``batch_grow_rows`` rows they are the config's; at 2x, 4x, 8x ... that many rows
    the batch doubles, to at most ``max_batch_size``, and the learning rate grows by the square
    root of the batch's growth (Adam's rule of thumb): on two CPU cores a step's fixed cost
    (Python, the optimiser, small kernels) is paid 4x less often at 24,000 rows, while a
    small data set (the demo) keeps its batch, its schedule and its results.
    """
    s = settings
    if not s.batch_grow_rows or n_rows < 2 * s.batch_grow_rows:
        return s
    factor = 2 ** int(math.log2(n_rows / s.batch_grow_rows))
    batch = min(s.max_batch_size, s.batch_size * factor)
    if batch <= s.batch_size:
        return s
    return dataclasses.replace(s, batch_size=batch, lr=s.lr * math.sqrt(batch / s.batch_size))


def schedule_epochs(settings: TrainSettings, steps_per_epoch: int) -> int:
    """How many epochs the learning-rate schedule spans: ``train.epochs``, or fewer where
    ``train.max_steps`` caps the optimiser steps. A trained top stage early-stops after 8-13
    epochs of 11 steps on the demo, while one epoch of a 24,000-row fold is 40 steps of 52 s:
    a step budget keeps the demo's span and bounds the large fold's."""
    if not settings.max_steps:
        return settings.epochs
    return max(1, min(settings.epochs, math.ceil(settings.max_steps / steps_per_epoch)))


def cosine_with_warmup(step: int, total: int, warmup: int, floor: float) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine down to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress_ = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress_))


def val_score(y: np.ndarray, logits: np.ndarray, metric: str = "f1") -> float:
    """The stopping rows' score that early stopping maximises: mean F1 at their best global
    threshold (``f1``), or minus their mean binary cross-entropy (``loss``), which varies less
    from epoch to epoch when only a few dozen rows judge (low label ratios)."""
    if metric == "loss":
        x = np.clip(logits.astype(np.float64), -40, 40)
        return float(-np.mean(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))))
    probs = sigmoid(logits)
    _, f1 = fit_global_threshold(y, probs)
    return float(f1)
