"""The second level under a train/test shift, on synthetic OOF where the right answer is known:
a base model that is great on all rows but poor on the test-like ones is capped, the choice on
the test-like rows is nested (fold k's labels never steer fold k's probabilities), and without
a warning nothing moves. Last, the per-model held-out table ``capfuse infer`` writes on a
dataset that ships its answers, on the shared tiny run.

Small sizes and one LightGBM thread, as in test_ensemble.py.
"""

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from capfuse.data.logits import read_logits
from capfuse.ensemble.blend import apply_weights, fit_weighted_blend, nested_blend_oof
from capfuse.ensemble.choice import choose_candidate
from capfuse.ensemble.decision import apply_threshold
from capfuse.ensemble.stack import model_columns, stack_features, stack_oof_and_test, stack_params
from capfuse.ensemble.under_shift import Guard, Shift, most_test_like, score_drops, weight_caps
from capfuse.metrics import mean_sample_f1
from capfuse.results.floor import binary
from capfuse.utils.io import read_json
from capfuse.utils.numeric import sigmoid

FAST = {"num_threads": 1}
RULE = {"min_labels": 1, "max_labels": None}
NAMES = ["instances", "steady_a", "steady_b"]


def _shifted_oof(seed: int = 0, n: int = 600, c: int = 4, k: int = 4):
    """Labels, three models' OOF logits, folds and test-likeness scores. ``instances`` is sharp on
    the ordinary rows and nearly blind on the test-like quarter (the highest scores); the two
    others are fair everywhere."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.35).astype(np.uint8)
    empty = y.sum(1) == 0
    y[empty, rng.integers(0, c, empty.sum())] = 1
    scores = rng.random(n)
    like = most_test_like(scores, 0.25)
    signal = 2.0 * y - 1.0
    noise = np.where(like[:, None], 3.0, 0.6)
    logits = [2.5 * signal + rng.normal(0.0, 1.0, y.shape) * noise]
    logits += [2.5 * signal + rng.normal(0.0, 2.5, y.shape) for _ in range(2)]
    folds = rng.permutation(n) % k
    return y, [z.astype(np.float32) for z in logits], folds, scores, like


def _cfg(use: str, candidates=("best_single", "mean_blend", "weighted_blend", "stack")) -> dict:
    # A few boosting rounds: what is checked is where each fold's rows come from, not the trees.
    return {
        "models": NAMES,
        "ensemble": {"candidates": list(candidates), "stack": {**FAST, "num_rounds": 5}, "shift": {"use": use}},
    }


def test_the_model_that_falls_on_the_test_like_rows_is_capped_in_blend_and_stacker():
    y, logits, folds, _, like = _shifted_oof()
    probs = [sigmoid(z) for z in logits]
    drops = score_drops(y, probs, like, RULE)
    assert drops[0] > drops[1] + 0.1 and drops[0] > drops[2] + 0.1
    caps = weight_caps(drops, tolerance=0.01, cap=0.5)
    np.testing.assert_array_equal(caps, [0.5, 1.0, 1.0])
    free = fit_weighted_blend(y, probs)
    capped = fit_weighted_blend(y, probs, max_weight=caps)
    assert free[0] > 0.6, "the synthetic case must tempt an unguarded blend"
    assert capped[0] == pytest.approx(0.5, abs=1e-6) and capped.sum() == pytest.approx(1.0)

    guard = Guard(RULE, tolerance=0.01, cap=0.5)
    # The blend's nested OOF: each fold's weights capped by what the other folds' rows show.
    nested = nested_blend_oof(y, probs, folds, caps=guard.caps_for(y, probs, like))
    for k in np.unique(folds):
        fit = folds != k
        w = fit_weighted_blend(y[fit], [p[fit] for p in probs], max_weight=np.array([0.5, 1.0, 1.0]))
        np.testing.assert_allclose(nested[folds == k], apply_weights([p[folds == k] for p in probs], w))
    assert not np.allclose(nested, nested_blend_oof(y, probs, folds))
    saved: list = []
    stack_oof_and_test(
        stack_features(logits),
        y,
        folds,
        None,
        stack_params(**FAST),
        num_rounds=30,
        base_probs=probs,
        saved=saved,
        caps=guard.caps_for(y, probs, like),
    )
    own = model_columns(0, len(logits), y.shape[1])
    others = model_columns(1, len(logits), y.shape[1])
    used_own = used_others = 0
    for fold in saved:
        assert fold["weights"][0] <= 0.5 + 1e-9
        for part in fold["classes"]:
            importance = lgb.Booster(model_str=part["booster"]).feature_importance()
            used_own += importance[own].sum()
            used_others += importance[others].sum()
    assert used_own == 0 and used_others > 0


def test_no_model_is_capped_when_all_fall_alike():
    assert (weight_caps(np.array([0.02, 0.025, 0.018]), tolerance=0.01, cap=0.5) == 1.0).all()
    # The model that falls least is never capped, so the bounds always leave a feasible blend.
    assert weight_caps(np.array([0.3, 0.0]), tolerance=0.0, cap=0.1).tolist() == [0.1, 1.0]


def test_under_a_warning_the_choice_is_made_on_the_test_like_rows_and_says_so():
    y, logits, folds, scores, _ = _shifted_oof()
    cfg = _cfg("auto", ("best_single", "weighted_blend"))
    picked = choose_candidate(y, logits, logits, folds, NAMES, cfg, RULE, Shift(scores, True, "shift_scores.csv"))
    assert picked.score == "like_nested_mean_f1" and picked.choice["score"] == "like_nested_mean_f1"
    # On all rows the sharp model alone wins; on the test-like rows it is the worst choice.
    cands = picked.candidates
    assert cands["best_single"]["detail"]["model"] == "instances"
    assert (
        cands["weighted_blend"]["score"]["like_nested_mean_f1"] > cands["best_single"]["score"]["like_nested_mean_f1"]
    )
    assert picked.chosen == "weighted_blend" and "most like the test" in picked.why
    assert picked.choice["test_like"]["base_models"]["instances"]["max_weight"] == 0.5
    assert cands["weighted_blend"]["detail"]["capped"] == {"instances": 0.5}
    assert [f["fold"] for f in picked.choice["per_fold"]] == [0, 1, 2, 3]


def test_a_budget_without_time_to_nest_keeps_the_caps_and_chooses_on_all_rows():
    y, logits, folds, scores, _ = _shifted_oof()
    cfg = _cfg("auto", ("best_single", "weighted_blend"))
    shift = Shift(scores, True, "shift_scores.csv")
    why = "no time to nest"
    picked = choose_candidate(y, logits, logits, folds, NAMES, cfg, RULE, shift, unnested=why)
    cands = picked.candidates
    assert picked.score == "nested_mean_f1" and picked.choice["why"] == why and why in picked.why
    assert "per_fold" not in picked.choice and picked.oof is cands[picked.chosen]["oof"]  # nothing nested
    assert cands["weighted_blend"]["detail"]["capped"] == {"instances": 0.5}  # the caps stay
    best = max(cands, key=lambda c: (cands[c]["score"]["nested_mean_f1"], cands[c]["score"]["cv_mean_f1"]))
    assert picked.chosen == best
    # Without a warning there is nothing to skip: the same choice as with no reason given.
    quiet = Shift(scores, False, "shift_scores.csv")
    plain = choose_candidate(y, logits, logits, folds, NAMES, cfg, RULE, quiet)
    assert choose_candidate(y, logits, logits, folds, NAMES, cfg, RULE, quiet, unnested=why).chosen == plain.chosen


def test_the_budget_skips_nesting_only_when_its_prediction_does_not_fit():
    from capfuse.budget import Plan
    from capfuse.budget.plan import nested_choice_skipped

    plan = Plan(
        time_limit_s=600,
        reserve_s=0,
        folds_s=0,
        probe_s=0,
        models=[],
        probe={"stack_s": 20.0, "threshold_study": {"fixed_s": 1.0, "trial_s": 0.1, "growth_s": 0.0}},
    )
    assert nested_choice_skipped(plan, folds=5, trials=100, left_s=110) is None  # 5 x 20 s + 1 s + 90 x 0.1 s
    why = nested_choice_skipped(plan, folds=5, trials=100, left_s=109)
    assert why is not None and "110 s" in why and "109 s left" in why


def test_the_nested_choice_ignores_the_labels_of_the_fold_it_scores():
    held = 1
    y, logits, folds, scores, _ = _shifted_oof(seed=1, n=300, c=3, k=3)
    cfg = _cfg("always")
    shift = Shift(scores, False, "shift_scores.csv")
    before = choose_candidate(y, logits, logits, folds, NAMES, cfg, RULE, shift)
    y2 = y.copy()
    rows = np.flatnonzero(folds == held)
    y2[rows] = y[np.random.default_rng(5).permutation(rows)]
    after = choose_candidate(y2, logits, logits, folds, NAMES, cfg, RULE, shift)
    np.testing.assert_array_equal(after.oof[folds == held], before.oof[folds == held])
    assert not np.array_equal(after.oof[folds != held], before.oof[folds != held])


def test_without_a_warning_the_choice_and_probabilities_are_exactly_those_without_a_report():
    y, logits, folds, scores, _ = _shifted_oof(seed=2, n=300, c=3, k=3)
    cfg = _cfg("auto")
    plain = choose_candidate(y, logits, logits, folds, NAMES, cfg, RULE, None)
    calm = choose_candidate(y, logits, logits, folds, NAMES, cfg, RULE, Shift(scores, False, "shift_scores.csv"))
    never = choose_candidate(y, logits, logits, folds, NAMES, _cfg("never"), RULE, Shift(scores, True, "s.csv"))
    # The rule without a report: the best nested score on all rows.
    cands = plain.candidates
    today = max(cands, key=lambda c: (cands[c]["score"]["nested_mean_f1"], cands[c]["score"]["cv_mean_f1"]))
    for picked in (calm, never):
        assert picked.chosen == plain.chosen == today and picked.why == plain.why
        assert picked.oof.tobytes() == plain.oof.tobytes() == cands[today]["oof"].tobytes()
        test = picked.candidates[picked.chosen]["test"]
        assert test.tobytes() == plain.candidates[plain.chosen]["test"].tobytes()
        assert picked.choice["score"] == "nested_mean_f1" and "test_like" in picked.choice
    assert plain.choice is None
    assert "does not warn" in calm.choice["why"] and "never" in never.choice["why"]


def test_always_without_scores_names_the_fix():
    y, logits, folds, _, _ = _shifted_oof(n=200)
    with pytest.raises(ValueError, match="capfuse shift"):
        choose_candidate(y, logits, logits, folds, NAMES, _cfg("always"), RULE, Shift(None, True, "x"))


def test_infer_writes_each_base_models_held_out_score_beside_its_cv(tiny_run):
    runs = tiny_run.root / "runs" / "tiny"
    table = pd.read_csv(runs / "held_out_models.csv")
    models = list(read_json(runs / "ensemble" / "stack.json")["base_models"])
    assert table["model"].tolist() == models
    answers = pd.read_csv(tiny_run.data / "test_labels.csv", dtype=str, keep_default_na=False)
    classes = [int(c) for c in pd.read_csv(runs / models[0] / "test_logits.csv", nrows=0).columns[1:]]
    known = [" ".join(c for c in labels.split() if int(c) in classes) for labels in answers["Labels"]]
    truth = binary(known, classes)
    for row in table.itertuples():
        probs = sigmoid(read_logits(runs / row.model / "test_logits.csv", answers["ImageID"].tolist(), classes))
        pred = apply_threshold(probs, row.threshold, **RULE)
        assert row.held_out_mean_f1 == pytest.approx(mean_sample_f1(truth, pred), abs=1e-5)
        assert row.cv_minus_held_out == pytest.approx(row.cv_mean_f1 - row.held_out_mean_f1, abs=2e-5)


def test_a_model_that_reads_no_shifted_input_is_never_capped():
    # Only the images shift: a caption model falls on the test-like rows because they are
    # harder rows, not because it learnt what the test lacks; it keeps its whole weight, and the
    # image model that falls as far is capped.
    drops = np.array([0.05, 0.01, 0.012, 0.05])
    exposed = [True, True, True, False]
    assert weight_caps(drops, tolerance=0.01, cap=0.5).tolist() == [0.5, 1.0, 1.0, 0.5]
    assert weight_caps(drops, tolerance=0.01, cap=0.5, exposed=exposed).tolist() == [0.5, 1.0, 1.0, 1.0]
    images = Shift(None, True, "s.csv", frozenset({"image", "both"}))
    assert images.exposed(needs_image=True) and not images.exposed(needs_image=False)
    assert Shift(None, True, "s.csv", frozenset({"caption", "both"})).exposed(needs_image=True)
    assert Shift(None, True, "s.csv", frozenset({"both"})).exposed(needs_image=False)
    assert Shift(None, True, "s.csv").exposed(needs_image=False)  # a report that does not say: all may be
