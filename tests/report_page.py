"""The run report's page read back as data: every <table> by section, and a check that each
number on it equals the run's own files (or a recount of them done here, with scikit-learn),
never the report's own ``views`` that computed it."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support


class _Tables(HTMLParser):
    """Every <table> of the page as (section id, header, rows of cell text), in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[str], list[list[str]]]] = []
        self.notes: dict[str, list[str]] = {}
        self._section, self._row, self._cell, self._in_note = "", None, None, False

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self._section = dict(attrs).get("id", "")
        elif tag == "table":
            self.tables.append((self._section, [], []))
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "p":
            self._in_note, self._cell = True, []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            _, header, rows = self.tables[-1]
            (rows if header else header).extend([self._row] if header else self._row)
            self._row = None
        elif tag == "p" and self._in_note:
            self.notes.setdefault(self._section, []).append("".join(self._cell))
            self._in_note, self._cell = False, None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def page_tables(page: str) -> tuple[dict[str, list[pd.DataFrame]], dict[str, list[str]]]:
    parser = _Tables()
    parser.feed(page)
    out: dict[str, list[pd.DataFrame]] = {}
    for section, header, rows in parser.tables:
        out.setdefault(section, []).append(pd.DataFrame(rows, columns=header))
    return out, parser.notes


def _num(cell: str) -> float:
    return float("nan") if cell in ("–", "") else float(cell)


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    return np.array([_num(c) for c in frame[name]])


def _facts(frame: pd.DataFrame) -> dict[str, str]:
    return dict(zip(frame.iloc[:, 0], frame["value"]))


def check_page_numbers(page: str, root: Path, data: Path) -> None:
    """Each number the page shows equals the run's own file, or a recount of it done here."""
    from capfuse.data.csvio import read_split
    from capfuse.ensemble.decision import apply_threshold
    from capfuse.submission import read_submission
    from capfuse.utils.io import read_json

    tables, notes = page_tables(page)
    runs, ens = root / "runs" / data.name, root / "runs" / data.name / "ensemble"
    rows, _ = read_split(data / "train.csv", "train")
    ids = sorted({c for r in rows for c in r.labels} | set(pd.read_csv(data / "classes.csv")["id"]))
    Y = np.array([[c in r.labels for c in ids] for r in rows], np.uint8)
    train_ids = [r.image_id for r in rows]

    # Data: the validator's own summary.
    summary = read_json(runs / "validation.json")["summary"]
    facts = _facts(tables["data"][0])
    assert int(facts["train rows"]) == summary["train_rows"] == len(rows)
    assert int(facts["train rows quarantined"]) == summary["train_quarantined"]
    assert int(facts["test rows (all kept)"]) == summary["test_rows"]
    assert int(facts["classes"]) == len(ids)
    assert float(facts["labels per train row (mean)"]) == pytest.approx(Y.sum(1).mean(), abs=5e-4)

    # Fold balance: each class's rows per fold, recounted from the fold file.
    folds = pd.read_csv(root / "folds" / f"{data.name}.csv", dtype={"ImageID": str}).set_index("ImageID")
    fold = folds.loc[train_ids, "fold"].to_numpy()
    balance = tables["folds"][0]
    assert [int(i) for i in balance["id"]] == ids
    for k in range(fold.max() + 1):
        assert _column(balance, f"fold {k}").tolist() == Y[fold == k].sum(0).tolist()
    assert _column(balance, "total").tolist() == Y.sum(0).tolist()

    # Base models: the leaderboard, row by row.
    board = pd.read_csv(runs / "leaderboard.csv").set_index("model")
    shown = tables["models"][0].set_index("model")
    assert sorted(shown.index) == sorted(board.index)
    for col in shown.columns:
        np.testing.assert_allclose(
            _column(shown, col), board.loc[shown.index, col].to_numpy(float), atol=5.1e-5, err_msg=col
        )

    # Per class: the kept OOF probabilities cut at the used thresholds, scored here with sklearn.
    cut, stacked = read_json(ens / "thresholds.json"), read_json(ens / "stack.json")
    oof = pd.read_csv(ens / "oof_probs.csv", dtype={"ImageID": str}).set_index("ImageID").loc[train_ids]
    P = oof[[str(c) for c in ids]].to_numpy(float)
    used = (
        cut["global"]["threshold"] if cut["kind"] == "global" else [cut["per_class"]["thresholds"][str(c)] for c in ids]
    )
    pred = apply_threshold(P, np.asarray(used), **cut["rule"]).astype(bool)
    per_class = tables["per-class"][0]
    assert [int(i) for i in per_class["id"]] == ids
    assert _column(per_class, "support").tolist() == Y.sum(0).tolist()
    assert _column(per_class, "predicted").tolist() == pred.sum(0).tolist()
    assert _column(per_class, "tp").tolist() == (pred & Y.astype(bool)).sum(0).tolist()
    _, recall, f1, _ = precision_recall_fscore_support(Y, pred, average=None, zero_division=0)
    np.testing.assert_allclose(_column(per_class, "recall"), recall, atol=5.1e-4)
    np.testing.assert_allclose(_column(per_class, "f1"), f1, atol=5.1e-4)
    ap = [average_precision_score(Y[:, j], P[:, j]) for j in range(len(ids))]
    np.testing.assert_allclose(_column(per_class, "ap"), ap, atol=5.1e-4)

    # Thresholds: thresholds.json, and the kind it says is used.
    thr = tables["thresholds"][0].set_index("thresholds")
    for kind, key in (("global", "global"), ("per-class", "per_class")):
        for col in ("in_sample", "nested", "gap"):
            assert _num(thr.loc[kind, col]) == pytest.approx(cut[key][col], abs=5.1e-5), (kind, col)
        assert thr.loc[kind, "used"] == str(cut["kind"] == key)

    # Stacking: stack.json's candidates and the one it kept.
    stack = tables["stacking"][0].set_index("candidate")
    assert sorted(stack.index) == sorted(stacked["candidates"])
    for cand, score in stacked["candidates"].items():
        for col in ("cv_mean_f1", "nested_mean_f1", "cv_map", "threshold"):
            assert _num(stack.loc[cand, col]) == pytest.approx(score[col], abs=5.1e-5), (cand, col)
        assert stack.loc[cand, "kept"] == str(cand == stacked["chosen"])
    if "weighted_blend" in stacked["candidates"]:
        weights = tables["stacking"][1].set_index("model")
        for model, w in stacked["candidates"]["weighted_blend"]["weights"].items():
            assert _num(weights.loc[model, "weight"]) == pytest.approx(w, abs=5.1e-4)

    # Submission: the CSV recounted, and scored here against the demo's answer key.
    sub = read_submission(root / "submissions" / f"{data.name}-latest.csv")
    labels = [[int(x) for x in s.split()] for s in sub["Labels"]]
    S = np.array([[c in row for c in ids] for row in labels], np.uint8)
    truth = pd.read_csv(data / "test_labels.csv", dtype=str).set_index("ImageID").loc[sub["ImageID"], "Labels"]
    T = np.array([[str(c) in s.split() for c in ids] for s in truth], np.uint8)
    facts = _facts(tables["submission"][0])
    assert int(facts["rows"]) == len(sub)
    assert float(facts["labels per row (mean)"]) == pytest.approx(S.sum(1).mean(), abs=5e-4)
    assert int(facts["rows without a label"]) == int((S.sum(1) == 0).sum())
    assert facts["second level"] == stacked["chosen"] and facts["thresholds"] == cut["kind"]
    test_f1 = next(v for k, v in facts.items() if k.startswith("test mean F1"))
    assert float(test_f1) == pytest.approx(f1_score(T, S, average="samples", zero_division=0), abs=5e-6)
    shares = tables["submission"][1]
    assert [int(i) for i in shares["id"]] == ids
    assert _column(shares, "predicted_rows").tolist() == S.sum(0).tolist()
    np.testing.assert_allclose(_column(shares, "train_prior"), Y.mean(0), atol=5.1e-4)
