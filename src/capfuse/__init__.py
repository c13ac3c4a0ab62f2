"""capfuse: multi-label classification of captioned images, Kaggle-style.

Stages (folds, embed, train, thresholds, submit, ...) live in their own modules and speak
through files under ``folds/``, ``runs/<dataset>/`` and ``submissions/``.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: ``import capfuse`` stays free of torch and friends; ``capfuse.Predictor`` loads them.
    if name == "Predictor":
        from capfuse.bundle import Predictor  # noqa: PLC0415

        return Predictor
    raise AttributeError(f"module 'capfuse' has no attribute {name!r}")
