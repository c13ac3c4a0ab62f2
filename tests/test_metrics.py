"""Metrics against hand-computed cases and against scikit-learn on random matrices."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from capfuse.metrics import (
    average_precision_per_class,
    f1_at_k,
    gap_at_k,
    macro_f1,
    mean_average_precision,
    mean_sample_f1,
    micro_f1,
    per_class_table,
    summary,
)

# Hand case. Columns 0-2 are real classes; column 3 is neither true nor predicted anywhere.
Y_TRUE = np.array(
    [
        [1, 0, 1, 0],
        [0, 1, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [1, 1, 0, 0],
    ]
)
Y_PRED = np.array(
    [
        [1, 1, 0, 0],  # tp 1, |T| 2, |P| 2 -> F1 2·1/4 = 0.5
        [0, 1, 0, 0],  # exact -> 1
        [0, 0, 0, 0],  # both empty -> 1
        [1, 0, 0, 0],  # true empty, predicted not -> 0
        [0, 0, 1, 0],  # no overlap -> 0
    ]
)


def test_mean_sample_f1_hand_case():
    # (0.5 + 1 + 1 + 0 + 0) / 5
    assert mean_sample_f1(Y_TRUE, Y_PRED) == pytest.approx(0.5)


def test_micro_f1_hand_case():
    # TP = 1 + 1 = 2; Σ|T| = 5, Σ|P| = 5 -> 2·2 / 10
    assert micro_f1(Y_TRUE, Y_PRED) == pytest.approx(0.4)


def test_macro_f1_hand_case_leaves_out_classes_without_support_or_prediction():
    # class 0: tp 1, support 2, predicted 2 -> 0.5; class 1: the same -> 0.5; class 2: tp 0 -> 0.
    # class 3 has neither, so it is left out: (0.5 + 0.5 + 0) / 3.
    assert macro_f1(Y_TRUE, Y_PRED) == pytest.approx(1 / 3)
    assert macro_f1(Y_TRUE[:, :3], Y_PRED[:, :3]) == pytest.approx(1 / 3)


def test_empty_everything_scores_one():
    zeros = np.zeros((3, 4), dtype=int)
    assert mean_sample_f1(zeros, zeros) == 1.0
    assert micro_f1(zeros, zeros) == 1.0
    assert macro_f1(zeros, zeros) == 1.0
    assert f1_score(zeros, zeros, average="samples", zero_division=1) == 1.0


def test_average_precision_hand_cases():
    # Column 0: ranked 0.9 hit, 0.8 miss, 0.7 hit, 0.6 miss -> (1/1 + 2/3) / 2 = 5/6.
    # Column 1 has a tie: 0.9 miss; {0.5 hit, 0.5 miss} admitted together (P 1/3, R 1/2);
    # 0.1 hit (P 2/4, R 1) -> 1/2·1/3 + 1/2·1/2 = 5/12.
    # Column 2 has no positive -> NaN, left out of the mean.
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    s = np.array([[0.9, 0.9, 0.2], [0.8, 0.5, 0.4], [0.7, 0.5, 0.1], [0.6, 0.1, 0.3]])
    ap = average_precision_per_class(y, s)
    assert ap[0] == pytest.approx(5 / 6)
    assert ap[1] == pytest.approx(5 / 12)
    assert np.isnan(ap[2])
    assert mean_average_precision(y, s) == pytest.approx((5 / 6 + 5 / 12) / 2)
    assert ap[1] == pytest.approx(average_precision_score(y[:, 1], s[:, 1]))


def test_f1_at_k_hand_case():
    y = np.array([[1, 0, 0, 1], [0, 1, 0, 0]])
    s = np.array([[0.9, 0.8, 0.1, 0.7], [0.2, 0.3, 0.9, 0.1]])
    # k=2: row 0 predicts {0, 1} (1 hit), row 1 predicts {2, 1} (1 hit). hits 2,
    # precision 2 / (2·2) = 1/2, recall 2 / 3 -> F1 = 2·(1/2)(2/3) / (1/2 + 2/3) = 4/7.
    assert f1_at_k(y, s, 2) == pytest.approx(4 / 7)
    # k=1: row 0 predicts {0} hit, row 1 predicts {2} miss: P 1/2, R 1/3 -> F1 = 2/5.
    assert f1_at_k(y, s, 1) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="k must be"):
        f1_at_k(y, s, 5)


def test_f1_at_k_ties_go_to_the_lower_class_index():
    y = np.array([[0, 1, 0]])
    s = np.array([[0.5, 0.5, 0.5]])
    assert f1_at_k(y, s, 1) == 0.0  # class 0 is taken
    y = np.array([[1, 0, 0]])
    assert f1_at_k(y, s, 1) == 1.0


def test_gap_hand_case():
    y = np.array([[1, 0, 1], [0, 1, 0]])
    s = np.array([[0.9, 0.8, 0.3], [0.6, 0.7, 0.1]])
    # k=2 pool, ranked: 0.9 hit, 0.8 miss, 0.7 hit, 0.6 miss; 3 positives in all (row 0's
    # class 2 fell outside its top 2): (1/1 + 2/3) / 3 = 5/9.
    assert gap_at_k(y, s, 2) == pytest.approx(5 / 9)
    # All pairs: hits at ranks 1, 3, 5 -> (1 + 2/3 + 3/5) / 3 = 34/45.
    assert gap_at_k(y, s, None) == pytest.approx(34 / 45)
    assert gap_at_k(y, s, 10) == pytest.approx(34 / 45)  # k beyond C means every class
    assert gap_at_k(y, s, None) == pytest.approx(average_precision_score(y.ravel(), s.ravel()))


def test_gap_at_k_equals_micro_ap_of_pooled_topk():
    rng = np.random.default_rng(3)
    y = (rng.random((40, 8)) < 0.3).astype(int)
    s = rng.random((40, 8))
    k = 3
    top = np.argsort(-s, axis=1)[:, :k]
    hits = np.take_along_axis(y, top, 1).ravel()
    scores = np.take_along_axis(s, top, 1).ravel()
    # AP over the pooled list scaled by (positives in the list) / (all positives).
    expected = average_precision_score(hits, scores) * hits.sum() / y.sum()
    assert gap_at_k(y, s, k) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(6))
def test_against_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n, c = 60, 7
    y = (rng.random((n, c)) < 0.3).astype(int)
    p = (rng.random((n, c)) < 0.3).astype(int)
    y[:, 2] = 0  # a class with no positives
    p[:, 2] = 0 if seed % 2 else p[:, 2]  # ... and in half the seeds no predictions either
    p[:4] = 0  # samples with no predicted label
    y[:2] = 0  # samples with no true label (0 and 1 are also empty in p: both-empty)
    y[5] = 0  # true empty, prediction maybe not
    s = rng.integers(0, 6, (n, c)) / 5  # coarse scores: many ties

    assert mean_sample_f1(y, p) == pytest.approx(f1_score(y, p, average="samples", zero_division=1))
    assert micro_f1(y, p) == pytest.approx(f1_score(y, p, average="micro", zero_division=1))
    active = np.flatnonzero(y.sum(0) + p.sum(0))
    for zd in (0, 1):  # zero division never applies on the classes kept
        assert macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro", labels=active, zero_division=zd))

    ap = average_precision_per_class(y, s)
    for j in range(c):
        if y[:, j].any():
            assert ap[j] == pytest.approx(average_precision_score(y[:, j], s[:, j]))
        else:
            assert np.isnan(ap[j])
    has_pos = y.sum(0) > 0
    assert mean_average_precision(y, s) == pytest.approx(
        average_precision_score(y[:, has_pos], s[:, has_pos], average="macro")
    )
    assert gap_at_k(y, s, None) == pytest.approx(average_precision_score(y, s, average="micro"))


def test_per_class_table_hand_case():
    s = np.tile([0.9, 0.5, 0.1, 0.2], (5, 1))
    table = per_class_table(Y_TRUE, Y_PRED, s, class_ids=[1, 2, 5, 19], class_names=["a", "b", "c", "d"])
    assert list(table.columns) == ["id", "name", "support", "predicted", "tp", "precision", "recall", "f1", "ap"]
    assert table["id"].tolist() == [1, 2, 5, 19]
    assert table["support"].tolist() == [2, 2, 1, 0]
    assert table["predicted"].tolist() == [2, 2, 1, 0]
    assert table["tp"].tolist() == [1, 1, 0, 0]
    np.testing.assert_allclose(table["precision"][:3], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(table["f1"][:3], [0.5, 0.5, 0.0])
    assert table[["precision", "recall", "f1", "ap"]].iloc[3].isna().all()  # no data for class 19
    # Constant scores within a column: AP = prevalence.
    np.testing.assert_allclose(table["ap"][:3], [2 / 5, 2 / 5, 1 / 5])


def test_summary_has_every_headline_metric():
    rng = np.random.default_rng(0)
    y = (rng.random((30, 6)) < 0.3).astype(int)
    s = rng.random((30, 6))
    out = summary(y, (s > 0.5).astype(int), s)
    assert set(out) == {"mean_f1", "micro_f1", "macro_f1", "map", "f1_at_3", "f1_at_5", "gap_at_10", "gap"}
    assert out["f1_at_3"] == pytest.approx(f1_at_k(y, s, 3))
    assert out["gap_at_10"] == pytest.approx(out["gap"])  # 6 classes: top 10 is everything
    assert all(0.0 <= v <= 1.0 for v in out.values())


def test_validation_errors():
    y = np.zeros((3, 2), dtype=int)
    with pytest.raises(ValueError, match="binary"):
        mean_sample_f1(y, np.full((3, 2), 0.5))
    with pytest.raises(ValueError, match="shapes differ"):
        micro_f1(y, np.zeros((3, 3), dtype=int))
    with pytest.raises(ValueError, match="2-D"):
        macro_f1(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        average_precision_per_class(y, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="shapes differ"):
        gap_at_k(y, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="k must be"):
        gap_at_k(y, np.zeros((3, 2)), 0)
