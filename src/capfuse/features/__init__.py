"""What the models read, computed once per input and cached under ``runs/<dataset>/cache/``.

``image`` (frozen-backbone vectors, token grids, mid-level maps), ``text`` (transformer caption
states), ``tfidf`` (classical caption features) and ``store`` (which of them each model of a
config reads, and the fingerprint of those inputs). Encoders come from ``capfuse.encoders``.
"""
