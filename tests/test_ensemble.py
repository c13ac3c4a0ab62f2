"""Thresholds, blends and the stacker on synthetic OOF where the right answer is known.

Sizes are small and LightGBM runs on one thread so that the file stays fast on a busy machine.
"""

import numpy as np
import optuna
import pytest

from capfuse.ensemble.blend import apply_weights, fit_weighted_blend, mean_blend, nested_blend_oof
from capfuse.ensemble.decision import apply_threshold
from capfuse.ensemble.stack import stack_feature_names, stack_features, stack_oof, stack_oof_and_test, stack_params
from capfuse.ensemble.thresholds import F1Scorer, coordinate_ascent, fit_class_thresholds, nested_threshold_score
from capfuse.metrics import average_precision_per_class, mean_average_precision, mean_sample_f1
from capfuse.utils.numeric import sigmoid

FAST = stack_params(num_threads=1)  # one thread: on a loaded 2-core machine it is the faster


def _labels(rng, n, rates):
    y = (rng.random((n, len(rates))) < np.asarray(rates)).astype(np.uint8)
    empty = y.sum(1) == 0
    y[empty, rng.integers(0, len(rates), empty.sum())] = 1
    return y


def _noisy_views(rng, y, n_models, noise):
    return [(2.5 * (2.0 * y - 1.0) + rng.normal(0.0, noise, y.shape)).astype(np.float32) for _ in range(n_models)]


# ----------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize("limits", [(1, None), (2, None), (1, 2), (0, 3)])
def test_scorer_matches_apply_threshold_exactly(limits):
    lo, hi = limits
    rng = np.random.default_rng(1)
    y = _labels(rng, 400, [0.5, 0.3, 0.2, 0.1, 0.05, 0.4])
    p = sigmoid(2.0 * (2.0 * y - 1.0) + rng.normal(0.0, 1.5, y.shape) - 1.0)
    scorer = F1Scorer(y, p, min_labels=lo, max_labels=hi)
    grid = np.array([0.05, 0.3, 0.5, 0.8, 0.97])
    for _ in range(5):
        t = rng.uniform(0.02, 0.98, y.shape[1])
        exact = mean_sample_f1(y, apply_threshold(p, t, min_labels=lo, max_labels=hi))
        assert scorer.score(t) == pytest.approx(exact, abs=1e-12)
        sweep = scorer.sweep(t, 2, grid)
        for g, s in zip(grid, sweep):
            tc = t.copy()
            tc[2] = g
            exact = mean_sample_f1(y, apply_threshold(p, tc, min_labels=lo, max_labels=hi))
            assert s == pytest.approx(exact, abs=1e-12)


def _separated(rng, n, cuts, half_gap=0.05):
    """Each class's negatives lie below ``cut - half_gap`` and its positives above ``cut + half_gap``."""
    y = _labels(rng, n, [0.4] * len(cuts))
    lo_band = rng.uniform(0.0, 1.0, y.shape) * (np.asarray(cuts) - half_gap)
    hi_band = np.asarray(cuts) + half_gap + rng.uniform(0.0, 1.0, y.shape) * (1.0 - np.asarray(cuts) - half_gap)
    return y, np.where(y == 1, hi_band, lo_band)


def test_class_thresholds_recover_known_cutoffs():
    rng = np.random.default_rng(0)
    cuts = [0.15, 0.4, 0.65, 0.85]  # no single threshold separates all four classes
    y, p = _separated(rng, 600, cuts)
    res = fit_class_thresholds(y, p, n_trials=30, seed=0)
    for c in range(len(cuts)):
        neg, pos = p[y[:, c] == 0, c].max(), p[y[:, c] == 1, c].min()
        assert neg < res.thresholds[c] <= pos, (c, neg, res.thresholds[c], pos)
    assert res.score == pytest.approx(1.0)
    assert res.global_score < 0.99  # the global threshold cannot do it, so the per-class fit earned it
    assert res.score == pytest.approx(mean_sample_f1(y, apply_threshold(p, res.thresholds)))


def test_per_class_never_below_global_in_sample_and_seeded():
    rng = np.random.default_rng(3)
    y = _labels(rng, 800, [0.6, 0.3, 0.15, 0.08, 0.04])
    p = sigmoid(1.5 * (2.0 * y - 1.0) + rng.normal(0.0, 1.5, y.shape) + rng.normal(0.0, 1.0, y.shape[1]))
    for limits in [dict(), dict(max_labels=2), dict(min_labels=2)]:
        res = fit_class_thresholds(y, p, n_trials=15, seed=0, passes=0, **limits)  # TPE alone, no polish
        assert res.search_score >= res.global_score - 1e-12, limits
        res = fit_class_thresholds(y, p, n_trials=15, seed=0, **limits)
        assert res.score >= res.global_score - 1e-12, limits
        assert res.score == pytest.approx(mean_sample_f1(y, apply_threshold(p, res.thresholds, **limits)))
    assert res.score > res.global_score  # miscalibrated classes: per-class thresholds gain here
    again = fit_class_thresholds(y, p, n_trials=15, seed=0, min_labels=2)
    np.testing.assert_array_equal(again.thresholds, res.thresholds)


def test_coordinate_ascent_reaches_each_class_optimum():
    rng = np.random.default_rng(5)
    y, p = _separated(rng, 300, [0.2, 0.5, 0.8])
    t, score = coordinate_ascent(F1Scorer(y, p), np.full(3, 0.5))
    assert score == pytest.approx(1.0)
    assert mean_sample_f1(y, apply_threshold(p, t)) == pytest.approx(1.0)


def test_storage_resumes_and_counts_stored_trials(tmp_path):
    rng = np.random.default_rng(2)
    y = _labels(rng, 300, [0.5, 0.3, 0.2])
    p = sigmoid(2.0 * (2.0 * y - 1.0) + rng.normal(0.0, 1.5, y.shape))
    url, name = f"sqlite:///{tmp_path / 'thr.db'}", "thr"

    def stored() -> int:
        return len(optuna.load_study(study_name=name, storage=url).trials)

    first = fit_class_thresholds(y, p, n_trials=8, storage=url, study_name=name)
    assert first.n_trials == 8 and stored() == 8
    again = fit_class_thresholds(y, p, n_trials=8, storage=url, study_name=name)
    assert again.n_trials == 8 and stored() == 8  # nothing new was run
    np.testing.assert_array_equal(again.thresholds, first.thresholds)
    more = fit_class_thresholds(y, p, n_trials=12, storage=url, study_name=name)
    assert more.n_trials == 12 and stored() == 12  # only the 4 missing trials
    assert more.search_score >= first.search_score
    with pytest.raises(ValueError, match="other probabilities"):
        fit_class_thresholds(y, np.clip(p * 0.9, 0, 1), n_trials=12, storage=url, study_name=name)


def test_nested_thresholds_collapse_to_chance_on_noise():
    # Labels independent of the probabilities: nothing is learnable, so an honest score is a
    # draw from the permutation distribution, while the in-sample score sits far above it.
    rng = np.random.default_rng(0)
    n, c = 150, 12
    y = (rng.random((n, c)) < 0.15).astype(np.uint8)
    p = rng.random((n, c))
    folds = rng.permutation(n) % 4
    r = nested_threshold_score(y, p, folds, n_trials=20)
    held_out = np.zeros_like(y)
    for k in range(4):
        held_out[folds == k] = apply_threshold(p[folds == k], r["fold_thresholds"][k])
    assert mean_sample_f1(y, held_out) == pytest.approx(r["nested"])
    perms = [rng.permutation(n) for _ in range(200)]

    def z(score, pred):
        chance = np.array([mean_sample_f1(y[q], pred) for q in perms])
        return (score - chance.mean()) / chance.std()

    assert z(r["in_sample"], apply_threshold(p, r["thresholds"])) > 3.0
    assert z(r["nested"], held_out) < 2.0
    assert r["gap"] > 0.0


def test_fold_thresholds_ignore_their_own_fold_labels():
    rng = np.random.default_rng(4)
    y = _labels(rng, 400, [0.5, 0.3, 0.2, 0.1])
    p = sigmoid(1.5 * (2.0 * y - 1.0) + rng.normal(0.0, 1.5, y.shape))
    folds = rng.permutation(400) % 4
    base = nested_threshold_score(y, p, folds, n_trials=10)
    y2 = y.copy()
    rows = np.flatnonzero(folds == 0)
    y2[rows] = y[rng.permutation(rows)]  # fold 0's label sets shuffled among its own rows
    moved = nested_threshold_score(y2, p, folds, n_trials=10)
    np.testing.assert_array_equal(moved["fold_thresholds"][0], base["fold_thresholds"][0])
    assert not np.array_equal(moved["fold_thresholds"][1:], base["fold_thresholds"][1:])


# ----------------------------------------------------------------------------- blends


def test_weighted_blend_prefers_the_better_model():
    rng = np.random.default_rng(0)
    y = _labels(rng, 1500, [0.5, 0.3, 0.2, 0.1])
    good, fair = (sigmoid(a) for a in _noisy_views(rng, y, 1, 1.5) + _noisy_views(rng, y, 1, 4.0))
    bad = rng.random(y.shape)  # no signal at all
    w = fit_weighted_blend(y, [good, fair, bad])
    assert w.shape == (3,) and (w >= 0).all() and w.sum() == pytest.approx(1.0)
    assert w[0] > w[1] > w[2]
    w_class = fit_weighted_blend(y, [good, fair, bad], per_class=True)
    assert w_class.shape == (3, 4) and np.allclose(w_class.sum(0), 1.0)
    assert (w_class[0] > w_class[2]).all()

    def logloss(q):
        q = np.clip(q, 1e-6, 1 - 1e-6)
        return -np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))

    assert logloss(apply_weights([good, fair, bad], w)) < logloss(mean_blend([good, fair, bad]))
    with pytest.raises(ValueError, match="sum to 1"):
        apply_weights([good, fair, bad], np.array([0.5, 0.5, 0.5]))


# ----------------------------------------------------------------------------- stacker


def _xor_data(rng, n=2000):
    """Class 2 is the XOR of classes 0 and 1 and no model scores it; class 3 marks rows without
    0 or 1 so that no label set is empty."""
    a, b = rng.random(n) < 0.5, rng.random(n) < 0.5
    y = np.stack([a, b, a ^ b, ~a & ~b], axis=1).astype(np.uint8)
    logits = _noisy_views(rng, y, 3, 1.5)
    for z in logits:
        z[:, 2] = rng.normal(0.0, 1.0, n)  # the models know nothing about class 2 directly
    return y, logits, rng.permutation(n) % 5


def test_stacker_beats_blending_when_classes_interact():
    rng = np.random.default_rng(0)
    y, logits, folds = _xor_data(rng)
    probs = [sigmoid(z) for z in logits]
    stacked = stack_oof(stack_features(logits), y, folds, FAST)
    blends = {"mean": mean_blend(probs), "per_class": nested_blend_oof(y, probs, folds, per_class=True)}
    ap_stack = average_precision_per_class(y, stacked)[2]
    assert ap_stack > 0.9
    # Boosting from the blend still learns the interaction the blend cannot express.
    from_blend = stack_oof_and_test(stack_features(logits), y, folds, None, FAST, base_probs=probs)[0]
    assert average_precision_per_class(y, from_blend)[2] > 0.9
    for name, blend in blends.items():
        assert average_precision_per_class(y, blend)[2] < 0.65, name
        f1_blend = fit_class_thresholds(y, blend, n_trials=10).score
        f1_stack = fit_class_thresholds(y, stacked, n_trials=10).score
        assert f1_stack > f1_blend + 0.05, name


@pytest.mark.parametrize("init", ["constant", "blend"])
def test_stacker_fold_predictions_ignore_their_own_fold_labels(init):
    rng = np.random.default_rng(1)
    y, logits, folds = _xor_data(rng, 1000)
    X = stack_features(logits)
    # Boosting from a blend: the blend's weights are part of the fold model, so they must not
    # see fold k's labels either.
    kw = {"base_probs": [sigmoid(z) for z in logits]} if init == "blend" else {}
    base = stack_oof_and_test(X, y, folds, None, FAST, **kw)[0]
    y2 = y.copy()
    rows = np.flatnonzero(folds == 0)
    y2[rows] = y[rng.permutation(rows)]
    moved = stack_oof_and_test(X, y2, folds, None, FAST, **kw)[0]
    np.testing.assert_array_equal(moved[folds == 0], base[folds == 0])
    assert not np.allclose(moved[folds != 0], base[folds != 0])  # the labels do matter elsewhere


def test_stacker_oof_is_chance_on_noise_labels_where_in_sample_is_not():
    rng = np.random.default_rng(2)
    n = 1000
    logits = [rng.normal(size=(n, 3)).astype(np.float32) for _ in range(3)]
    y = _labels(rng, n, [0.3, 0.3, 0.3])  # independent of the logits
    folds = rng.permutation(n) % 5
    X = stack_features(logits)
    oof, refit = stack_oof_and_test(X, y, folds, X, FAST)  # "test" = the training rows: leaky
    prevalence = y.mean(0).mean()
    assert mean_average_precision(y, oof) < prevalence + 0.06
    assert mean_average_precision(y, refit) > prevalence + 0.15


def test_stacker_predicts_the_prior_for_a_single_valued_class():
    rng = np.random.default_rng(3)
    y, logits, folds = _xor_data(rng, 600)
    y = np.concatenate([y, np.zeros((600, 1), np.uint8)], axis=1)  # a class never seen positive
    y[np.flatnonzero(folds == 0)[0], 4] = 1  # ... except once, in fold 0
    logits = [np.concatenate([z, rng.normal(size=(600, 1)).astype(np.float32)], axis=1) for z in logits]
    X = stack_features(logits)
    assert X.shape[1] == len(stack_feature_names(3, 5))
    oof, test = stack_oof_and_test(X, y, folds, X[:10], FAST)
    n0 = int((folds != 0).sum())
    np.testing.assert_allclose(oof[folds == 0, 4], 0.5 / (n0 + 1))  # fold 0's training rows: all zero
    assert np.isfinite(test).all() and ((0 < oof) & (oof < 1)).all()


# Every second-level method the ensemble stage offers, as (labels, OOF logits, folds) -> OOF probs.
HONEST_OOF = {
    "mean_blend": lambda y, z, f: mean_blend([sigmoid(a) for a in z]),
    "weighted_blend": lambda y, z, f: nested_blend_oof(y, [sigmoid(a) for a in z], f),
    "weighted_blend_per_class": lambda y, z, f: nested_blend_oof(y, [sigmoid(a) for a in z], f, per_class=True),
    "stack": lambda y, z, f: stack_oof(stack_features(z), y, f, FAST),
}


@pytest.mark.parametrize("name", sorted(HONEST_OOF))
def test_every_method_is_honest_on_its_oof(name):
    rng = np.random.default_rng(6)
    y, logits, folds = _xor_data(rng, 500)
    oof = HONEST_OOF[name](y, logits, folds)
    assert oof.shape == y.shape and ((0 <= oof) & (oof <= 1)).all()
    y2 = y.copy()
    rows = np.flatnonzero(folds == 1)
    y2[rows] = y[rng.permutation(rows)]
    np.testing.assert_array_equal(HONEST_OOF[name](y2, logits, folds)[folds == 1], oof[folds == 1])
