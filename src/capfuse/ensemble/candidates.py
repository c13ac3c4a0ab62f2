"""The second level's candidates, their scores, and the choice among them.

Each candidate (``best_single``, ``mean_blend``, ``weighted_blend``, ``stack``) comes with honest
OOF probabilities (fold k's rows predicted by parts fitted on the other folds), its test
probabilities and its scores: mean F1 at its best global threshold (in-sample), with that
threshold fitted on the other folds (nested), and, given the test-like rows of a shift report
(``capfuse.ensemble.under_shift``), the nested mean F1 over those rows alone.

Without a shift the candidate with the best nested score on all rows is kept, and the choice
itself is not nested (a handful of options; the manifest says so). Under a shift it is chosen
on the test-like rows, and nested too: fold k's OOF rows come from the candidate that the same
procedure picks on the other folds alone, so no label of a scored row steers what scores it.
"""

from __future__ import annotations

import numpy as np

from capfuse.config.schema import CANDIDATES, resolve
from capfuse.ensemble.blend import (
    apply_weights,
    fit_weighted_blend,
    mean_blend,
    nested_blend_oof,
)
from capfuse.ensemble.decision import apply_threshold, fit_global_threshold
from capfuse.ensemble.stack import DEFAULT_ROUNDS, stack_features, stack_oof_and_test
from capfuse.ensemble.under_shift import Guard, like_f1, score_drops, weight_caps
from capfuse.metrics import mean_average_precision, mean_sample_f1
from capfuse.utils.numeric import sigmoid

ALL_ROWS = "nested_mean_f1"  # the score that chooses without a shift
LIKE_ROWS = "like_nested_mean_f1"  # and under one: the same, over the test-like rows only


def nested_predictions(Y: np.ndarray, probs: np.ndarray, folds: np.ndarray, rule: dict) -> np.ndarray:
    """Label sets with one global threshold fitted on the other folds and applied to each held-out fold."""
    pred = np.zeros_like(Y, dtype=np.uint8)
    for k in np.unique(folds):
        tr, te = folds != k, folds == k
        t, _ = fit_global_threshold(Y[tr], probs[tr], **rule)
        pred[te] = apply_threshold(probs[te], t, **rule)
    return pred


def nested_global_f1(Y: np.ndarray, probs: np.ndarray, folds: np.ndarray, rule: dict) -> float:
    """Mean F1 with one global threshold fitted on the other folds and applied to each held-out fold."""
    return float(mean_sample_f1(Y, nested_predictions(Y, probs, folds, rule)))


def _score(Y: np.ndarray, probs: np.ndarray, folds: np.ndarray, rule: dict, like: np.ndarray | None) -> dict:
    threshold, f1 = fit_global_threshold(Y, probs, **rule)
    pred = nested_predictions(Y, probs, folds, rule)
    out = {
        "cv_mean_f1": round(float(f1), 5),
        ALL_ROWS: round(float(mean_sample_f1(Y, pred)), 5),
        "cv_map": round(float(mean_average_precision(Y, probs)), 5),
        "threshold": round(float(threshold), 4),
    }
    if like is not None:
        out[LIKE_ROWS] = round(like_f1(Y, pred, like), 5)
    return out


def build_candidates(
    Y,
    oof_logits: list,
    test_logits: list | None,
    folds: np.ndarray,
    names: list[str],
    cfg: dict,
    rule: dict,
    *,
    like: np.ndarray | None = None,
    guard: Guard | None = None,
) -> dict[str, dict]:
    """Each candidate's honest OOF probabilities, test probabilities, score and how it was made.

    ``like``: the test-like rows (a bool mask), scored apart. ``guard``: cap the blend weight of
    a base model whose score falls on those rows, and keep the stacker's trees off its columns.
    ``test_logits`` None: OOF and scores only (a nested choice's inner runs)."""

    ens = resolve(cfg).ensemble
    wanted = ens.candidates
    unknown = sorted(set(wanted) - set(CANDIDATES))
    if unknown:
        raise ValueError(f"unknown ensemble candidates {unknown}; known: {list(CANDIDATES)}")
    if guard is not None and like is None:
        raise ValueError("a weight cap needs the test-like rows")
    oof_p = [sigmoid(z) for z in oof_logits]
    test_p = None if test_logits is None else [sigmoid(z) for z in test_logits]
    caps = None if guard is None else guard.caps_for(Y, oof_p, like)
    out: dict[str, dict] = {}
    singles = {n: _score(Y, p, folds, rule, None) for n, p in zip(names, oof_p)}
    best = max(singles, key=lambda n: singles[n]["cv_mean_f1"])
    if "best_single" in wanted:
        i = names.index(best)
        out["best_single"] = {
            "oof": oof_p[i],
            "test": None if test_p is None else test_p[i],
            "detail": {"model": best},
        }
    if len(names) > 1:
        if "mean_blend" in wanted:
            out["mean_blend"] = {
                "oof": mean_blend(oof_p),
                "test": None if test_p is None else mean_blend(test_p),
                "detail": {"models": names},
            }
        if "weighted_blend" in wanted:
            bound = None if caps is None else caps(np.ones(len(Y), dtype=bool))
            weights = fit_weighted_blend(Y, oof_p, max_weight=bound)
            detail = {"weights": {n: round(float(w), 4) for n, w in zip(names, weights)}}
            if bound is not None:
                detail["capped"] = {n: float(b) for n, b in zip(names, bound) if b < 1.0}
            out["weighted_blend"] = {
                "oof": nested_blend_oof(Y, oof_p, folds, caps=caps),
                "test": None if test_p is None else apply_weights(test_p, weights),
                "detail": detail,
                "saved": {"weights": weights.tolist()},
            }
        if "stack" in wanted:
            out["stack"] = _stack_candidate(Y, oof_logits, test_logits, oof_p, test_p, folds, ens, caps, names)
    for cand in out.values():
        cand["score"] = _score(Y, cand["oof"], folds, rule, like)
    return out


def _stack_candidate(Y, oof_logits, test_logits, oof_p, test_p, folds, ens, caps, names) -> dict:
    params = dict(ens.stack)
    rounds = int(params.pop("num_rounds", DEFAULT_ROUNDS))
    init = params.pop("init", "blend")
    if init not in ("blend", "constant"):
        raise ValueError(f"ensemble.stack.init must be blend or constant, got {init!r}")
    base = {"base_probs": oof_p, "base_probs_test": test_p} if init == "blend" else {}
    fold_models: list = []
    oof_s, test_s = stack_oof_and_test(
        stack_features(oof_logits),
        Y,
        folds,
        None if test_logits is None else stack_features(test_logits),
        params,
        num_rounds=rounds,
        saved=fold_models,
        caps=caps,
        **base,
    )
    detail = {
        "lightgbm": params or "defaults",
        "num_rounds": rounds,
        "init": init,
        "features": "every model's logits for every class, per-class mean and spread, "
        "per-model max/sum/count of probabilities",
    }
    if caps is not None:
        bound = caps(np.ones(len(Y), dtype=bool))
        detail["capped"] = {n: float(b) for n, b in zip(names, bound) if b < 1.0}
    return {"oof": oof_s, "test": test_s, "detail": detail, "saved": {"folds": fold_models}}


def base_model_drops(Y, oof_logits: list, names: list[str], like: np.ndarray, rule: dict, guard: Guard | None) -> dict:
    """Per base model: its mean F1 on all rows and on the test-like rows (at its best global
    threshold on all rows), the fall, and the cap the guard gives it on all rows."""
    probs = [sigmoid(z) for z in oof_logits]
    drops = score_drops(Y, probs, like, rule)
    caps = None if guard is None else weight_caps(drops, guard.tolerance, guard.cap, guard.exposed)
    out = {}
    for m, (n, p) in enumerate(zip(names, probs)):
        t, f1 = fit_global_threshold(Y, p, **rule)
        out[n] = {
            "cv_mean_f1": round(float(f1), 5),
            "test_like_mean_f1": round(float(f1 - drops[m]), 5),
            "fall": round(float(drops[m]), 5),
            "max_weight": None if caps is None else float(caps[m]),
            "reads_shifted_input": None if guard is None or guard.exposed is None else bool(guard.exposed[m]),
        }
    return out


def choose(cands: dict[str, dict], score: str) -> str:
    """The candidate with the best ``score`` (ties: the best nested score on all rows)."""
    return max(cands, key=lambda c: (cands[c]["score"][score], cands[c]["score"][ALL_ROWS]))


def nested_choice(
    Y, oof_logits: list, folds: np.ndarray, names: list[str], cfg: dict, rule: dict, like, guard, cands: dict
) -> tuple[np.ndarray, list[dict]]:
    """The OOF probabilities of choosing on the test-like rows, nested: fold k's rows come from
    the candidate that the whole procedure (candidates fitted, scored and chosen on the test-like
    rows) picks on the other folds alone, with fold k's probabilities of that candidate, which
    were fitted without fold k as well. Per fold: what was chosen and on which score."""
    ks = np.unique(folds)
    out = np.empty(cands[next(iter(cands))]["oof"].shape)
    record = []
    for k in ks:
        held, sub = folds == k, folds != k
        if len(ks) < 3:  # one fold left: nothing to nest the inner choice on
            chosen, model = choose(cands, LIKE_ROWS), cands.get("best_single", {}).get("detail", {}).get("model")
        else:
            inner = build_candidates(
                Y[sub], [z[sub] for z in oof_logits], None, folds[sub], names, cfg, rule, like=like[sub], guard=guard
            )
            chosen = choose(inner, LIKE_ROWS)
            model = inner["best_single"]["detail"]["model"] if "best_single" in inner else None
        if chosen == "best_single":
            # The model the inner run found best, without fold k's labels: its own OOF at fold k.
            out[held] = sigmoid(oof_logits[names.index(model)][held])
        else:
            out[held] = cands[chosen]["oof"][held]
        record.append({"fold": int(k), "chosen": chosen, **({"model": model} if chosen == "best_single" else {})})
    return out, record
