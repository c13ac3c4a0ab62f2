"""Blending base models' probabilities: a plain mean, or non-negative weights fitted on OOF.

The weights minimise the OOF binary log-loss of the blended probabilities, not the mean F1 at the
best threshold. F1 is a step function of the weights (it changes only when some probability
crosses the threshold), so an optimiser sees flat ground with cliffs and the maximum it finds is
mostly OOF noise; log-loss of a convex combination of probabilities is smooth and convex in the
weights, so the fit has one optimum, converges in a few iterations, and rewards exactly what the
threshold stage needs next: good rankings with comparable scales across models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import minimize

from capfuse.ensemble.decision import _probabilities
from capfuse.metrics import _as_binary

# Probabilities are clipped this far from 0 and 1 inside the log-loss so that one confidently
# wrong model cannot make the loss infinite and its weight exactly zero by accident.
_EPS = 1e-6


def _stack(probs_list: Sequence[np.ndarray]) -> np.ndarray:
    if len(probs_list) == 0:
        raise ValueError("no models to blend")
    arrays = [_probabilities(p) for p in probs_list]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"models' probabilities differ in shape: {sorted(shapes)}")
    return np.stack(arrays)  # [M, N, C]


def mean_blend(probs_list: Sequence[np.ndarray]) -> np.ndarray:
    """The unweighted mean of the models' probabilities: the baseline any fitted blend must beat."""
    return _stack(probs_list).mean(0)


def apply_weights(probs_list: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Blend with ``weights`` of shape ``[M]`` (one per model) or ``[M, C]`` (per model and class)."""
    p = _stack(probs_list)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape not in ((p.shape[0],), (p.shape[0], p.shape[2])):
        raise ValueError(f"weights must have shape [{p.shape[0]}] or [{p.shape[0]}, {p.shape[2]}], got {w.shape}")
    if (w < 0).any() or not np.allclose(w.sum(0), 1.0):
        raise ValueError("weights must be non-negative and sum to 1 (per class when per-class)")
    w = w[:, None, None] if w.ndim == 1 else w[:, None, :]
    return np.clip((w * p).sum(0), 0.0, 1.0)


def _fit_simplex(p: np.ndarray, y: np.ndarray, max_weight: np.ndarray | None = None) -> np.ndarray:
    """Weights on the simplex minimising mean log-loss of ``sum_m w_m p[m]``; ``p`` is ``[M, K]``;
    ``max_weight`` bounds each model's weight (``capfuse.ensemble.under_shift``)."""
    m = p.shape[0]
    if m == 1:
        return np.ones(1)
    upper = np.ones(m) if max_weight is None else np.asarray(max_weight, dtype=np.float64)
    if upper.shape != (m,) or (upper <= 0).any() or upper.sum() < 1.0:
        raise ValueError(f"max_weight must hold {m} positive bounds that sum to at least 1, got {upper}")
    p = np.clip(p, _EPS, 1 - _EPS)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        q = w @ p
        value = -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q))
        grad = -(p @ (y / q - (1 - y) / (1 - q))) / len(y)
        return float(value), grad

    # The uniform weights, or with bounds a feasible start near them (SLSQP may wander from an
    # infeasible one): clipped to the bounds, what the clip took spread below the others' bounds.
    start = np.full(m, 1.0 / m)
    if max_weight is not None:
        start = _within(start, upper)
    res = minimize(
        loss,
        start,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, float(u)) for u in upper],
        constraints=({"type": "eq", "fun": lambda w: w.sum() - 1.0},),
    )
    if max_weight is None:
        w = np.clip(res.x, 0.0, None)
        return w / w.sum() if w.sum() > 0 else np.full(m, 1.0 / m)
    w = np.clip(res.x, 0.0, upper)
    # Renormalising after the clip could lift a capped weight past its bound: fill from the others.
    return _within(w / w.sum(), upper) if w.sum() > 0 else start


def _within(w: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """``w`` (summing to 1) with every weight at most its bound; what a bound cuts goes to the
    models below theirs, in proportion to their weights."""
    w = w.copy()
    for _ in range(len(w)):
        over = w > upper + 1e-12
        if not over.any():
            break
        excess = (w[over] - upper[over]).sum()
        w[over] = upper[over]
        room = ~over & (w < upper)
        share = w[room] if w[room].sum() > 0 else (upper - w)[room]
        w[room] += excess * share / share.sum()
    return w


def fit_weighted_blend(
    y_true: np.ndarray,
    oof_probs_list: Sequence[np.ndarray],
    *,
    per_class: bool = False,
    max_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the blend's OOF log-loss.

    ``per_class`` fits one weight vector per class (shape ``[M, C]``): a model may be the best at
    some classes only. It has M times more parameters, so judge it with ``nested_blend_oof``.
    ``max_weight`` (``[M]``): each model's largest weight; None: no bound below 1.
    """
    p = _stack(oof_probs_list)
    y = _as_binary("y_true", y_true).astype(np.float64)
    if y.shape != p.shape[1:]:
        raise ValueError(f"y_true {y.shape} and probabilities {p.shape[1:]} differ in shape")
    if per_class:
        return np.stack([_fit_simplex(p[:, :, c], y[:, c], max_weight) for c in range(y.shape[1])], axis=1)
    return _fit_simplex(p.reshape(p.shape[0], -1), y.ravel(), max_weight)


def nested_blend_oof(
    y_true: np.ndarray,
    oof_probs_list: Sequence[np.ndarray],
    folds: np.ndarray,
    *,
    per_class: bool = False,
    caps: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Blended OOF probabilities in which fold k's rows use weights fitted on the other folds.

    This is the blend's honest OOF, comparable with the stacker's: neither has seen the labels of
    the rows it predicts. ``caps(rows)``: the models' largest weights for a fit on ``rows`` (a
    bool mask), computed from those rows alone like the weights.
    """
    p = _stack(oof_probs_list)
    f = np.asarray(folds)
    if f.shape != (p.shape[1],):
        raise ValueError(f"folds must hold one fold per row ({p.shape[1]}), got shape {f.shape}")
    y = _as_binary("y_true", y_true)
    out = np.empty(p.shape[1:])
    for k in np.unique(f):
        tr, te = f != k, f == k
        bound = None if caps is None else caps(tr)
        w = fit_weighted_blend(y[tr], list(p[:, tr]), per_class=per_class, max_weight=bound)
        out[te] = apply_weights(list(p[:, te]), w)
    return out
