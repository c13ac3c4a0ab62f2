"""Label contexts for the context auxiliary task of label-query alignment: classes grouped by how often they co-occur.

The groups come from spectral clustering of the co-occurrence matrix of the rows a fold trains
on (never its held-out rows: their labels must not shape the model that predicts them). A
context is "present" in a sample when any of its classes is; an auxiliary head learns to
predict which contexts are present, which pushes the shared features to encode the scene
(street, kitchen, field) and not only each object on its own.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.cluster import SpectralClustering


def cooccurrence_affinity(Y: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Symmetric affinity ``[C, C]``: co-occurrence counts over ``sqrt(n_i n_j)`` (a cosine).

    Raw counts would make every class look close to the most frequent one; the cosine asks
    how often two classes appear together given how often each appears at all. ``eps`` keeps
    the graph connected (a class never seen with another, or never seen at all, still gets a
    context) without pulling apart the groups the data does show.
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[1] < 2:
        raise ValueError(f"label matrix must be [N, C] with C >= 2, got shape {Y.shape}")
    co = Y.T @ Y
    n = np.diag(co).copy()
    denom = np.sqrt(np.outer(n, n))
    aff = np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)
    np.fill_diagonal(aff, 1.0)
    return aff + eps


def cluster_contexts(Y_train: np.ndarray, n_contexts: int, seed: int) -> np.ndarray:
    """Context index of each class, ``int64 [C]``, from the training rows' labels only.

    Contexts are numbered by their first class, so the same grouping always reads the same.
    """

    Y_train = np.asarray(Y_train)
    n_classes = Y_train.shape[1]
    if not 2 <= n_contexts < n_classes:
        raise ValueError(f"aux.n_contexts must be in [2, {n_classes - 1}] for {n_classes} classes, got {n_contexts}")
    aff = cooccurrence_affinity(Y_train)
    sc = SpectralClustering(
        n_clusters=n_contexts, affinity="precomputed", random_state=seed, assign_labels="cluster_qr"
    )
    with warnings.catch_warnings():
        # A nearly disconnected graph is what well-separated contexts look like; sklearn warns.
        warnings.simplefilter("ignore", UserWarning)
        raw = sc.fit_predict(aff)
    order = {c: i for i, c in enumerate(dict.fromkeys(raw.tolist()))}
    return np.array([order[c] for c in raw.tolist()], dtype=np.int64)


def context_membership(context_map: np.ndarray, n_contexts: int) -> torch.Tensor:
    """One-hot ``[C, K]``: class c belongs to context k."""
    cmap = torch.as_tensor(np.asarray(context_map), dtype=torch.long)
    return torch.nn.functional.one_hot(cmap, n_contexts).float()


def context_targets(
    targets: torch.Tensor, membership: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets ``[B, K]``, mask ``[B, K]``) of the contexts from class targets ``[B, C]``.

    A context is present when any of its counted classes is (soft targets: their maximum). With
    partial labels (pseudo rows) a context with no counted positive is known to be absent only
    when every one of its classes is counted; otherwise it is left out of the loss.
    """
    m = torch.ones_like(targets) if mask is None else mask.to(targets.dtype)
    member = membership.to(targets.dtype)  # [C, K]
    counted = (targets * m).unsqueeze(2) * member.unsqueeze(0)  # [B, C, K]
    ctx = counted.amax(1)
    all_known = (m @ member) >= member.sum(0).unsqueeze(0) - 1e-6
    ctx_mask = ((ctx >= 0.5) | all_known).to(targets.dtype)
    return ctx, ctx_mask
