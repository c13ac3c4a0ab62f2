"""Pseudo-label rounds: class-aware selection, the ramp, masked entries, and the provenance check."""

import numpy as np
import pytest
import torch

from capfuse.models.net import NetModel
from capfuse.training.pseudo import (
    ProvenanceError,
    PseudoSettings,
    PseudoSource,
    PseudoTargets,
    check_provenance,
    folds_sha,
    propagate,
    provenance,
    pseudo_targets,
    ramp,
    rank_blend,
    select,
)
from capfuse.utils.io import write_json

FOLDS = np.array([0, 1, 2, 0, 1, 2])
SHA = folds_sha(FOLDS)


def test_selection_follows_each_class_prior_and_masks_the_middle():
    rng = np.random.default_rng(0)
    n = 1000
    # Class 0 is common with high scores, class 1 rare with scores that are all low (badly
    # calibrated): one global cut would give class 1 no positive at all.
    probs = np.stack([rng.uniform(0.3, 1.0, n), rng.uniform(0.0, 0.2, n)], axis=1)
    prior = np.array([0.5, 0.04])
    s = PseudoSettings(pos_keep=0.5, neg_keep=0.8)
    targets, mask, cuts = select(probs, prior, s)
    n_pos = ((mask == 1) & (targets == 1)).sum(0)
    n_neg = ((mask == 1) & (targets == 0)).sum(0)
    assert n_pos.tolist() == [250, 20]  # pos_keep x prior x n
    assert n_neg.tolist() == [400, 768]  # neg_keep x (1 - prior) x n
    # The kept positives are the most confident rows of their class, the negatives the least.
    for j in range(2):
        pos = probs[(mask[:, j] == 1) & (targets[:, j] == 1), j]
        neg = probs[(mask[:, j] == 1) & (targets[:, j] == 0), j]
        middle = probs[mask[:, j] == 0, j]
        assert pos.min() >= middle.max() >= middle.min() >= neg.max()
        assert cuts["positive_cutoff"][j] == pytest.approx(pos.min())
    assert cuts["positive_cutoff"][1] < 0.2 < cuts["positive_cutoff"][0]  # class-aware, not one global cut


def test_soft_targets_keep_the_producers_probabilities():
    probs = np.array([[0.9], [0.6], [0.4], [0.05]])
    targets, mask, _ = select(probs, np.array([0.5]), PseudoSettings(pos_keep=0.5, neg_keep=0.5, soft=True))
    assert mask[:, 0].tolist() == [1, 0, 0, 1]
    np.testing.assert_allclose(targets[[0, 3], 0], [0.9, 0.05], rtol=1e-6)


def test_ramp_grows_linearly_then_holds():
    assert [ramp(e, 4) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert ramp(0, 0) == 1.0
    p = PseudoTargets(rows=np.arange(2), targets=np.zeros((2, 1)), mask=np.ones((2, 1)), weight=0.5, ramp_epochs=2)
    assert [p.weight_at(e) for e in range(3)] == [0.25, 0.5, 0.5]


def test_provenance_accepts_only_the_producer_that_held_out_the_fold():
    good = provenance(1, 2, "m", {"fold": 2, "folds_sha256": SHA}, SHA)
    check_provenance(good, 2, SHA)
    saw_it = provenance(1, 2, "m", {"fold": 0, "folds_sha256": SHA}, SHA)  # fold 0's model trained on fold 2
    with pytest.raises(ProvenanceError, match="trained on fold 2's labels"):
        check_provenance(saw_it, 2, SHA)
    with pytest.raises(ProvenanceError, match="recorded for fold 2, not 1"):
        check_provenance(good, 1, SHA)
    other_folds = provenance(1, 2, "m", {"fold": 2, "folds_sha256": "x" * 64}, SHA)
    with pytest.raises(ProvenanceError, match="another fold file"):
        check_provenance(other_folds, 2, SHA)


def test_trainer_refuses_pseudo_labels_from_a_model_that_saw_the_fold(tmp_path):
    """Swap two folds' producers, as a bug in a round would: the check must catch it."""
    producer = tmp_path / "m"
    n_train, n_test, c = len(FOLDS), 4, 3
    for k in range(3):
        (producer / f"fold{k}").mkdir(parents=True)
        np.save(producer / f"fold{k}" / "test_logits.npy", np.zeros((n_test, c), np.float32))
        write_json(producer / f"fold{k}" / "done.json", {"fold": k, "folds_sha256": SHA})
    src = PseudoSource("m", producer, PseudoSettings(rounds=1), 1)
    Y = np.eye(c, dtype=np.uint8)[FOLDS]
    ok = np.ones(n_test, bool)
    p = pseudo_targets(src, 1, Y, np.flatnonzero(FOLDS != 1), n_train, ok, SHA)
    assert p.rows.tolist() == [6, 7, 8, 9] and p.info["producer_held_out_fold"] == 1
    (producer / "fold0" / "done.json").rename(tmp_path / "tmp.json")
    (producer / "fold1" / "done.json").rename(producer / "fold0" / "done.json")
    (tmp_path / "tmp.json").rename(producer / "fold1" / "done.json")
    with pytest.raises(ProvenanceError, match="held out fold 0"):
        pseudo_targets(src, 1, Y, np.flatnonzero(FOLDS != 1), n_train, ok, SHA)


def _features(n: int, n_pool: int, c: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    Y = (rng.random((n + n_pool, c)) < 0.4).astype(np.uint8)
    x = Y @ rng.normal(size=(c, 8)) + rng.normal(scale=0.5, size=(n + n_pool, 8))
    orig = {"img_pooled": x.astype(np.float16), "img_tokens": x[:, None, :].astype(np.float16)}
    feats = {"views": {"orig": orig}, "n_test": n_pool, "dims": {"img_pooled": 8, "img_tokens": 8}}
    return feats, Y[:n], Y[n:]


def _model(epochs=2):
    return NetModel(
        {
            "kind": "net",
            "inputs": ["image"],
            "image_head": {"kind": "mlp", "hidden": 8, "dropout": 0.0},
            "train": {"epochs": epochs, "batch_size": 16, "patience": 10, "flip_p": 0.0, "tta": False},
        },
        seed=0,
    )


def test_fully_masked_pseudo_rows_change_nothing(tmp_path):
    """Masked entries add nothing to the loss or its gradient, whatever their targets say."""
    feats, Y, _ = _features(48, 16)
    tr, va = np.arange(36), np.arange(36, 48)
    rows = 48 + np.arange(16)
    runs = []
    for name, value in (("a", 0.0), ("b", 1.0)):
        pseudo = PseudoTargets(rows=rows, targets=np.full((16, 3), value, np.float32), mask=np.zeros((16, 3), np.uint8))
        torch.manual_seed(0)
        runs.append(_model().fit_fold(feats, Y, tr, va, fold_dir=tmp_path / name, pseudo=pseudo).val_logits)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_unmasked_pseudo_rows_do_train(tmp_path):
    feats, Y, pool_truth = _features(48, 64)
    tr, va = np.arange(36), np.arange(36, 48)
    outs = []
    for name, targets in (("truth", pool_truth), ("flipped", 1 - pool_truth)):
        pseudo = PseudoTargets(
            rows=48 + np.arange(64), targets=targets.astype(np.float32), mask=np.ones((64, 3), np.uint8), ramp_epochs=0
        )
        torch.manual_seed(0)
        outs.append(_model(epochs=4).fit_fold(feats, Y, tr, va, fold_dir=tmp_path / name, pseudo=pseudo).val_logits)
    assert not np.allclose(outs[0], outs[1])
    # Right pseudo-labels help more than wrong ones on the held-out rows.
    err = [np.abs((o > 0) - Y[va]).mean() for o in outs]
    assert err[0] < err[1]


def test_label_subset_is_stratified_and_keeps_every_class():
    from capfuse.training.pseudo import label_subset

    rng = np.random.default_rng(0)
    Y = (rng.random((2000, 6)) < [0.6, 0.3, 0.1, 0.05, 0.01, 0.002]).astype(np.uint8)
    Y[Y.sum(1) == 0, 0] = 1
    for ratio in (0.05, 0.1, 0.2):
        keep = label_subset(Y, ratio, seed=1)
        assert abs(keep.sum() - ratio * len(Y)) <= 6
        assert Y[keep].any(0).all()  # even the 0.2 % class, which 5 % of rows would likely miss
        # Each common class keeps about `ratio` of its positives.
        np.testing.assert_allclose(Y[keep, :3].sum(0) / Y[:, :3].sum(0), ratio, atol=0.03)
    assert label_subset(Y, 1.0).all()
    np.testing.assert_array_equal(label_subset(Y, 0.1, seed=3), label_subset(Y, 0.1, seed=3))
    with pytest.raises(ValueError, match="label ratio"):
        label_subset(Y, 0.0)


def _clusters(rng, n_per: int, centres: np.ndarray, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([c + noise * rng.standard_normal((n_per, centres.shape[1])) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n_per)


def test_propagation_spreads_few_labels_along_the_data_and_only_from_its_seeds():
    rng = np.random.default_rng(0)
    centres = np.eye(3, 8) * 3
    x, cluster = _clusters(rng, 100, centres)
    Y = np.eye(3)[cluster]
    seeds = np.concatenate([rng.choice(np.flatnonzero(cluster == c), 2, replace=False) for c in range(3)])
    scores = propagate(x, seeds, Y[seeds], k=8)
    # Six labels are enough: every unlabelled row ranks its own cluster's class first.
    rest = np.setdiff1d(np.arange(len(x)), seeds)
    assert (scores[rest].argmax(1) == cluster[rest]).mean() > 0.97
    # A class with no seed gets no score at all: the graph knows only the labels it is given.
    no_class2 = seeds[cluster[seeds] != 2]
    assert np.allclose(propagate(x, no_class2, Y[no_class2], k=8)[:, 2], 0.0)


def test_rank_blend_orders_by_both_scores_and_select_keeps_the_producers_probabilities():
    probs = np.array([[0.9], [0.8], [0.7], [0.1]])
    graph = np.array([[0.0], [5.0], [4.0], [3.0]])  # another scale entirely
    assert np.allclose(rank_blend(probs, graph, 0.0)[:, 0], [1, 2 / 3, 1 / 3, 0])
    mixed = rank_blend(probs, graph, 0.5)
    assert mixed[1, 0] > mixed[0, 0]  # row 1 is second for the producer and first for the graph
    targets, mask, _ = select(probs, np.array([0.25]), PseudoSettings(pos_keep=1.0, neg_keep=0.34, soft=True), mixed)
    assert mask[:, 0].tolist() == [0, 1, 0, 1]
    assert targets[1, 0] == pytest.approx(0.8) and targets[3, 0] == pytest.approx(0.1)


def test_alignment_scores_rank_the_pool_when_asked(tmp_path):
    """``pseudo.scores: align``: the producer's alignment scores order the pool, its logits give the targets."""
    producer = tmp_path / "lq"
    fold_dir = producer / "fold0"
    fold_dir.mkdir(parents=True)
    write_json(producer / "fingerprint.json", {"fingerprint": "x"})
    write_json(fold_dir / "done.json", {"fold": 0, "folds_sha256": SHA})
    logits = np.array([[3.0], [2.0], [1.0], [-3.0]], np.float32)  # ranks the pool 0, 1, 2, 3
    align = np.array([[0.1], [0.2], [0.9], [0.0]], np.float32)  # ranks it 2, 1, 0, 3
    np.save(fold_dir / "test_logits.npy", logits)
    Y = np.array([[1], [0], [1], [0], [1], [0]], np.uint8)
    tr = np.flatnonzero(FOLDS != 0)
    settings = dict(pos_keep=0.5, neg_keep=0.5, soft=True)
    src = PseudoSource("lq", producer, PseudoSettings(**settings, scores="align"), 1)
    with pytest.raises(ValueError, match="label-query"):
        pseudo_targets(src, 0, Y, tr, len(FOLDS), np.ones(4, bool), SHA)
    np.save(fold_dir / "test_align.npy", align)
    by_align = pseudo_targets(src, 0, Y, tr, len(FOLDS), np.ones(4, bool), SHA)
    by_logits = pseudo_targets(
        PseudoSource("lq", producer, PseudoSettings(**settings), 1), 0, Y, tr, len(FOLDS), np.ones(4, bool), SHA
    )
    # Prior 0.5 of 4 rows: one positive kept. The logits pick row 0, the alignment row 2.
    pos = lambda t: np.flatnonzero((t.mask[:, 0] == 1) & (t.targets[:, 0] >= 0.5))  # noqa: E731
    assert pos(by_logits).tolist() == [0] and pos(by_align).tolist() == [2]
    assert by_align.targets[2, 0] == pytest.approx(1 / (1 + np.exp(-1.0)))  # the producer's probability
    assert by_align.info["scores"] == "align"
