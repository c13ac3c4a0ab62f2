"""A shared Optuna storage is read, not trusted: the polish starts from the stored trial that
scores best *here*, whatever value another writer stored beside it."""

from __future__ import annotations

import numpy as np
import optuna
from optuna.distributions import FloatDistribution

from capfuse.ensemble.thresholds import F1Scorer, _fingerprint, _param_names, fit_class_thresholds


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((400, 5)) < 0.3).astype(np.uint8)
    p = np.clip(0.55 * y + 0.45 * rng.random(y.shape), 0, 1)
    return y, p


def test_a_stored_trial_that_claims_a_perfect_score_is_rescored_not_believed(tmp_path):
    y, p = _data()
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    names = _param_names(y.shape[1])
    scorer = F1Scorer(y, p, min_labels=1, max_labels=None)
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.set_user_attr("fingerprint", _fingerprint(scorer.y, scorer.p, scorer.lo, scorer.hi))
    planted = dict.fromkeys(names, 0.99)  # predicts little but the never-empty top class
    study.add_trial(
        optuna.trial.create_trial(
            params=planted, distributions=dict.fromkeys(names, FloatDistribution(0.01, 0.99)), value=1.0
        )
    )
    result = fit_class_thresholds(y, p, n_trials=1, seed=0, storage=storage, study_name="s")
    honest = scorer.score(np.full(len(names), 0.99))
    assert result.search_score < 1.0 and result.search_score >= result.global_score > honest
    assert result.score >= result.global_score
