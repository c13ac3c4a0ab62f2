"""Second-level models over the base models' out-of-fold predictions.

Everything here reads OOF probabilities or logits (never images or captions) and is fitted on
OOF rows only: ``blend`` averages models, ``stack`` learns a LightGBM model per class on all of
them, ``thresholds`` turns the result into label sets with one cut-off per class, and every fit
has a nested (fold-by-fold) estimate so the reported score is not the score of its own tuning.
"""
