"""capfuse: multi-label classification of captioned images, Kaggle-style.

Stages (folds, embed, train, thresholds, submit, ...) live in their own modules and speak
through files under ``folds/``, ``runs/<dataset>/`` and ``submissions/``.
"""

import importlib

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: ``import capfuse`` stays free of torch and friends; ``capfuse.Predictor`` and
    # ``capfuse.fit`` load them.
    if name == "Predictor":
        from capfuse.bundle import Predictor  # noqa: PLC0415

        return Predictor
    if name == "fit":
        # By name, not by an import statement: the stages read ``__version__`` from this module,
        # and a static arrow from it to ``capfuse.api`` (the top layer, over the CLI) would read
        # as every stage importing every other one.
        return importlib.import_module("capfuse.api").fit
    raise AttributeError(f"module 'capfuse' has no attribute {name!r}")
