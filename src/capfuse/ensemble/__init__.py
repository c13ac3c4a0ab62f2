"""Second-level models over the base models' out-of-fold predictions.

Everything here reads OOF probabilities or logits (never images or captions) and is fitted on
OOF rows only: ``blend`` averages models, ``stack`` learns a LightGBM model per class on all of
them, ``candidates`` builds and scores them, ``choice`` keeps one (under a train/test shift, on
the training rows most like the test, with the caps of ``under_shift``), ``thresholds`` turns
the result into label sets with one cut-off per class, and every fit has a nested
(fold-by-fold) estimate so the reported score is not the score of its own tuning.
"""
