"""Out-of-fold logits that their own labels never steer.

For every model kind the trainer runs twice on the same features: once with the true labels,
once with fold 0's label sets shuffled among fold 0's rows. Fold 0's OOF logits must be
bit-for-bit the same: no epoch choice, early stop, logit calibration, class prior, context map
or pseudo-label read them. The other folds train on fold 0's rows, so their logits may (and do)
move, which shows the shuffle is real. Label-ratio mode gets the same test for the rows meant to be
unlabelled.
"""

from __future__ import annotations

import numpy as np
import pytest

import capfuse.training.cv as trainer_mod
from capfuse.models.net import NetModel, inner_split
from capfuse.training.cv import train_model
from capfuse.training.pseudo import PseudoSettings, PseudoSource

C, N, N_TEST, K = 4, 120, 32, 3


@pytest.fixture(autouse=True)
def no_encoder_costs(monkeypatch):
    # The cost report loads full backbones; these tests are about logits only.
    monkeypatch.setattr(trainer_mod, "light_report", lambda cfg, params, ms=0.0: {})


def dataset(seed: int = 0) -> tuple[dict, np.ndarray, np.ndarray]:
    """Features that carry the labels for both model kinds, and K folds."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    Yall = (rng.random((N + N_TEST, C)) < 0.35).astype(np.uint8)
    Yall[Yall.sum(1) == 0, 0] = 1
    W_img, W_cap = rng.normal(size=(C, 8)), rng.normal(size=(C, 6))
    img = (Yall @ W_img)[:, None, :] + rng.normal(scale=1.0, size=(N + N_TEST, 4, 8))
    cap = (Yall @ W_cap)[:, None, :] + rng.normal(scale=1.0, size=(N + N_TEST, 5, 6))
    orig = {
        "img_tokens": img.astype(np.float32),
        "img_pooled": img.mean(1).astype(np.float32),
        "cap_tokens": cap.astype(np.float32),
        "cap_pooled": cap.mean(1).astype(np.float32),
        "cap_mask": np.ones((N + N_TEST, 5), np.uint8),
    }
    pooled = np.concatenate([orig["img_pooled"], orig["cap_pooled"]], 1)
    feats = {
        "views": {"orig": orig, "hflip": dict(orig, img_tokens=img[:, ::-1].astype(np.float32).copy())},
        "n_test": N_TEST,
        "dims": {"img_pooled": 8, "img_tokens": 8, "cap_pooled": 6, "cap_tokens": 6},
        "image_train": pooled[:N, :8],
        "image_test": pooled[N:, :8],
        "caption_train": sp.csr_matrix(pooled[:N, 8:]),
        "caption_test": sp.csr_matrix(pooled[N:, 8:]),
        "class_names": [f"thing {c}" for c in range(C)],
        "class_ids": list(range(1, C + 1)),
    }
    return feats, Yall[:N], np.arange(N) % K


def shuffled_in_fold(Y: np.ndarray, folds: np.ndarray, fold: int = 0, seed: int = 1) -> np.ndarray:
    rows = np.flatnonzero(folds == fold)
    Y2 = Y.copy()
    Y2[rows] = Y[np.random.default_rng(seed).permutation(rows)]
    assert (Y2 != Y).any()
    return Y2


def net_cfg(**over) -> dict:
    cfg = {
        "kind": "net",
        "inputs": ["image", "caption"],
        "seed": 3,
        "image_head": {"kind": "mlp", "hidden": 16, "dropout": 0.1},
        "caption_head": {"kind": "mlp", "hidden": 16, "dropout": 0.1},
        "fusion": {"logit_fusion": True, "cross_attention": False, "d_model": 8, "heads": 2},
        "train": {"epochs": 4, "batch_size": 32, "lr": 3e-3, "patience": 2, "tta": True},
    }
    for key, value in over.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


LINEAR = {"kind": "linear", "inputs": ["image", "caption"], "seed": 3, "C": 0.5}
CONFIGS = {
    "linear": LINEAR,
    "net_inner": net_cfg(),
    "net_refit": net_cfg(train={"early_stop": "refit"}),
    "net_no_stop": net_cfg(train={"early_stop": "none", "epochs": 3}),
    "net_stop_on_loss": net_cfg(train={"stop_metric": "loss"}),
    "net_calibrated": net_cfg(train={"calibrate": True, "loss": {"name": "asl"}}),
    "net_weight_average": net_cfg(train={"ema_halflife": 1.0}),  # the stopping rows judge the average
    "fusion_label_query": net_cfg(fusion={"label_query": {"enabled": True}}, aux={"align_weight": 0.1}),
    "fusion_contexts": net_cfg(aux={"context_weight": 0.2, "n_contexts": 2}),
}


@pytest.fixture
def fake_prompts(monkeypatch):
    # Label queries start from the prompts' text embeddings; fixed vectors stand in for MiniLM.
    emb = np.random.default_rng(7).normal(size=(C, 6)).astype(np.float32)
    monkeypatch.setattr(NetModel, "class_text", lambda self, feats, n: emb)


def train(tmp_path, name: str, cfg: dict, Y, folds, feats, **kw) -> dict:
    out = tmp_path / name
    train_model(
        name,
        cfg,
        out_dir=out,
        train_ids=[f"{i}.jpg" for i in range(N)],
        test_ids=[f"t{i}.jpg" for i in range(N_TEST)],
        Y=Y,
        folds=folds,
        class_ids=list(range(1, C + 1)),
        feats=feats,
        data_fingerprint="synthetic",
        **kw,
    )
    return {f: np.load(out / f"fold{f}" / "val_logits.npy") for f in range(K)}


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_shuffling_a_folds_labels_leaves_its_oof_logits_unchanged(tmp_path, kind, fake_prompts):
    feats, Y, folds = dataset()
    cfg = CONFIGS[kind]
    true = train(tmp_path, "true", cfg, Y, folds, feats)
    shuffled = train(tmp_path, "shuffled", cfg, shuffled_in_fold(Y, folds), folds, feats)
    np.testing.assert_array_equal(true[0], shuffled[0])
    # Fold 1 trains on fold 0's (shuffled) labels: its logits move, so the shuffle was seen.
    assert not np.array_equal(true[1], shuffled[1])


def test_pseudo_label_rounds_keep_the_held_out_fold_blind(tmp_path):
    feats, Y, folds = dataset()
    settings = PseudoSettings.from_config({"rounds": 1, "pos_keep": 0.6, "neg_keep": 0.9, "ramp_epochs": 1})
    cfg = net_cfg()
    runs = {}
    for tag, labels in (("true", Y), ("shuffled", shuffled_in_fold(Y, folds))):
        train(tmp_path, f"{tag}_r0", cfg, labels, folds, feats)
        src = PseudoSource(f"{tag}_r0", tmp_path / f"{tag}_r0", settings, 1)
        round_cfg = {**cfg, "pseudo_round": 1, "pseudo": {"rounds": 1}}
        runs[tag] = train(tmp_path, f"{tag}_r1", round_cfg, labels, folds, feats, pseudo_from=src)
    np.testing.assert_array_equal(runs["true"][0], runs["shuffled"][0])
    assert not np.array_equal(runs["true"][1], runs["shuffled"][1])


def test_label_ratio_mode_never_reads_the_labels_meant_to_be_unlabelled(tmp_path):
    feats, Y, folds = dataset()
    labelled = np.random.default_rng(2).random(N) < 0.5
    hidden = np.flatnonzero(~labelled)
    Y2 = Y.copy()
    Y2[hidden] = Y[np.random.default_rng(3).permutation(hidden)]
    assert (Y2 != Y).any()
    true = train(tmp_path, "true", net_cfg(), Y, folds, feats, labelled=labelled)
    moved = train(tmp_path, "moved", net_cfg(), Y2, folds, feats, labelled=labelled)
    for f in range(K):  # no fold reads an unlabelled row's labels: not to train, not to stop
        np.testing.assert_array_equal(true[f], moved[f])


def test_inner_split_is_stratified_reproducible_and_inside_the_training_rows():
    rng = np.random.default_rng(0)
    Y = (rng.random((400, 5)) < 0.3).astype(np.uint8)
    tr = np.flatnonzero(np.arange(400) % 5 != 0)
    fit, stop = inner_split(Y, tr, 0.15, seed=4)
    assert len(stop) == 48 and len(fit) + len(stop) == len(tr)
    assert set(fit) | set(stop) == set(tr) and not set(fit) & set(stop)
    np.testing.assert_allclose(Y[stop].mean(0), Y[tr].mean(0), atol=0.03)  # every class in proportion
    fit2, stop2 = inner_split(Y, tr, 0.15, seed=4)
    np.testing.assert_array_equal(stop, stop2)
    for n in range(2, 12):  # a handful of rows (label-ratio mode on a tiny set) still splits
        fit, stop = inner_split(Y, tr[:n], 0.15, seed=4)
        assert len(stop) >= 1 and len(fit) + len(stop) == n
    with pytest.raises(ValueError, match="inner_frac"):
        inner_split(Y, tr[:1], 0.15, seed=4)


def test_unknown_early_stop_mode_is_refused():
    from capfuse.models.net import TrainSettings

    with pytest.raises(ValueError, match="early_stop"):
        TrainSettings.from_config({"early_stop": "heldout"})


def test_refit_trains_the_inner_epoch_count_on_all_training_rows(tmp_path):
    feats, Y, folds = dataset()
    out = NetModel(net_cfg(train={"early_stop": "refit", "epochs": 4}), seed=3).fit_fold(
        feats, Y, np.flatnonzero(folds != 0), np.flatnonzero(folds == 0), fold_dir=tmp_path / "fold0"
    )
    inner = out.info["inner"]
    assert out.info["epochs_run"] == inner["best_epoch"] + 1
    assert out.info["n_fit"] == inner["n_fit"] + inner["n_stop"] == int((folds != 0).sum())


def test_the_loss_stopping_score_is_minus_the_mean_binary_cross_entropy():
    from sklearn.metrics import log_loss

    from capfuse.models.net import val_score

    rng = np.random.default_rng(0)
    y = (rng.random((30, 4)) < 0.3).astype(np.uint8)
    logits = rng.normal(scale=2.0, size=(30, 4)).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    expected = -np.mean([log_loss(y[:, c], p[:, c], labels=[0, 1]) for c in range(4)])
    assert val_score(y, logits, "loss") == pytest.approx(expected, rel=1e-6)
    assert val_score(y, 20.0 * (2.0 * y - 1.0), "loss") > val_score(y, logits, "loss")  # confident and right wins
