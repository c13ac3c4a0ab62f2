"""Label-set decisions and the fitted global threshold, on cases where the answer is known."""

import numpy as np
import pytest

from capfuse.ensemble.decision import apply_threshold, fit_global_threshold, threshold_curve
from capfuse.metrics import mean_sample_f1

P = np.array(
    [
        [0.9, 0.6, 0.2, 0.1],  # two pass 0.5
        [0.3, 0.1, 0.4, 0.2],  # none passes: top-1 fallback takes class 2
        [0.8, 0.7, 0.6, 0.55],  # all pass
    ]
)


def test_threshold_and_top1_fallback():
    out = apply_threshold(P, 0.5)
    np.testing.assert_array_equal(out, [[1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 1, 1]])
    assert out.sum(1).min() >= 1


def test_never_empty_even_at_threshold_one():
    rng = np.random.default_rng(0)
    probs = rng.random((200, 18)) * 0.99
    out = apply_threshold(probs, 1.0)
    assert (out.sum(1) == 1).all()
    np.testing.assert_array_equal(out.argmax(1), probs.argmax(1))


def test_min_labels_zero_allows_empty_sets():
    out = apply_threshold(P, 0.5, min_labels=0)
    assert out[1].sum() == 0


def test_min_labels_two_keeps_passing_classes_and_adds_the_best_others():
    # Per-class thresholds: class 3 passes with 0.1 although class 0 scores higher in row 0.
    t = np.array([0.95, 0.95, 0.95, 0.05])
    out = apply_threshold(P, t, min_labels=2)
    np.testing.assert_array_equal(out, [[1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 1]])


def test_max_labels_keeps_the_highest_scoring():
    out = apply_threshold(P, 0.5, max_labels=2)
    np.testing.assert_array_equal(out, [[1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]])
    assert apply_threshold(P, 0.0, max_labels=1).sum(1).tolist() == [1, 1, 1]


def test_per_class_thresholds():
    t = np.array([0.95, 0.5, 0.35, 0.5])
    out = apply_threshold(P, t)
    np.testing.assert_array_equal(out, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 1]])


def test_ties_go_to_the_lower_class_index():
    out = apply_threshold(np.full((1, 4), 0.3), 0.5, min_labels=2)
    np.testing.assert_array_equal(out, [[1, 1, 0, 0]])


def test_invalid_inputs():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        apply_threshold(P * 3 - 1, 0.5)  # logits, not probabilities
    with pytest.raises(ValueError, match="one value per class"):
        apply_threshold(P, [0.5, 0.5])
    with pytest.raises(ValueError, match="min_labels"):
        apply_threshold(P, 0.5, min_labels=5)
    with pytest.raises(ValueError, match="max_labels"):
        apply_threshold(P, 0.5, min_labels=2, max_labels=1)


def test_fit_recovers_a_separating_threshold():
    rng = np.random.default_rng(1)
    y = (rng.random((2000, 18)) < 0.15).astype(np.uint8)
    y[np.arange(2000), rng.integers(0, 18, 2000)] = 1  # every sample has a label, as in the task
    probs = np.where(y == 1, rng.uniform(0.6, 1.0, y.shape), rng.uniform(0.0, 0.4, y.shape))
    t, f1 = fit_global_threshold(y, probs)
    assert 0.4 <= t <= 0.6
    assert f1 == pytest.approx(1.0)
    assert t == pytest.approx(0.5, abs=0.02)  # the middle of the plateau, not its edge


def test_curve_matches_apply_threshold_at_every_grid_point():
    rng = np.random.default_rng(2)
    y = (rng.random((300, 6)) < 0.25).astype(int)
    probs = np.clip(0.4 * y + rng.random(y.shape) * 0.7, 0, 1)
    probs[:10] = np.round(probs[:10], 1)  # ties, some exactly on grid points
    for lo, hi in [(1, None), (0, None), (2, 3)]:
        grid, scores = threshold_curve(y, probs, np.linspace(0, 1, 21), min_labels=lo, max_labels=hi)
        for t, s in zip(grid, scores):
            pred = apply_threshold(probs, t, min_labels=lo, max_labels=hi)
            assert s == pytest.approx(mean_sample_f1(y, pred)), (lo, hi, t)
        best_t, best = fit_global_threshold(y, probs, np.linspace(0, 1, 21), min_labels=lo, max_labels=hi)
        assert best == pytest.approx(scores.max())
        assert best == pytest.approx(mean_sample_f1(y, apply_threshold(probs, best_t, min_labels=lo, max_labels=hi)))
