"""Multi-label losses, all with one call signature and partial-label masks.

``loss(logits, targets, mask=None, sample_weight=None)`` averages over the entries that count:
``mask`` (1 = counts) lets pseudo-label rounds leave uncertain entries out entirely, so they add
nothing to the loss or its gradient. Every loss takes ``label_smoothing`` (y -> y(1-e) + e/2).

* ``bce``: binary cross-entropy.
* ``weighted_bce``: log-inverse-frequency class weights (the light fusion model's weighting).
* ``focal``: Lin et al. (2017).
* ``asl``: asymmetric loss, Ridnik et al. (2021): easy negatives are down-weighted and the
  probability of negatives is shifted by a margin, which suits many-negatives multi-label data.
* ``tempered_bce``: MuMIC's hardness-aware tempered sigmoid: BCE on sigmoid(logit / T), weighted towards hard entries.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from capfuse.config.check import register_components
from capfuse.utils.registry import Registry

LOSSES = Registry("loss")
register_components("loss", LOSSES)  # a config's train.loss is checked against the chosen loss's parameters


def class_frequencies(Y: np.ndarray) -> np.ndarray:
    """Laplace-smoothed positive rate per class: never 0 or 1, so logs stay finite."""
    Y = np.asarray(Y, dtype=np.float64)
    return (Y.sum(0) + 1.0) / (len(Y) + 2.0)


class MultiLabelLoss(nn.Module):
    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def elementwise(self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Per-entry loss; ``weight`` (0 = not counted) is there for losses that normalise over entries."""
        raise NotImplementedError

    def forward(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        logits = logits.float()
        y = targets.float()
        if self.label_smoothing:
            y = y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        weight = torch.ones_like(logits)
        if mask is not None:
            weight = weight * mask.float()
        if sample_weight is not None:
            weight = weight * sample_weight.float().unsqueeze(1)
        loss = self.elementwise(logits, y, weight)
        # torch.where, not a product: a masked entry with an infinite loss must still add 0.
        loss = torch.where(weight > 0, loss * weight, torch.zeros_like(loss))
        return loss.sum() / weight.sum().clamp(min=1.0)


@LOSSES.register("bce")
class BCELoss(MultiLabelLoss):
    def elementwise(self, logits, y, weight):
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none")


@LOSSES.register("weighted_bce")
class WeightedBCELoss(MultiLabelLoss):
    """Class c's entries weigh ``w_c = log(1 / p_c)``, scaled to mean 1 over classes.

    ``p_c`` is the training positive rate. The log tames the ratio: a class 50x rarer weighs
    about 3x more, not 50x, which boosts rare classes without letting their noise dominate.
    """

    def __init__(self, class_freq, label_smoothing: float = 0.0, min_weight: float = 0.1) -> None:
        super().__init__(label_smoothing)
        w = np.log(1.0 / np.clip(np.asarray(class_freq, dtype=np.float64), 1e-6, 1 - 1e-6))
        w = np.maximum(w / w.mean(), min_weight)
        self.register_buffer("class_weight", torch.tensor(w, dtype=torch.float32))

    def elementwise(self, logits, y, weight):
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none") * self.class_weight


@LOSSES.register("focal")
class FocalLoss(MultiLabelLoss):
    def __init__(self, gamma: float = 2.0, alpha: float | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing)
        self.gamma, self.alpha = float(gamma), alpha

    def elementwise(self, logits, y, weight):
        bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * y + (1 - p) * (1 - y)
        loss = (1 - p_t).pow(self.gamma) * bce
        if self.alpha is not None:
            loss = (self.alpha * y + (1 - self.alpha) * (1 - y)) * loss
        return loss


@LOSSES.register("asl")
class AsymmetricLoss(MultiLabelLoss):
    def __init__(
        self,
        gamma_neg: float = 4.0,
        gamma_pos: float = 0.0,
        clip: float = 0.05,
        label_smoothing: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__(label_smoothing)
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = float(gamma_neg), float(gamma_pos), float(clip), eps

    def elementwise(self, logits, y, weight):
        p = torch.sigmoid(logits)
        log_pos = F.logsigmoid(logits)
        if self.clip > 0:
            # The margin: a negative predicted below `clip` costs nothing at all.
            p_neg = (1 - p + self.clip).clamp(max=1.0)
            log_neg = torch.log(p_neg.clamp(min=self.eps))
        else:
            p_neg, log_neg = 1 - p, F.logsigmoid(-logits)
        loss = y * log_pos + (1 - y) * log_neg
        if self.gamma_neg or self.gamma_pos:
            p_t = p * y + p_neg * (1 - y)
            gamma = self.gamma_pos * y + self.gamma_neg * (1 - y)
            loss = loss * (1 - p_t).pow(gamma)
        return -loss


@LOSSES.register("tempered_bce")
class TemperedBCELoss(MultiLabelLoss):
    """BCE of ``sigmoid(logit / T)`` with hardness-aware weights ``(1 - p_t)^gamma``.

    The weights are normalised to mean 1 over the counted entries and detached, so they move
    emphasis to hard positives and hard negatives without changing the loss scale.
    """

    def __init__(self, temperature: float = 0.5, gamma: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__(label_smoothing)
        if temperature <= 0:
            raise ValueError("temperature must be positive")
        self.temperature, self.gamma = float(temperature), float(gamma)

    def elementwise(self, logits, y, weight):
        z = logits / self.temperature
        bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        with torch.no_grad():
            p = torch.sigmoid(z)
            hard = (1 - (p * y + (1 - p) * (1 - y))).pow(self.gamma)
            counted = weight > 0
            hard = hard / (hard[counted].mean() if counted.any() else hard.new_tensor(1.0)).clamp(min=1e-6)
        return hard * bce


def alignment_loss(
    label_text_feats: torch.Tensor, class_text: torch.Tensor, weight: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Semantic alignment: one-to-one alignment of label-specific features with their label texts.

    ``label_text_feats [B, C, D]``: the feature class c's query pooled for each sample, in the
    text space; ``class_text [C, D]``: the class prompts' embeddings. Each label feature is
    scored against every class text (cosine / ``temperature``) and must pick its own class
    (cross-entropy to index c), so label c's feature moves towards text c and away from the
    other labels' texts. ``weight [B, C]`` says which (sample, label) entries count: usually
    the positives, since an absent object's feature pools background and has nothing to align.
    """
    z = F.normalize(label_text_feats.float(), dim=-1)
    t = F.normalize(class_text.float(), dim=-1)
    scores = torch.einsum("bcd,kd->bck", z, t) / temperature  # [B, C, C]
    b, c, _ = scores.shape
    own = torch.arange(c, device=scores.device).expand(b, c)
    ce = F.cross_entropy(scores.reshape(b * c, c), own.reshape(-1), reduction="none").reshape(b, c)
    weight = weight.float()
    return torch.where(weight > 0, ce * weight, torch.zeros_like(ce)).sum() / weight.sum().clamp(min=1.0)
