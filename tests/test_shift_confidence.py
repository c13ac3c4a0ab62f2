"""The confidence-based estimate of the test score (``capfuse.shift.confidence``):

- each row's expected F1 is exact: it equals the F1 of certain probabilities, and a Monte Carlo
  average of drawn label sets;
- under a simulated shift, where the models are as well calibrated on the test rows as on the
  training rows but less sure there, the estimate lands near the realised test score, where the
  out-of-fold score overstates it;
- without a shift, it stays near the out-of-fold score.
"""

from __future__ import annotations

import numpy as np
import pytest

from capfuse.metrics import mean_sample_f1
from capfuse.shift.confidence import confidence_estimate, expected_f1


def decide(p: np.ndarray, t: float = 0.5) -> np.ndarray:
    d = p >= t
    d[np.arange(len(p)), p.argmax(1)] = True  # at least one label, as the submission's rule
    return d


def test_certain_probabilities_give_the_rows_own_f1():
    rng = np.random.default_rng(0)
    truth = rng.random((200, 7)) < 0.3
    decided = rng.random((200, 7)) < 0.3
    f1 = expected_f1(truth.astype(float), decided)
    size = truth.sum(1) + decided.sum(1)
    own = np.where(size == 0, 1.0, 2 * (truth & decided).sum(1) / np.maximum(size, 1))
    np.testing.assert_allclose(f1, own, atol=1e-12)


def test_the_expectation_matches_drawn_label_sets():
    rng = np.random.default_rng(1)
    p = rng.random((40, 9)) ** 2
    d = decide(p, 0.35)
    draws = 20_000
    total = np.zeros(len(p))
    for _ in range(draws):
        t = rng.random(p.shape) < p
        size = t.sum(1) + d.sum(1)
        total += np.where(size == 0, 1.0, 2 * (t & d).sum(1) / np.maximum(size, 1))
    # Each row's draw average has a standard error under 0.004.
    np.testing.assert_allclose(expected_f1(p, d), total / draws, atol=0.02)
    with pytest.raises(ValueError, match="one \\[rows, classes\\] pair"):
        expected_f1(p, d[:, :3])


def _calibrated(rng, n: int, sharpness: float, c: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from them: calibrated by construction; ``sharpness`` sets
    how far the probabilities sit from 0.5 (how sure the model is)."""
    logits = rng.normal(0, 1, (n, c)) * sharpness - 1.5
    p = 1 / (1 + np.exp(-logits))
    return p, (rng.random(p.shape) < p)


@pytest.mark.parametrize(("test_sharpness", "shifted"), [(1.6, True), (4.0, False)])
def test_the_estimate_follows_the_fall_in_confidence_to_the_test_score(test_sharpness, shifted):
    rng = np.random.default_rng(2)
    p_oof, y_oof = _calibrated(rng, 20_000, 4.0)
    p_test, y_test = _calibrated(rng, 20_000, test_sharpness)
    oof_score = mean_sample_f1(y_oof, decide(p_oof))
    test_score = mean_sample_f1(y_test, decide(p_test))
    found = confidence_estimate(oof_score, p_oof, decide(p_oof), p_test, decide(p_test))
    assert found["mean_f1"] == pytest.approx(test_score, abs=0.01)
    if shifted:
        assert oof_score - test_score > 0.05  # what the out-of-fold score alone would overstate
        assert found["confidence_test"] < found["confidence_oof"]
    else:
        assert found["mean_f1"] == pytest.approx(oof_score, abs=0.01)
