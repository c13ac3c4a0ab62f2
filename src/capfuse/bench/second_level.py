"""Timing and scores of the stacker and per-class thresholds at competition size, on synthetic OOF.

The synthetic OOF is built to look like the real thing where it matters for speed and for the
comparison: 18 classes with a long-tailed prior (one class on most images, some on 1 %),
co-occurrence through a few shared scene factors, at least one label per image, and each model a
noisy, biased view of the truth whose noise is partly shared with the other models (real base
models make correlated mistakes, which is what caps an ensemble's gain).
"""

from __future__ import annotations

import time

import numpy as np
from scipy.stats import norm

from capfuse.ensemble.blend import mean_blend, nested_blend_oof
from capfuse.ensemble.decision import apply_threshold, fit_global_threshold
from capfuse.ensemble.stack import stack_features, stack_oof_and_test, stack_params
from capfuse.ensemble.thresholds import fit_class_thresholds, nested_threshold_score
from capfuse.metrics import mean_average_precision, mean_sample_f1
from capfuse.utils.numeric import sigmoid


def synthetic_labels(n: int, n_classes: int, rng: np.random.Generator, n_factors: int = 4) -> np.ndarray:
    """Multivariate-probit labels: shared factors make classes co-occur, offsets set a long tail."""
    prior = 0.75 * np.arange(1, n_classes + 1) ** -1.1  # 0.75, 0.35, 0.22, ... about 0.03 for the last
    loadings = rng.normal(0.0, 0.6, size=(n_factors, n_classes))
    latent = rng.normal(size=(n, n_factors)) @ loadings + rng.normal(size=(n, n_classes))
    scale = np.sqrt(1.0 + (loadings**2).sum(0))
    # Offsets from the normal quantile of each prior, so each class's rate is close to its prior.
    z = latent / scale - norm.ppf(1.0 - prior)
    y = (z > 0).astype(np.uint8)
    empty = y.sum(1) == 0
    y[empty, z[empty].argmax(1)] = 1  # every image has a label, as in the competition
    return y


def synthetic_logits(y: np.ndarray, n_models: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Noisy logits of ``n_models`` models: class-dependent separability, shared and own noise,
    and a confusion between class pairs (each class's score leaks another class's truth) that a
    per-class blend cannot undo but a stacker reading all classes can."""
    n, c = y.shape
    sep = rng.uniform(1.5, 3.5, size=c)  # some classes are easy, some hard
    partner = rng.permutation(c)  # the class each class is confused with
    signed = 2.0 * y - 1.0
    shared = rng.normal(size=(n, c))  # the mistakes every model makes
    out = []
    for _ in range(n_models):
        skill = rng.uniform(0.7, 1.1)
        bias = rng.normal(-1.0, 0.5, size=c)  # miscalibration that thresholds must absorb
        noise = 1.0 * shared + 0.6 * rng.normal(size=(n, c))
        out.append((skill * sep * signed + 0.5 * signed[:, partner] + bias + noise).astype(np.float32))
    return out


def bench_stack_thresholds(
    n_rows: int = 30000,
    n_models: int = 10,
    n_classes: int = 18,
    seed: int = 0,
    *,
    n_folds: int = 5,
    n_trials: int = 300,
    num_threads: int = 2,
    nested: bool = True,
) -> dict:
    """Seconds and scores for stacking + per-class thresholds on synthetic OOF of the given size.

    A test set a third the size of the training set, with known labels, shows whether the OOF
    gains hold on rows neither the stacker nor the thresholds ever saw.
    """
    rng = np.random.default_rng(seed)
    n_test = max(n_rows // 3, 1)
    y_all = synthetic_labels(n_rows + n_test, n_classes, rng)
    logits_all = synthetic_logits(y_all, n_models, rng)
    y, y_test = y_all[:n_rows], y_all[n_rows:]
    logits = [a[:n_rows] for a in logits_all]
    logits_test = [a[n_rows:] for a in logits_all]
    folds = rng.permutation(n_rows) % n_folds

    out: dict = {"n_rows": n_rows, "n_test": n_test, "n_models": n_models, "n_classes": n_classes, "n_folds": n_folds}
    t0 = time.perf_counter()
    X, X_test = stack_features(logits), stack_features(logits_test)
    out["features_s"] = time.perf_counter() - t0
    out["n_features"] = X.shape[1]

    t0 = time.perf_counter()
    # As the stack stage runs it: boosting from a fold-local weighted blend.
    oof, test = stack_oof_and_test(
        X,
        y,
        folds,
        X_test,
        stack_params(num_threads=num_threads),
        base_probs=[sigmoid(a) for a in logits],
        base_probs_test=[sigmoid(a) for a in logits_test],
    )
    out["stack_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = fit_class_thresholds(y, oof, n_trials=n_trials, seed=seed)
    out["thresholds_s"] = time.perf_counter() - t0

    blend, blend_test = mean_blend([sigmoid(a) for a in logits]), mean_blend([sigmoid(a) for a in logits_test])
    g_blend, f1_blend = fit_global_threshold(y, blend)
    # The stacker's real rival in the stack stage: weights fitted on the other folds.
    out["weighted_blend_oof_f1_global"] = fit_global_threshold(
        y, nested_blend_oof(y, [sigmoid(a) for a in logits], folds)
    )[1]
    out.update(
        blend_oof_map=mean_average_precision(y, blend),
        blend_oof_f1_global=f1_blend,
        blend_test_f1_global=mean_sample_f1(y_test, apply_threshold(blend_test, g_blend)),
        stack_oof_map=mean_average_precision(y, oof),
        stack_oof_f1_global=res.global_score,
        stack_oof_f1_class=res.score,
        stack_test_map=mean_average_precision(y_test, test),
        stack_test_f1_global=mean_sample_f1(y_test, apply_threshold(test, res.global_threshold)),
        stack_test_f1_class=mean_sample_f1(y_test, apply_threshold(test, res.thresholds)),
    )
    if nested:
        t0 = time.perf_counter()
        ns = nested_threshold_score(y, oof, folds, n_trials=n_trials, seed=seed)
        out["nested_thresholds_s"] = time.perf_counter() - t0
        out.update({f"nested_{k}": float(v) for k, v in ns.items() if np.ndim(v) == 0})
    out["total_s"] = sum(v for k, v in out.items() if k.endswith("_s"))
    return out
