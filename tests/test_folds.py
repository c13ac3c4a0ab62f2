"""Fold invariants: coverage, determinism, per-class balance, rare classes, fold-file errors."""

import numpy as np
import pandas as pd
import pytest

from capfuse.data.folds import FoldsError, fold_class_counts, make_folds, rare_classes, read_folds, write_folds

K = 5
CLASS_IDS = [1, 2, 3, 4, 5, 6, 7, 19]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 500
    prevalence = np.array([0.6, 0.3, 0.15, 0.1, 0.05, 0.03, 0.02, 0.0])
    Y = (rng.random((n, len(prevalence))) < prevalence).astype(np.uint8)
    Y[:3, -1] = 1  # a rare class: 3 positives < K
    ids = [f"{i}.jpg" for i in range(n)]
    return ids, Y


@pytest.fixture(scope="module")
def folds(data):
    ids, Y = data
    return make_folds(ids, Y, k=K, seed=42)


def test_every_id_in_exactly_one_fold(data, folds):
    ids, _ = data
    assert list(folds.columns) == ["ImageID", "fold"]
    assert folds["ImageID"].tolist() == ids  # input order kept
    assert set(folds["fold"]) == set(range(K))
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 2


def test_same_seed_same_folds_other_seed_differs(data, folds):
    ids, Y = data
    pd.testing.assert_frame_equal(make_folds(ids, Y, k=K, seed=42), folds)
    assert not np.array_equal(make_folds(ids, Y, k=K, seed=7)["fold"], folds["fold"])


def test_per_class_balance(data, folds):
    _, Y = data
    counts = fold_class_counts(folds, Y, CLASS_IDS)
    assert list(counts.index) == [0, 1, 2, 3, 4, "total"]
    assert list(counts.columns) == CLASS_IDS
    np.testing.assert_array_equal(counts.loc["total"].to_numpy(), Y.sum(0))
    np.testing.assert_array_equal(counts.iloc[:K].sum(axis=0).to_numpy(), Y.sum(0))
    for c in CLASS_IDS:
        total = counts.loc["total", c]
        if total >= 2 * K:
            per_fold = counts.loc[list(range(K)), c].to_numpy()
            assert np.abs(per_fold - total / K).max() <= max(2, 0.2 * total / K), (c, per_fold)


def test_rare_classes(data):
    _, Y = data
    # Class 19 has 3 positives; with 500 rows and prevalence 0.02, class 7 has about 10.
    assert rare_classes(Y, CLASS_IDS, K) == [19]
    assert rare_classes(Y, CLASS_IDS, 4) == [19]
    assert rare_classes(Y, CLASS_IDS, 3) == []


def test_make_folds_errors(data):
    ids, Y = data
    with pytest.raises(ValueError, match="k must be"):
        make_folds(ids, Y, k=1)
    with pytest.raises(ValueError, match="cannot fill"):
        make_folds(ids[:3], Y[:3], k=5)
    with pytest.raises(ValueError, match="duplicate"):
        make_folds(["a", "b", "a"], Y[:3], k=2)
    with pytest.raises(ValueError, match="shape"):
        make_folds(ids, Y[:10], k=5)


def test_write_read_roundtrip_in_any_order(tmp_path, data, folds):
    ids, _ = data
    path = write_folds(folds, tmp_path / "folds" / "demo.csv")
    assert path.read_text().splitlines()[0] == "ImageID,fold"
    back = read_folds(path, ids)
    np.testing.assert_array_equal(back, folds["fold"].to_numpy())
    shuffled = list(reversed(ids))
    np.testing.assert_array_equal(read_folds(path, shuffled), folds["fold"].to_numpy()[::-1])
    assert [p.name for p in path.parent.iterdir()] == ["demo.csv"]  # no temporary file left


def _write(tmp_path, rows: str):
    path = tmp_path / "bad.csv"
    path.write_text("ImageID,fold\n" + rows)
    return path


@pytest.mark.parametrize(
    "rows, ids, message",
    [
        ("a,0\nb,1\n", ["a", "b", "c"], "no fold"),  # an id missing
        ("a,0\nb,1\nc,0\nz,1\n", ["a", "b", "c"], "not in the data"),  # an unknown id
        ("a,0\nb,1\nb,1\n", ["a", "b"], "more than once"),
        ("a,0\nb,x\nc,1\n", ["a", "b", "c"], "not integers"),
        ("a,0\nb,1.5\nc,1\n", ["a", "b", "c"], "not integers"),
        ("a,0\nb,-1\nc,1\n", ["a", "b", "c"], "outside 0..1"),
        ("a,0\nb,2\nc,0\n", ["a", "b", "c"], r"folds \[1\] hold no rows"),
    ],
)
def test_read_folds_errors_name_the_file(tmp_path, rows, ids, message):
    path = _write(tmp_path, rows)
    with pytest.raises(FoldsError, match=message) as err:
        read_folds(path, ids)
    assert str(path) in str(err.value)


def test_read_folds_with_k(tmp_path):
    path = _write(tmp_path, "a,0\nb,2\nc,1\n")
    np.testing.assert_array_equal(read_folds(path, ["c", "b", "a"], k=3), [1, 2, 0])
    with pytest.raises(FoldsError, match="outside 0..1"):
        read_folds(path, ["a", "b", "c"], k=2)


def test_read_folds_missing_file_or_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_folds(tmp_path / "nope.csv", ["a"])
    path = tmp_path / "cols.csv"
    path.write_text("ImageID,split\na,0\n")
    with pytest.raises(FoldsError, match="missing column"):
        read_folds(path, ["a"])
