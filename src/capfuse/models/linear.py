"""The first-slice baseline: one-vs-rest logistic regression on cached features.

Image features are frozen pooled backbone vectors, caption features TF-IDF; ``inputs``
chooses image, caption or both (early fusion by concatenation). It is fast, deterministic and
honest, and it is the bar every later model has to clear.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from capfuse.config.check import resolve_checked
from capfuse.config.schema import LinearModelSettings
from capfuse.models import MODELS
from capfuse.models.base import FoldOutput


def _prior_logit(y: np.ndarray) -> float:
    # Laplace-smoothed log-odds: a class absent from a fold's training rows still gets a finite score.
    p = (y.sum() + 1.0) / (len(y) + 2.0)
    return float(np.log(p / (1.0 - p)))


@MODELS.register("linear")
class LinearModel:
    """Built from ``LinearModelSettings`` (capfuse.config.schema): ``inputs``, any of "image",
    "caption"; ``C``, the inverse regularisation shared by the modality blocks, and their weights.
    A config dict (built in code) is checked and resolved first."""

    def __init__(self, cfg: dict | LinearModelSettings, seed: int) -> None:
        settings = resolve_checked(cfg, kind="linear")
        self.inputs = list(settings.inputs)
        if not self.inputs or set(self.inputs) - {"image", "caption"}:
            raise ValueError(f"linear model inputs must be a subset of [image, caption], got {self.inputs}")
        self.C = settings.C
        # Block weights set how hard the one shared L2 penalty pulls on each modality.
        self.image_weight = settings.image_weight
        self.caption_weight = settings.caption_weight
        self.max_iter = settings.max_iter
        self.seed = seed

    @property
    def needs_image(self) -> bool:
        return "image" in self.inputs

    def _design(self, feats: dict, rows_tr, rows_other: list) -> tuple:
        """The training design matrix and one per ``(source, rows)`` of ``rows_other``.

        Image features alone stay a dense float32 array: lbfgs's products then run through BLAS,
        2.6x faster than the same numbers in CSR at 24,000 rows x 1,280 (measured on the
        competition-size set). With TF-IDF beside them the matrix must be sparse.
        """
        blocks_tr, blocks_other = [], [[] for _ in rows_other]
        dense = "caption" not in self.inputs
        as_block = (lambda a: a) if dense else sp.csr_matrix
        if "image" in self.inputs:
            img_tr, img_test = feats["image_train"], feats["image_test"]
            w = self.image_weight
            scaler = StandardScaler().fit(np.asarray(img_tr[rows_tr], dtype=np.float32))
            blocks_tr.append(as_block(scaler.transform(np.asarray(img_tr[rows_tr], dtype=np.float32)) * w))
            for blocks, (source, rows) in zip(blocks_other, rows_other):
                src = img_tr if source == "train" else img_test
                blocks.append(as_block(scaler.transform(np.asarray(src[rows], dtype=np.float32)) * w))
        if dense:
            return np.ascontiguousarray(blocks_tr[0], dtype=np.float32), [
                np.ascontiguousarray(b[0], dtype=np.float32) for b in blocks_other
            ]
        if "caption" in self.inputs:
            w = self.caption_weight
            blocks_tr.append(feats["caption_train"][rows_tr] * w)
            for blocks, (source, rows) in zip(blocks_other, rows_other):
                src = feats["caption_train"] if source == "train" else feats["caption_test"]
                blocks.append(src[rows] * w)
        stack = lambda b: sp.hstack(b).tocsr()  # noqa: E731
        return stack(blocks_tr), [stack(b) for b in blocks_other]

    def head_cost(self, feats: dict, num_classes: int) -> tuple[int, float]:
        """(parameters, ms per image) of the classifier alone: one weight per feature and class."""
        dim = 0
        if "image" in self.inputs:
            dim += feats["image_train"].shape[1]
        if "caption" in self.inputs:
            dim += feats["caption_train"].shape[1]
        return (dim + 1) * num_classes, 0.0

    def fit_fold(self, feats: dict, Y: np.ndarray, tr: np.ndarray, va: np.ndarray, *, fold_dir=None) -> FoldOutput:
        n_test = feats["n_test"]
        X_tr, (X_va, X_te) = self._design(feats, tr, [("train", va), ("test", np.arange(n_test))])
        C = Y.shape[1]
        val = np.empty((len(va), C), dtype=np.float32)
        test = np.empty((n_test, C), dtype=np.float32)

        def fit_class(c: int) -> None:
            y = Y[tr, c]
            if y.min() == y.max():
                val[:, c] = test[:, c] = _prior_logit(y)
                return
            clf = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
            clf.fit(X_tr, y)
            val[:, c] = clf.decision_function(X_va)
            test[:, c] = clf.decision_function(X_te)

        # scipy's sparse products run on one core (and release the GIL), so sparse designs fit
        # their classes on the fold's threads side by side; dense ones already use every thread
        # inside BLAS. Each class's fit is independent and deterministic: the same numbers at
        # any thread count.
        workers = min(C, torch.get_num_threads()) if sp.issparse(X_tr) else 1
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(fit_class, range(C)))
        else:
            for c in range(C):
                fit_class(c)
        return FoldOutput(val, test, {"n_features": X_tr.shape[1]})
