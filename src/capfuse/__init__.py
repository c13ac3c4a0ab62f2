"""capfuse: multi-label classification of captioned images, Kaggle-style.

Stages (folds, embed, train, thresholds, submit, ...) live in their own modules and speak
through files under ``folds/``, ``runs/<dataset>/`` and ``submissions/``.
"""

__version__ = "0.1.0"
