"""The numbers behind every plot and table of the report and the notebooks.

Pure functions of label matrices, probabilities and artefact tables (no files, no plotting), so
that tests can check them on cases whose answer is known, and so that a notebook cell that shows
a table is one call.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from capfuse.data.folds import fold_class_counts
from capfuse.ensemble.decision import apply_threshold
from capfuse.metrics import mean_sample_f1

_WORD = re.compile(r"[a-z0-9']+")


def markdown(table: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """The table as GitHub markdown, index left out; an empty cell for a missing value.

    Written here rather than through `DataFrame.to_markdown`, which needs the optional `tabulate`
    package that a fresh install from requirements.txt does not have.
    """

    def cell(v) -> str:
        if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
            return ""
        return format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v)

    cols = [str(c) for c in table.columns]
    head = "| " + " | ".join(cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n"
    rows = table.astype(object).itertuples(index=False, name=None)
    return head + "".join("| " + " | ".join(cell(v) for v in row) + " |\n" for row in rows)


def class_frequencies(Y: np.ndarray, class_ids: Sequence[int], names: Sequence[str]) -> pd.DataFrame:
    """One row per class: id, name, positives and their share of the rows, most frequent first."""
    Y = np.asarray(Y, dtype=bool)
    count = Y.sum(0)
    out = pd.DataFrame(
        {
            "id": [int(c) for c in class_ids],
            "name": list(names),
            "count": count.astype(int),
            "share": count / max(len(Y), 1),
        }
    )
    return out.sort_values(["count", "id"], ascending=[False, True]).reset_index(drop=True)


def cooccurrence(
    Y: np.ndarray, class_ids: Sequence[int], names: Sequence[str], normalise: bool = False
) -> pd.DataFrame:
    """Rows holding both classes (diagonal: each class's count).

    ``normalise``: divide each row by its class's count, so cell (a, b) reads "of the rows with
    a, the share that also has b" (a conditional frequency; not symmetric).
    """
    Y = np.asarray(Y, dtype=np.int64)
    m = Y.T @ Y
    labels = [f"{c} {n}" for c, n in zip(class_ids, names)]
    if normalise:
        m = m / np.maximum(np.diag(m)[:, None], 1)
    return pd.DataFrame(m, index=labels, columns=labels)


def words(caption: str) -> list[str]:
    return _WORD.findall(caption.lower())


def caption_lengths(train_captions: Sequence[str], test_captions: Sequence[str]) -> pd.DataFrame:
    """Words per caption, one row per caption, with its split."""
    return pd.DataFrame(
        {
            "split": ["train"] * len(train_captions) + ["test"] * len(test_captions),
            "words": [len(words(c)) for c in [*train_captions, *test_captions]],
        }
    )


def vocabulary(train_captions: Sequence[str], test_captions: Sequence[str], top: int = 20) -> tuple[dict, pd.DataFrame]:
    """Vocabulary facts (sizes, words seen only in test) and the ``top`` most frequent words."""
    train = Counter(w for c in train_captions for w in words(c))
    test = Counter(w for c in test_captions for w in words(c))
    facts = {
        "train_words": int(sum(train.values())),
        "train_vocabulary": len(train),
        "test_vocabulary": len(test),
        "test_only_words": len(set(test) - set(train)),
        "test_tokens_unseen_in_train": round(
            sum(n for w, n in test.items() if w not in train) / max(sum(test.values()), 1), 4
        ),
    }
    common = (train + test).most_common(top)
    return facts, pd.DataFrame(common, columns=["word", "count"])


def labels_per_row(Y: np.ndarray) -> pd.Series:
    """How many rows carry 1, 2, ... labels."""
    n = np.asarray(Y, dtype=bool).sum(1)
    return pd.Series(n).value_counts().sort_index().rename_axis("labels").rename("rows")


def fold_balance(folds: np.ndarray, Y: np.ndarray, class_ids: Sequence[int], names: Sequence[str]) -> pd.DataFrame:
    """Positives of each class in each fold (rows: classes; columns: folds, total, spread).

    ``spread`` is (largest − smallest fold count) / the mean fold count: 0 for a perfectly even
    split, and the number to look at for stratification problems.
    """
    table = fold_class_counts(pd.DataFrame({"fold": np.asarray(folds)}), np.asarray(Y), class_ids).T
    per_fold = table.drop(columns="total")
    mean = per_fold.mean(axis=1)
    out = per_fold.rename(columns=lambda f: f"fold {f}")
    out.insert(0, "name", list(names))
    out["total"] = table["total"]
    out["spread"] = ((per_fold.max(axis=1) - per_fold.min(axis=1)) / mean.where(mean > 0)).round(3)
    out.index = pd.Index([int(c) for c in class_ids], name="id")
    out.columns.name = None
    return out


def threshold_curve(
    Y: np.ndarray,
    probs: np.ndarray,
    grid: Sequence[float] | None = None,
    *,
    min_labels: int = 1,
    max_labels: int | None = None,
) -> pd.DataFrame:
    """Mean F1 over samples at each global threshold, with the pipeline's never-empty rule."""
    grid = np.round(np.arange(0.02, 0.99, 0.02), 4) if grid is None else np.asarray(grid, dtype=float)
    scores = [mean_sample_f1(Y, apply_threshold(probs, t, min_labels=min_labels, max_labels=max_labels)) for t in grid]
    return pd.DataFrame({"threshold": grid, "mean_f1": scores})


def class_threshold_curves(
    Y: np.ndarray,
    probs: np.ndarray,
    class_ids: Sequence[int],
    names: Sequence[str],
    grid: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Each class's own F1 when it is predicted wherever its probability reaches the threshold.

    Rows: thresholds; columns: ``"<id> <name>"``. A class without positives and predictions at
    some threshold has no F1 there (NaN). The never-empty rule is left out on purpose: it
    couples classes, and this view asks how each class alone responds to its cut-off.
    """
    grid = np.round(np.arange(0.02, 0.99, 0.02), 4) if grid is None else np.asarray(grid, dtype=float)
    t = np.asarray(Y, dtype=bool)
    p = np.asarray(probs, dtype=np.float64)
    support = t.sum(0)
    rows = []
    for g in grid:
        pred = p >= g
        tp, predicted = (t & pred).sum(0), pred.sum(0)
        size = support + predicted
        with np.errstate(divide="ignore", invalid="ignore"):
            rows.append(np.where(size > 0, 2.0 * tp / size, np.nan))
    return pd.DataFrame(
        rows, index=pd.Index(grid, name="threshold"), columns=[f"{c} {n}" for c, n in zip(class_ids, names)]
    )


def pair_confusions(Y: np.ndarray, pred: np.ndarray, class_ids: Sequence[int], names: Sequence[str]) -> pd.DataFrame:
    """For each ordered pair (true class b, predicted class a ≠ b): how often a is predicted
    wrongly on rows where b is true and a is not.

    ``rate`` = those rows / the rows where b is true and a is not (so a class's own frequency
    does not inflate it); ``together`` is how often a and b are true on the same row (their
    co-occurrence), which is what makes such confusions likely. Sorted by count.
    """
    t = np.asarray(Y, dtype=bool)
    p = np.asarray(pred, dtype=bool)
    if t.shape != p.shape:
        raise ValueError(f"shapes differ: truth {t.shape}, predictions {p.shape}")
    wrong = (p & ~t).astype(np.int64)  # [N, C]: a predicted but not true
    n_conf = t.astype(np.int64).T @ wrong  # [b, a]: rows with b true and a wrongly predicted
    base = t.astype(np.int64).T @ (~t).astype(np.int64)  # rows with b true and a not true
    together = t.astype(np.int64).T @ t.astype(np.int64)
    rows = []
    c = t.shape[1]
    for b in range(c):
        for a in range(c):
            if a == b or base[b, a] == 0:
                continue
            rows.append(
                {
                    "true_id": int(class_ids[b]),
                    "true": names[b],
                    "predicted_id": int(class_ids[a]),
                    "predicted": names[a],
                    "rows": int(n_conf[b, a]),
                    "rate": n_conf[b, a] / base[b, a],
                    "together": int(together[b, a]),
                }
            )
    out = pd.DataFrame(rows, columns=["true_id", "true", "predicted_id", "predicted", "rows", "rate", "together"])
    return out.sort_values(["rows", "rate"], ascending=False).reset_index(drop=True)


def confusion_matrix(confusions: pd.DataFrame, class_ids: Sequence[int], names: Sequence[str]) -> pd.DataFrame:
    """``pair_confusions``' rates as a [true, predicted] matrix (diagonal NaN)."""
    labels = [f"{c} {n}" for c, n in zip(class_ids, names)]
    index = {int(c): i for i, c in enumerate(class_ids)}
    m = np.full((len(labels), len(labels)), np.nan)
    for r in confusions.itertuples(index=False):
        m[index[r.true_id], index[r.predicted_id]] = r.rate
    return pd.DataFrame(m, index=labels, columns=labels)


def sample_f1(Y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Each row's F1 of predicted vs true set (both empty: 1), as in ``metrics.mean_sample_f1``."""
    t, p = np.asarray(Y, dtype=bool), np.asarray(pred, dtype=bool)
    size = t.sum(1) + p.sum(1)
    return np.where(size == 0, 1.0, 2.0 * (t & p).sum(1) / np.maximum(size, 1))


def worst_examples(
    Y: np.ndarray,
    pred: np.ndarray,
    probs: np.ndarray,
    ids: Sequence[str],
    captions: Sequence[str],
    names: Sequence[str],
    k: int = 12,
) -> pd.DataFrame:
    """The ``k`` rows with the lowest F1; among equals, the most confident mistakes first.

    Confidence of a row's mistakes: the largest probability on a wrongly predicted class or
    the largest (1 − probability) on a missed one.
    """
    t, p = np.asarray(Y, dtype=bool), np.asarray(pred, dtype=bool)
    probs = np.asarray(probs, dtype=np.float64)
    f1 = sample_f1(t, p)
    wrong = np.where(p & ~t, probs, 0.0).max(1)
    missed = np.where(t & ~p, 1.0 - probs, 0.0).max(1)
    order = np.lexsort((-np.maximum(wrong, missed), f1))[:k]

    def named(row: np.ndarray, with_probs: np.ndarray | None = None) -> str:
        cols = np.flatnonzero(row)
        if with_probs is None:
            return ", ".join(names[j] for j in cols)
        return ", ".join(f"{names[j]} ({with_probs[j]:.2f})" for j in cols)

    return pd.DataFrame(
        {
            "ImageID": [ids[i] for i in order],
            "caption": [captions[i] for i in order],
            "truth": [named(t[i]) for i in order],
            "predicted": [named(p[i], probs[i]) for i in order],
            "f1": f1[order].round(3),
        }
    )


def stacking_table(stack: dict) -> pd.DataFrame:
    """The second-level candidates of ``stack.json``: in-sample and nested mean F1, and the gain
    of each over the best single model on the nested score."""
    rows = [
        {
            "candidate": name,
            "cv_mean_f1": c.get("cv_mean_f1"),
            "nested_mean_f1": c.get("nested_mean_f1"),
            "cv_map": c.get("cv_map"),
            "threshold": c.get("threshold"),
            "kept": name == stack.get("chosen"),
        }
        for name, c in stack.get("candidates", {}).items()
    ]
    out = pd.DataFrame(rows, columns=["candidate", "cv_mean_f1", "nested_mean_f1", "cv_map", "threshold", "kept"])
    single = out.loc[out["candidate"] == "best_single", "nested_mean_f1"]
    out["nested_gain"] = (out["nested_mean_f1"] - single.iloc[0]).round(5) if len(single) else np.nan
    return out.sort_values("nested_mean_f1", ascending=False).reset_index(drop=True)


def thresholds_table(cut: dict) -> pd.DataFrame:
    """Global vs per-class thresholds of ``thresholds.json``: in-sample, nested, gap, used."""
    return pd.DataFrame(
        [
            {
                "thresholds": kind.replace("_", "-"),
                "in_sample": cut[kind]["in_sample"],
                "nested": cut[kind]["nested"],
                "gap": cut[kind]["gap"],
                "used": cut["kind"] == kind,
            }
            for kind in ("global", "per_class")
            if kind in cut
        ]
    )


def pseudo_round_summary(rounds: pd.DataFrame) -> pd.DataFrame:
    """One row per (base model, round) of ``pseudo_rounds.csv``: CV and the pseudo-labels' quality."""
    keep = [
        c
        for c in (
            "base_model",
            "model",
            "round",
            "cv_mean_f1",
            "cv_map",
            "pseudo_pos",
            "pseudo_neg",
            "precision",
            "recall",
            "note",
        )
        if c in rounds.columns
    ]
    rows = rounds[rounds["class"].astype(str) == "all"] if "class" in rounds.columns else rounds
    return rows[keep].sort_values([c for c in ("base_model", "round") if c in keep]).reset_index(drop=True)


def submission_summary(
    sub: pd.DataFrame, class_ids: Sequence[int], names: Sequence[str], Y_train: np.ndarray
) -> tuple[dict, pd.DataFrame, pd.Series]:
    """Facts of a submission, each class's predicted share against its train prior, and the
    distribution of labels per row.

    A class predicted far more or less often than its prior is where a threshold or a model
    is most likely off (on data drawn like the train set).
    """
    labels = [[int(x) for x in str(s).split()] for s in sub["Labels"]]
    index = {int(c): i for i, c in enumerate(class_ids)}
    P = np.zeros((len(labels), len(class_ids)), dtype=np.uint8)
    for r, row in enumerate(labels):
        for cid in row:
            if cid not in index:
                raise ValueError(f"submission row {r + 2}: label {cid} is not a class id of the dataset")
            P[r, index[cid]] = 1
    Yt = np.asarray(Y_train, dtype=bool)
    per_class = pd.DataFrame(
        {
            "id": [int(c) for c in class_ids],
            "name": list(names),
            "predicted_rows": P.sum(0).astype(int),
            "predicted_share": P.mean(0) if len(P) else 0.0,
            "train_prior": Yt.mean(0),
        }
    )
    per_class["ratio"] = (
        per_class["predicted_share"] / per_class["train_prior"].where(per_class["train_prior"] > 0)
    ).round(3)
    facts = {
        "rows": int(len(sub)),
        "labels_per_row": round(float(P.sum(1).mean()), 3) if len(P) else 0.0,
        "train_labels_per_row": round(float(Yt.sum(1).mean()), 3),
        "empty_rows": int((P.sum(1) == 0).sum()),
    }
    return facts, per_class, labels_per_row(P)
