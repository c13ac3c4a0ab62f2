"""One-vs-rest logistic regression with every class in one L-BFGS run.

Each class's problem is sklearn's ``LogisticRegression(solver="lbfgs")`` objective: the mean
log-loss over the rows plus ``||w||^2 / (2 C n)``, the intercept unpenalised. The classes share
no parameter, so their sum has each class's own optimum, and a gradient below ``tol`` in every
coordinate (L-BFGS's stopping test) is the per-class test sklearn applies. What changes is the
cost: one pass over the design matrix serves every class (an ``[N, D] x [D, C]`` product instead
of C matrix-vector products), and the image block stays a dense float32 array for BLAS instead
of a CSR copy beside the TF-IDF columns. At 24,000 rows that is the difference between minutes
and seconds per fold (`make bench-scale` times it: docs/performance.md).

A design is a dense block (standardised image features), a sparse block (TF-IDF rows), or both
side by side; ``logits`` is the one product that both training and a saved model's prediction
use, so a bundle reproduces the training run's logits exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.special import expit


@dataclass(frozen=True)
class Design:
    """Rows of features: ``dense`` ``[N, P]`` float32 columns first, then ``sparse`` ``[N, Q]`` CSR."""

    dense: np.ndarray | None
    sparse: sp.csr_matrix | None

    def __post_init__(self) -> None:
        if self.dense is None and self.sparse is None:
            raise ValueError("a design needs a dense block, a sparse block or both")
        if self.dense is not None and self.sparse is not None and self.dense.shape[0] != self.sparse.shape[0]:
            raise ValueError(f"dense block has {self.dense.shape[0]} rows, sparse block {self.sparse.shape[0]}")

    @property
    def n_rows(self) -> int:
        return (self.dense if self.dense is not None else self.sparse).shape[0]

    @property
    def n_dense(self) -> int:
        return 0 if self.dense is None else self.dense.shape[1]

    @property
    def n_cols(self) -> int:
        return self.n_dense + (0 if self.sparse is None else self.sparse.shape[1])

    def matmul(self, W: np.ndarray) -> np.ndarray:
        """``X @ W`` in float64: ``[N, D] x [D, K]``; the dense block multiplies in float32 (BLAS)."""
        p = self.n_dense
        out = np.zeros((self.n_rows, W.shape[1]), np.float64)
        if self.dense is not None:
            out += self.dense @ np.ascontiguousarray(W[:p], dtype=np.float32)
        if self.sparse is not None:
            out += self.sparse @ W[p:]
        return out

    def rmatmul(self, R: np.ndarray) -> np.ndarray:
        """``X.T @ R`` in float64: ``[D, N] x [N, K]``."""
        parts = []
        if self.dense is not None:
            parts.append((self.dense.T @ np.ascontiguousarray(R, dtype=np.float32)).astype(np.float64))
        if self.sparse is not None:
            parts.append(np.asarray(self.sparse.T @ R, dtype=np.float64))
        return np.vstack(parts)


def logits(X: Design, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """``[N, K]`` float32 decision values of the classes whose ``coef [K, D]`` and ``intercept [K]`` are given."""
    return (X.matmul(np.asarray(coef, np.float64).T) + np.asarray(intercept, np.float64)).astype(np.float32)


@dataclass(frozen=True)
class Fit:
    coef: np.ndarray  # [K, D] float64
    intercept: np.ndarray  # [K] float64
    iterations: int
    converged: bool


def fit_ovr(X: Design, Y: np.ndarray, C: float, max_iter: int, tol: float = 1e-4) -> Fit:
    """Fit ``Y [N, K]`` (0/1, every column with both values) on ``X``, all K classes at once.

    Starts from zero weights, as sklearn does; deterministic (no random state is read).
    """
    n, k = Y.shape
    if X.n_rows != n:
        raise ValueError(f"design has {X.n_rows} rows, labels {n}")
    d = X.n_cols
    Yf = np.asarray(Y, np.float64)
    l2 = 1.0 / (C * n)

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: d * k].reshape(d, k), theta[d * k :]
        Z = X.matmul(W) + b
        # log(1 + e^z) - y z: the log-loss of the sigmoid, stable for either sign of z
        loss = (np.logaddexp(0.0, Z) - Yf * Z).sum() / n + 0.5 * l2 * float((W * W).sum())
        R = (expit(Z) - Yf) / n
        grad_W = X.rmatmul(R) + l2 * W
        return loss, np.concatenate([grad_W.ravel(), R.sum(0)])

    # sklearn's lbfgs options: the same stopping rule on the same (normalised) objective.
    res = minimize(
        loss_grad,
        np.zeros(d * k + k),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    theta = res.x
    return Fit(theta[: d * k].reshape(d, k).T.copy(), theta[d * k :].copy(), int(res.nit), bool(res.success))
