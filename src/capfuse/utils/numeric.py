"""Numeric helpers shared by every layer: the one logistic function for numpy arrays."""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logits → probabilities; clipped so that float32 logits of ±100 neither overflow nor warn."""
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40, 40)))
