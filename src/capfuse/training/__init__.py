"""Training every model kind the same way: the CV loop, pseudo-label rounds, the leaderboard.

``cv`` (the one trainer: folds, resume, OOF and test logits), ``fingerprint`` (what a run
folder was trained from), ``selection`` (which models a config trains), ``pseudo``
(pseudo-label targets, their selection and provenance), ``rounds`` (round after round while CV
rises), ``leaderboard``.
"""
