"""Platt scaling of a net's logits: one scale and one shift for every class.

A model trained with a loss that is not a log-loss (the asymmetric loss, a tempered sigmoid)
ranks well but says "0.7" where a log-loss model says "0.3". The second level's weighted blend
fits its weights by log-loss, so it would read such a model as badly wrong and weigh it down.
Two numbers, fitted by log-loss on rows the model did not train on, put it back on the scale of
the others; they cannot change its ranking within a class, and with two parameters for all
classes a few hundred rows fit them without overfitting rare classes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import minimize

from capfuse.utils.numeric import sigmoid


def fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(scale, shift)`` minimising the mean log-loss of ``sigmoid(scale * logits + shift)``
    against the 0/1 targets ``y`` (same shape), pooled over rows and classes."""
    z = np.asarray(logits, np.float64).ravel()
    t = np.asarray(y, np.float64).ravel()
    if z.shape != t.shape or not len(z):
        raise ValueError(f"logits {np.shape(logits)} and targets {np.shape(y)} must be non-empty and alike")

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = params
        u = a * z + b
        # log(1 + e^u) - t u, computed stably; its gradient in u is sigmoid(u) - t.
        value = np.logaddexp(0.0, u) - t * u
        g = sigmoid(u) - t
        return float(value.mean()), np.array([(g * z).mean(), g.mean()])

    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B", bounds=[(1e-3, None), (None, None)])
    return float(res.x[0]), float(res.x[1])


def calibrate_net(
    net: torch.nn.Module, raw_logits: Callable[[], np.ndarray], y: np.ndarray
) -> tuple[float, float] | None:
    """Fit the net's ``logit_affine`` buffer on ``raw_logits()`` (the net's logits for the rows
    whose 0/1 targets are ``y``, called once the buffer is back to the identity); None when the
    net has no such buffer (``train.calibrate`` off)."""
    affine = getattr(net, "logit_affine", None)
    if affine is None:
        head = getattr(net, "head", None)  # a trained top stage wraps the fusion net
        affine = getattr(head, "logit_affine", None)
    if affine is None:
        return None
    # From the identity, whatever the weights were loaded with: a run resumed after an earlier
    # calibration was saved fits on the raw logits again, not on calibrated ones.
    affine.copy_(torch.tensor([1.0, 0.0], dtype=affine.dtype))
    scale, shift = fit_platt(raw_logits(), y)
    affine.copy_(torch.tensor([scale, shift], dtype=affine.dtype))
    return scale, shift
