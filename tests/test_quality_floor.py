"""The tiny run's submission is *right*, not only well-formed: scored against the held-out answers
the demo generator ships (``test_labels.csv``), it beats two baselines the test computes itself:

* the class prior (the best constant label set of the training labels), by ``MARGIN``;
* a caption TF-IDF model (one-vs-rest logistic regression on train.csv's captions, its
  threshold chosen out-of-fold on the training rows), falling below it by at most ``TFIDF_SLACK``.

The same checks fail when the submission's rows or its class columns are permuted."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from capfuse.data.csvio import read_split
from capfuse.metrics import mean_sample_f1
from capfuse.submission import read_submission

MARGIN = 0.10  # mean F1 over the constant baseline; permuted submissions fall below it
# On 40 test rows one row is 0.025 of mean F1: the fused pipeline may trail a captions-only
# model by two rows' worth before it counts as worse than what a TF-IDF model gets from captions.
TFIDF_SLACK = 0.05
GRID = np.round(np.arange(0.05, 0.65, 0.05), 2)  # the TF-IDF model's threshold candidates


def _binary(labels: list[str], classes: list[int]) -> np.ndarray:
    index = {c: j for j, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), np.uint8)
    for i, text in enumerate(labels):
        for c in str(text).split():
            out[i, index[int(c)]] = 1
    return out


def _prior_baseline(train: np.ndarray, truth: np.ndarray) -> float:
    """The best of 'the k most frequent training classes for every image', k chosen on train."""
    order = np.argsort(-train.mean(0), kind="stable")
    best_k = max(range(1, 6), key=lambda k: mean_sample_f1(train, _top(order, k, train.shape)))
    return mean_sample_f1(truth, _top(order, best_k, truth.shape))


def _top(order: np.ndarray, k: int, shape: tuple) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    out[:, order[:k]] = 1
    return out


def _cut(probs: np.ndarray, t: float) -> np.ndarray:
    """Classes at or over ``t``; a row with none gets its most likely class (as the pipeline does)."""
    pred = (probs >= t).astype(np.uint8)
    empty = pred.sum(1) == 0
    pred[empty, probs[empty].argmax(1)] = 1
    return pred


def _tfidf_probs(train_text: list[str], Y: np.ndarray, other_text: list[str]) -> np.ndarray:
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = OneVsRestClassifier(LogisticRegression(C=10.0, max_iter=1000))
    model.fit(vec.fit_transform(train_text), Y)
    return model.predict_proba(vec.transform(other_text))


def _tfidf_baseline(captions: list[str], train: np.ndarray, folds: np.ndarray, test_captions: list[str]) -> np.ndarray:
    """Test labels of a caption TF-IDF model whose threshold is the best on its out-of-fold train rows."""
    oof = np.zeros(train.shape)
    for k in np.unique(folds):
        fit, held = folds != k, folds == k
        oof[held] = _tfidf_probs(
            [c for c, f in zip(captions, fit) if f], train[fit], [c for c, h in zip(captions, held) if h]
        )
    best = max(GRID, key=lambda t: mean_sample_f1(train, _cut(oof, t)))
    return _cut(_tfidf_probs(captions, train, test_captions), best)


@pytest.fixture(scope="module")
def scored(tiny_run):
    rows, _ = read_split(tiny_run.data / "train.csv", "train")
    test_rows, _ = read_split(tiny_run.data / "test.csv", "test")
    classes = sorted({c for r in rows for c in (r.labels or [])})
    train = _binary([" ".join(map(str, r.labels or [])) for r in rows], classes)
    answers = pd.read_csv(tiny_run.data / "test_labels.csv", dtype=str).set_index("ImageID")
    sub = read_submission(tiny_run.root / "submissions" / "tiny-latest.csv").set_index("ImageID")
    assert list(sub.index) == list(answers.index) == [r.image_id for r in test_rows]
    folds = pd.read_csv(tiny_run.root / "folds" / "tiny.csv", dtype={"ImageID": str}).set_index("ImageID")
    tfidf = _tfidf_baseline(
        [r.caption for r in rows],
        train,
        folds.loc[[r.image_id for r in rows], "fold"].to_numpy(),
        [r.caption for r in test_rows],
    )
    truth = _binary(list(answers["Labels"]), classes)
    return truth, _binary(list(sub["Labels"]), classes), _prior_baseline(train, truth), mean_sample_f1(truth, tfidf)


def _permuted(pred: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "rows rolled": np.roll(pred, 1, axis=0),  # each row's labels given to the next image
        "columns rolled": pred[:, np.roll(np.arange(pred.shape[1]), 1)],  # each class under its neighbour's id
    }


def test_the_submission_beats_the_class_prior_and_a_permuted_one_does_not(scored):
    truth, pred, prior, _ = scored
    floor = prior + MARGIN
    score = mean_sample_f1(truth, pred)
    assert score >= floor, f"submission mean F1 {score:.3f} below the class prior + {MARGIN} ({floor:.3f})"
    for how, wrong in _permuted(pred).items():
        assert mean_sample_f1(truth, wrong) < floor, how


def test_the_submission_is_not_worse_than_a_caption_tfidf_model_and_a_permuted_one_is(scored):
    truth, pred, prior, tfidf = scored
    assert tfidf > prior, "the TF-IDF baseline learnt nothing from the captions: the check would be empty"
    floor = tfidf - TFIDF_SLACK
    score = mean_sample_f1(truth, pred)
    assert score >= floor, (
        f"submission mean F1 {score:.3f} below the caption TF-IDF baseline {tfidf:.3f} - {TFIDF_SLACK}"
    )
    for how, wrong in _permuted(pred).items():
        assert mean_sample_f1(truth, wrong) < floor, how
