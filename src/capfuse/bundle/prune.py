"""Smaller second levels refitted from OOF only: best-K pruning and the fast (caption-only) variant.

A bundle may have to fit a size limit (``capfuse export --top-k K``) or predict faster than its
image backbone allows (``capfuse predict --fast``). Either way the second level must be refitted
on the models that remain, from their out-of-fold logits and the training labels only (never a
test label): the mean or a weighted blend (log-loss weights, ``capfuse.ensemble.blend``) or the
single model, with one global threshold fitted on the blend's nested OOF, as the stack stage
does for its blends. Its score is nested: fold k's rows are blended with weights fitted on the other
folds and cut at a threshold fitted on the other folds, so no model is kept for fitting its own
OOF noise.
"""

from __future__ import annotations

import numpy as np

from capfuse.data.logits import read_logits
from capfuse.ensemble.blend import fit_weighted_blend, mean_blend, nested_blend_oof
from capfuse.ensemble.decision import fit_global_threshold
from capfuse.ensemble.second_level import nested_global_f1
from capfuse.utils.numeric import sigmoid


def read_oof(paths, ds, names: list[str]) -> dict[str, np.ndarray]:
    """Every named model's OOF probabilities, aligned to the training ids."""
    return {n: sigmoid(read_logits(paths.model_dir(n) / "oof_logits.csv", ds.train_ids, ds.class_ids)) for n in names}


def _scored(Y: np.ndarray, second: dict, honest: np.ndarray, folds: np.ndarray, rule: dict) -> dict:
    threshold, in_sample = fit_global_threshold(Y, honest, **rule)
    return {
        "second_level": second,
        "thresholds": {"kind": "global", "values": float(threshold), **rule},
        "in_sample_mean_f1": round(float(in_sample), 5),
        "nested_mean_f1": round(nested_global_f1(Y, honest, folds, rule), 5),
    }


def blend_level(Y: np.ndarray, oof: dict[str, np.ndarray], names: list[str], folds: np.ndarray, rule: dict) -> dict:
    """The second level of ``names`` refitted on OOF: what a bundle stores, and its nested score.

    One model is used alone; several are blended, by their mean or by log-loss weights,
    whichever has the better nested score (then in-sample), as the stack stage chooses."""
    p = [oof[n] for n in names]
    if len(names) == 1:
        return _scored(Y, {"candidate": "best_single", "models": list(names), "model": names[0]}, p[0], folds, rule)
    mean = _scored(Y, {"candidate": "mean_blend", "models": list(names)}, mean_blend(p), folds, rule)
    weights = fit_weighted_blend(Y, p).tolist()
    second = {"candidate": "weighted_blend", "models": list(names), "weights": weights}
    weighted = _scored(Y, second, nested_blend_oof(Y, p, folds), folds, rule)
    return max((mean, weighted), key=lambda c: (c["nested_mean_f1"], c["in_sample_mean_f1"]))


def prune_models(
    Y: np.ndarray, oof: dict[str, np.ndarray], names: list[str], folds: np.ndarray, rule: dict, k: int
) -> tuple[list[str], list[dict]]:
    """Backward elimination to ``k`` models: each step drops the model whose removal costs the
    least nested mean F1 (its drop-one contribution), refitting the blend every time.

    Returns the kept names (in ``names``' order) and one row per step: the model dropped, the
    nested score before and after, and every candidate's contribution at that step."""
    if k < 1:
        raise ValueError(f"--top-k must be at least 1, got {k}")
    kept = list(names)
    steps: list[dict] = []
    score = blend_level(Y, oof, kept, folds, rule)["nested_mean_f1"]
    while len(kept) > k:
        without = {m: blend_level(Y, oof, [n for n in kept if n != m], folds, rule)["nested_mean_f1"] for m in kept}
        # Ties go to the later name, so the order of `names` (the pipeline's) decides nothing
        # silently: the contributions are logged with every step.
        drop = max(kept, key=lambda m: (without[m], kept.index(m)))
        steps.append(
            {
                "dropped": drop,
                "nested_before": score,
                "nested_after": without[drop],
                "contribution": {m: round(score - without[m], 5) for m in kept},
            }
        )
        score = without[drop]
        kept.remove(drop)
    return kept, steps
