"""Masked-mean pooling over tokens: the one definition every encoder and head uses.

It is sentence-transformers' pooling (the mean over real tokens), and the residual of the
attention pooling heads; a row without real tokens pools to zeros rather than NaN.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``x`` [B, L, D] over the positions where ``mask`` [B, L] is true; all of them when None."""
    if mask is None:
        return x.mean(1)
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)
