"""Adversarial validation: can a classifier tell the test rows from the training rows?

A logistic regression learns the train/test indicator from one input's vectors, out of fold
(stratified K-fold on the indicator), so every row gets a score from a model that never saw it.
Its AUC says how far apart the two sets are (0.5: indistinguishable), the training rows' scores
say which of them look most like the test. The AUC comes with a DeLong confidence interval.

"Far apart" is judged against a null reference computed the same way on a random split of the
training rows alone, into pseudo-train and pseudo-test in the train/test proportions: what a
random split shows, noise included. Only an AUC beyond it by a margin is a shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

# 64 components keep the directions in which most rows vary, where a shift of any size shows,
# and make each fit take a fraction of a second at 40,000 rows.
DIMS = 64
# The projection is fitted on this many rows at most: enough for 64 stable directions, and
# fitting on all 40,000 rows of a 2,864-wide vector would cost seconds for nothing.
FIT_ROWS = 5000
TRANSFORM_ROWS = 8192
# Small sets get fewer: a classifier with more components than about one per 20 rows learns
# noise, and its AUC then says nothing (the tiny test set's 120 rows get 6).
ROWS_PER_DIM = 20
K = 5
# Random splits of the training rows behind the null reference; their highest upper bound is
# the reference, so a chance high AUC on one split cannot hide a shift behind a low one.
NULL_REPEATS = 3
# A train-vs-test AUC must exceed the null's upper bound by this much: at 40,000 rows the
# intervals are narrow enough that a trivial difference would otherwise count as a shift.
MARGIN = 0.02
# Weak L2: 64 standardised components against thousands of rows; the classifier should find
# a shift where there is one, and a stronger penalty would only hide a small one. liblinear:
# lbfgs costs some 25 ms per fit whatever the size, and the report fits 60 models.
C = 1.0


@dataclass(frozen=True)
class Auc:
    auc: float
    low: float  # DeLong 95 % interval
    high: float

    def as_dict(self) -> dict:
        return {"auc": round(self.auc, 4), "ci95": [round(self.low, 4), round(self.high, 4)]}


def n_dims(rows: int, width: int, dims: int = DIMS) -> int:
    """Components to keep of a ``width``-wide input with ``rows`` rows (see ``ROWS_PER_DIM``)."""
    return max(1, min(dims, width, rows // ROWS_PER_DIM))


def reduce(x: np.ndarray, dims: int = DIMS, seed: int = 0) -> np.ndarray:
    """Rows of ``x`` on their ``dims`` principal directions (centred, not scaled), float32.

    Fitted on at most ``FIT_ROWS`` rows drawn with ``seed``; no label is used, so fitting on
    train and test rows together leaks nothing.
    """
    dims = n_dims(len(x), x.shape[1], dims)
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(len(x), min(FIT_ROWS, len(x)), replace=False))
    small = min(len(fit_rows), x.shape[1]) <= 4 * DIMS  # an exact SVD is then cheaper than sketching
    pca = PCA(dims, svd_solver="full" if small else "randomized", iterated_power=3, random_state=seed)
    pca.fit(np.asarray(x[fit_rows], np.float32))
    # In blocks: 40,000 cached float16 rows of 2,864 values would take half a gigabyte as float32.
    return np.concatenate(
        [pca.transform(np.asarray(x[i : i + TRANSFORM_ROWS], np.float32)) for i in range(0, len(x), TRANSFORM_ROWS)]
    ).astype(np.float32)


def standardise(x: np.ndarray) -> np.ndarray:
    sd = x.std(0)
    return (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)


def oof_scores(x: np.ndarray, is_test: np.ndarray, *, k: int = K, seed: int = 0) -> np.ndarray:
    """Out-of-fold P(test) of every row from a logistic regression on standardised ``x``."""
    is_test = np.asarray(is_test, dtype=bool)
    k = min(k, int(is_test.sum()), int((~is_test).sum()))
    if k < 2:
        raise ValueError(f"adversarial validation needs at least 2 rows of each side, got {is_test.sum()} test")
    x = standardise(np.asarray(x, dtype=np.float64))
    scores = np.empty(len(x))
    for fit, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, is_test):
        clf = LogisticRegression(C=C, solver="liblinear")
        clf.fit(x[fit], is_test[fit])
        scores[held] = clf.predict_proba(x[held])[:, 1]
    return scores


def delong_auc(y: np.ndarray, score: np.ndarray) -> Auc:
    """ROC AUC and its 95 % interval from DeLong's variance (midranks for ties).

    DeLong, DeLong and Clarke-Pearson (1988), in Sun and Xu's (2014) rank form: no resampling,
    so it costs one sort at any size.
    """
    y = np.asarray(y, dtype=bool)
    pos, neg = score[y], score[~y]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        raise ValueError("AUC needs rows of both classes")
    r_all = rankdata(np.concatenate([pos, neg]))
    r_pos, r_neg = rankdata(pos), rankdata(neg)
    auc = (r_all[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (r_all[:m] - r_pos) / n  # per positive: share of negatives it outranks
    v01 = 1.0 - (r_all[m:] - r_neg) / m  # per negative: share of positives that outrank it
    var = (v10.var(ddof=1) if m > 1 else 0.0) / m + (v01.var(ddof=1) if n > 1 else 0.0) / n
    half = float(norm.ppf(0.975) * np.sqrt(max(var, 0.0)))
    return Auc(float(auc), max(0.0, float(auc) - half), min(1.0, float(auc) + half))


def null_reference(x: np.ndarray, n_train: int, n_test: int, *, seed: int = 0) -> list[Auc]:
    """Adversarial AUCs of random splits of the first ``n_train`` rows (the training rows) into
    pseudo-train and pseudo-test in the proportions ``n_train : n_test``."""
    share = n_test / (n_train + n_test)
    n_pseudo = min(n_train - 2, max(2, round(n_train * share)))
    out = []
    for r in range(NULL_REPEATS):
        rng = np.random.default_rng([seed, r])
        pseudo = np.zeros(n_train, bool)
        pseudo[rng.choice(n_train, n_pseudo, replace=False)] = True
        out.append(delong_auc(pseudo, oof_scores(x[:n_train], pseudo, seed=seed + 1 + r)))
    return out


@dataclass(frozen=True)
class Adversarial:
    """One input's adversarial validation: train vs test, the null, and every row's OOF score."""

    name: str
    dims: int  # the input's width before the projection
    rows: int
    test: Auc
    null: list[Auc]
    scores: np.ndarray  # OOF P(test) per row, train rows first

    @property
    def null_high(self) -> float:
        return max(a.high for a in self.null)

    @property
    def shifted(self) -> bool:
        return self.test.auc > self.null_high + MARGIN

    def as_dict(self) -> dict:
        return {
            "input": self.name,
            "dims": self.dims,
            "rows": self.rows,
            **self.test.as_dict(),
            "null_auc": [round(a.auc, 4) for a in self.null],
            "null_high": round(self.null_high, 4),
            "margin": MARGIN,
            "shifted": bool(self.shifted),
        }


def adversarial(name: str, z: np.ndarray, n_train: int, dims: int, *, seed: int = 0) -> Adversarial:
    """Adversarial validation of one input: ``z`` holds its projected vectors (``reduce``), the
    training rows first, then the test rows; ``dims`` is the input's width before projection."""
    z = np.asarray(z, np.float32)
    is_test = np.arange(len(z)) >= n_train
    scores = oof_scores(z, is_test, seed=seed)
    return Adversarial(
        name=name,
        dims=int(dims),
        rows=len(z),
        test=delong_auc(is_test, scores),
        null=null_reference(z, n_train, len(z) - n_train, seed=seed),
        scores=scores,
    )
