"""What the ``net`` loop is told: its settings, its learning-rate schedule and its stopping split.

Kept apart from the loop so that the rules a fold trains by (how many epochs, which rows judge
them, how the learning rate moves) read on one page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrainSettings:
    """The loop's knobs; every value is overridable from the model's YAML (``train:`` block)."""

    epochs: int = 40  # an upper bound: early stopping usually ends a fold near epoch 10-20
    batch_size: int = 64
    lr: float = 1e-3  # heads on frozen features take a large step size
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.02  # cosine floor, as a fraction of lr
    patience: int = 6  # epochs without a better stopping-set F1 before stopping
    # How the stopping point is chosen without the held-out fold (capfuse.models.net says more):
    # inner is the cheapest rule that keeps the fold blind; refit paid 0.2-0.9 points on the
    # demo at twice the cost (README, "Honest out-of-fold predictions").
    early_stop: str = "inner"
    inner_frac: float = 0.15  # share of the fold's training rows that only judge epochs
    stop_metric: str = "f1"  # what the stopping rows judge by: mean F1 (the target), or `loss` (smoother)
    grad_clip: float = 1.0
    accumulate: int = 1  # gradient accumulation steps (finetune mode, large effective batches)
    flip_p: float = 0.5  # chance a training sample uses its flipped view
    tta: bool = True  # average original and flipped views for OOF and test logits
    eval_batch_size: int = 256
    loss: dict = field(default_factory=lambda: {"name": "bce"})

    @classmethod
    def from_config(cls, cfg: dict) -> TrainSettings:
        known = set(cls.__dataclass_fields__)
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown train settings {sorted(unknown)}; known: {sorted(known)}")
        out = cls(**cfg)
        if out.early_stop not in EARLY_STOP:
            raise ValueError(f"train.early_stop must be one of {list(EARLY_STOP)}, got {out.early_stop!r}")
        if out.stop_metric not in ("f1", "loss"):
            raise ValueError(f"train.stop_metric must be 'f1' or 'loss', got {out.stop_metric!r}")
        if out.early_stop != "none" and not 0.0 < out.inner_frac < 0.5:
            raise ValueError(f"train.inner_frac must lie in (0, 0.5), got {out.inner_frac}")
        return out


EARLY_STOP = ("inner", "refit", "none")


def inner_split(Y: np.ndarray, tr: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, stopping rows) of ``tr``: a multilabel-stratified ``frac`` judges the epochs.

    Only ``Y[tr]`` is read, so the held-out fold's labels cannot move the split; rows keep
    their order so that the epoch permutations stay reproducible.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    tr = np.asarray(tr)
    if len(tr) < 2:
        raise ValueError(f"train.inner_frac {frac}: {len(tr)} training rows leave no rows to fit or to stop on")
    n_stop = max(1, int(round(frac * len(tr))))
    split = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_stop, train_size=len(tr) - n_stop,
                                             random_state=seed)
    fit, stop = next(split.split(np.zeros(len(tr)), Y[tr]))
    if not len(stop) or not len(fit):
        # iterstrat can return an empty side for a handful of rows (and a few rows more or less
        # than asked otherwise, which is fine): a seeded plain draw then.
        stop = np.random.default_rng(seed).choice(len(tr), n_stop, replace=False)
        fit = np.setdiff1d(np.arange(len(tr)), stop)
    return tr[np.sort(fit)], tr[np.sort(stop)]


def cosine_with_warmup(step: int, total: int, warmup: int, floor: float) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine down to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress_ = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress_))
