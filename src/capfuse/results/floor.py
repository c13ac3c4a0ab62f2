"""Is a submission *right*? Scored on the held-out answers a demo dataset ships
(``test_labels.csv``, which no stage trains on), beside two baselines computed here from the
training rows alone:

- the class prior: the best constant label set (the k most frequent training classes, k
  chosen on the training rows);
- a caption TF-IDF model: one-vs-rest logistic regression on the training captions, its
  threshold chosen out of fold on the training rows.

A run passes its floor when it beats the prior by ``MARGIN`` and falls below the TF-IDF model
by at most ``TFIDF_SLACK``. A submission whose rows or class columns are shifted by one fails
both: the floor checks what the answers are, not only their format. ``capfuse infer`` prints
it for every dataset that ships answers and the tests hold the tiny run to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from capfuse.metrics import mean_sample_f1
from capfuse.submission import read_submission

ANSWERS = "test_labels.csv"
MARGIN = 0.10  # mean F1 over the class prior
# The fused pipeline may trail a captions-only model by a little on a small test set (on the
# tiny data's 40 rows one row is 0.025 of mean F1) before it counts as worse than it.
TFIDF_SLACK = 0.05
GRID = np.round(np.arange(0.05, 0.65, 0.05), 2)  # the TF-IDF model's threshold candidates


def binary(labels: list[str], classes: list[int]) -> np.ndarray:
    index = {c: j for j, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), np.uint8)
    for i, text in enumerate(labels):
        for c in str(text).split():
            out[i, index[int(c)]] = 1
    return out


def prior_baseline(train: np.ndarray, truth: np.ndarray) -> float:
    """Mean F1 of 'the k most frequent training classes for every image', k chosen on train."""
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
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415 (a results-only path)
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415
    from sklearn.multiclass import OneVsRestClassifier  # noqa: PLC0415

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    # A class every training row has, or none has, is a constant: the classifier cannot fit it.
    keep = (Y.min(0) != Y.max(0)).nonzero()[0]
    out = np.tile(Y.mean(0), (len(other_text), 1)).astype(np.float64)
    if len(keep):
        model = OneVsRestClassifier(LogisticRegression(C=10.0, max_iter=1000))
        model.fit(vec.fit_transform(train_text), Y[:, keep])
        out[:, keep] = model.predict_proba(vec.transform(other_text))
    return out


def tfidf_baseline(captions: list[str], train: np.ndarray, folds: np.ndarray, test_captions: list[str]) -> np.ndarray:
    """Test labels of a caption TF-IDF model whose threshold is the best on its out-of-fold train rows."""
    oof = np.zeros(train.shape)
    for k in np.unique(folds):
        fit, held = folds != k, folds == k
        oof[held] = _tfidf_probs(
            [c for c, f in zip(captions, fit) if f], train[fit], [c for c, h in zip(captions, held) if h]
        )
    best = max(GRID, key=lambda t: mean_sample_f1(train, _cut(oof, t)))
    return _cut(_tfidf_probs(captions, train, test_captions), best)


def permuted(pred: np.ndarray) -> dict[str, np.ndarray]:
    """The submission with each row's labels given to the next image, and each class's column
    under its neighbour's id: what a misaligned ImageID or class column would write."""
    return {
        "rows rolled": np.roll(pred, 1, axis=0),
        "columns rolled": pred[:, np.roll(np.arange(pred.shape[1]), 1)],
    }


def held_out(ds, submission_csv: Path) -> dict | None:
    """The submission's held-out mean F1 beside the two baselines, and whether it clears its
    floor; None when the dataset ships no answers.

    ``ds``: the validated dataset (``capfuse.data.dataset``), so the baselines learn from the same
    training rows the pipeline kept. Answers for rows the test set lacks, and class ids the
    training rows never use, are left out; a test row without an answer is not scored.
    """
    path = Path(ds.paths.data_dir) / ANSWERS
    if not path.exists():
        return None
    classes = list(ds.class_ids)
    answers = pd.read_csv(path, dtype=str, keep_default_na=False)
    answers["ImageID"] = answers["ImageID"].str.strip()
    answers = answers.drop_duplicates("ImageID").set_index("ImageID")
    ids = [i for i in ds.test_ids if i in answers.index]
    if not ids:
        return None

    def known(text: str) -> str:
        return " ".join(t for t in str(text).split() if t.isdigit() and int(t) in classes)

    truth = binary([known(t) for t in answers.loc[ids, "Labels"]], classes)
    sub = read_submission(submission_csv).set_index("ImageID")
    pred = binary([known(t) for t in sub.loc[ids, "Labels"]], classes)
    train = np.asarray(ds.Y, np.uint8)
    test_captions = dict(zip(ds.test_ids, ds.val.test["Caption"].astype(str)))
    tfidf = tfidf_baseline(
        list(ds.val.train["Caption"].astype(str)), train, ds.folds(), [test_captions[i] for i in ids]
    )
    out = {
        "rows": len(ids),
        "submission": mean_sample_f1(truth, pred),
        "class_prior": prior_baseline(train, truth),
        "caption_tfidf": mean_sample_f1(truth, tfidf),
        "margin": MARGIN,
        "tfidf_slack": TFIDF_SLACK,
        "permuted": {how: round(mean_sample_f1(truth, wrong), 5) for how, wrong in permuted(pred).items()},
    }
    out["passes"] = bool(
        out["submission"] >= out["class_prior"] + MARGIN and out["submission"] >= out["caption_tfidf"] - TFIDF_SLACK
    )
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()}


def floor_line(r: dict) -> str:
    verdict = "clears its floor" if r["passes"] else "BELOW its floor"
    return (
        f"held-out answers ({ANSWERS}, never trained on): submission mean F1 {r['submission']:.4f}, "
        f"class prior {r['class_prior']:.4f} (+{r['margin']} needed), caption TF-IDF {r['caption_tfidf']:.4f} "
        f"(-{r['tfidf_slack']} allowed): {verdict}"
    )
