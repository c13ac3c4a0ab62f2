"""What every model kind is: the ``FoldOutput`` it returns and the protocol the trainer calls.

A kind registers in ``capfuse.models.MODELS`` under the name a config's ``kind`` gives, and is
built as ``MODELS.create(kind, cfg=model_cfg, seed=seed)``. The trainer (``capfuse.training.cv``)
needs nothing else from it than this protocol, so a new kind is one module and one config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np


@dataclass
class FoldOutput:
    val_logits: np.ndarray  # [n_val, C]
    test_logits: np.ndarray  # [n_test, C]
    info: dict
    extra_logits: np.ndarray | None = None  # [n_extra, C]: unlabelled train rows (label-ratio mode)
    # The semantic-alignment scores of the label-query head for the test and extra rows, which
    # pseudo-label rounds may rank by (``pseudo.scores: align``): {"test": [n_test, C], "extra": ...}.
    align: dict | None = None


class ModelKind(Protocol):
    """The trainer's view of a model kind (``linear``, ``net``)."""

    @property
    def needs_image(self) -> bool:
        """False for caption-only models: the submission may fall back on them for bad images."""

    def head_cost(self, feats: dict, num_classes: int) -> tuple[int, float]:
        """(parameters, ms per image) of what the model adds on top of its frozen encoders."""

    def fit_fold(
        self, feats: dict, Y: np.ndarray, tr: np.ndarray, va: np.ndarray, *, fold_dir: Path | None = None, **extra
    ) -> FoldOutput:
        """Train on rows ``tr`` and predict the held-out rows ``va``, the test rows (and extras)."""
