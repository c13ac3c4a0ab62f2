"""The second level under a train/test shift: the training rows that look most like the test,
and a guard against a base model whose score falls on them.

Random K-fold CV scores a candidate on rows drawn like the training rows. When the shift report
warns (``capfuse.shift``), the test set is not drawn like them, and the candidate that wins on
all rows may be the one that leans hardest on what the test lacks. Two things answer it here:

* the *test-like rows*: the share of training rows that the adversarial classifier finds most
  like the test (``runs/<dataset>/shift_scores.csv``, out of fold and label-free), on which each
  candidate is scored beside all rows;
* a *weight cap*: a base model whose mean F1 falls from all rows to the test-like rows by more
  than the others' falls (by ``tolerance``) may hold at most ``cap`` of a blend, and the
  stacker may not split on its columns. The falls are measured on the rows a fit learns from,
  so a fold's cap never reads the labels of the fold it predicts. Only a model that reads an
  input the report found shifted may be capped (``exposed``): a caption model on a set whose
  images alone shift can fall on the test-like rows because they are harder rows, not because
  it learnt what the test lacks, and its held-out score stays its CV.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from capfuse.ensemble.decision import apply_threshold, fit_global_threshold


@dataclass(frozen=True)
class Shift:
    """What the shift report says, as the second level reads it (the stage reads the files)."""

    scores: np.ndarray | None  # every training row's test-likeness, in the dataset's order; None: not measured
    warned: bool  # the report's warning fired
    source: str  # the file the scores come from, for stack.json
    shifted_inputs: frozenset[str] | None = None  # "image", "caption", "both" where shifted; None: not known

    def exposed(self, needs_image: bool) -> bool:
        """Whether a model that reads the image (``needs_image``) or the caption alone reads an
        input the report found shifted; True where the report does not say."""
        if self.shifted_inputs is None or "caption" in self.shifted_inputs:
            return True
        if "image" in self.shifted_inputs:
            return needs_image
        return bool(self.shifted_inputs)  # only the pair tells the splits apart: every model reads part of it


@dataclass(frozen=True)
class Guard:
    """The weight cap's settings (``ensemble.shift``) and the decision rule its scores use."""

    rule: dict  # min_labels, max_labels
    tolerance: float
    cap: float
    exposed: tuple[bool, ...] | None = None  # per base model: may be capped (reads a shifted input); None: all

    def caps_for(
        self, Y: np.ndarray, probs: Sequence[np.ndarray], like: np.ndarray
    ) -> Callable[[np.ndarray], np.ndarray]:
        """``caps(rows)``: each model's largest weight for a fit on ``rows`` (a bool mask), from
        those rows' labels alone, as the fit itself."""

        def caps(rows: np.ndarray) -> np.ndarray:
            drops = score_drops(Y[rows], [p[rows] for p in probs], like[rows], self.rule)
            return weight_caps(drops, self.tolerance, self.cap, self.exposed)

        return caps


def most_test_like(scores: np.ndarray, share: float) -> np.ndarray:
    """A bool mask of the ``share`` of rows with the highest scores (ties: the earlier row)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise ValueError("test-likeness scores must be a finite 1-D array")
    n = min(len(s), max(1, round(share * len(s))))
    mask = np.zeros(len(s), dtype=bool)
    mask[np.argsort(-s, kind="stable")[:n]] = True
    return mask


def row_f1(Y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Each row's F1 of predicted against true label set (their mean is the mean F1 over samples)."""
    t, p = np.asarray(Y, dtype=bool), np.asarray(pred, dtype=bool)
    size = t.sum(1) + p.sum(1)
    return np.where(size == 0, 1.0, 2.0 * (t & p).sum(1) / np.maximum(size, 1))


def score_drops(Y: np.ndarray, probs: Sequence[np.ndarray], like: np.ndarray, rule: dict) -> np.ndarray:
    """Per model: mean F1 on all rows minus mean F1 on the test-like rows, both at the model's
    best global threshold on all rows (one cut-off, so the fall is the rows', not the threshold's)."""
    out = np.zeros(len(probs))
    if not like.any() or like.all():
        return out  # no contrast to measure
    for m, p in enumerate(probs):
        t, _ = fit_global_threshold(Y, p, **rule)
        f1 = row_f1(Y, apply_threshold(p, t, **rule))
        out[m] = f1.mean() - f1[like].mean()
    return out


def weight_caps(drops: np.ndarray, tolerance: float, cap: float, exposed: Sequence[bool] | None = None) -> np.ndarray:
    """Each model's largest blend weight: ``cap`` where its fall exceeds the median fall of the
    other models by more than ``tolerance``, else 1; only models ``exposed`` to the shift (all
    when None) are capped. The model that falls least is never capped, so the caps always leave
    room for weights that sum to one."""
    d = np.asarray(drops, dtype=np.float64)
    caps = np.ones(len(d))
    if len(d) < 2:
        return caps
    for m in range(len(d)):
        if (exposed is None or exposed[m]) and d[m] - np.median(np.delete(d, m)) > tolerance:
            caps[m] = cap
    return caps


def like_f1(Y: np.ndarray, pred: np.ndarray, like: np.ndarray) -> float:
    """Mean F1 over the test-like rows only."""
    return float(row_f1(Y[like], pred[like]).mean())
