"""The tiny run's submission is *right*, not only well-formed: scored against the held-out answers
the demo generator ships (``test_labels.csv``), it beats a baseline the test computes itself
(the best constant label set of the training labels) by a stated margin, and the same check
fails when the submission's rows or its class columns are permuted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from capfuse.data.csvio import read_split
from capfuse.metrics import mean_sample_f1
from capfuse.submission import read_submission

MARGIN = 0.10  # mean F1 over the constant baseline; permuted submissions fall below it


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


def test_the_submission_beats_the_class_prior_and_a_permuted_one_does_not(tiny_run):
    rows, _ = read_split(tiny_run.data / "train.csv", "train")
    classes = sorted({c for r in rows for c in (r.labels or [])})
    train = _binary([" ".join(map(str, r.labels or [])) for r in rows], classes)
    answers = pd.read_csv(tiny_run.data / "test_labels.csv", dtype=str).set_index("ImageID")
    sub = read_submission(tiny_run.root / "submissions" / "tiny-latest.csv").set_index("ImageID")
    assert list(sub.index) == list(answers.index)
    truth = _binary(list(answers["Labels"]), classes)
    pred = _binary(list(sub["Labels"]), classes)

    floor = _prior_baseline(train, truth) + MARGIN
    score = mean_sample_f1(truth, pred)
    assert score >= floor, f"submission mean F1 {score:.3f} below the class prior + {MARGIN} ({floor:.3f})"
    rolled = np.roll(pred, 1, axis=0)  # each row's labels given to the next image
    assert mean_sample_f1(truth, rolled) < floor
    swapped = pred[:, np.roll(np.arange(len(classes)), 1)]  # each class's column under its neighbour's id
    assert mean_sample_f1(truth, swapped) < floor
