"""Which candidate the second level keeps, on which score, and why (``stack.json``'s words).

Without a shift warning the rule is the one the second level always had: the best nested mean
F1 on all rows. When the shift report warns (or ``ensemble.shift.use: always``), the rows that
decide are the training rows most like the test (``capfuse.ensemble.under_shift``): candidates
are scored there, a base model whose score falls there more than the others' is capped, and
the choice is nested (``capfuse.ensemble.candidates.nested_choice``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from capfuse.config.schema import resolve
from capfuse.ensemble.candidates import (
    ALL_ROWS,
    LIKE_ROWS,
    base_model_drops,
    build_candidates,
    choose,
    nested_choice,
)
from capfuse.ensemble.under_shift import Guard, Shift, most_test_like
from capfuse.utils.log import log


@dataclass(frozen=True)
class Picked:
    candidates: dict[str, dict]
    chosen: str
    why: str
    score: str  # the score that chose: ALL_ROWS or LIKE_ROWS
    oof: np.ndarray  # the OOF probabilities the thresholds are fitted on
    choice: dict | None  # stack.json's ``choice`` block; None without a shift report


def _runner_up(cands: dict, chosen: str, score: str) -> str:
    """`` vs <score> for <candidate>``: the next candidate of candidates.csv's order, if any."""
    table = pd.DataFrame([{"candidate": c, score: v["score"][score]} for c, v in cands.items()])
    rest = table.sort_values(score, ascending=False)
    rest = rest[rest["candidate"] != chosen].head(1)
    return f" vs {rest[score].iloc[0]:.4f} for {rest['candidate'].iloc[0]}" if len(rest) else ""


def _best_on_all_rows(cands: dict, reason: str) -> tuple[str, str]:
    """The candidate with the best nested score on all rows, and why. Nested, because the global
    threshold too is fitted on other folds than it is scored on, so a candidate cannot win by
    fitting its own OOF noise."""
    chosen = max(cands, key=lambda c: (cands[c]["score"][ALL_ROWS], cands[c]["score"]["cv_mean_f1"]))
    why = (
        f"{chosen} has the best nested out-of-fold mean F1 ({cands[chosen]['score'][ALL_ROWS]:.4f}"
        + _runner_up(cands, chosen, ALL_ROWS)
        + f"); {reason}"
    )
    return chosen, why


def choose_candidate(
    Y,
    oof_logits,
    test_logits,
    folds,
    names,
    cfg: dict,
    rule: dict,
    shift: Shift | None,
    exposed=None,
    unnested: str | None = None,
) -> Picked:
    """Build the candidates and keep one; see the module's docstring for the rule. ``exposed``:
    per base model, whether it reads an input the report found shifted (None: all do).
    ``unnested``: why a choice on the test-like rows cannot be nested (a time budget's): the
    candidates keep their caps and the choice is the best nested score on all rows."""
    settings = resolve(cfg).ensemble.shift
    like = None if shift is None or shift.scores is None else most_test_like(shift.scores, settings.share)
    warned = shift is not None and shift.warned
    active = settings.use == "always" or (settings.use == "auto" and warned)
    if active and like is None:
        if settings.use == "always":
            raise ValueError(
                "ensemble.shift.use: always needs each training row's test-likeness "
                "(runs/<dataset>/shift_scores.csv): run `capfuse shift` (or `make infer`) first"
            )
        log.warning("the shift report warns but scored no training row: candidates are chosen on all rows")
        active = False
    guard = (
        Guard(rule, settings.tolerance, settings.cap, None if exposed is None else tuple(exposed)) if active else None
    )
    cands = build_candidates(Y, oof_logits, test_logits, folds, names, cfg, rule, like=like, guard=guard)
    test_like = None
    if like is not None:
        test_like = {
            "rows": int(like.sum()),
            "share": settings.share,
            "from": shift.source,
            "base_models": base_model_drops(Y, oof_logits, names, like, rule, guard),
        }
    if active and unnested:
        log.warning("second level: %s", unnested)
        chosen, why = _best_on_all_rows(cands, unnested)
        choice = {"score": ALL_ROWS, "why": unnested, "test_like": test_like}
        return Picked(cands, chosen, why, ALL_ROWS, cands[chosen]["oof"], choice)
    if not active:
        chosen, why = _best_on_all_rows(
            cands, "fitted candidates are scored on their nested OOF, so none saw the labels it is scored on"
        )
        choice = None
        if test_like is not None:
            reason = "ensemble.shift.use: never" if settings.use == "never" else "the shift report does not warn"
            choice = {
                "score": ALL_ROWS,
                "why": f"{reason}: chosen on all rows; the test-like rows' scores are shown, not used",
                "test_like": test_like,
            }
        return Picked(cands, chosen, why, ALL_ROWS, cands[chosen]["oof"], choice)

    chosen = choose(cands, LIKE_ROWS)
    oof, per_fold = nested_choice(Y, oof_logits, folds, names, cfg, rule, like, guard, cands)
    capped = {n: v["max_weight"] for n, v in test_like["base_models"].items() if v["max_weight"] < 1.0}
    reason = "the shift report warns" if warned else "ensemble.shift.use: always"
    why = (
        f"{chosen} has the best nested mean F1 on the {int(like.sum())} training rows most like the test "
        f"({cands[chosen]['score'][LIKE_ROWS]:.4f}{_runner_up(cands, chosen, LIKE_ROWS)}; "
        f"{cands[chosen]['score'][ALL_ROWS]:.4f} on all rows): {reason}, so the candidate is chosen for rows "
        "like the test's; the choice is nested: each fold's out-of-fold rows come from the candidate that "
        "the same rule picks on the other folds alone"
        + (
            "; capped in the blends (their score falls on the test-like rows more than the others'): "
            + ", ".join(f"{n} at {w:g}" for n, w in capped.items())
            if capped
            else "; no base model's score falls on the test-like rows by more than the others' (no cap)"
        )
    )
    choice = {
        "score": LIKE_ROWS,
        "why": f"{reason}: chosen on the test-like rows, nested",
        "test_like": test_like | {"tolerance": settings.tolerance, "cap": settings.cap},
        "per_fold": per_fold,
    }
    return Picked(cands, chosen, why, LIKE_ROWS, oof, choice)
