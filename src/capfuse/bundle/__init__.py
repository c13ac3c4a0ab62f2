"""Bundles: a trained pipeline exported as files (``export``) and replayed on new data (``Predictor``).

``capfuse.bundle.export`` writes the bundle from a finished run; ``capfuse.bundle.predictor``
loads it and predicts folders, image paths or PIL images with captions, offline.
"""

from capfuse.bundle.predictor import BundleError, Prediction, Predictor

__all__ = ["BundleError", "Prediction", "Predictor"]
