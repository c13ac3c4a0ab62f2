"""Per-class thresholds fitted on OOF probabilities to maximise the competition's mean sample F1.

Why per class: classes differ in prior and in how well-calibrated their scores are, so one cut-off
leaves F1 on the table for rare and for easy classes alike. Why not per-class F1: the competition
scores each image's label set, and a class's threshold moves that score through the other classes
of the same rows (the never-empty fallback, the cap on labels), so the objective is always
``mean_sample_f1(Y, apply_threshold(probs, t, ...))`` as a whole.

The search is Optuna's seeded TPE started from the best global threshold (so it can never end
below it on the rows it is tuned on), followed by a cheap coordinate-ascent polish on a 0.01 grid.
With a ``storage`` URL the study lives in a database and resumes, and several processes or
machines can tune one study at once (Optuna's own distributed mode).

``nested_threshold_score`` says how much of the gain is real: thresholds tuned on the other folds
and scored on each held-out fold.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from capfuse.ensemble.decision import (
    _label_limits,
    _probabilities,
    apply_threshold,
    default_grid,
    fit_global_threshold,
)
from capfuse.metrics import _as_binary, mean_sample_f1
from capfuse.utils.log import interactive, mask_url, progress, quiet_default

# A few hundred trials is where TPE stops finding gains over the coordinate polish on an 18-class
# OOF of 30,000 rows; more only fits the OOF noise (see nested_threshold_score's gap).
DEFAULT_TRIALS = 300
# Two polish passes: the second one rarely moves anything, a third never did in the bench.
DEFAULT_PASSES = 2
# Score differences below this are floating-point noise between equal label sets.
_TIE = 1e-12
# Bounds of every class's threshold: the global grid's range, so the enqueued global threshold
# is always a valid point of the per-class search space.
_LOW, _HIGH = 0.01, 0.99


@dataclass(frozen=True)
class ThresholdResult:
    """Per-class thresholds and their in-sample mean F1, beside the global baseline they started from.

    ``search_score`` is the best Optuna trial before the coordinate polish; ``n_trials`` counts the
    completed trials in the study, earlier runs and other workers included.
    """

    thresholds: np.ndarray
    score: float
    global_threshold: float
    global_score: float
    n_trials: int
    search_score: float


class F1Scorer:
    """Mean sample F1 of ``apply_threshold(probs, t, min_labels, max_labels)`` for many ``t``, fast.

    The decision only needs, per row, how many classes pass and how many of those are true, except
    in the rows whose count breaks the label limits. Those are solved from the row's classes sorted
    once by probability (the same stable order ``apply_threshold`` uses): an all-fail row takes its
    top ``min_labels`` (a prefix sum), an over-full row its best ``max_labels`` passing classes.
    So one evaluation is a compare and two row sums over ``[N, C]``, with no sort and no label
    matrix, and a one-class sweep is O(N) per grid point.
    """

    def __init__(
        self, y_true: np.ndarray, probs: np.ndarray, *, min_labels: int = 1, max_labels: int | None = None
    ) -> None:
        self.y = _as_binary("y_true", y_true)
        self.p = _probabilities(probs)
        if self.y.shape != self.p.shape:
            raise ValueError(f"y_true {self.y.shape} and probs {self.p.shape} differ in shape")
        if self.p.shape[0] == 0:
            raise ValueError("no samples to fit thresholds on")
        self.lo, self.hi = _label_limits(self.p.shape[1], min_labels, max_labels)
        self.order = np.argsort(-self.p, axis=1, kind="stable")
        self.hits_sorted = np.take_along_axis(self.y, self.order, axis=1)
        zero = np.zeros((len(self.y), 1), np.int64)
        self.prefix_tp = np.concatenate([zero, np.cumsum(self.hits_sorted, axis=1)], axis=1)  # [N, C+1]
        self.n_true = self.y.sum(1)

    @property
    def n_classes(self) -> int:
        return self.p.shape[1]

    def _limited_tp(self, rows: np.ndarray, passed: np.ndarray) -> np.ndarray:
        """True positives of ``rows`` (count outside the limits, none empty) given their passing matrix."""
        ps = np.take_along_axis(passed, self.order[rows], axis=1)
        hs = self.hits_sorted[rows]
        m = ps.sum(1, keepdims=True)
        over = ps & (np.cumsum(ps, axis=1) <= self.hi)
        under = ps | (~ps & (np.cumsum(~ps, axis=1) <= self.lo - m))
        chosen = np.where(m > self.hi, over, under)
        return (chosen & hs).sum(1)

    def _mean_f1(self, m: np.ndarray, tp: np.ndarray, passed_rows) -> float:
        """Mean F1 from passing counts and hits; ``passed_rows(mask)`` gives the passing matrix of
        the rows a label limit overrides (called only when there are some)."""
        bad = (m < self.lo) | (m > self.hi)
        if bad.any():
            tp = tp.copy()
            empty = bad & (m == 0)
            tp[empty] = self.prefix_tp[empty, self.lo]
            other = bad & (m > 0)
            if other.any():
                rows = np.flatnonzero(other)
                tp[rows] = self._limited_tp(rows, passed_rows(rows))
        size = self.n_true + np.clip(m, self.lo, self.hi)
        return float(np.where(size == 0, 1.0, 2.0 * tp / np.maximum(size, 1)).mean())

    def score(self, thresholds: np.ndarray) -> float:
        passed = self.p >= np.asarray(thresholds, dtype=np.float64)
        return self._mean_f1(passed.sum(1), (passed & self.y).sum(1), lambda rows: passed[rows])

    def sweep(self, thresholds: np.ndarray, c: int, grid: np.ndarray) -> np.ndarray:
        """Mean F1 for each value of ``grid`` as class ``c``'s threshold, the others held fixed."""
        passed = self.p >= thresholds
        m_rest = passed.sum(1) - passed[:, c]
        tp_rest = (passed & self.y).sum(1) - (passed[:, c] & self.y[:, c])
        pc_all, yc = self.p[:, c], self.y[:, c]
        out = np.empty(len(grid))
        for j, g in enumerate(grid):
            pc = pc_all >= g

            def rows_with_c(rows: np.ndarray, pc: np.ndarray = pc) -> np.ndarray:
                sub = passed[rows].copy()
                sub[:, c] = pc[rows]
                return sub

            out[j] = self._mean_f1(m_rest + pc, tp_rest + (pc & yc), rows_with_c)
        return out


def _tied_run_middle(scores: np.ndarray, j: int, level: float) -> int:
    """The middle index of the contiguous run of grid points around ``j`` scoring ``>= level``.

    Sitting in the middle of a plateau rather than on its edge keeps the label sets stable when
    test probabilities shift a little (the same reasoning as ``fit_global_threshold``).
    """
    a = b = j
    while a > 0 and scores[a - 1] >= level:
        a -= 1
    while b < len(scores) - 1 and scores[b + 1] >= level:
        b += 1
    return (a + b) // 2


def coordinate_ascent(
    scorer: F1Scorer, thresholds: np.ndarray, *, grid: np.ndarray | None = None, passes: int = DEFAULT_PASSES
) -> tuple[np.ndarray, float]:
    """Improve one class's threshold at a time over ``grid``; never lowers the score.

    TPE in 18 dimensions gets close but rarely onto the exact best cut of each class; an exact
    one-dimensional sweep per class does that for ~2 × C × 99 cheap evaluations. A class moves
    only on a strict gain, or to the middle of the tied plateau it already sits on.
    """
    g = default_grid() if grid is None else np.unique(np.asarray(grid, dtype=np.float64))
    t = np.asarray(thresholds, dtype=np.float64).copy()
    best = scorer.score(t)
    for _ in range(passes):
        moved = False
        for c in range(scorer.n_classes):
            scores = scorer.sweep(t, c, g)
            j = int(np.argmax(scores))
            if scores[j] > best + _TIE:
                new, best = g[_tied_run_middle(scores, j, scores[j] - _TIE)], float(scores[j])
            else:
                near = int(np.argmin(np.abs(g - t[c])))
                if scores[near] < best - _TIE:
                    continue  # the nearest grid point is worse: the current value is kept as it is
                new = g[_tied_run_middle(scores, near, best - _TIE)]
            moved |= bool(new != t[c])
            t[c] = new
        if not moved:
            break
    return t, scorer.score(t)


def _fingerprint(y: np.ndarray, p: np.ndarray, lo: int, hi: int) -> str:
    """Identifies the data and rule a stored study was tuned on, so a resume cannot mix two."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(y, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(p, dtype=np.float32).tobytes())  # float32: robust to a float64 round trip
    h.update(json.dumps([list(p.shape), lo, hi]).encode())
    return h.hexdigest()


def _param_names(n_classes: int) -> list[str]:
    width = len(str(n_classes - 1))
    return [f"t{c:0{width}d}" for c in range(n_classes)]


def _clip(t: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(t, dtype=np.float64), _LOW, _HIGH)


def fit_class_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    *,
    min_labels: int = 1,
    max_labels: int | None = None,
    n_trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    init: np.ndarray | None = None,
    passes: int = DEFAULT_PASSES,
) -> ThresholdResult:
    """One threshold per class maximising OOF mean sample F1 under ``apply_threshold``'s rules.

    ``n_trials`` is the study's total: trials already stored (earlier runs, other workers) count
    towards it, so rerunning with the same number does no new work. ``storage`` is an Optuna RDB
    URL such as ``sqlite:///runs/x/thresholds.db``; with it the study named ``study_name`` is
    created or resumed, and a study tuned on other data or another label rule is refused.
    ``init`` (e.g. last run's thresholds) is a second starting point of a new study.
    """
    import optuna  # noqa: PLC0415 (importing optuna costs about a second)

    scorer = F1Scorer(y_true, probs, min_labels=min_labels, max_labels=max_labels)
    c = scorer.n_classes
    g_t, g_score = fit_global_threshold(scorer.y, scorer.p, min_labels=min_labels, max_labels=max_labels)
    names = _param_names(c)
    if storage is not None and study_name is None:
        raise ValueError("a storage needs a study_name so that a rerun finds the same study")

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per trial drowns the logs
    try:
        try:
            study = optuna.create_study(
                storage=storage, study_name=study_name, direction="maximize", load_if_exists=storage is not None
            )
        except Exception as exc:
            if storage is None:
                raise
            # The driver's message can quote the URL; `from None` keeps the original, password
            # and all, out of the traceback too. Its lines are joined: one line in the log.
            reason = " ".join(line.strip() for line in mask_url(storage, within=str(exc)).splitlines())
            raise ValueError(
                f"threshold study storage {mask_url(storage)}: cannot open it: {type(exc).__name__}: {reason}"
            ) from None
        fp = _fingerprint(scorer.y, scorer.p, scorer.lo, scorer.hi)
        stored = study.user_attrs.get("fingerprint")
        if stored is None:
            study.set_user_attr("fingerprint", fp)
        elif stored != fp:
            raise ValueError(
                f"study {study_name!r} in {mask_url(storage)} was tuned on other probabilities, labels or label "
                "limits; use a new study_name"
            )
        done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        # The sampler's seed is offset by the trials already done, so a resumed run neither
        # replays the first run's random start-up points nor depends on wall-clock randomness.
        # Random start-up trials are capped at a tenth of the budget so short searches still model.
        startup = min(10, max(n_trials // 10, 1))
        study.sampler = optuna.samplers.TPESampler(seed=seed + done, n_startup_trials=startup)
        if done == 0 and not study.get_trials(deepcopy=False):
            # The global threshold first: the best trial can then never score below it here.
            study.enqueue_trial(dict.fromkeys(names, g_t), skip_if_exists=True)
            if init is not None:
                study.enqueue_trial(dict(zip(names, _clip(init).tolist())), skip_if_exists=True)

        def objective(trial: optuna.Trial) -> float:
            return scorer.score(np.array([trial.suggest_float(n, _LOW, _HIGH) for n in names]))

        if n_trials > done:
            study.optimize(
                objective,
                n_trials=n_trials - done,
                # Optuna's bar has no redraw interval to set: shown live only, never into a log file.
                show_progress_bar=not quiet_default() and interactive(),
                # Other workers on the same storage add trials too; stop when the total is reached.
                callbacks=[optuna.study.MaxTrialsCallback(n_trials, states=(optuna.trial.TrialState.COMPLETE,))],
            )
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    finally:
        optuna.logging.set_verbosity(verbosity)

    # The polish starts from the best trial as scored here, on these probabilities: a stored
    # value came from whoever ran the trial (another worker, another version, or a hand-edited
    # storage), so the values are not trusted, only the thresholds are re-scored. Ties keep the
    # earlier trial, and the global threshold wins ties against every trial.
    start, start_score = np.full(c, g_t), scorer.score(np.full(c, g_t))
    for trial in sorted(complete, key=lambda tr: tr.number):
        t_trial = np.array([trial.params.get(n, np.nan) for n in names], dtype=np.float64)
        if not np.isfinite(t_trial).all():
            continue  # a trial of another shape: not a start
        trial_score = scorer.score(_clip(t_trial))
        if trial_score > start_score:
            start, start_score = _clip(t_trial), trial_score
    search_score = start_score
    t, score = coordinate_ascent(scorer, start, passes=passes)
    if score < start_score:  # cannot happen (the polish only accepts gains and ties); kept as a guard
        t, score = start, start_score
    return ThresholdResult(
        thresholds=t,
        score=float(score),
        global_threshold=g_t,
        global_score=g_score,
        n_trials=len(complete),
        search_score=float(search_score),
    )


def nested_threshold_score(
    y_true: np.ndarray,
    probs: np.ndarray,
    folds: np.ndarray,
    *,
    min_labels: int = 1,
    max_labels: int | None = None,
    n_trials: int = DEFAULT_TRIALS,
    seed: int = 0,
    passes: int = DEFAULT_PASSES,
    full: ThresholdResult | None = None,
) -> dict:
    """Honest score of per-class (and global) thresholds by nested cross-validation.

    For each fold k, thresholds are tuned on the other folds' rows only and applied to fold k; the
    held-out label sets of all folds are pooled and scored once. ``in_sample`` is the usual
    tuned-and-scored-on-everything number, ``gap`` how much of it is fitting the OOF noise.
    ``fold_thresholds`` are the per-fold per-class thresholds, one row per fold.
    """
    y = _as_binary("y_true", y_true)
    p = _probabilities(probs)
    f = np.asarray(folds)
    if f.shape != (len(y),):
        raise ValueError(f"folds must hold one fold per row ({len(y)}), got shape {f.shape}")
    ks = np.unique(f)
    if len(ks) < 2:
        raise ValueError("nested scoring needs at least two folds")
    rule = dict(min_labels=min_labels, max_labels=max_labels)
    tune = dict(rule, n_trials=n_trials, seed=seed, passes=passes)

    # ``full``: the caller's own fit on all rows (e.g. from its stored study), not tuned again.
    full = full if full is not None else fit_class_thresholds(y, p, **tune)
    pred_class = np.zeros_like(y, dtype=np.uint8)
    pred_global = np.zeros_like(y, dtype=np.uint8)
    fold_t = np.empty((len(ks), y.shape[1]))
    fold_g = np.empty(len(ks))
    for i, k in enumerate(progress(ks, "nested thresholds")):
        tr, te = f != k, f == k
        res = fit_class_thresholds(y[tr], p[tr], **tune)
        fold_t[i], fold_g[i] = res.thresholds, res.global_threshold
        pred_class[te] = apply_threshold(p[te], res.thresholds, **rule)
        pred_global[te] = apply_threshold(p[te], res.global_threshold, **rule)
    nested, nested_g = mean_sample_f1(y, pred_class), mean_sample_f1(y, pred_global)
    return {
        "in_sample": full.score,
        "nested": nested,
        "gap": full.score - nested,
        "global_in_sample": full.global_score,
        "global_nested": nested_g,
        "global_gap": full.global_score - nested_g,
        "per_class_gain_nested": nested - nested_g,
        "thresholds": full.thresholds,
        "global_threshold": full.global_threshold,
        "fold_thresholds": fold_t,
        "fold_global_thresholds": fold_g,
    }
