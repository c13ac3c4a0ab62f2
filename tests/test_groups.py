"""Grouped folds: near-duplicates found from vectors, kept in one fold, classes still balanced."""

import hashlib
import logging
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from capfuse.cli import main
from capfuse.config import ConfigError
from capfuse.config.schema import resolve
from capfuse.data.folds import GROUP, make_folds, make_group_folds, read_folds, read_groups, write_folds
from capfuse.data.groups import find_groups, group_folds, split_large
from capfuse.stages import folds as stage
from conftest import TINY_RUN_ARGS

K = 5
N_GROUPS, N_SINGLE = 60, 160  # planted groups of 2 to 5 copies, and rows with no copy
# sha256 of the fold file that make_folds + write_folds wrote for ``rows()`` before grouping
# existed (k=5, seed=42): folds.groups: none must keep writing exactly that file.
UNGROUPED_SHA256 = "38bbe296bca0e9a2af936f264e586b57a66e115f6f38e4bf6aa5a0239871ebac"


def rows(seed: int = 0):
    """Vectors with planted near-duplicates (a base vector plus small noise per copy), their
    true groups, ids and labels (copies share their labels, as copies of one image do)."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([rng.integers(2, 6, N_GROUPS), np.ones(N_SINGLE, np.int64)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    base = rng.normal(size=(len(sizes), 48)).astype(np.float32)
    labels = (rng.random((len(sizes), 6)) < [0.5, 0.3, 0.2, 0.1, 0.08, 0.05]).astype(np.uint8)
    vectors = base[truth] + 0.05 * rng.normal(size=(len(truth), 48)).astype(np.float32)
    order = rng.permutation(len(truth))  # copies are not neighbours in the file
    truth, vectors = truth[order], vectors[order]
    ids = [f"{i}.jpg" for i in range(len(truth))]
    return vectors, truth, ids, labels[truth]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = pd.DataFrame({"a": a, "b": b}).drop_duplicates()
    return pairs["a"].is_unique and pairs["b"].is_unique


def spanning(groups: np.ndarray, fold: np.ndarray) -> int:
    """Groups whose rows sit in more than one fold."""
    return int((pd.Series(fold).groupby(groups).nunique() > 1).sum())


def test_planted_duplicates_are_found_and_nothing_else():
    vectors, truth, _, _ = rows()
    found = find_groups(vectors, ratio=0.35, seed=0)
    assert same_partition(found.labels, truth)
    assert "the largest holds 5 rows" in found.summary()
    # Independent vectors (no copies): no group at all.
    alone = find_groups(np.random.default_rng(1).normal(size=(300, 48)), ratio=0.35, seed=0)
    assert (alone.sizes == 1).all()


def mirror(x: np.ndarray) -> np.ndarray:
    """A stand-in for a mirror image's vector: the dimensions swapped in pairs (its own inverse)."""
    return x.reshape(len(x), -1, 2)[:, :, ::-1].reshape(len(x), -1)


def test_a_mirrored_copy_is_found_through_the_mirror_view():
    """Copies stored mirrored are far from their sources as they are, and near once mirrored back."""
    vectors, truth, _, _ = rows()
    flipped_copy = np.zeros(len(truth), bool)
    for g in np.unique(truth):
        members = np.flatnonzero(truth == g)
        flipped_copy[members[1::2]] = True  # every second copy of a group is stored mirrored
    stored = np.where(flipped_copy[:, None], mirror(vectors), vectors)
    plain = find_groups(stored, ratio=0.35, seed=0)
    assert not same_partition(plain.labels, truth), "without the mirror view the flipped copies should stay apart"
    both = find_groups(stored, ratio=0.35, seed=0, mirrored=mirror(stored))
    assert same_partition(both.labels, truth)
    # Mirroring adds no link between images that are not copies.
    alone = np.random.default_rng(1).normal(size=(300, 48))
    assert (find_groups(alone, ratio=0.35, seed=0, mirrored=mirror(alone)).sizes == 1).all()
    with pytest.raises(ValueError, match="mirrored must match"):
        find_groups(stored, ratio=0.35, mirrored=stored[:10])


def test_rows_without_an_image_stay_alone():
    vectors, truth, _, _ = rows()
    vectors[:20] = 0.0  # zero vectors of unusable images would all match each other
    usable = np.ones(len(vectors), bool)
    usable[:20] = False
    labels = find_groups(vectors, usable, ratio=0.35, seed=0).labels
    assert len(np.unique(labels[:20])) == 20
    assert not np.isin(labels[:20], labels[20:]).any()


def test_no_group_spans_two_folds_and_classes_stay_balanced():
    _, truth, ids, Y = rows()
    folds = make_group_folds(ids, Y, truth, k=K, seed=42)
    assert list(folds.columns) == ["ImageID", "fold", GROUP]
    assert set(folds["fold"]) == set(range(K))
    assert spanning(truth, folds["fold"].to_numpy()) == 0
    per_fold = np.array([Y[folds["fold"] == f].sum(0) for f in range(K)])
    share = per_fold / Y.sum(0)
    assert np.abs(share - 1 / K).max() < 0.05, share.round(3)
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 0.05 * len(ids)


def test_ignoring_the_groups_splits_the_planted_duplicates():
    """The check above can fail: row folds over the same data put copies in several folds."""
    _, truth, ids, Y = rows()
    assert spanning(truth, make_folds(ids, Y, k=K, seed=42)["fold"].to_numpy()) > N_GROUPS // 2


def test_grouped_folds_are_deterministic_for_a_seed():
    _, truth, ids, Y = rows()
    first = make_group_folds(ids, Y, truth, k=K, seed=42)
    pd.testing.assert_frame_equal(make_group_folds(ids, Y, truth, k=K, seed=42), first)
    assert not np.array_equal(make_group_folds(ids, Y, truth, k=K, seed=7)["fold"], first["fold"])
    vectors = rows()[0]
    np.testing.assert_array_equal(find_groups(vectors, ratio=0.35).labels, find_groups(vectors, ratio=0.35).labels)


def test_none_writes_todays_fold_file_byte_for_byte(tmp_path):
    _, _, ids, Y = rows()
    path = write_folds(make_folds(ids, Y, k=K, seed=42), tmp_path / "f.csv")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == UNGROUPED_SHA256
    assert read_groups(path) is None


def test_all_single_groups_give_the_row_folds():
    _, _, ids, Y = rows()
    alone = np.arange(len(ids))
    grouped = make_group_folds(ids, Y, alone, k=K, seed=42)
    np.testing.assert_array_equal(grouped["fold"], make_folds(ids, Y, k=K, seed=42)["fold"])


def test_grouped_file_round_trips_and_is_readable_by_the_fold_reader(tmp_path):
    _, truth, ids, Y = rows()
    folds = make_group_folds(ids, Y, truth, k=K, seed=42)
    path = write_folds(folds, tmp_path / "f.csv")
    np.testing.assert_array_equal(read_folds(path, ids), folds["fold"])
    np.testing.assert_array_equal(read_groups(path).loc[ids], truth)
    broken = folds.assign(fold=np.arange(len(ids)) % K)
    with pytest.raises(ValueError, match="span more than one fold"):
        write_folds(broken, tmp_path / "g.csv")


def test_a_group_too_large_for_a_fold_is_dissolved_with_one_warning(caplog):
    vectors, _, ids, Y = rows()
    vectors[: len(ids) // 3] = vectors[0]  # a third of the rows are one image: more than 1/K
    labels, dissolved = split_large(find_groups(vectors, ratio=0.35).labels, len(ids) // K)
    assert dissolved == [len(ids) // 3]
    assert np.bincount(labels).max() <= len(ids) // K
    with pytest.raises(ValueError, match="more than 1/5"):
        make_group_folds(ids, Y, find_groups(vectors, ratio=0.35).labels, k=K)
    ds = SimpleNamespace(train_ids=ids, Y=Y, image_ok=np.ones(len(ids), bool))
    with caplog.at_level(logging.WARNING, logger="capfuse"):
        folds = stage.grouped_folds(resolve({"folds": {"groups": "auto"}}).folds, ds, vectors)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "more than 1/5" in warnings[0].getMessage()
    assert set(folds["fold"]) == set(range(K))


def test_greedy_assignment_keeps_each_group_whole():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 40, 200)
    fold = group_folds(rng.random((200, 4)) < 0.3, labels, K, seed=0)
    assert spanning(labels, fold) == 0


@pytest.mark.parametrize(
    "folds, key",
    [({"groups": "yes"}, "groups"), ({"groups": True}, "groups"), ({"group_ratio": 1.5}, "group_ratio")],
)
def test_schema_rejects_bad_values_naming_the_key(folds, key):
    with pytest.raises(ConfigError, match=rf"folds\.{key}"):
        resolve({"folds": folds})
    assert resolve({}).folds.groups == "none"


def test_a_kept_file_that_differs_from_the_config_is_named(tmp_path, caplog):
    _, truth, ids, Y = rows()
    path = write_folds(make_group_folds(ids, Y, truth, k=K, seed=42), tmp_path / "f.csv")
    fold = read_folds(path, ids)
    with caplog.at_level(logging.WARNING, logger="capfuse"):
        stage._check_kept(path, fold, resolve({"folds": {"groups": "none"}}).folds)
        stage._check_kept(path, fold, resolve({"folds": {"groups": "auto"}}).folds)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} keeps near-duplicate groups in one fold, config asks for folds.groups: none: kept (FORCE=1 rewrites)"
    ]


def test_the_stage_groups_from_the_cached_vectors_and_changes_no_fold_without_copies(tiny_run, tmp_path, caplog):
    """End to end on the tiny run: the vectors come from its feature cache (no image is read),
    its images have no copies, so the grouped file holds the same folds plus a group column."""
    run = tiny_run.copy(tmp_path / "run")
    before = pd.read_csv(run.root / "folds" / "tiny.csv")
    args = ["folds", "--data", str(run.data), "--root", str(run.root), "--config", str(run.config), "--quiet"]
    with caplog.at_level(logging.INFO, logger="capfuse"):
        assert main([*args, *TINY_RUN_ARGS, "--set", "folds.groups=auto", "--force"]) == 0
    after = pd.read_csv(run.root / "folds" / "tiny.csv")
    assert list(after.columns) == ["ImageID", "fold", GROUP]
    pd.testing.assert_frame_equal(after[["ImageID", "fold"]], before)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("folds: 80 groups over 80 rows; the largest holds 1 rows") for m in messages), messages
    assert not any("embed" in m and "wrote" in m for m in messages)  # a cache hit, nothing embedded
