"""The tiny run's submission is *right*, not only well-formed: scored against the held-out answers
the demo generator ships (``test_labels.csv``), it beats two baselines computed from the training
rows alone (``capfuse.results.floor``), never read from anything the pipeline wrote:

* the class prior (the best constant label set of the training labels), by ``MARGIN``;
* a caption TF-IDF model (one-vs-rest logistic regression on train.csv's captions, its
  threshold chosen out-of-fold on the training rows), falling below it by at most ``TFIDF_SLACK``.

The same checks fail when the submission's rows or its class columns are permuted."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from capfuse.config import load_config
from capfuse.data.csvio import read_split
from capfuse.data.dataset import load_dataset
from capfuse.metrics import mean_sample_f1
from capfuse.paths import Paths
from capfuse.results.floor import MARGIN, TFIDF_SLACK, binary, held_out, permuted, prior_baseline, tfidf_baseline
from capfuse.submission import read_submission


@pytest.fixture(scope="module")
def scored(tiny_run):
    rows, _ = read_split(tiny_run.data / "train.csv", "train")
    test_rows, _ = read_split(tiny_run.data / "test.csv", "test")
    classes = sorted({c for r in rows for c in (r.labels or [])})
    train = binary([" ".join(map(str, r.labels or [])) for r in rows], classes)
    answers = pd.read_csv(tiny_run.data / "test_labels.csv", dtype=str).set_index("ImageID")
    sub = read_submission(tiny_run.root / "submissions" / "tiny-latest.csv").set_index("ImageID")
    assert list(sub.index) == list(answers.index) == [r.image_id for r in test_rows]
    folds = pd.read_csv(tiny_run.root / "folds" / "tiny.csv", dtype={"ImageID": str}).set_index("ImageID")
    tfidf = tfidf_baseline(
        [r.caption for r in rows],
        train,
        folds.loc[[r.image_id for r in rows], "fold"].to_numpy(),
        [r.caption for r in test_rows],
    )
    truth = binary(list(answers["Labels"]), classes)
    return truth, binary(list(sub["Labels"]), classes), prior_baseline(train, truth), mean_sample_f1(truth, tfidf)


def test_the_submission_beats_the_class_prior_and_a_permuted_one_does_not(scored):
    truth, pred, prior, _ = scored
    floor = prior + MARGIN
    score = mean_sample_f1(truth, pred)
    assert score >= floor, f"submission mean F1 {score:.3f} below the class prior + {MARGIN} ({floor:.3f})"
    for how, wrong in permuted(pred).items():
        assert mean_sample_f1(truth, wrong) < floor, how


def test_the_submission_is_not_worse_than_a_caption_tfidf_model_and_a_permuted_one_is(scored):
    truth, pred, prior, tfidf = scored
    assert tfidf > prior, "the TF-IDF baseline learnt nothing from the captions: the check would be empty"
    floor = tfidf - TFIDF_SLACK
    score = mean_sample_f1(truth, pred)
    assert score >= floor, (
        f"submission mean F1 {score:.3f} below the caption TF-IDF baseline {tfidf:.3f} - {TFIDF_SLACK}"
    )
    for how, wrong in permuted(pred).items():
        assert mean_sample_f1(truth, wrong) < floor, how


def test_the_run_states_its_floor_and_it_is_what_the_test_computes(tiny_run, scored):
    """`capfuse infer` writes runs/<dataset>/held_out.json for a dataset that ships answers; its
    figures are the ones this test computes from the submission and the answers."""
    truth, pred, prior, tfidf = scored
    written = json.loads((tiny_run.root / "runs" / "tiny" / "held_out.json").read_text())
    assert written["passes"] is True
    assert written["submission"] == pytest.approx(mean_sample_f1(truth, pred), abs=1e-5)
    assert written["class_prior"] == pytest.approx(prior, abs=1e-5)
    assert written["caption_tfidf"] == pytest.approx(tfidf, abs=1e-5)
    paths = Paths(data_dir=tiny_run.data, root=tiny_run.root)
    again = held_out(load_dataset(paths, load_config(tiny_run.config)), paths.submissions / "tiny-latest.csv")
    assert again == written
