"""Nearest-neighbour novelty: how far is each test image from the closest training image?

The distance is the cosine distance between image vectors (projected, centred: on raw pooled CNN
features every pair looks alike). It means something only beside the same distance for training
rows against the rest of training (leave-one-out): with no shift the two follow one law, and
about 5 % of test rows lie beyond the training rows' 95th percentile. Many more is a test set
of images unlike anything seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Training rows whose leave-one-out distance makes the reference: enough for a stable 95th
# percentile, and 30,000 x 30,000 similarities would cost far more than the rest of the report.
REFERENCE_ROWS = 4000
CHUNK = 2048  # query rows per matrix product: bounds the memory at CHUNK x n_train floats
PERCENTILE = 95.0


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest(queries: np.ndarray, reference: np.ndarray, exclude: np.ndarray | None = None) -> tuple:
    """Per query row: the cosine distance to its nearest reference row and that row's index.
    ``exclude[i]``: a reference row query ``i`` may not match (itself, for leave-one-out)."""
    q, r = _unit(queries), _unit(reference)
    dist = np.empty(len(q), np.float32)
    idx = np.empty(len(q), np.int64)
    for start in range(0, len(q), CHUNK):
        sim = q[start : start + CHUNK] @ r.T
        if exclude is not None:
            rows = np.arange(sim.shape[0])
            sim[rows, exclude[start : start + CHUNK]] = -np.inf
        best = sim.argmax(1)
        idx[start : start + CHUNK] = best
        dist[start : start + CHUNK] = 1.0 - sim[np.arange(sim.shape[0]), best]
    return dist, idx


@dataclass(frozen=True)
class Novelty:
    test_distance: np.ndarray  # per test row
    test_nearest: np.ndarray  # per test row: index of its nearest training row
    train_distance: np.ndarray  # leave-one-out, per reference training row
    threshold: float  # the training rows' PERCENTILE-th percentile

    @property
    def fraction_beyond(self) -> float:
        """Share of test rows farther from training than ``threshold`` (about 5 % with no shift)."""
        return float((self.test_distance > self.threshold).mean()) if len(self.test_distance) else 0.0

    def as_dict(self) -> dict:
        return {
            "metric": "cosine distance to the nearest training image (projected, centred vectors)",
            "train_reference_rows": len(self.train_distance),
            "test_rows": len(self.test_distance),
            "train_median": round(float(np.median(self.train_distance)), 4),
            "test_median": round(float(np.median(self.test_distance)), 4) if len(self.test_distance) else None,
            "train_p95": round(self.threshold, 4),
            "test_beyond_train_p95": round(self.fraction_beyond, 4),
            "expected_without_shift": round(1 - PERCENTILE / 100, 4),
        }


def novelty(train: np.ndarray, test: np.ndarray, *, seed: int = 0) -> Novelty:
    """Nearest-training-row distances of every test row, against leave-one-out ones of (at most
    ``REFERENCE_ROWS``) training rows. Vectors are centred on the training mean first."""
    train = np.asarray(train, np.float32)
    centre = train.mean(0)
    train, test = train - centre, np.asarray(test, np.float32) - centre
    rng = np.random.default_rng(seed)
    ref = np.sort(rng.choice(len(train), min(REFERENCE_ROWS, len(train)), replace=False))
    train_dist, _ = nearest(train[ref], train, exclude=ref)
    test_dist, test_idx = nearest(test, train)
    return Novelty(test_dist, test_idx, train_dist, float(np.percentile(train_dist, PERCENTILE)))
