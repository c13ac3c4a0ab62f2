"""The linear models' joint one-vs-rest solver: sklearn's optimum, every class in one run."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression

from capfuse.config import ConfigError, resolve_model
from capfuse.models.linear import LinearModel
from capfuse.models.logistic import Design, fit_ovr, logits
from capfuse.nn.fusion import CapFuseNet
from capfuse.nn.losses import BCELoss


def _problem(n=300, p=12, q=40, k=4, seed=0):
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n, p)).astype(np.float32)
    sparse = sp.random(n, q, density=0.1, random_state=seed, format="csr", dtype=np.float64)
    W = rng.normal(size=(p + q, k))
    Z = np.hstack([dense, sparse.toarray()]) @ W + rng.normal(scale=0.5, size=(n, k))
    return Design(dense, sparse), (Z > 0).astype(np.uint8)


@pytest.mark.parametrize("blocks", ["dense", "sparse", "both"])
def test_joint_fit_reaches_sklearns_per_class_optimum(blocks):
    X, Y = _problem()
    X = Design(X.dense if blocks != "sparse" else None, X.sparse if blocks != "dense" else None)
    fit = fit_ovr(X, Y, C=0.5, max_iter=2000, tol=1e-8)
    assert fit.converged and fit.coef.shape == (Y.shape[1], X.n_cols)
    matrix = (
        X.dense if X.sparse is None else np.hstack([X.dense, X.sparse.toarray()]) if X.dense is not None else X.sparse
    )
    for c in range(Y.shape[1]):
        clf = LogisticRegression(C=0.5, max_iter=2000, tol=1e-8).fit(matrix, Y[:, c])
        np.testing.assert_allclose(fit.coef[c], clf.coef_[0], atol=2e-3)
        np.testing.assert_allclose(fit.intercept[c], clf.intercept_[0], atol=2e-3)
        np.testing.assert_allclose(
            logits(X, fit.coef[c : c + 1], fit.intercept[c : c + 1])[:, 0], clf.decision_function(matrix), atol=5e-3
        )


def test_design_checks_its_blocks():
    with pytest.raises(ValueError, match="dense block, a sparse block or both"):
        Design(None, None)
    with pytest.raises(ValueError, match="rows"):
        Design(np.zeros((3, 2), np.float32), sp.csr_matrix((4, 2)))


def test_unknown_solver_is_refused():
    with pytest.raises(ConfigError, match="solver = 'saga'"):
        resolve_model({"kind": "linear", "solver": "saga"})


def _fold(solver: str):
    rng = np.random.default_rng(3)
    n, n_test = 240, 60
    image = rng.normal(size=(n + n_test, 16)).astype(np.float32)
    Y = (image[:n, :5] + rng.normal(scale=0.7, size=(n, 5)) > 0.4).astype(np.uint8)
    Y[:, 4] = 0  # a class absent from the training rows: its prior, not a fit
    feats = {"image_train": image[:n], "image_test": image[n:], "n_test": n_test}
    model = LinearModel({"kind": "linear", "inputs": ["image"], "C": 0.1, "solver": solver}, seed=0)
    tr, va = np.arange(180), np.arange(180, n)
    return model.fit_fold(feats, Y, tr, va)


def test_linear_model_solvers_agree():
    joint, ovr = _fold("joint"), _fold("ovr")
    assert joint.info["converged"]
    # Both stop once every gradient entry is under 1e-4, from either side of the optimum: they
    # agree to what that tolerance leaves, not to the last bit.
    np.testing.assert_allclose(joint.val_logits, ovr.val_logits, atol=1e-2)
    np.testing.assert_allclose(joint.test_logits, ovr.test_logits, atol=1e-2)
    assert np.all(joint.val_logits[:, 4] == joint.val_logits[0, 4]) and joint.val_logits[0, 4] < -4


def test_plain_token_norm_keeps_no_scale_and_no_input_gradient():
    """token_norm_affine: false leaves the projections' norm without parameters, so backward
    stops at their Linear: nothing flows to the cached tokens' norm."""
    dims = {"img_pooled": 8, "cap_pooled": 6, "img_tokens": 8, "cap_tokens": 6}
    cfg = {"kind": "net", "inputs": ["image", "caption"], "fusion": {"d_model": 8, "heads": 2}}
    plain = CapFuseNet({**cfg, "fusion": {**cfg["fusion"], "token_norm_affine": False}}, dims, 3)
    affine = CapFuseNet(cfg, dims, 3)
    assert "xattn.img_proj.0.weight" in affine.state_dict()
    assert not any(key.startswith("xattn.img_proj.0.") for key in plain.state_dict())
    batch = {
        "img_pooled": torch.randn(4, 8),
        "cap_pooled": torch.randn(4, 6),
        "img_tokens": torch.randn(4, 5, 8),
        "cap_tokens": torch.randn(4, 7, 6),
        "cap_mask": torch.ones(4, 7, dtype=torch.bool),
        "targets": torch.ones(4, 3),
    }
    plain.loss_fn = BCELoss()
    plain(batch)["loss"].backward()
    assert plain.xattn.img_proj[1].weight.grad is not None


def test_the_linear_benchmark_times_every_thread_count_over_the_same_iterations():
    """``capfuse bench --only linear`` on a small design: one time per BLAS thread count, each
    compared with one thread's, and every figure reaches the results table."""
    from capfuse.bench.figures import figure_rows
    from capfuse.bench.linear import bench_linear, print_linear

    r = bench_linear(rows=300, rounds=1, iterations=2)
    assert "1 BLAS threads" in r["fit_s"] and all(s > 0 for s in r["fit_s"].values())
    assert set(r["speedup"]) == {f"{k.split()[0]} BLAS threads over 1" for k in r["fit_s"] if k != "1 BLAS threads"}
    figures = {row["figure"]: row["unit"] for row in figure_rows("linear", r)}
    assert figures["fit_s.1 BLAS threads"] == "s"
    print_linear(r)
