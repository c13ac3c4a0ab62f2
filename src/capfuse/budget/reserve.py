"""What runs after the models, predicted before any trains: the shift report, the second level's
candidates and the threshold study. The budget keeps this reserve free at its end, and where it
would crowd the budget, leaves the stacker out and gives the study fewer trials.

Each is timed on synthetic data of the run's shape at small sizes and grown to the run's rows by
how it grows:

- **The candidates** (blends and the LightGBM stacker, out of fold): along the power law through
  two sizes. LightGBM bins its inputs, so it grows slower than its rows: with two models it took
  2.6 s at 800 rows and 26 s at 30,000 on the reference CPU, where a line through 200 and 800 rows
  said 100. Its exponent is held within ``GROWTH_BOUNDS``.
- **The threshold study** (the study on every row and the k nested ones): its fixed part (the
  global threshold, the first trials, the coordinate-ascent polish, a stored study's creation)
  along the line through two sizes; each further trial from its parts: writing the trial to the
  run's study storage (sqlite in the run folder: tens of milliseconds, whatever the rows), the
  TPE sampler's suggestion in each study, which grows with the trials before it, and one score of
  the rows in each study. Scaling the 10-trial study by its trials instead counted the fixed
  part once per trial: 188 s predicted at 30,000 rows for a study that takes about 35.
- **The shift report**: its projection and adversarial fits along the line through two sizes,
  and the novelty search by its cost per pair of rows compared.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from capfuse.budget.plan import STUDY_TRIALS, study_seconds, trials_within
from capfuse.config import deep_merge
from capfuse.config.schema import resolve
from capfuse.ensemble.second_level import build_candidates, threshold_rule
from capfuse.ensemble.thresholds import F1Scorer, fit_class_thresholds, nested_threshold_score
from capfuse.shift.adversarial import adversarial, reduce
from capfuse.shift.novelty import REFERENCE_ROWS as NOVELTY_REFERENCE_ROWS
from capfuse.shift.novelty import novelty

PROBE_PREFIX = "capfuse-probe-"  # the study's timing folder in the run folder
PROBE_FILES = (".db", ".db-journal", ".db-wal", ".db-shm")  # what the timing writes there (sqlite)

RESERVE_SHARE = 0.25  # the second level may take this share of the budget; fewer threshold trials past it
MIN_TRIALS = 50  # never fewer threshold-study trials (the coordinate-ascent polish follows them)
SECOND_LEVEL_ROWS = 800  # synthetic rows the second level is timed on (and a quarter of them)
# An in-memory study of these lengths beside the 10-trial one: the sampler's cost per trial at
# two points of the study, hence how it grows; a stored one of the first length: the storage's.
LONGER_TRIALS = (40, 100)
SCORE_REPEATS = 5
# The candidates' exponent, held within these: between 200 and 800 rows fixed costs flatten the
# curve (0.53 measured with six models on the reference CPU, 0.63 from 800 to 30,000 rows, where
# a floor of 0.65 predicts 32 s beside 32 measured, and 28 beside 26 with two models).
GROWTH_BOUNDS = (0.65, 1.0)
SHIFT_ROWS = 2000  # synthetic train + test rows the shift report is timed on (and a quarter of them)
# Width of the synthetic image vectors the shift report's projection is timed on: the probe runs
# before the cache exists, and the widest pooled vector a default encoder writes (2,864 values)
# sets the cost where it matters.
SHIFT_WIDTH = 2864


def plan_second_level(
    candidates: tuple[str, ...], stack_s: float, lightgbm_s: float, limit_s: float
) -> tuple[tuple[str, ...] | None, float]:
    """(the candidates, None for the config's own; their predicted seconds): the LightGBM stacker
    is left out when the candidates would take more than ``RESERVE_SHARE`` of the budget with it
    and the blends remain, as AutoGluon leaves out stacking when time is short."""
    if stack_s <= RESERVE_SHARE * limit_s or "stack" not in candidates or len(candidates) < 2:
        return None, stack_s
    return tuple(c for c in candidates if c != "stack"), max(0.0, stack_s - lightgbm_s)


def plan_trials(trials: int, stack_s: float, study: dict, limit_s: float) -> int:
    """The threshold study's trials: the config's, or fewer (never under ``MIN_TRIALS``) when the
    second level would take more than ``RESERVE_SHARE`` of the budget with them. ``study``: the
    probe's cost of the study (``reserve.study_seconds``)."""
    room = RESERVE_SHARE * limit_s - stack_s
    if study_seconds(study, trials) <= room:
        return trials
    return max(min(trials, MIN_TRIALS), trials_within(study, room, trials))


def second_level_costs(
    cfg: dict, n_rows: int, n_classes: int, n_models: int, k: int, *, workdir: Path | None = None
) -> tuple[float, float, dict]:
    """(seconds of the stack stage's candidates, of which the LightGBM stacker's, the threshold
    study's cost for ``study_seconds``) at ``n_rows``. ``workdir``: the folder the run stores its
    study in, so that a stored trial is timed on that disk (in a temporary folder there, removed)."""
    sizes = (SECOND_LEVEL_ROWS // 4, SECOND_LEVEL_ROWS)
    _candidates_once(cfg, sizes[0] // 2, n_classes, max(1, n_models), k)  # warm-up: imports
    runs = [_candidates_once(cfg, n, n_classes, max(1, n_models), k) for n in sizes]
    stack_s = _grow(n_rows, sizes, [r[0] for r in runs])
    lightgbm_s = _grow(n_rows, sizes, [r[1] for r in runs])
    study = study_cost([r[2] for r in runs], threshold_rule(cfg), n_rows, k, workdir=workdir)
    return stack_s, lightgbm_s, study


def study_cost(samples: list[tuple[np.ndarray, np.ndarray]], rule: dict, n_rows: int, k: int, *, workdir=None) -> dict:
    """The threshold study's cost at ``n_rows`` for ``study_seconds``, from two ``samples``
    (labels, probabilities) of different sizes, the smaller first."""
    sizes = tuple(len(y) for y, _ in samples)
    (Y, p), t0, (t1, t2) = samples[0], STUDY_TRIALS, LONGER_TRIALS
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        _sweep_probe_folders(workdir)
    with tempfile.TemporaryDirectory(prefix=PROBE_PREFIX, dir=workdir) as tmp:
        _study_once(Y, p, rule, 2, Path(tmp) / "warm-up.db")  # imports, and opens the storage's driver
        fixed = [_fixed_once(y, q, rule, k, Path(tmp) / f"rows{len(y)}.db") for y, q in samples]
        stored = _study_once(Y, p, rule, t1, Path(tmp) / "longer.db")
    memory = [_study_once(Y, p, rule, t, None) for t in (t0, t1, t2)]
    early, late = (memory[1] - memory[0]) / (t1 - t0), (memory[2] - memory[1]) / (t2 - t1)
    growth = max(0.0, (late - early) / ((t2 - t0) / 2))  # per trial, between the two midpoints
    sampler = max(0.0, early - growth * (t0 + t1) / 2)  # per study and trial, before any trial
    # A stored trial: what the stored study added over the in-memory one, trial for trial.
    storage = max(0.0, ((stored - fixed[0][0]) - (memory[1] - memory[0])) / (t1 - t0))
    cost = {
        "fixed_s": _line(n_rows, sizes, [sum(f) for f in fixed]),
        # Each trial: one stored, a suggestion in each of the k + 1 studies, and a score of the
        # rows in each (the run's rows once, and k - 1 of k folds' rows k times).
        "trial_s": storage + (k + 1) * sampler + k * _score_seconds(n_rows, Y.shape[1], rule),
        "growth_s": (k + 1) * growth,
    }
    return {key: float(f"{v:.6g}") for key, v in cost.items()}


def _sweep_probe_folders(workdir: Path) -> None:
    """Remove what an earlier probe in ``workdir`` left when it was killed outright (a SIGKILL
    runs no cleanup): folders of this probe's prefix holding only the sqlite files it writes.
    The run's lock on the dataset means no other probe is using one; anything else in such a
    folder is not capfuse's, and the folder stays."""
    for folder in workdir.glob(f"{PROBE_PREFIX}*"):
        files = list(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else None
        if files is None or not all(f.is_file() and f.name.endswith(PROBE_FILES) for f in files):
            continue
        for f in files:
            f.unlink()
        folder.rmdir()


def _line(n: float, sizes: tuple[int, int], times: list[float]) -> float:
    slope = max(0.0, (times[1] - times[0]) / (sizes[1] - sizes[0]))
    return max(0.0, times[1] - slope * sizes[1]) + slope * n


def _grow(n: float, sizes: tuple[int, int], times: list[float]) -> float:
    """Along the power law through the two sizes, its exponent within ``GROWTH_BOUNDS``."""
    if min(times) <= 0:
        return _line(n, sizes, times)
    power = math.log(times[1] / times[0]) / math.log(sizes[1] / sizes[0])
    return times[1] * (n / sizes[1]) ** min(max(power, GROWTH_BOUNDS[0]), GROWTH_BOUNDS[1])


def _synthetic(n: int, n_classes: int, n_models: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, n_classes)) < 0.15).astype(np.uint8)
    Y[Y.sum(1) == 0, 0] = 1
    logits = [(Y * 2.0 - 1.0 + rng.normal(0, 1.5, Y.shape)).astype(np.float32) for _ in range(n_models)]
    return Y, logits


def _candidates_once(cfg: dict, n: int, n_classes: int, n_models: int, k: int):
    """(seconds of the candidates, of which the LightGBM stacker's, (labels, the first candidate's
    out-of-fold probabilities)) on ``n`` synthetic rows."""
    Y, logits = _synthetic(n, n_classes, n_models)
    test = [a[: max(1, n // 3)] for a in logits]
    folds = np.arange(n) % k
    rule = threshold_rule(cfg)
    names = [f"m{i}" for i in range(n_models)]
    t0 = time.perf_counter()
    cands = build_candidates(Y, logits, test, folds, names, cfg, rule)
    stack_s = time.perf_counter() - t0
    # The same without the LightGBM stacker: the difference is the stacker's, which a tight
    # budget can leave out (the blends are a fraction of it).
    wanted = [c for c in resolve(cfg).ensemble.candidates if c != "stack"]
    lightgbm_s = 0.0
    if wanted and len(wanted) < len(resolve(cfg).ensemble.candidates):
        t0 = time.perf_counter()
        build_candidates(Y, logits, test, folds, names, deep_merge(cfg, {"ensemble": {"candidates": wanted}}), rule)
        lightgbm_s = max(0.0, stack_s - (time.perf_counter() - t0))
    return stack_s, lightgbm_s, (Y, next(iter(cands.values()))["oof"])


def _study_once(Y: np.ndarray, probs: np.ndarray, rule: dict, trials: int, db: Path | None) -> float:
    """Seconds of one study of ``trials`` trials, stored in the sqlite file ``db`` (None: in memory)."""
    storage = None if db is None else f"sqlite:///{db}"
    t0 = time.perf_counter()
    fit_class_thresholds(Y, probs, **rule, n_trials=trials, seed=0, storage=storage, study_name="probe" if db else None)
    return time.perf_counter() - t0


def _fixed_once(Y: np.ndarray, probs: np.ndarray, rule: dict, k: int, db: Path) -> tuple[float, float]:
    """(seconds of the stored study on every row, of the k nested ones) at ``STUDY_TRIALS``, as
    the thresholds stage runs them."""
    t0 = time.perf_counter()
    full = fit_class_thresholds(
        Y, probs, **rule, n_trials=STUDY_TRIALS, seed=0, storage=f"sqlite:///{db}", study_name="probe"
    )
    t1 = time.perf_counter()
    nested_threshold_score(Y, probs, np.arange(len(Y)) % k, **rule, n_trials=STUDY_TRIALS, seed=0, full=full)
    return t1 - t0, time.perf_counter() - t1


def _score_seconds(n: int, n_classes: int, rule: dict) -> float:
    """Seconds of one score of ``n`` rows' thresholds (what each trial pays per study)."""
    Y, (logits,) = _synthetic(n, n_classes, 1)
    scorer = F1Scorer(Y, 1 / (1 + np.exp(-logits)), **rule)
    t = np.full(n_classes, 0.5)
    scorer.score(t)
    t0 = time.perf_counter()
    for i in range(SCORE_REPEATS):
        scorer.score(t + 0.01 * i)
    return (time.perf_counter() - t0) / SCORE_REPEATS


def shift_seconds(n_train: int, n_test: int) -> float:
    """Seconds of the shift report at ``n_train`` training and ``n_test`` test rows, from its own
    steps on synthetic vectors at two sizes (on one BLAS thread, as the report runs them):

    - what grows with the rows (the image vectors' projection at ``SHIFT_WIDTH``, the adversarial
      fits of image, caption and both side by side, each out of fold with its null splits), along
      the line through the two sizes;
    - the novelty search, which compares every test row and a reference sample of training rows
      with every training row: its cost per pair of rows, times the pairs of the run.
    """
    sizes = (SHIFT_ROWS // 4, SHIFT_ROWS)
    linear, pair_s = [], 0.0
    rng = np.random.default_rng(0)
    with threadpool_limits(1):
        adversarial("warm-up", rng.normal(size=(sizes[0], 8)).astype(np.float32), sizes[0] // 2, 8)
        for n in sizes:
            x = rng.normal(size=(n, SHIFT_WIDTH)).astype(np.float32)
            n_fit = n * 3 // 4
            t0 = time.perf_counter()
            z = reduce(x)
            for part in (z, z, np.hstack([z, z])):
                adversarial("probe", part, n_fit, part.shape[1])
            linear.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            novelty(z[:n_fit], z[n_fit:])
            pair_s = (time.perf_counter() - t0) / _novelty_pairs(n_fit, n - n_fit)
    slope = max(0.0, (linear[1] - linear[0]) / (sizes[1] - sizes[0]))
    rows = n_train + n_test
    return max(0.0, linear[1] - slope * sizes[1]) + slope * rows + pair_s * _novelty_pairs(n_train, n_test)


def _novelty_pairs(n_train: int, n_test: int) -> int:
    """Row pairs the novelty search compares (``capfuse.shift.novelty``)."""
    return (min(NOVELTY_REFERENCE_ROWS, n_train) + n_test) * n_train
