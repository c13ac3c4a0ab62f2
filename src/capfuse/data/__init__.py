"""The dataset layer: the COMP5329 layout read and validated, classes, images, folds, logits files.

``csvio`` (the CSV quirks), ``validate`` (one pass, every finding, the row policy), ``images``,
``classes``, ``unlabelled``, ``folds`` (multilabel-stratified, written once), ``dataset`` (what
every stage loads first), ``logits`` (the per-image logits and probabilities files), ``faults``
and ``demo/`` (the generated datasets).
"""
