"""Multi-label metrics: the Kaggle headline (mean F1 over samples) and everything reported beside it.

Pure numpy, so stages and tests can score label matrices without a model in sight. Inputs are
``y_true`` and ``y_pred`` binary ``[N, C]`` matrices and ``scores`` float ``[N, C]`` (probabilities
or logits: only their order matters to the ranking metrics).

Zero-division rules (each matches scikit-learn with the setting named):

* ``mean_sample_f1``: a sample whose true and predicted sets are both empty scores 1; one empty
  and the other not scores 0 (``f1_score(average="samples", zero_division=1)``).
* ``micro_f1``: 1 when nothing is true and nothing is predicted anywhere (``zero_division=1``).
* ``macro_f1``: averaged over the classes that have a positive or a prediction; a class with
  neither has no defined F1 and is left out rather than counted as 0 or 1, which would reward or
  punish a split for a class it happens not to contain (``f1_score(average="macro",
  labels=<those classes>)``; zero_division never applies then). 1 when no class qualifies.
* ``average_precision_per_class``: NaN for a class without positives; ``mean_average_precision``
  averages the others (NaN when no class has a positive). Ties in scores are grouped as in
  ``average_precision_score``: precision is taken once per distinct score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _as_matrix(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [samples, classes] array, got shape {a.shape}")
    return a


def _as_binary(name: str, a: np.ndarray) -> np.ndarray:
    a = _as_matrix(name, a)
    if a.dtype != bool:
        if not (np.issubdtype(a.dtype, np.number)):
            raise ValueError(f"{name} must be numeric 0/1, got dtype {a.dtype}")
        if a.size and not np.isin(a, (0, 1)).all():
            bad = np.unique(a[~np.isin(a, (0, 1))])[:5]
            raise ValueError(f"{name} must be binary (0/1), found values such as {bad.tolist()}")
    return a.astype(bool)


def _as_scores(name: str, a: np.ndarray) -> np.ndarray:
    a = _as_matrix(name, a)
    if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _same_shape(**arrays: np.ndarray) -> None:
    shapes = {name: a.shape for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shapes differ: {shapes}")


def _binary_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_binary("y_true", y_true), _as_binary("y_pred", y_pred)
    _same_shape(y_true=t, y_pred=p)
    return t, p


def _truth_scores(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, s = _as_binary("y_true", y_true), _as_scores("scores", scores)
    _same_shape(y_true=t, scores=s)
    return t, s


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k highest scores, best first; ties go to the lower index."""
    # A stable sort of the negated scores keeps equal scores in column order, so the result is
    # deterministic and identical to what ``decision.apply_threshold`` picks.
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _check_k(k: int, n_classes: int) -> int:
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= n_classes:
        raise ValueError(f"k must be an integer in 1..{n_classes} (the number of classes), got {k!r}")
    return int(k)


def _ranked_ap(truth: np.ndarray, scores: np.ndarray, n_pos: int) -> float:
    """Average precision of a ranked list, precision taken once per distinct score.

    ``n_pos`` is the recall denominator, which may exceed the positives in the list (GAP@k counts
    positives that fell outside every top-k).
    """
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    # The last position of each run of equal scores: everything tied is admitted at once,
    # which is how average_precision_score builds its precision-recall curve.
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.array([], dtype=int)
    tp = np.cumsum(t)[ends]
    precision = tp / (ends + 1)
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(recall_gain * precision))


def mean_sample_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Kaggle's "Mean F1-Score": each sample's F1 of predicted vs true label set, averaged."""
    t, p = _binary_pair(y_true, y_pred)
    if t.shape[0] == 0:
        raise ValueError("no samples to score")
    tp = (t & p).sum(1)
    size = t.sum(1) + p.sum(1)
    f1 = np.where(size == 0, 1.0, 2.0 * tp / np.maximum(size, 1))
    return float(f1.mean())


def micro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of all (sample, class) decisions pooled; 1 when nothing is true and nothing predicted."""
    t, p = _binary_pair(y_true, y_pred)
    tp = int((t & p).sum())
    size = int(t.sum() + p.sum())  # 2·TP + FP + FN
    return 1.0 if size == 0 else 2.0 * tp / size


def _class_counts(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return t.sum(0), p.sum(0), (t & p).sum(0)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of per-class F1 over classes with a positive or a prediction (see module doc)."""
    t, p = _binary_pair(y_true, y_pred)
    support, predicted, tp = _class_counts(t, p)
    size = support + predicted
    active = size > 0
    if not active.any():
        return 1.0
    return float(np.mean(2.0 * tp[active] / size[active]))


def average_precision_per_class(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AP of each class's ranking of the samples, as ``average_precision_score``; NaN without positives."""
    t, s = _truth_scores(y_true, scores)
    return np.array([_ranked_ap(t[:, c], s[:, c], int(t[:, c].sum())) for c in range(t.shape[1])])


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean AP over the classes with at least one positive (NaN when there is none)."""
    ap = average_precision_per_class(y_true, scores)
    ap = ap[~np.isnan(ap)]
    return float(ap.mean()) if ap.size else float("nan")


def f1_at_k(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    """F1@k of the zero-shot literature: every sample predicts exactly its top-k classes.

    precision = hits / (k·N), recall = hits / all positives, F1 their harmonic mean (0 when both
    are 0, including when there are no positives at all). Ties go to the lower class index.
    """
    t, s = _truth_scores(y_true, scores)
    k = _check_k(k, t.shape[1])
    if t.shape[0] == 0:
        raise ValueError("no samples to score")
    hits = int(np.take_along_axis(t, _top_k(s, k), axis=1).sum())
    n_pos = int(t.sum())
    precision = hits / (k * t.shape[0])
    recall = hits / n_pos if n_pos else 0.0
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)


def gap_at_k(y_true: np.ndarray, scores: np.ndarray, k: int | None = 10) -> float:
    """YouTube-8M's Global Average Precision over each sample's top-k predictions.

    Every sample contributes its top-k (score, hit) pairs; the pool is ranked by score and
    AP = Σ precision@i · hit_i / (all positives of all samples), so positives outside every top-k
    cap the attainable value below 1. ``k=None`` (or k ≥ C) pools every pair: plain GAP, equal to
    micro-averaged AP. Equal scores are admitted together, as in ``average_precision_score``.
    NaN when there are no positives.
    """
    t, s = _truth_scores(y_true, scores)
    n_classes = t.shape[1]
    if k is not None:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer or None, got {k!r}")
    k = n_classes if k is None else min(int(k), n_classes)
    top = _top_k(s, k)
    pooled_scores = np.take_along_axis(s, top, axis=1).ravel()
    pooled_hits = np.take_along_axis(t, top, axis=1).ravel()
    return _ranked_ap(pooled_hits, pooled_scores, int(t.sum()))


def per_class_table(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    scores: np.ndarray,
    class_ids: Sequence[int],
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per class: id, name, support, predicted, tp, precision, recall, f1, ap.

    Undefined ratios are NaN rather than 0 or 1 so that a reader sees "no data", not a score:
    precision without predictions, recall and AP without positives, F1 with neither.
    """
    t, p = _binary_pair(y_true, y_pred)
    _, s = _truth_scores(t, scores)
    n_classes = t.shape[1]
    if len(class_ids) != n_classes:
        raise ValueError(f"{len(class_ids)} class ids for {n_classes} columns")
    if class_names is not None and len(class_names) != n_classes:
        raise ValueError(f"{len(class_names)} class names for {n_classes} columns")
    support, predicted, tp = _class_counts(t, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(support + predicted > 0, 2.0 * tp / (support + predicted), np.nan)
    return pd.DataFrame(
        {
            "id": [int(c) for c in class_ids],
            "name": [str(c) for c in (class_names if class_names is not None else class_ids)],
            "support": support.astype(int),
            "predicted": predicted.astype(int),
            "tp": tp.astype(int),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "ap": average_precision_per_class(t, s),
        }
    )


def summary(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Every headline metric in one dict (the keys reports and manifests use).

    F1@3 and F1@5 use k = min(k, C) so that a dataset with few classes still gets a summary.
    """
    t, p = _binary_pair(y_true, y_pred)
    _, s = _truth_scores(t, scores)
    n_classes = t.shape[1]
    return {
        "mean_f1": mean_sample_f1(t, p),
        "micro_f1": micro_f1(t, p),
        "macro_f1": macro_f1(t, p),
        "map": mean_average_precision(t, s),
        "f1_at_3": f1_at_k(t, s, min(3, n_classes)),
        "f1_at_5": f1_at_k(t, s, min(5, n_classes)),
        "gap_at_10": gap_at_k(t, s, 10),
        "gap": gap_at_k(t, s, None),
    }
