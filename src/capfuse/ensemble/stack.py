"""A LightGBM stacker: one binary model per class over every base model's OOF logits.

Why a model per class over *all* classes' logits: labels co-occur (a "surfboard" makes "person"
likely) and base models confuse related classes; a blend only re-weights a class's own scores,
while a tree can read the others. The cheap meta features say how sure each model is about the
whole image (how many labels it expects), which the per-class scores do not show.

Leakage: the stacker is trained fold by fold on the same folds as the base models. For fold k it
sees only the other folds' rows (whose base-model logits are themselves out-of-fold) and predicts
fold k, so ``stack_oof`` is an honest OOF that thresholds can be tuned on. Test predictions are the
mean of the k fold models, the same models that made the OOF.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from capfuse.ensemble.blend import apply_weights, fit_weighted_blend
from capfuse.metrics import _as_binary
from capfuse.utils.log import progress
from capfuse.utils.numeric import sigmoid

# Small, regularised, deterministic: the stacker's inputs are already strong scores, so a few
# shallow trees add the cross-class corrections and anything bigger learns the OOF noise. Sized so
# 30,000 rows x (10 models x 18 classes) stacks 5 folds x 18 classes in a couple of minutes on
# 2 cores (see ``ensemble.bench``). On the bench's synthetic OOF, 4-leaf trees or 70 rounds at
# a 0.1 rate scored within 0.001 mean F1 of these settings: the stacker is not sensitive to them.
DEFAULT_PARAMS: dict = {
    "objective": "binary",
    "learning_rate": 0.06,  # with DEFAULT_ROUNDS: converged on the bench, not yet overfitting
    "num_leaves": 8,  # interactions of two or three features are what stacking adds
    "min_data_in_leaf": 20,  # no leaf built on a handful of rows of a rare class
    # Half the columns per tree: the M near-duplicate columns of one class decorrelate the trees
    # as well at 0.5 as at 0.8, and every histogram costs half as much.
    "feature_fraction": 0.5,
    "bagging_fraction": 0.5,  # half the rows per tree: regularises, and halves the work again
    "bagging_freq": 1,
    "lambda_l2": 1.0,  # shrinks leaf values of small leaves: rare classes stay calibrated
    "max_bin": 63,  # logits need no finer cuts; fewer bins make every histogram cheaper
    "force_col_wise": True,  # the right layout for ~250 dense columns; skips LightGBM's timing probe
    "deterministic": True,  # the same OOF and test predictions on every rerun with the same threads
    "seed": 0,  # seeds bagging, feature fraction and data sampling together
    # Two threads for a 2-core machine. On a machine whose cores are busy with other jobs, 1 is
    # faster: OpenMP threads that wait on each other for a core lose more than they gain.
    "num_threads": 2,
    "verbose": -1,
}
DEFAULT_ROUNDS = 120


def stack_features(logits_list: Sequence[np.ndarray]) -> np.ndarray:
    """Stacker inputs ``[N, M*C + 2*C + 3*M]`` from M models' logits ``[N, C]``.

    Columns: every model's logits for every class; per class the models' mean and spread (a tree
    cannot average 10 columns, and disagreement says how far to trust the mean); per model its
    maximum probability, the sum of its probabilities (the label count it expects) and how many
    classes it puts above 0.5.
    """
    if len(logits_list) == 0:
        raise ValueError("no models to stack")
    z = np.stack([np.asarray(a, dtype=np.float64) for a in logits_list])  # [M, N, C]
    if z.ndim != 3:
        raise ValueError("each model's logits must be a 2-D [samples, classes] array")
    m, n, c = z.shape
    p = sigmoid(z)
    parts = [
        z.transpose(1, 0, 2).reshape(n, m * c),
        z.mean(0),
        z.std(0),
        p.max(2).T,
        p.sum(2).T,
        (p > 0.5).sum(2).T,
    ]
    return np.concatenate(parts, axis=1).astype(np.float32)


def stack_feature_names(n_models: int, n_classes: int, model_names: Sequence[str] | None = None) -> list[str]:
    """Names of ``stack_features``'s columns, for importances and for the files stages write."""
    models = list(model_names) if model_names is not None else [f"m{i}" for i in range(n_models)]
    if len(models) != n_models:
        raise ValueError(f"{len(models)} model names for {n_models} models")
    names = [f"{mo}:logit{c}" for mo in models for c in range(n_classes)]
    names += [f"mean:logit{c}" for c in range(n_classes)] + [f"std:logit{c}" for c in range(n_classes)]
    for stat in ("max_prob", "sum_prob", "n_above_half"):
        names += [f"{mo}:{stat}" for mo in models]
    return names


def model_columns(model: int, n_models: int, n_classes: int) -> np.ndarray:
    """The columns of ``stack_features`` that hold one model's own outputs (its logits and its
    three per-model statistics; the per-class mean and spread pool every model)."""
    logits = model * n_classes + np.arange(n_classes)
    stats = n_models * n_classes + 2 * n_classes + model + n_models * np.arange(3)
    return np.concatenate([logits, stats])


def _guarded(prm: dict, caps: np.ndarray | None, n_features: int, n_classes: int) -> dict:
    """``prm`` with LightGBM's ``feature_contri`` at 0 on every capped model's own columns, so
    the trees never split on them; unchanged when no model is capped."""
    if caps is None or (caps >= 1.0).all():
        return prm
    contri = np.ones(n_features)
    for m in np.flatnonzero(caps < 1.0):
        contri[model_columns(int(m), len(caps), n_classes)] = 0.0
    return {**prm, "feature_contri": contri.tolist()}


def stack_params(**overrides) -> dict:
    """``DEFAULT_PARAMS`` with ``overrides`` (e.g. ``num_threads=8``)."""
    return {**DEFAULT_PARAMS, **overrides}


def _prior(y: np.ndarray) -> float:
    """A class with one label value in the training rows gets its smoothed rate, never exactly 0 or 1."""
    return (float(y.sum()) + 0.5) / (len(y) + 1.0)


def _check(X: np.ndarray, Y: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    y = _as_binary("Y", Y)
    f = np.asarray(folds)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X must be [{y.shape[0]}, features], got shape {X.shape}")
    if f.shape != (y.shape[0],):
        raise ValueError(f"folds must hold one fold per row ({y.shape[0]}), got shape {f.shape}")
    if len(np.unique(f)) < 2:
        raise ValueError("stacking needs at least two folds")
    return X, y, f


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def stack_oof_and_test(
    X: np.ndarray,
    Y: np.ndarray,
    folds: np.ndarray,
    X_test: np.ndarray | None = None,
    params: dict | None = None,
    *,
    num_rounds: int = DEFAULT_ROUNDS,
    base_probs: Sequence[np.ndarray] | None = None,
    base_probs_test: Sequence[np.ndarray] | None = None,
    saved: list | None = None,
    caps: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Nested OOF probabilities ``[N, C]`` and, with ``X_test``, the fold models' mean test probabilities.

    One pass trains each (fold, class) model once and uses it for both outputs. The fold's
    LightGBM dataset is binned once and only its label changes from class to class.

    With ``base_probs`` (every model's OOF probabilities, and ``base_probs_test`` beside them),
    the trees boost from a weighted blend instead of from a constant: within fold k, blend
    weights are fitted on the other folds' rows and the blend's logit is every row's initial
    score, so the trees learn only the corrections (co-occurrence, disagreement) the blend
    misses. On a few thousand rows this keeps the stacker from falling below the blend; the
    blend is part of the fold-k model, so it never sees fold k's labels either.

    ``saved``, a list, receives per fold what ``stack_predict`` needs to score new rows: the
    blend weights and, per class, the booster as LightGBM's text or the constant it predicts.

    ``caps(rows)`` (``capfuse.ensemble.under_shift``): each model's largest weight for a fit on
    ``rows`` (a bool mask), from those rows alone; within fold k, a capped model's blend weight
    is bounded and the trees do not split on its own columns.
    """
    import lightgbm as lgb  # noqa: PLC0415 (features and names need no LightGBM)

    X, y, f = _check(X, Y, folds)
    prm = stack_params(**(params or {}))
    if X_test is not None:
        X_test = np.asarray(X_test, dtype=np.float32)
        if X_test.ndim != 2 or X_test.shape[1] != X.shape[1]:
            raise ValueError(f"X_test must be [rows, {X.shape[1]}], got shape {X_test.shape}")
    if base_probs is not None and X_test is not None and base_probs_test is None:
        raise ValueError("base_probs_test is needed with base_probs and X_test")
    n, c = y.shape
    ks = np.unique(f)
    oof = np.empty((n, c))
    test = np.zeros((len(X_test), c)) if X_test is not None else None
    for k in progress(ks, "stacker folds"):
        tr, te = f != k, f == k
        base = base_test = None
        fold_models: list[dict] = []
        weights = None
        bound = None if caps is None else caps(tr)
        fold_prm = _guarded(prm, bound, X.shape[1], c)
        if base_probs is not None:
            weights = fit_weighted_blend(y[tr], [p[tr] for p in base_probs], max_weight=bound)
            base = _logit(apply_weights(base_probs, weights))
            if X_test is not None:
                base_test = _logit(apply_weights(base_probs_test, weights))
        ds = None
        for j in range(c):
            yj = y[tr, j]
            if yj.min() == yj.max():
                # One label value in the training rows: nothing to learn; the blend (or the
                # smoothed rate) is the prediction.
                oof[te, j] = sigmoid(base[te, j]) if base is not None else _prior(yj)
                fold_models.append({"blend": True} if base is not None else {"prior": _prior(yj)})
                if test is not None:
                    test[:, j] += (sigmoid(base_test[:, j]) if base is not None else _prior(yj)) / len(ks)
                continue
            if ds is None:
                ds = lgb.Dataset(X[tr], label=yj.astype(np.float32), params=prm, free_raw_data=False).construct()
            else:
                ds.set_label(yj.astype(np.float32))
            if base is not None:
                ds.set_init_score(base[tr, j])
            booster = lgb.train(fold_prm, ds, num_boost_round=num_rounds)
            if saved is not None:
                fold_models.append({"booster": booster.model_to_string()})
            if base is None:
                oof[te, j] = booster.predict(X[te])
                if test is not None:
                    test[:, j] += booster.predict(X_test) / len(ks)
            else:  # predict() ignores the initial score: add it back on the raw scale
                oof[te, j] = sigmoid(booster.predict(X[te], raw_score=True) + base[te, j])
                if test is not None:
                    test[:, j] += sigmoid(booster.predict(X_test, raw_score=True) + base_test[:, j]) / len(ks)
        if saved is not None:
            saved.append({"weights": None if weights is None else weights.tolist(), "classes": fold_models})
    return oof, test


def stack_predict(saved: list, logits_list: Sequence[np.ndarray], probs_list: Sequence[np.ndarray]) -> np.ndarray:
    """Probabilities ``[N, C]`` of new rows from the fold models ``stack_oof_and_test`` saved:
    the same features, initial scores and fold mean, in the same order of operations."""
    import lightgbm as lgb  # noqa: PLC0415

    X = stack_features(logits_list)
    n, c = len(X), len(saved[0]["classes"])
    out = np.zeros((n, c))
    for fold in saved:
        base = None if fold["weights"] is None else _logit(apply_weights(probs_list, np.asarray(fold["weights"])))
        for j, part in enumerate(fold["classes"]):
            if "prior" in part:
                out[:, j] += part["prior"] / len(saved)
            elif "blend" in part:
                out[:, j] += sigmoid(base[:, j]) / len(saved)
            elif base is None:
                out[:, j] += lgb.Booster(model_str=part["booster"]).predict(X) / len(saved)
            else:
                raw = lgb.Booster(model_str=part["booster"]).predict(X, raw_score=True)
                out[:, j] += sigmoid(raw + base[:, j]) / len(saved)
    return out


def stack_oof(
    X: np.ndarray, Y: np.ndarray, folds: np.ndarray, params: dict | None = None, *, num_rounds: int = DEFAULT_ROUNDS
) -> np.ndarray:
    """Nested OOF probabilities: fold k's rows are predicted by models fitted on the other folds only."""
    return stack_oof_and_test(X, Y, folds, None, params, num_rounds=num_rounds)[0]


def stack_fit_predict(
    X: np.ndarray,
    Y: np.ndarray,
    X_test: np.ndarray,
    params: dict | None = None,
    folds: np.ndarray | None = None,
    *,
    num_rounds: int = DEFAULT_ROUNDS,
) -> np.ndarray:
    """Test probabilities: the mean of the k fold models' predictions (the models behind ``stack_oof``)."""
    if folds is None:
        raise ValueError("folds are required: the test prediction averages the fold models")
    return stack_oof_and_test(X, Y, folds, X_test, params, num_rounds=num_rounds)[1]
